"""Record-level validation of landing lines: pure Python, any bytes in, one verdict out, never an exception.

Reason codes are a contract shared with the demo generator and shown to people in quarantine, checked
in this order (a record with several problems gets the first one):

- ``oversized_record``: the line is longer than :data:`MAX_RECORD_BYTES`;
- ``invalid_encoding``: not UTF-8 (decoded strictly, never replaced), or a string field holding a lone
  UTF-16 surrogate (``"\\ud800"``), which no table can store;
- ``invalid_json``: not one JSON object (syntax, NaN/Infinity, nesting deeper than :data:`MAX_DEPTH`,
  an integer literal beyond Python's 4300-digit limit);
- ``duplicate_key``: the same key twice in one object (ambiguous: parsers keep either);
- ``missing_field``, ``invalid_type``, ``unknown_event_type``, ``invalid_timestamp`` (no offset, no such
  date, or outside the years the tables hold), ``invalid_value`` (outside the field's range: ratings,
  positions, 32-bit integers, coordinates, non-finite numbers), ``oversized_text`` (a string field longer
  than its bound), ``out_of_interval``.

A leading UTF-8 byte-order mark is stripped. The job adds ``duplicate_id`` and ``superseded`` (an older
version of a place), and :data:`FILE_SKIP_REASONS` for files it does not read. ``unprocessable`` is the
last resort of :func:`validate_line` for an exception nothing above foresaw: the fuzz tests hold it at 0.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

EVENT_TYPES = frozenset({"impression", "view", "click", "save", "navigate", "visit", "review", "search"})
FEEDS = ("events", "reviews", "places")
ID_FIELD = {"events": "event_id", "reviews": "review_id", "places": "place_id"}

MAX_TEXT_CHARS = 2000
MAX_QUERY_CHARS = 200
MAX_ID_CHARS = 128  # ids and the short labels (event type, device, source, category, district, session)
MAX_ADDRESS_CHARS = 500
MAX_RECORD_BYTES = 256 * 1024
MAX_DEPTH = 32  # a record is flat: deeper nesting is refused before the parser recurses into it
QUARANTINE_RECORD_CHARS = 4096
INT32 = (-(2**31), 2**31 - 1)  # ratings and positions are 32-bit columns
BOM = b"\xef\xbb\xbf"
# Timestamps outside these years are refused: they cannot be shifted to UTC at the edges of
# Python's calendar (year 1 with +09:00, year 9999 with -05:00), and no event happened there.
TIMESTAMP_YEARS = (1900, 2999)
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
    "request_id",
    "model_version",
    "variant",
)
"""The last three tie a served list's events to the answer that showed it (``placerec serve``): the
request, the model version and the A/B variant; empty for events from elsewhere."""
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


def _str(obj: dict[str, Any], name: str, required: bool = True, limit: int = MAX_ID_CHARS) -> str | None:
    if not required and obj.get(name) is None:
        return None
    value = _present(obj, name)
    if not isinstance(value, str):
        raise Reject("invalid_type", f"{name}: expected string, got {type(value).__name__}")
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise Reject("invalid_encoding", f"{name}: lone surrogate U+{ord(value[exc.start]):04X}") from None
    if len(value) > limit:
        raise Reject("oversized_text", f"{name} has {len(value)} chars > {limit}")
    return value


def _int(obj: dict[str, Any], name: str, required: bool = True) -> int | None:
    if not required and obj.get(name) is None:
        return None
    value = _present(obj, name)
    if isinstance(value, bool) or not isinstance(value, int):
        raise Reject("invalid_type", f"{name}: expected integer, got {type(value).__name__} {_short(value)}")
    if not INT32[0] <= value <= INT32[1]:
        raise Reject("invalid_value", f"{name}={_short(value)} outside the 32-bit range")
    return value


def _float(obj: dict[str, Any], name: str) -> float | None:
    value = obj.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise Reject("invalid_type", f"{name}: expected number, got {type(value).__name__} {_short(value)}")
    try:
        number = float(value)
    except OverflowError:  # an integer literal of hundreds of digits
        raise Reject("invalid_value", f"{name}={_short(value)} is too large for a float") from None
    if not math.isfinite(number):  # 1e999 parses as infinity
        raise Reject("invalid_value", f"{name}={number} is not finite")
    return number


def _short(value: Any) -> str:
    """``repr`` cut to 40 chars, without ever building the repr of a huge integer (Python refuses it)."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 128:
        return f"<integer of {value.bit_length()} bits>"
    return f"{value!r:.40}"


def _ts(obj: dict[str, Any], name: str, required: bool = True) -> datetime | None:
    raw = _str(obj, name, required, limit=64)
    if raw is None:
        return None
    try:
        parsed = datetime.fromisoformat(raw)
    except ValueError:
        raise Reject("invalid_timestamp", f"{name}: {raw!r:.60}") from None
    if parsed.tzinfo is None:
        raise Reject("invalid_timestamp", f"{name}: no UTC offset in {raw!r:.60}")
    if not TIMESTAMP_YEARS[0] <= parsed.year <= TIMESTAMP_YEARS[1]:
        raise Reject("invalid_timestamp", f"{name}: year {parsed.year} outside {TIMESTAMP_YEARS}")
    return parsed.astimezone(timezone.utc)


