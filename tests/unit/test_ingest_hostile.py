"""A landing folder nobody here wrote: every kind of hostile file and line in one day, through the real job.

The day completes; every line of every file read is landed or quarantined with its reason (counted per
file and line from the bytes on disk, not from the job); every entry not read has a quarantine row.
"""

from __future__ import annotations

import json
import os
from datetime import datetime, timezone
from pathlib import Path

import pytest

from placerec.ingest.files import list_landing
from placerec.ingest.job import run_ingest
from placerec.ingest.records import QUARANTINE_RECORD_CHARS

pytestmark = [pytest.mark.unit, pytest.mark.reliability]

D1 = datetime(2026, 11, 5, tzinfo=timezone.utc)
D2 = datetime(2026, 11, 6, tzinfo=timezone.utc)
DAY = "dt=2026-11-05"


def ev(eid: str, **kw: object) -> bytes:
    rec = {"event_id": eid, "event_type": "click", "ts": "2026-11-05T10:00:00+09:00", "user_id": "u1", "place_id": "p1"}
    return json.dumps({**rec, **kw}, ensure_ascii=False).encode()


def review(rid: str, text: str) -> bytes:
    rec = {"review_id": rid, "place_id": "p1", "user_id": "u1", "rating": 4, "ts": "2026-11-05T12:00:00+09:00"}
    return json.dumps({**rec, "text": text}, ensure_ascii=False).encode()


def place(name: str, updated: str) -> bytes:
    return json.dumps({"place_id": "hp", "name": name, "updated_ts": updated}, ensure_ascii=False).encode()


def put(root: Path, feed: str, name: str, lines: list[bytes], end: bytes = b"\n") -> Path:
    folder = root / feed / DAY
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_bytes(b"\n".join(lines) + end)
    return path


def hostile_day(root: Path, outside: Path) -> dict[str, str]:
    """Writes the day; returns the expected rule for every entry not read (relative name → reason)."""
    put(root, "events", "plain.jsonl", [ev("e1"), ev("e2")])
    put(root, "events", "a,b.jsonl", [ev("e3")])
    put(root, "events", "time 10:00.jsonl", [ev("e4")])
    put(root, "events", "로그 파일.jsonl", [ev("e5")], end=b"")  # no final newline
    put(root, "events", "line\nbreak.jsonl", [ev("e6")])
    put(
        root,
        "events",
        "x-hostile.jsonl",
        [
            b"\xef\xbb\xbf" + ev("bom"),  # a BOM before the first line: stripped, the line lands
            b"[" * 20_000 + b"]" * 20_000,
            b'{"a": ' * 30_000,
            ev("big-lat", lat=10**300),  # an unused field: a huge integer must not matter
            ev("ts-year-1", ts="0001-01-01T00:00:00+09:00"),
            ev("ts-year-9999", ts="9999-12-31T23:59:59-05:00"),
            ev("pos-64bit", position=2**40),
            ev("rating-on-click", rating=2**33),
            ev("e1"),  # a duplicate of plain.jsonl:1
            b"",
            b"\x00\x01\x02 binary \xff\xfe",
            b'{"event_id": "dup-key", "event_id": "other", "event_type": "click"}',
            ev("surrogate-user").replace(b'"u1"', b'"\\ud800"'),  # a lone surrogate escape
            b"\r",
        ],
    )
    huge = b'{"event_id": "huge", "note": "' + b"y" * 3_000_000 + b'"}'
    put(root, "events", "long-lines.jsonl", [ev("ll1"), huge, ev("ll3"), b"z" * 300_000], end=b"")
    put(
        root,
        "reviews",
        "reviews.jsonl",
        [
            review("r-ok", "분위기가 좋아요"),
            review("r-latin1", "caf\u00e9").replace("café".encode(), b"caf\xe9"),  # not UTF-8: never replaced
            review("r-surrogate", "좋아요 X").replace(b"X", b"\\ud83d"),
            review("r-ok2", "맛있어요"),
        ],
    )
    put(
        root,
        "places",
        "places.jsonl",
        [
            place("새 이름", "2026-11-05T09:00:00+00:00"),
            place("옛 이름", "2026-11-05T01:00:00+00:00"),  # an older version later in the file
            json.dumps({"place_id": "hp2", "name": "x", "lat": "1" + "0" * 400}).encode(),
            b'{"place_id": "hp3", "name": "y", "lat": 1' + b"0" * 400 + b"}",
        ],
    )
    # entries that are not read, each with its rule
    put(root, "events", ".in-flight.jsonl", [ev("hidden")])
    put(root, "events", "_SUCCESS.jsonl", [ev("underscore")])
    put(root, "events", "shipping.jsonl.tmp", [ev("tmp")])
    put(root, "events", "notes.csv", [b"a,b"])
    (root / "events" / DAY / "empty.jsonl").write_bytes(b"")
    (root / "events" / DAY / "nested").mkdir()
    put(root, "events", "nested/inner.jsonl", [ev("inner")])
    os.mkfifo(root / "events" / DAY / "pipe.jsonl")
    outside.write_bytes(ev("outside") + b"\n")
    (root / "events" / DAY / "outside.jsonl").symlink_to(outside)
    (root / "events" / DAY / "again.jsonl").symlink_to(root / "events" / DAY / "plain.jsonl")
    os.link(root / "events" / DAY / "plain.jsonl", root / "events" / DAY / "zz-hardlink.jsonl")
    e = f"events/{DAY}/"
    return {
        e + ".in-flight.jsonl": "temp_file",
        e + "_SUCCESS.jsonl": "temp_file",
        e + "shipping.jsonl.tmp": "temp_file",
        e + "notes.csv": "wrong_extension",
        e + "empty.jsonl": "empty_file",
        e + "nested": "not_a_regular_file",
        e + "pipe.jsonl": "not_a_regular_file",
        e + "outside.jsonl": "symlink",
        e + "again.jsonl": "symlink",
        e + "zz-hardlink.jsonl": "same_file",
    }


