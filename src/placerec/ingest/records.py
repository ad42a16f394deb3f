"""Record-level validation of landing lines: pure Python, one line in, one verdict out.

Reason codes are a contract shared with the demo generator and shown to people in quarantine:
``invalid_json``, ``missing_field``, ``invalid_type``, ``unknown_event_type``, ``invalid_timestamp``,
``invalid_value``, ``oversized_text``, ``oversized_record``, ``out_of_interval``, ``duplicate_id``.
Checks run in that order, so a record with several problems gets the first one.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

EVENT_TYPES = frozenset({"impression", "view", "click", "save", "navigate", "visit", "review", "search"})
FEEDS = ("events", "reviews", "places")
ID_FIELD = {"events": "event_id", "reviews": "review_id", "places": "place_id"}

MAX_TEXT_CHARS = 2000
MAX_QUERY_CHARS = 200
MAX_RECORD_BYTES = 256 * 1024
QUARANTINE_RECORD_CHARS = 4096
# A review's rating scale depends on where it comes from (Naver movie reviews use 1..10).
RATING_RANGE = {"nsmc": (1, 10)}
DEFAULT_RATING_RANGE = (1, 5)

EVENT_COLUMNS = (
    "event_id",
    "event_type",
    "event_ts",
    "user_id",
    "session_id",
    "place_id",
    "query",
    "review_id",
    "rating",
    "position",
    "device",
    "source",
)
REVIEW_COLUMNS = ("review_id", "place_id", "user_id", "rating", "text", "review_ts", "content_hash", "source")
PLACE_COLUMNS = ("place_id", "name", "category", "district", "lat", "lon", "address", "updated_ts", "source")
COLUMNS = {"events": EVENT_COLUMNS, "reviews": REVIEW_COLUMNS, "places": PLACE_COLUMNS}


class Reject(Exception):
    """A record fails validation: ``reason`` is a code from the module docstring."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class Verdict:
    """The outcome for one line: ``values`` (feed columns) when valid, else reason and detail."""

    values: tuple[Any, ...] | None
    reason: str | None = None
    detail: str | None = None


def _present(obj: dict[str, Any], name: str) -> Any:
    value = obj.get(name)
    if value is None or (isinstance(value, str) and not value.strip()):
        raise Reject("missing_field", name)
    return value


def _str(obj: dict[str, Any], name: str, required: bool = True) -> str | None:
    if not required and obj.get(name) is None:
        return None
    value = _present(obj, name)
    if not isinstance(value, str):
        raise Reject("invalid_type", f"{name}: expected string, got {type(value).__name__}")
    return value


def _int(obj: dict[str, Any], name: str, required: bool = True) -> int | None:
    if not required and obj.get(name) is None:
        return None
    value = _present(obj, name)
    if isinstance(value, bool) or not isinstance(value, int):
        raise Reject("invalid_type", f"{name}: expected integer, got {type(value).__name__} {value!r:.40}")
    return value


def _float(obj: dict[str, Any], name: str) -> float | None:
    value = obj.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise Reject("invalid_type", f"{name}: expected number, got {type(value).__name__} {value!r:.40}")
    return float(value)


def _ts(obj: dict[str, Any], name: str, required: bool = True) -> datetime | None:
    raw = _str(obj, name, required)
    if raw is None:
        return None
    try:
        parsed = datetime.fromisoformat(raw)
    except ValueError:
        raise Reject("invalid_timestamp", f"{name}: {raw!r:.60}") from None
    if parsed.tzinfo is None:
        raise Reject("invalid_timestamp", f"{name}: no UTC offset in {raw!r:.60}")
    return parsed.astimezone(timezone.utc)


def _in_range(name: str, value: float | None, low: float, high: float) -> None:
    if value is not None and not low <= value <= high:
        raise Reject("invalid_value", f"{name}={value} outside [{low}, {high}]")


def _rating(obj: dict[str, Any], source: str) -> int:
    rating = _int(obj, "rating")
    assert rating is not None
    low, high = RATING_RANGE.get(source, DEFAULT_RATING_RANGE)
    _in_range("rating", rating, low, high)
    return rating


