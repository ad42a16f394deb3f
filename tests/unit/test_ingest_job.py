"""The ingest job on small hand-written landing folders, with local Spark and a private catalog."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import pytest

from placerec.catalog import get_catalog
from placerec.ingest.files import list_landing, stage
from placerec.ingest.job import _text_lines, mark_duplicates, read_lines, run_ingest

pytestmark = pytest.mark.unit

D1 = datetime(2026, 11, 1, tzinfo=timezone.utc)
D2 = datetime(2026, 11, 2, tzinfo=timezone.utc)
D3 = datetime(2026, 11, 3, tzinfo=timezone.utc)


def ev(eid: str, ts: str = "2026-11-01T10:00:00+09:00", **kw: object) -> str:
    rec = {"event_id": eid, "event_type": "click", "ts": ts, "user_id": "u1", "place_id": "p1", "source": "demo"}
    rec.update(kw)
    return json.dumps(rec, ensure_ascii=False)


def write(root: Path, feed: str, day: str, name: str, lines: list[str]) -> None:
    folder = root / feed / f"dt={day}"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text("".join(line + "\n" for line in lines), encoding="utf-8")


def rows(spark, table: str, where: str = "true") -> list[dict]:  # type: ignore[no-untyped-def]
    return [r.asDict() for r in spark.table(table).where(where).collect()]


def names(root: Path, feed: str, start: datetime, end: datetime) -> list[str]:
    return [f.path.name for f in list_landing(root, feed, start, end).read]


def staged(root: Path, feed: str, start: datetime, end: datetime) -> dict[str, str]:
    return stage(list(list_landing(root, feed, start, end).read), root.parent / f"staging-{root.name}")


def test_landing_files_only_for_interval_days(tmp_path: Path) -> None:
    write(tmp_path, "events", "2026-10-31", "a.jsonl", [ev("x")])
    write(tmp_path, "events", "2026-11-01", "b.jsonl", [ev("y")])
    write(tmp_path, "events", "2026-11-02", "c.jsonl", [ev("z")])
    assert names(tmp_path, "events", D1, D2) == ["b.jsonl"]
    assert names(tmp_path, "events", D1, D3) == ["b.jsonl", "c.jsonl"]
    assert names(tmp_path, "reviews", D1, D3) == []


def test_read_lines_numbers_lines_per_file(spark, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    write(tmp_path, "events", "2026-11-01", "a.jsonl", ["one", "", "three"])
    write(tmp_path, "events", "2026-11-01", "b.jsonl", ["uno"])
    got = sorted(tuple(r) for r in read_lines(spark, staged(tmp_path, "events", D1, D2)).collect())
    assert got == [
        ("events/dt=2026-11-01/a.jsonl", 1, "one"),
        ("events/dt=2026-11-01/a.jsonl", 2, ""),
        ("events/dt=2026-11-01/a.jsonl", 3, "three"),
        ("events/dt=2026-11-01/b.jsonl", 1, "uno"),
    ]


def test_a_file_split_between_tasks_keeps_its_line_numbers(spark, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    # lines of uneven length, so split boundaries fall inside lines
    lines = [f"line {i:04d} " + "x" * (i * 7 % 61) for i in range(1, 401)]
    write(tmp_path, "events", "2026-11-01", "big.jsonl", lines)
    write(tmp_path, "events", "2026-11-01", "small.jsonl", ["only"])
    files = staged(tmp_path, "events", D1, D2)
    small_splits = {"spark.sql.files.maxPartitionBytes": "2048", "spark.sql.files.openCostInBytes": "512"}
    before = {k: spark.conf.get(k, None) for k in small_splits}
    for k, v in small_splits.items():
        spark.conf.set(k, v)
    try:
        got = read_lines(spark, files).collect()
        splits = _text_lines(spark, files).select("_path", "_block").distinct().count()
    finally:
        for k, v in before.items():
            spark.conf.unset(k) if v is None else spark.conf.set(k, v)
    assert splits >= 5  # the big file (~17 KB) was read in 2 KB splits
    big = sorted((r["source_line"], r["value"]) for r in got if r["source_file"].endswith("big.jsonl"))
    assert big == list(enumerate(lines, start=1))
    assert [(r["source_line"], r["value"]) for r in got if r["source_file"].endswith("small.jsonl")] == [(1, "only")]


def test_duplicates_are_marked_after_the_first_by_file_and_line(spark) -> None:  # type: ignore[no-untyped-def]
    df = spark.createDataFrame(
        [("f2", 1, "a"), ("f1", 9, "a"), ("f1", 3, "b"), ("f1", 10, "a"), ("f3", 1, "c"), ("f3", 2, "d")],
        "source_file string, source_line long, event_id string",
    )
    # already in the table from other files (twice for c: the first place is named)
    previous = spark.createDataFrame(
        [("f0", 7, "c"), ("f0", 2, "c")], "source_file string, source_line long, event_id string"
    )
    got = sorted(tuple(r) for r in mark_duplicates(df, "event_id", previous).collect())
    assert got == [
        ("f1", 3, "b", None, None),
        ("f1", 9, "a", None, None),
        ("f1", 10, "a", "duplicate_id", "event_id a first seen at f1:9"),
        ("f2", 1, "a", "duplicate_id", "event_id a first seen at f1:9"),
        ("f3", 1, "c", "duplicate_id", "event_id c already ingested from f0:2"),
        ("f3", 2, "d", None, None),
    ]
    assert len(mark_duplicates(df, "event_id").where("reason IS NULL").collect()) == 4


def test_run_ingest_is_idempotent_and_loses_nothing(spark, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    land = tmp_path / "landing"
    write(
        land,
        "events",
        "2026-11-01",
        "events-0000.jsonl",
        [ev("a1"), ev("a2"), ev("a1"), '{"broken', ev("a3", event_type="buy")],
    )
    write(land, "events", "2026-11-01", "events-0001.jsonl", [ev("a4", ts="2026-10-30T10:00:00+09:00"), ev("a5")])
    review = {
        "review_id": "r1",
        "place_id": "p1",
        "user_id": "u1",
        "rating": 5,
        "text": "맛있어요",
        "ts": "2026-11-01T12:00:00+09:00",
    }
    write(land, "reviews", "2026-11-01", "reviews-0000.jsonl", [json.dumps(review, ensure_ascii=False)])
    place = {"place_id": "p1", "name": "카페", "updated_ts": "2026-11-01T00:00:00+00:00"}
    write(land, "places", "2026-11-01", "places-0000.jsonl", [json.dumps(place, ensure_ascii=False)])

    first = run_ingest(spark, land, D1, D2, run_id="r1")
    assert first.read == {"events": 7, "reviews": 1, "places": 1}
    assert first.written == {"events": 3, "reviews": 1, "places": 1}
    assert first.quarantined["events"] == {
        "duplicate_id": 1,
        "invalid_json": 1,
        "unknown_event_type": 1,
        "out_of_interval": 1,
    }
    # every line is accounted for: written or quarantined, once
    assert first.rows_written + first.rows_quarantined == first.rows_read

    def snapshot() -> tuple:  # type: ignore[type-arg]
        ev_ids = sorted(
            r["event_id"] for r in rows(spark, "raw.events", "event_ts >= '2026-11-01' AND event_ts < '2026-11-02'")
        )
        q = sorted(
            (r["source_file"], r["source_line"], r["reason"])
            for r in rows(spark, "raw.quarantine", "job = 'ingest_events' AND interval_start = '2026-11-01'")
        )
        return ev_ids, q, len(rows(spark, "raw.reviews")), len(rows(spark, "raw.places"))

    before = snapshot()
    assert before[0] == ["a1", "a2", "a5"]
    merged_tables = {t: get_catalog().load_table(t).current_snapshot() for t in ("raw.reviews", "raw.places")}
    second = run_ingest(spark, land, D1, D2, run_id="r2")
    # nothing new or changed: the MERGEd tables get no commit at all
    assert {t: get_catalog().load_table(t).current_snapshot() for t in merged_tables} == merged_tables
    assert second.merged["places"] == {"inserted": 0, "updated": 0, "unchanged": 1}
    assert second.as_dict()["quarantined"] == first.as_dict()["quarantined"]
    assert second.written == first.written
    assert snapshot() == before
    metrics = rows(spark, "ops.task_metrics", "job = 'ingest_events' AND interval_start = '2026-11-01'")
    assert len(metrics) == 1 and metrics[0]["run_id"] == "r2" and metrics[0]["rows_read"] == 9

    # A late file for the same day: its new ids are added, an id ingested from another file is a duplicate.
    write(land, "events", "2026-11-01", "events-0002.jsonl", [ev("a2"), ev("a6")])
    third = run_ingest(spark, land, D1, D2, run_id="r3")
    assert snapshot()[0] == ["a1", "a2", "a5", "a6"]
    assert third.quarantined["events"]["duplicate_id"] == 2

    # An interval with no landing files leaves earlier rows alone.
    (land / "events" / "dt=2026-11-01").rename(land / "moved")
    skipped = run_ingest(spark, land / "nothing-here", D1, D2)
    assert skipped.skipped and snapshot()[0] == ["a1", "a2", "a5", "a6"]


def test_places_merge_newest_wins(spark, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    land = tmp_path / "landing"
    old = {"place_id": "pm", "name": "옛 이름", "updated_ts": "2026-11-02T05:00:00+00:00"}
    new = {"place_id": "pm", "name": "새 이름", "updated_ts": "2026-11-03T05:00:00+00:00"}
    write(land, "places", "2026-11-03", "p.jsonl", [json.dumps(new, ensure_ascii=False)])
    write(land, "places", "2026-11-02", "p.jsonl", [json.dumps(old, ensure_ascii=False)])
    run_ingest(spark, land, D3, datetime(2026, 11, 4, tzinfo=timezone.utc))
    late = run_ingest(spark, land, D2, D3)  # an older interval replayed after a newer one
    assert late.merged["places"] == {"inserted": 0, "updated": 0, "unchanged": 1}
    assert [r["name"] for r in rows(spark, "raw.places", "place_id = 'pm'")] == ["새 이름"]
    # the catalogue as it stood on each day: a job built for a past day sees that day's name, however late
    from placerec.ops import PLACE_TABLES, places_as_of, snapshot_ids

    snaps = snapshot_ids(PLACE_TABLES)
    as_of = {
        day: [r["name"] for r in places_as_of(spark, snaps, day).where("place_id = 'pm'").collect()]
        for day in (D2, D3, datetime(2026, 11, 4, tzinfo=timezone.utc))
    }
    assert as_of == {D2: [], D3: ["옛 이름"], datetime(2026, 11, 4, tzinfo=timezone.utc): ["새 이름"]}
    # a rerun of a day rewrites that day's versions, no more
    run_ingest(spark, land, D2, D3)
    assert sorted(r["seen_at"].date().isoformat() for r in rows(spark, "raw.place_versions", "place_id = 'pm'")) == [
        "2026-11-02",
        "2026-11-03",
    ]


def test_the_catalogue_of_a_past_day(spark) -> None:  # type: ignore[no-untyped-def]
    """Newest as raw.places' MERGE decides it (greater updated_ts, a missing one losing, a tie to the later
    delivery); only deliveries for intervals before the day's end; places without versions as they are."""
    from placerec.ops import catalogue_at

    cols = "place_id string, name string, updated_ts timestamp, source_file string, source_line long"
    current = spark.createDataFrame(
        [("legacy", "오래된 곳", None, "f", 1), ("a", "A3", None, "f", 1), ("b", "B1", None, "f", 1)], cols
    )

    def t(day: int, hour: int = 0) -> datetime:
        return datetime(2026, 11, day, hour, tzinfo=timezone.utc)

    versions = spark.createDataFrame(
        [
            ("a", "A1", t(1, 5), "f1", 1, t(1)),
            ("a", "A2", t(2, 5), "f2", 1, t(2)),
            ("a", "A-late-old", t(1, 1), "f3", 1, t(3)),  # delivered late, older: loses
            ("a", "A3", None, "f4", 1, t(4)),  # no updated_ts: loses to any that has one
            ("b", "B0", None, "f1", 1, t(1)),
            ("b", "B1", None, "f2", 1, t(2)),  # both without updated_ts: the later delivery
            ("c", "C1", t(3, 5), "f3", 1, t(3)),  # first delivered on day 3
        ],
        cols + ", seen_at timestamp",
    )

    def names(end: datetime) -> dict[str, str]:
        return {r["place_id"]: r["name"] for r in catalogue_at(current, versions, end).collect()}

    assert names(t(1)) == {"legacy": "오래된 곳"}
    assert names(t(2)) == {"legacy": "오래된 곳", "a": "A1", "b": "B0"}
    assert names(t(3)) == {"legacy": "오래된 곳", "a": "A2", "b": "B1"}
    assert names(t(5)) == {"legacy": "오래된 곳", "a": "A2", "b": "B1", "c": "C1"}
    assert catalogue_at(current, versions, t(5)).columns == current.columns