def physical_lines(path: Path) -> int:
    data = path.read_bytes()
    return data.count(b"\n") + (0 if data.endswith(b"\n") else 1)


def test_a_hostile_day_completes_and_accounts_for_every_line(spark, tmp_path: Path, record_property) -> None:  # type: ignore[no-untyped-def]
    root = tmp_path / "landing"
    skipped = hostile_day(root, tmp_path / "outside.jsonl")
    result = run_ingest(spark, root, D1, D2, run_id="hostile")

    where = "interval_start = '2026-11-05' AND job = 'ingest_events'"
    quarantine = [r.asDict() for r in spark.table("raw.quarantine").where(where).collect()]
    file_rows = {r["source_file"]: r["reason"] for r in quarantine if r["source_line"] == 0}
    assert file_rows == skipped
    lines = {(r["source_file"], r["source_line"]): r["reason"] for r in quarantine if r["source_line"] > 0}
    landed: dict[tuple[str, int], str] = {}
    for table, key in (("raw.events", "event_id"), ("raw.reviews", "review_id"), ("raw.places", "place_id")):
        for r in spark.table(table).where("source_file LIKE '%/dt=2026-11-05/%'").collect():
            assert (r["source_file"], r["source_line"]) not in landed, "a line landed twice"
            landed[(r["source_file"], r["source_line"])] = r[key]
    assert not set(landed) & set(lines), "a line both landed and quarantined"

    read = [f for feed in ("events", "reviews", "places") for f in list_landing(root, feed, D1, D2).read]
    for f in read:  # landed + quarantined = the lines on disk, each line once
        expected = {(f.relative, n) for n in range(1, physical_lines(f.path) + 1)}
        got = {k for k in (*landed, *lines) if k[0] == f.relative}
        assert got == expected, f.relative
    assert sum(physical_lines(f.path) for f in read) == result.rows_read
    on_disk = sum(physical_lines(f.path) for f in read)
    record_property("hostile_lines", on_disk)
    record_property("hostile_files", len(read) + len(skipped))
    record_property("rows_lost", on_disk - len(set(landed) | set(lines)))

    h = f"events/{DAY}/x-hostile.jsonl"
    assert landed[(h, 1)] == "bom" and landed[(h, 4)] == "big-lat"
    assert [lines[(h, n)] for n in range(2, 15) if n != 4] == [
        "invalid_json",
        "invalid_json",
        "invalid_timestamp",
        "invalid_timestamp",
        "invalid_value",
        "invalid_value",
        "duplicate_id",
        "invalid_json",
        "invalid_encoding",
        "duplicate_key",
        "invalid_encoding",
        "invalid_json",
    ]
    # lines too long to read whole: staged as placeholders, quarantined with their size and first bytes
    ll = f"events/{DAY}/long-lines.jsonl"
    assert (landed[(ll, 1)], lines[(ll, 2)], landed[(ll, 3)], lines[(ll, 4)]) == (
        "ll1",
        "oversized_record",
        "ll3",
        "oversized_record",
    )
    shown = {q["source_line"]: q for q in quarantine if q["source_file"] == ll}
    assert shown[2]["detail"] == "3000032 bytes > 262144" and shown[4]["detail"] == "300000 bytes > 262144"
    assert shown[2]["record"] == ('{"event_id": "huge", "note": "' + "y" * 5000)[:QUARANTINE_RECORD_CHARS]
    odd = {"a,b.jsonl": "e3", "time 10:00.jsonl": "e4", "로그 파일.jsonl": "e5", "line\nbreak.jsonl": "e6"}
    for name, eid in odd.items():
        assert landed[(f"events/{DAY}/{name}", 1)] == eid
    r = f"reviews/{DAY}/reviews.jsonl"
    assert (lines[(r, 2)], lines[(r, 3)]) == ("invalid_encoding", "invalid_encoding")
    latin1 = next(q for q in quarantine if (q["source_file"], q["source_line"]) == (r, 2))
    assert "caf\\xe9" in latin1["record"]  # shown escaped, not replaced
    assert [row["name"] for row in spark.table("raw.places").where("place_id = 'hp'").collect()] == ["새 이름"]
    p = f"places/{DAY}/places.jsonl"
    assert (lines[(p, 2)], lines[(p, 3)], lines[(p, 4)]) == ("superseded", "invalid_type", "invalid_value")
    assert result.files_skipped["events"] == {
        "temp_file": 3,
        "wrong_extension": 1,
        "empty_file": 1,
        "not_a_regular_file": 2,
        "symlink": 2,
        "same_file": 1,
    }