def _interval(name: str, ts: datetime | None, start: datetime, end: datetime) -> None:
    if ts is not None and not start <= ts < end:
        raise Reject("out_of_interval", f"{name}={ts.isoformat()} not in [{start.isoformat()}, {end.isoformat()})")


def content_hash(text: str) -> str:
    """The key under which a text's LLM and embedding results are cached."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _event(obj: dict[str, Any], start: datetime, end: datetime) -> tuple[Any, ...]:
    event_id = _str(obj, "event_id")
    event_type = _str(obj, "event_type")
    _present(obj, "ts")  # absent ts is missing_field, checked before the type checks
    user_id = _str(obj, "user_id")
    source = _str(obj, "source", required=False) or "unknown"
    if event_type not in EVENT_TYPES:
        raise Reject("unknown_event_type", f"{event_type!r:.40}")
    place_id = _str(obj, "place_id", required=event_type != "search")
    query = _str(obj, "query", required=event_type == "search")
    review_id = _str(obj, "review_id", required=event_type == "review")
    rating = _rating(obj, source) if event_type == "review" else _int(obj, "rating", required=False)
    position = _int(obj, "position", required=False)
    session_id = _str(obj, "session_id", required=False)
    device = _str(obj, "device", required=False)
    ts = _ts(obj, "ts")
    _in_range("position", position, 1, 10_000)
    if query is not None and len(query) > MAX_QUERY_CHARS:
        raise Reject("oversized_text", f"query has {len(query)} chars > {MAX_QUERY_CHARS}")
    _interval("ts", ts, start, end)
    return (event_id, event_type, ts, user_id, session_id, place_id, query, review_id, rating, position, device, source)


def _review(obj: dict[str, Any], start: datetime, end: datetime) -> tuple[Any, ...]:
    review_id = _str(obj, "review_id")
    place_id = _str(obj, "place_id")
    user_id = _str(obj, "user_id")
    text = _str(obj, "text")
    source = _str(obj, "source", required=False) or "unknown"
    rating = _rating(obj, source)
    ts = _ts(obj, "ts")
    assert text is not None
    if len(text) > MAX_TEXT_CHARS:
        raise Reject("oversized_text", f"text has {len(text)} chars > {MAX_TEXT_CHARS}")
    _interval("ts", ts, start, end)
    return (review_id, place_id, user_id, rating, text, ts, content_hash(text), source)


def _place(obj: dict[str, Any], start: datetime, end: datetime) -> tuple[Any, ...]:
    place_id = _str(obj, "place_id")
    name = _str(obj, "name")
    category = _str(obj, "category", required=False)
    district = _str(obj, "district", required=False)
    address = _str(obj, "address", required=False)
    source = _str(obj, "source", required=False) or "unknown"
    lat, lon = _float(obj, "lat"), _float(obj, "lon")
    updated = _ts(obj, "updated_ts", required=False)
    _in_range("lat", lat, -90.0, 90.0)
    _in_range("lon", lon, -180.0, 180.0)
    assert name is not None
    if len(name) > MAX_QUERY_CHARS:
        raise Reject("oversized_text", f"name has {len(name)} chars > {MAX_QUERY_CHARS}")
    _interval("updated_ts", updated, start, end)
    return (place_id, name, category, district, lat, lon, address, updated, source)


_VALIDATORS = {"events": _event, "reviews": _review, "places": _place}


def validate_line(feed: str, line: str, start: datetime, end: datetime) -> Verdict:
    """Validate one landing line of ``feed`` for the interval ``[start, end)`` (aware datetimes)."""
    if len(line.encode("utf-8", "replace")) > MAX_RECORD_BYTES:
        return Verdict(None, "oversized_record", f"{len(line)} chars > {MAX_RECORD_BYTES} bytes")
    try:
        obj = json.loads(line)
    except ValueError as exc:
        return Verdict(None, "invalid_json", str(exc)[:200])
    if not isinstance(obj, dict):
        return Verdict(None, "invalid_json", f"expected an object, got {type(obj).__name__}")
    try:
        return Verdict(_VALIDATORS[feed](obj, start, end))
    except Reject as rej:
        return Verdict(None, rej.reason, rej.detail)
