"""Map the NSMC raw reviews (real Korean movie reviews) into the landing format.

A movie is an item ("place"): ``nsmc-m<movie_id>``, category ``영화``, no location. Each review row
becomes a review (``nsmc-r<id>``, rating 1..10 kept as is, ``ts`` = the review date at 12:00 +09:00)
and a matching ``review`` event (``nsmc-e<id>``). Every record carries ``"source": "nsmc"``.

Files are grouped by month: the folder ``dt=YYYY-MM-01`` holds the reviews of that calendar month,
and a movie's place record is delivered in the month of its first review. Rows the source marks as
broken (empty text, a rating that is not an integer) go through as they are, for the validator to
quarantine. The input (sorted by date, as shipped) is streamed; one month is buffered at a time.
"""

from __future__ import annotations

import gzip
import json
import logging
import time
from datetime import date
from pathlib import Path
from typing import Any

from placerec.demo.landing import (
    MAX_LINES_PER_FILE,
    TRUTH_DIR,
    clear_day,
    day_dir,
    dumps,
    part_name,
    write_json,
    write_lines,
)

log = logging.getLogger(__name__)

SOURCE = "nsmc"
CATEGORY = "영화"
COLUMNS = ("review_id", "author", "movie_id", "rating", "date", "review")


def load_titles(synopses: Path | None) -> dict[str, str]:
    """Movie id → Korean title from a synopses file, for entries that say which movie they are.

    Accepts a list of objects with ``movie_id`` (or ``id``) and ``title_kr`` (or ``title``), or an
    object keyed by movie id whose values are titles or such objects. The shipped
    ``synopses.json`` has titles but no movie ids, so it yields no names.
    """
    if synopses is None or not Path(synopses).is_file():
        return {}
    data = json.loads(Path(synopses).read_text(encoding="utf-8"))
    titles: dict[str, str] = {}
    entries: list[tuple[Any, Any]]
    if isinstance(data, dict):
        entries = list(data.items())
    else:
        entries = [(e.get("movie_id", e.get("id")), e) for e in data if isinstance(e, dict)]
    for key, value in entries:
        title = (
            value
            if isinstance(value, str)
            else (value.get("title_kr") or value.get("title"))
            if isinstance(value, dict)
            else None
        )
        if key is not None and isinstance(title, str) and title.strip():
            titles[str(key).strip()] = title.strip()
    return titles


def _rating(raw: str) -> int | str:
    try:
        return int(raw)
    except ValueError:
        return raw  # broken as delivered: the validator quarantines it


class _MonthWriter:
    """Buffers one month of lines per feed and writes them as part files."""

    def __init__(self, out: Path, max_lines: int) -> None:
        self.out = out
        self.max_lines = max_lines
        self.month: str | None = None
        self.buf: dict[str, list[str]] = {"events": [], "reviews": [], "places": []}
        self.next_part: dict[tuple[str, str], int] = {}
        self.cleared: set[str] = set()
        self.files = 0
        self.bytes = 0
        self.months: list[str] = []

    def switch(self, month: str) -> None:
        if month != self.month:
            self.flush()
            self.month = month
            if month not in self.cleared:
                dt = date.fromisoformat(month)
                for feed in self.buf:
                    clear_day(self.out, feed, dt)
                self.cleared.add(month)
                self.months.append(month)

    def add(self, feed: str, obj: dict[str, Any]) -> None:
        self.buf[feed].append(dumps(obj))

    def flush(self) -> None:
        if self.month is None:
            return
        dt = date.fromisoformat(self.month)
        for feed, lines in self.buf.items():
            for a in range(0, len(lines), self.max_lines):
                part = self.next_part.get((feed, self.month), 0)
                self.next_part[(feed, self.month)] = part + 1
                self.bytes += write_lines(
                    day_dir(self.out, feed, dt) / part_name(feed, part), lines[a : a + self.max_lines]
                )
                self.files += 1
            lines.clear()