def _in_range(name: str, value: float | None, low: float, high: float) -> None:
    if value is not None and not low <= value <= high:
        raise Reject("invalid_value", f"{name}={value} outside [{low}, {high}]")


def _rating(obj: dict[str, Any], source: str, required: bool = True) -> int | None:
    rating = _int(obj, "rating", required)
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
    query = _str(obj, "query", required=event_type == "search", limit=MAX_QUERY_CHARS)
    review_id = _str(obj, "review_id", required=event_type == "review")
    # a rating is checked wherever it appears: the same scale as the source's reviews
    rating = _rating(obj, source, required=event_type == "review")
    position = _int(obj, "position", required=False)
    session_id = _str(obj, "session_id", required=False)
    device = _str(obj, "device", required=False)
    served = tuple(_str(obj, name, required=False) for name in ("request_id", "model_version", "variant"))
    ts = _ts(obj, "ts")
    _in_range("position", position, 1, 10_000)
    _interval("ts", ts, start, end)
    return (
        event_id,
        event_type,
        ts,
        user_id,
        session_id,
        place_id,
        query,
        review_id,
        rating,
        position,
        device,
        source,
        *served,
    )


def _review(obj: dict[str, Any], start: datetime, end: datetime) -> tuple[Any, ...]:
    review_id = _str(obj, "review_id")
    place_id = _str(obj, "place_id")
    user_id = _str(obj, "user_id")
    text = _str(obj, "text", limit=MAX_TEXT_CHARS)
    source = _str(obj, "source", required=False) or "unknown"
    rating = _rating(obj, source)
    ts = _ts(obj, "ts")
    assert text is not None
    _interval("ts", ts, start, end)
    return (review_id, place_id, user_id, rating, text, ts, content_hash(text), source)


def _place(obj: dict[str, Any], start: datetime, end: datetime) -> tuple[Any, ...]:
    place_id = _str(obj, "place_id")
    name = _str(obj, "name", limit=MAX_QUERY_CHARS)
    category = _str(obj, "category", required=False)
    district = _str(obj, "district", required=False)
    address = _str(obj, "address", required=False, limit=MAX_ADDRESS_CHARS)
    source = _str(obj, "source", required=False) or "unknown"
    lat, lon = _float(obj, "lat"), _float(obj, "lon")
    updated = _ts(obj, "updated_ts", required=False)
    _in_range("lat", lat, -90.0, 90.0)
    _in_range("lon", lon, -180.0, 180.0)
    _interval("updated_ts", updated, start, end)
    return (place_id, name, category, district, lat, lon, address, updated, source)


_VALIDATORS = {"events": _event, "reviews": _review, "places": _place}


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        again = next(k for k, _ in pairs if k in seen or seen.add(k))  # type: ignore[func-returns-value]
        raise Reject("duplicate_key", f"key {again!r:.40} appears more than once")
    return obj


def _constant(name: str) -> Any:
    raise Reject("invalid_json", f"{name} is not JSON")


def _too_deep(text: str) -> bool:
    """Whether brackets nest deeper than :data:`MAX_DEPTH` (counted outside strings)."""
    if text.count("{") + text.count("[") <= MAX_DEPTH:
        return False
    depth, in_string, escaped = 0, False, False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "{[":
            depth += 1
            if depth > MAX_DEPTH:
                return True
        elif ch in "}]":
            depth -= 1
    return False


def _parse(line: bytes) -> dict[str, Any]:
    try:
        text = line.removeprefix(BOM).decode("utf-8")
    except UnicodeDecodeError as exc:
        bad = line[exc.start : exc.start + 4]
        raise Reject("invalid_encoding", f"{exc.reason} at byte {exc.start}: {bad!r}") from None
    if _too_deep(text):
        raise Reject("invalid_json", f"nested deeper than {MAX_DEPTH} levels")
    try:
        obj = json.loads(text, object_pairs_hook=_object, parse_constant=_constant)
    except ValueError as exc:  # JSONDecodeError, and integers beyond the digit limit
        raise Reject("invalid_json", str(exc)[:200]) from None
    if not isinstance(obj, dict):
        raise Reject("invalid_json", f"expected an object, got {type(obj).__name__}")
    return obj


def validate_line(feed: str, line: bytes, start: datetime, end: datetime) -> Verdict:
    """Validate one landing line (its bytes, without the line break) of ``feed`` for ``[start, end)``
    (aware datetimes). Total: whatever the bytes, the answer is a row or a reason."""
    if len(line) > MAX_RECORD_BYTES:
        return Verdict(None, "oversized_record", f"{len(line)} bytes > {MAX_RECORD_BYTES}")
    try:
        return Verdict(_VALIDATORS[feed](_parse(line), start, end))
    except Reject as rej:
        return Verdict(None, rej.reason, rej.detail)
    except Exception as exc:  # a case nothing above foresaw: quarantined, never a failed interval
        return Verdict(None, "unprocessable", f"{type(exc).__name__}: {str(exc)[:160]}")


def record_text(line: bytes) -> str:
    """What quarantine shows of a line: its first :data:`QUARANTINE_RECORD_CHARS` characters, with any
    byte that is not UTF-8 (and any lone surrogate) written as a backslash escape, so nothing is replaced."""
    return line[: QUARANTINE_RECORD_CHARS * 4].decode("utf-8", "backslashreplace")[:QUARANTINE_RECORD_CHARS]
