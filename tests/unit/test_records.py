"""Line validation: each reason code is produced for the problem it names, and valid lines pass."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest

from placerec.ingest.records import MAX_TEXT_CHARS, content_hash, validate_line

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


def check(feed: str, record: dict | str) -> tuple[str | None, str | None]:
    line = record if isinstance(record, str) else json.dumps(record, ensure_ascii=False)
    v = validate_line(feed, line, START, END)
    return v.reason, v.detail


def test_valid_event_is_normalised_to_utc() -> None:
    v = validate_line("events", json.dumps(EVENT), START, END)
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
    v = validate_line("reviews", json.dumps(REVIEW), START, END)
    assert v.values is not None and v.values[6] == content_hash("분위기가 좋아요")
    assert len(v.values[6]) == 64


def test_place_rules() -> None:
    assert check("places", PLACE)[0] is None
    assert check("places", {**PLACE, "lat": "37.5"})[0] == "invalid_type"
    assert check("places", {**PLACE, "lat": 137.5})[0] == "invalid_value"
    assert check("places", {**PLACE, "name": None})[0] == "missing_field"
    assert check("places", {k: v for k, v in PLACE.items() if k not in ("lat", "lon")})[0] is None
