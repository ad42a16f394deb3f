"""Line validation: each reason code is produced for the problem it names, and valid lines pass."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from placerec.ingest.records import (
    MAX_TEXT_CHARS,
    QUARANTINE_RECORD_CHARS,
    content_hash,
    record_text,
    validate_line,
)

pytestmark = pytest.mark.unit

START = datetime(2026, 11, 1, tzinfo=timezone.utc)
END = datetime(2026, 11, 2, tzinfo=timezone.utc)
EVENT = {
    "event_id": "e1",
    "event_type": "click",
    "ts": "2026-11-01T10:00:00+09:00",
    "user_id": "u1",
    "session_id": "s1",
    "place_id": "p1",
    "device": "ios",
    "source": "demo",
}
REVIEW = {
    "review_id": "r1",
    "place_id": "p1",
    "user_id": "u1",
    "rating": 4,
    "text": "분위기가 좋아요",
    "ts": "2026-11-01T12:00:00+09:00",
    "source": "demo",
}
PLACE = {"place_id": "p1", "name": "성수 카페", "category": "카페", "lat": 37.54, "lon": 127.05, "source": "demo"}


def check(feed: str, record: dict | str | bytes) -> tuple[str | None, str | None]:
    if isinstance(record, dict):
        record = json.dumps(record, ensure_ascii=False)
    line = record.encode("utf-8") if isinstance(record, str) else record
    v = validate_line(feed, line, START, END)
    return v.reason, v.detail


def test_valid_event_is_normalised_to_utc() -> None:
    v = validate_line("events", json.dumps(EVENT).encode(), START, END)
    assert v.reason is None and v.values is not None
    assert v.values[2] == datetime(2026, 11, 1, 1, 0, tzinfo=timezone.utc)


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"event_id": None}, "missing_field"),
        ({"user_id": ""}, "missing_field"),
        ({"place_id": None}, "missing_field"),
        ({"user_id": 42}, "invalid_type"),
        ({"ts": 1762000000}, "invalid_type"),
        ({"event_type": "purchase"}, "unknown_event_type"),
        ({"event_type": "CLICK "}, "unknown_event_type"),
        ({"ts": "2026-13-45T99:00"}, "invalid_timestamp"),
        ({"ts": "2026-11-01T10:00:00"}, "invalid_timestamp"),
        ({"ts": "2026-10-31T23:59:59+00:00"}, "out_of_interval"),
        ({"ts": "2026-11-02T09:00:00+09:00"}, "out_of_interval"),
        ({"position": -3}, "invalid_value"),
        ({"position": "3"}, "invalid_type"),
    ],
)
def test_event_rejections(change: dict, reason: str) -> None:
    assert check("events", {**EVENT, **change})[0] == reason


def test_interval_end_is_exclusive_and_start_inclusive() -> None:
    assert check("events", {**EVENT, "ts": "2026-11-01T00:00:00+00:00"})[0] is None
    assert check("events", {**EVENT, "ts": "2026-11-02T00:00:00+00:00"})[0] == "out_of_interval"


def test_search_needs_query_not_place_and_review_needs_rating() -> None:
    search = {**EVENT, "event_type": "search", "place_id": None, "query": "성수 조용한 카페"}
    assert check("events", search)[0] is None
    assert check("events", {**search, "query": None})[0] == "missing_field"
    review = {**EVENT, "event_type": "review", "review_id": "r1", "rating": 5}
    assert check("events", review)[0] is None
    assert check("events", {**review, "rating": None})[0] == "missing_field"
    assert check("events", {**review, "rating": 4.5})[0] == "invalid_type"
    assert check("events", {**review, "rating": True})[0] == "invalid_type"
    assert check("events", {**review, "rating": 7})[0] == "invalid_value"
    assert check("events", {**review, "rating": 7, "source": "nsmc"})[0] is None


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ('{"event_id": "e1", "event_type": "cli', "invalid_json"),
        ("[1, 2, 3]", "invalid_json"),
        ("", "invalid_json"),
        ('{"x": "' + "가" * 100_000 + '"}', "oversized_record"),
    ],
)
def test_unparseable_lines(line: str, reason: str) -> None:
    assert check("events", line)[0] == reason


def test_review_rules() -> None:
    assert check("reviews", REVIEW)[0] is None
    assert check("reviews", {**REVIEW, "text": "맛" * (MAX_TEXT_CHARS + 1)})[0] == "oversized_text"
    assert check("reviews", {**REVIEW, "rating": "five"})[0] == "invalid_type"
    assert check("reviews", {**REVIEW, "rating": 0})[0] == "invalid_value"
    assert check("reviews", {**REVIEW, "text": ""})[0] == "missing_field"
    v = validate_line("reviews", json.dumps(REVIEW).encode(), START, END)
    assert v.values is not None and v.values[6] == content_hash("분위기가 좋아요")
    assert len(v.values[6]) == 64


def test_place_rules() -> None:
    assert check("places", PLACE)[0] is None
    assert check("places", {**PLACE, "lat": "37.5"})[0] == "invalid_type"
    assert check("places", {**PLACE, "lat": 137.5})[0] == "invalid_value"
    assert check("places", {**PLACE, "name": None})[0] == "missing_field"
    assert check("places", {k: v for k, v in PLACE.items() if k not in ("lat", "lon")})[0] is None


def _json(record: dict) -> bytes:
    return json.dumps(record, ensure_ascii=False).encode("utf-8")


@pytest.mark.parametrize(
    ("feed", "line", "reason"),
    [
        # bytes that are not UTF-8 are refused, never replaced by U+FFFD
        ("reviews", _json(REVIEW).replace("분위기".encode(), b"\xba\xd0\xc0\xa7"), "invalid_encoding"),
        ("events", b"\xff\xfe" + json.dumps(EVENT).encode("utf-16-le"), "invalid_encoding"),
        # a lone surrogate escape is valid JSON but no UTF-8 string
        ("reviews", json.dumps({**REVIEW, "text": "좋아요 \ud83d"}).encode(), "invalid_encoding"),
        ("events", b"[" * 5000 + b"]" * 5000, "invalid_json"),
        ("events", b'{"a": ' * 40_000, "invalid_json"),  # 240 KB of nesting, under the size bound
        ("events", json.dumps({**EVENT, "position": float("nan")}).encode(), "invalid_json"),
        ("events", b'{"event_id": "e1", "event_id": "e2"}', "duplicate_key"),
        ("places", _json(PLACE).replace(b'"lat": 37.54', b'"lat": 3' + b"7" * 400), "invalid_value"),
        ("places", _json(PLACE).replace(b'"lat": 37.54', b'"lat": 1e999'), "invalid_value"),
        ("events", _json({**EVENT, "position": 10**40}), "invalid_value"),
        ("events", _json({**EVENT, "rating": 2**31}), "invalid_value"),
        ("events", _json({**EVENT, "rating": 9}), "invalid_value"),  # a rating on a click is checked too
        ("events", _json({**EVENT, "ts": "0001-01-01T00:00:00+09:00"}), "invalid_timestamp"),
        ("events", _json({**EVENT, "ts": "9999-12-31T23:59:59-05:00"}), "invalid_timestamp"),
        ("events", _json({**EVENT, "user_id": "u" * 129}), "oversized_text"),
        ("places", _json({**PLACE, "address": "서울 " * 300}), "oversized_text"),
    ],
)
def test_hostile_lines_get_a_reason(feed: str, line: bytes, reason: str) -> None:
    assert check(feed, line)[0] == reason


def test_a_leading_byte_order_mark_is_stripped() -> None:
    assert check("events", b"\xef\xbb\xbf" + _json(EVENT)) == (None, None)


def test_record_text_escapes_what_is_not_utf8() -> None:
    assert record_text("맛집 ".encode() + b"\xff\xfe") == "맛집 \\xff\\xfe"
    assert len(record_text(b"x" * 100_000)) == QUARANTINE_RECORD_CHARS


REASONS = {
    "oversized_record",
    "invalid_encoding",
    "invalid_json",
    "duplicate_key",
    "missing_field",
    "invalid_type",
    "unknown_event_type",
    "invalid_timestamp",
    "invalid_value",
    "oversized_text",
    "out_of_interval",
}
FEED_RECORDS = {"events": EVENT, "reviews": REVIEW, "places": PLACE}
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)


FUZZED = {"lines": 0}


def _verdict_is_total(feed: str, line: bytes) -> None:
    FUZZED["lines"] += 1
    v = validate_line(feed, line, START, END)
    assert (v.values is None) == (v.reason is not None)
    assert v.reason is None or v.reason in REASONS, (v.reason, v.detail)
    if v.values is not None:  # whatever passes can be stored: UTF-8 strings, 32-bit ints, finite floats
        for value in v.values:
            if isinstance(value, str):
                value.encode("utf-8")
            elif isinstance(value, int):
                assert -(2**31) <= value < 2**31
            elif isinstance(value, float):
                assert value == value and abs(value) != float("inf")


@pytest.mark.reliability
@settings(max_examples=1500, deadline=None)
@given(feed=st.sampled_from(sorted(FEED_RECORDS)), line=st.binary(max_size=512))
def test_any_bytes_get_a_verdict(feed: str, line: bytes) -> None:
    _verdict_is_total(feed, line)


@pytest.mark.reliability
@settings(max_examples=1500, deadline=None)
@given(
    feed=st.sampled_from(sorted(FEED_RECORDS)),
    field=st.sampled_from(sorted({k for r in FEED_RECORDS.values() for k in r} | {"rating", "position", "query"})),
    value=JSON_VALUES,
    cut=st.integers(min_value=0, max_value=400),
    flip=st.integers(min_value=0, max_value=255),
)
def test_mutated_valid_records_get_a_verdict(feed: str, field: str, value: object, cut: int, flip: int) -> None:
    line = json.dumps({**FEED_RECORDS[feed], field: value}, ensure_ascii=False, allow_nan=True).encode("utf-8")
    _verdict_is_total(feed, line)
    _verdict_is_total(feed, line[:cut])  # a truncated line
    if line:  # one byte changed
        i = cut % len(line)
        _verdict_is_total(feed, line[:i] + bytes([flip]) + line[i + 1 :])


@pytest.mark.reliability
def test_fuzz_figures(record_property: pytest.RecordProperty) -> None:
    """Reports how many lines the two properties above checked (run after them, in this module's order)."""
    assert FUZZED["lines"] >= 1500
    record_property("fuzz_lines", FUZZED["lines"])
    record_property("hostile_lines", 16)  # test_hostile_lines_get_a_reason