def import_nsmc_landing(
    tsv_gz: Path,
    out: Path,
    synopses: Path | None = None,
    limit: int | None = None,
    *,
    max_lines_per_file: int = MAX_LINES_PER_FILE,
) -> dict[str, Any]:
    """Write ``tsv_gz`` (NSMC ``reviews.tsv.gz``) as landing files under ``out``; return counts.

    ``out`` is its own landing root (e.g. ``<home>/landing-nsmc``); the month folders written are
    replaced, others are left alone. ``limit`` stops after that many data rows. Also writes
    ``<out>/_truth/manifest.json`` with the counts.
    """
    started = time.monotonic()
    out = Path(out)
    titles = load_titles(synopses)
    writer = _MonthWriter(out, max_lines_per_file)
    seen_movies: set[str] = set()
    counts = {
        "rows": 0,
        "reviews": 0,
        "events": 0,
        "places": 0,
        "named_places": 0,
        "empty_text": 0,
        "bad_rating": 0,
        "bad_rows": 0,
    }
    with gzip.open(tsv_gz, "rt", encoding="utf-8", newline="\n") as f:
        header = f.readline().rstrip("\n").split("\t")
        if tuple(header) != COLUMNS:
            raise ValueError(f"unexpected header {header}, expected {list(COLUMNS)}")
        for line in f:
            if limit is not None and counts["rows"] >= limit:
                break
            cols = line.rstrip("\n").split("\t")
            counts["rows"] += 1
            if len(cols) != len(COLUMNS):
                counts["bad_rows"] += 1  # cannot be mapped at all (never happens in the shipped file)
                continue
            rid, author, movie, rating_raw, day, text = cols
            month = day[:8] + "01"
            writer.switch(month)
            ts = f"{day}T12:00:00+09:00"
            place_id = f"nsmc-m{movie}"
            user_id = f"nsmc-u{author}"
            rating = _rating(rating_raw)
            if not isinstance(rating, int) or not 1 <= rating <= 10:
                counts["bad_rating"] += 1
            if not text.strip():
                counts["empty_text"] += 1
            if movie not in seen_movies:
                seen_movies.add(movie)
                name = titles.get(movie)
                counts["named_places"] += name is not None
                writer.add(
                    "places",
                    {
                        "place_id": place_id,
                        "name": name or f"영화 {movie}",
                        "category": CATEGORY,
                        "district": None,
                        "lat": None,
                        "lon": None,
                        "address": None,
                        "updated_ts": ts,
                        "source": SOURCE,
                    },
                )
                counts["places"] += 1
            review_id = f"nsmc-r{rid}"
            writer.add(
                "reviews",
                {
                    "review_id": review_id,
                    "place_id": place_id,
                    "user_id": user_id,
                    "rating": rating,
                    "text": text,
                    "ts": ts,
                    "source": SOURCE,
                },
            )
            writer.add(
                "events",
                {
                    "event_id": f"nsmc-e{rid}",
                    "event_type": "review",
                    "ts": ts,
                    "user_id": user_id,
                    "session_id": None,
                    "place_id": place_id,
                    "query": None,
                    "review_id": review_id,
                    "rating": rating,
                    "position": None,
                    "device": None,
                    "source": SOURCE,
                },
            )
            counts["reviews"] += 1
            counts["events"] += 1
    writer.flush()
    result: dict[str, Any] = {
        "source": SOURCE,
        "input": str(tsv_gz),
        "limit": limit,
        "interval": "calendar month: dt=YYYY-MM-01 holds [YYYY-MM-01, next month 01) in +09:00 noon timestamps",
        "months": len(writer.months),
        "first_month": writer.months[0] if writer.months else None,
        "last_month": writer.months[-1] if writer.months else None,
        "files": writer.files,
        "bytes": writer.bytes,
        **counts,
    }
    write_json(out / TRUTH_DIR / "manifest.json", result)
    result["seconds"] = round(time.monotonic() - started, 2)
    log.info(
        "nsmc: %d rows → %d months, %d files in %.1f s",
        counts["rows"],
        len(writer.months),
        writer.files,
        result["seconds"],
    )
    return result
