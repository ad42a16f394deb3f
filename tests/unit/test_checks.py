"""Data-quality checks on real pyiceberg tables of a private catalog, expectations worked out by hand.

Rows are recorded in 2033 (far after any other test's) and row-count / quarantine cases use job names
of their own, so other tests' ``ops.task_metrics`` rows never become their history.
"""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from placerec.checks import (
    EVENTS,
    CheckResult,
    DataQualityError,
    MetricsRow,
    check_quarantine_rate,
    check_row_count,
    check_schema,
    run_checks,
    top_reasons,
)
from placerec.ops import TaskMetrics, record_metrics
from placerec.settings import Settings, get_settings

pytestmark = pytest.mark.unit

UTC = timezone.utc
DAY = timedelta(days=1)


def day(month: int, d: int) -> datetime:
    return datetime(2033, month, d, tzinfo=UTC)


@pytest.fixture
def settings(unit_home) -> Settings:  # type: ignore[no-untyped-def]
    from placerec.catalog import ensure_tables_once

    ensure_tables_once(get_settings())
    # the defaults, spelled out: the expectations below are computed from these figures
    return replace(
        get_settings(),
        check_history_intervals=7,
        check_min_history=3,
        check_min_row_ratio=0.5,
        check_max_row_ratio=2.0,
        check_max_quarantine_rate=0.2,
        check_max_null_rate=0.0,
    )


def record(job: str, start: datetime, written: int = 0, end: datetime | None = None, **kw: Any) -> None:
    record_metrics(TaskMetrics(job, start, end or start + DAY, f"run-{start:%m%d}", rows_written=written, **kw))


def record_raw(job: str, start: datetime, **row: Any) -> None:
    """An ``ops.task_metrics`` row as a foreign or broken writer might leave it (nulls, details not JSON)."""
    import pyarrow as pa

    from placerec.catalog import get_catalog

    table = get_catalog().load_table("ops.task_metrics")
    full = {name: None for name in table.schema().column_names}
    full.update(job=job, interval_start=start, interval_end=start + DAY, run_id="raw", **row)
    table.append(pa.Table.from_pylist([full], schema=table.schema().as_arrow()))


def by_name(results: list[CheckResult]) -> dict[str, CheckResult]:
    return {r.name: r for r in results}


def failure(job: str, start: datetime, settings: Settings, end: datetime | None = None) -> DataQualityError:
    with pytest.raises(DataQualityError) as caught:
        run_checks(job, start, end or start + DAY, settings=settings)
    return caught.value


# row count against the trailing median


def test_rows_written_are_judged_per_day_against_the_median_of_the_last_seven_intervals(settings) -> None:  # type: ignore[no-untyped-def]
    job = "check_rows_median"
    record(job, day(1, 1), 9999)  # the eighth newest: outside the window
    record(job, day(1, 2), 200, end=day(1, 4))  # two days: 100 a day
    record(job, day(1, 4), 80)
    record(job, day(1, 5), 0, details={"skipped": "no landing files"})  # not history
    for d, written in ((6, 120), (7, 90), (8, 110), (9, 300), (10, 100)):
        record(job, day(1, d), written)
    # a day a: 100, 80, 120, 90, 110, 300, 100 -> sorted 80 90 100 100 110 120 300: median 100
    record(job, day(1, 11), 40)
    error = failure(job, day(1, 11), settings)
    assert str(error) == (
        "data-quality checks failed for check_rows_median [2033-01-11T00:00:00+00:00, 2033-01-12T00:00:00+00:00): "
        "1 of 2 failed\n"
        "- row_count: 40 rows written (40 a day) are 0.40 of the trailing median 100 a day over 7 intervals, "
        "below the minimum 0.5 "
        '{"history": 7, "history_ignored": 0, "max_ratio": 2.0, "median_per_day": 100.0, "min_history": 3, '
        '"min_ratio": 0.5, "ratio": 0.4, "rows_per_day": 40.0, "rows_written": 40}'
    )
    assert [r.ok for r in error.results] == [False, True]

    record(job, day(1, 11), 250)
    assert by_name(failure(job, day(1, 11), settings).results)["row_count"].message == (
        "250 rows written (250 a day) are 2.50 of the trailing median 100 a day over 7 intervals, above the maximum 2"
    )

    record(job, day(1, 11), 360, end=day(1, 13))  # two days: 180 a day
    results = by_name(run_checks(job, day(1, 11), day(1, 13), settings=settings))
    assert results["row_count"].ok
    assert results["row_count"].message == (
        "360 rows written (180 a day) are 1.80 of the trailing median 100 a day over 7 intervals, within [0.5, 2]"
    )


def test_a_day_is_judged_only_by_days_of_the_same_landing_root(settings) -> None:  # type: ignore[no-untyped-def]
    job = "check_rows_source"
    for d in (1, 2, 3, 4):
        record(job, day(2, d), 30000, details={"landing": "/data/landing"})
    record(job, day(2, 5), 1500, details={"landing": "/tmp/one-off"})  # a small root of its own
    results = by_name(run_checks(job, day(2, 5), day(2, 6), settings=settings))
    assert results["row_count"].ok
    assert results["row_count"].message == "not enough history: 0 previous interval(s), 3 needed"
    record(job, day(2, 6), 1500, details={"landing": "/data/landing"})  # the main feed collapsing
    assert (
        "0.05 of the trailing median 30000" in by_name(failure(job, day(2, 6), settings).results)["row_count"].message
    )


def test_a_first_run_passes_saying_there_is_not_enough_history(settings) -> None:  # type: ignore[no-untyped-def]
    job = "check_first_run"
    record(job, day(2, 10), 5, rows_read=5)
    first = by_name(run_checks(job, day(2, 10), day(2, 11), settings=settings))
    assert first["row_count"].ok
    assert first["row_count"].message == "not enough history: 0 previous interval(s), 3 needed"
    record(job, day(2, 8), 1000)
    record(job, day(2, 9), 1000)
    second = by_name(run_checks(job, day(2, 10), day(2, 11), settings=settings))
    assert second["row_count"].message == "not enough history: 2 previous interval(s), 3 needed"
    assert second["row_count"].figures["history"] == 2
    assert second["quarantine_rate"].message == "0 of 5 rows read quarantined (0.0%), at most 20.0%"


def test_a_skipped_interval_passes_and_a_missing_one_fails(settings) -> None:  # type: ignore[no-untyped-def]
    job = "check_skipped"
    for d in (1, 2, 3):
        record(job, day(3, d), 100)
    record(job, day(3, 4), 0, details={"skipped": True})
    results = by_name(run_checks(job, day(3, 4), day(3, 5), settings=settings))
    assert results["row_count"].message == "interval skipped (no input): no rows to compare"
    assert results["quarantine_rate"].message == "interval skipped (no input): nothing read"

    error = failure("check_never_ran", day(3, 4), settings)
    assert str(error).splitlines() == [
        "data-quality checks failed for check_never_ran [2033-03-04T00:00:00+00:00, 2033-03-05T00:00:00+00:00): "
        "1 of 1 failed",
        "- metrics_row: no ops.task_metrics row of check_never_ran for the interval starting "
        "2033-03-04T00:00:00+00:00 {}",
    ]
    error = failure(job, day(3, 1), settings, end=day(3, 3))  # the row there covers one day, not two
    assert error.results[0].message == (
        "the ops.task_metrics row of check_skipped starting 2033-03-01T00:00:00+00:00 ends "
        "2033-03-02T00:00:00+00:00, not 2033-03-03T00:00:00+00:00"
    )


# quarantine rate


def test_a_quarantine_rate_over_the_threshold_fails_naming_the_top_reasons(settings) -> None:  # type: ignore[no-untyped-def]
    job = "check_quarantine"
    quarantined = {
        "events": {"invalid_json": 18, "missing_field": 7},
        "reviews": {"invalid_timestamp": 4, "out_of_interval": 1},
    }
    record(job, day(4, 1), 70, rows_read=100, rows_quarantined=30, details={"quarantined": quarantined})
    result = by_name(failure(job, day(4, 1), settings).results)["quarantine_rate"]
    assert not result.ok
    assert result.message == (
        "30 of 100 rows read quarantined (30.0%), over the maximum 20.0%; "
        "top reasons: events/invalid_json 18, events/missing_field 7, reviews/invalid_timestamp 4"
    )
    assert result.figures == {
        "rows_read": 100,
        "rows_quarantined": 30,
        "max_rate": 0.2,
        "rate": 0.3,
        "top_reasons": {"events/invalid_json": 18, "events/missing_field": 7, "reviews/invalid_timestamp": 4},
    }
    record(job, day(4, 1), 80, rows_read=100, rows_quarantined=20)  # exactly at the threshold: a pass
    assert by_name(run_checks(job, day(4, 1), day(4, 2), settings=settings))["quarantine_rate"].ok


# hostile metrics rows


def test_broken_metrics_rows_fail_or_pass_with_a_stated_reason(settings) -> None:  # type: ignore[no-untyped-def]
    job = "check_hostile"
    record_raw(job, day(5, 1), rows_written=100, details="{not json")  # history whose details cannot be read
    record_raw(job, day(5, 2), rows_written=None, details="{}")  # history without a figure
    record_raw(job, day(5, 3), rows_written=10, rows_read=None, rows_quarantined=5, details="[1, 2]")
    error = failure(job, day(5, 3), settings)
    results = by_name(error.results)
    assert results["row_count"].ok
    assert results["row_count"].message == "not enough history: 0 previous interval(s), 3 needed"
    assert results["row_count"].figures["history_ignored"] == 2
    assert results["quarantine_rate"].message == "5 rows quarantined but rows_read is None: inconsistent metrics"

    record_raw(job, day(5, 4), rows_written=0, rows_read=0, rows_quarantined=0, details="")
    results = by_name(run_checks(job, day(5, 4), day(5, 5), settings=settings))
    assert results["quarantine_rate"].message == "no rows read: no rate to judge"

    record_raw(job, day(5, 5), rows_written=None, rows_read=3, rows_quarantined=3, details="not json")
    results = by_name(failure(job, day(5, 5), settings).results)
    assert results["row_count"].message == "the metrics row has no usable rows_written (None) or interval"
    assert results["quarantine_rate"].message == (
        "3 of 3 rows read quarantined (100.0%), over the maximum 20.0%; top reasons: unknown (details unreadable)"
    )


def test_nan_and_odd_figures_never_raise() -> None:
    row = MetricsRow("j", day(6, 1), day(6, 2), rows_read=float("nan"), rows_written=float("nan"), rows_quarantined=0)
    assert check_quarantine_rate(row, max_rate=0.2).message == "no rows read: no rate to judge"
    counted = check_row_count(row, [], window=7, min_history=3, min_ratio=0.5, max_ratio=2.0)
    assert not counted.ok and counted.figures == {"rows_written": "nan"}
    backwards = MetricsRow("j", day(6, 2), day(6, 1), rows_written=5)  # an interval ending before it starts
    assert not check_row_count(backwards, [], window=7, min_history=3, min_ratio=0.5, max_ratio=2.0).ok
    history = [MetricsRow("j", day(6, d), day(6, d + 1), rows_written=0, details="{}") for d in (1, 2, 3)]
    zero = check_row_count(
        MetricsRow("j", day(6, 4), day(6, 5), rows_written=7),
        history,
        window=7,
        min_history=3,
        min_ratio=0.5,
        max_ratio=2.0,
    )
    assert zero.ok and zero.message == "the trailing median is 0 rows a day: no ratio to judge"
    details = {"quarantined": {"events": {"a": 2, "b": "x", "c": -1, "d": 2.5}, "reviews": "oops", "places": {"a": 1}}}
    assert top_reasons(details) == [("events/a", 2), ("places/a", 1)]
    assert top_reasons({"quarantined": [1]}) == [] and top_reasons(None) == []


# null rates of the interval's raw rows


def _event(n: int, event_type: str, **values: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "event_id": f"e{n}",
        "event_type": event_type,
        "event_ts": day(7, 1),
        "user_id": f"u{n}",
        "place_id": None if event_type == "search" else f"p{n}",
        "query": "카페" if event_type == "search" else None,
        "review_id": f"r{n}" if event_type == "review" else None,
        "rating": 4 if event_type == "review" else None,
        "source": "test",
        "source_file": "events/dt=2033-07-01/a.jsonl",
        "source_line": n,
    }
    return {**row, **values}


def test_null_rates_count_a_column_only_where_validation_requires_it() -> None:
    import pyarrow as pa

    from placerec.checks import check_null_rates
    from placerec.tables import table_def

    rows = [
        *(_event(n, "view") for n in range(4)),
        _event(4, "view", place_id=None),
        _event(5, "click", user_id="  "),  # blank is no value, as validation has it
        _event(6, "search"),
        _event(7, "search"),
        _event(8, "search", query=None),
        _event(9, "review", rating=None),
        _event(10, None, place_id=None),  # no type: its own rule counts it, no conditional one does
    ]
    table = pa.Table.from_pylist(rows, schema=table_def("raw.events").schema().as_arrow())
    result = check_null_rates(EVENTS, table, max_rate=0.0)
    assert not result.ok
    assert result.message == (
        "event_type null in 1 of 11 rows (9.1%); "
        "user_id null in 1 of 11 rows (9.1%); "
        "place_id (where event_type is not search) null in 1 of 7 rows (14.3%); "
        "query (where event_type is search) null in 1 of 3 rows (33.3%); "
        "rating (where event_type is review) null in 1 of 1 rows (100.0%), over the maximum 0.0%"
    )
    assert result.figures["over"]["place_id (where event_type is not search)"] == {
        "rows": 7,
        "nulls": 1,
        "rate": 0.1429,
    }
    assert check_null_rates(EVENTS, table, max_rate=0.5).message == (
        "rating (where event_type is review) null in 1 of 1 rows (100.0%), over the maximum 50.0%"
    )
    assert check_null_rates(EVENTS, table.slice(0, 4), max_rate=0.0).message == "4 rows, null rates at most 0.0%"


def _review(n: int, ts: datetime, **values: Any) -> dict[str, Any]:
    row = {
        "review_id": f"chk-{ts:%m%d}-{n}",
        "place_id": f"p{n}",
        "user_id": f"u{n}",
        "rating": 4,
        "text": "조용하고 커피가 맛있어요",
        "review_ts": ts,
        "content_hash": f"h{n}",
        "source": "test",
        "source_file": "reviews/dt=2033-07-01/a.jsonl",
        "source_line": n,
    }
    return {**row, **values}


def _append_committed(identifier: str, rows: list[dict[str, Any]], start: datetime) -> None:
    """Append to a raw table and commit the raw tables' state as an ingest run does (readers read as of
    the last ingest commit: :mod:`placerec.ingest.commit`), with pyiceberg here instead of Spark."""
    import pyarrow as pa

    from placerec.catalog import get_catalog
    from placerec.ingest.commit import COMMIT_PROPERTY, COMMIT_TABLE, GOVERNED, commit_option

    catalog = get_catalog()
    target = catalog.load_table(identifier)
    target.append(pa.Table.from_pylist(rows, schema=target.schema().as_arrow()))
    for governed in GOVERNED:
        table = catalog.load_table(governed)
        if table.current_snapshot() is None:
            table.append(table.schema().as_arrow().empty_table())
    (value,) = commit_option(start, start + DAY, "checks-test", catalog).values()
    quarantine = catalog.load_table(COMMIT_TABLE)
    quarantine.append(quarantine.schema().as_arrow().empty_table(), snapshot_properties={COMMIT_PROPERTY: value})


def test_nulls_in_the_interval_of_a_raw_table_fail_the_run(settings) -> None:  # type: ignore[no-untyped-def]
    # ingest_events has other tests' rows too: no history requirement is met, so row_count passes whatever they are
    settings = replace(settings, check_min_history=1_000_000)
    start = day(7, 1)
    ts = start + timedelta(hours=9)
    rows = [
        *(_review(n, ts) for n in range(5)),
        _review(5, ts, user_id=""),
        _review(6, ts, rating=None),
        _review(7, ts, text=None),
        _review(8, start + DAY, place_id=None),  # the next day: not this interval's
    ]
    _append_committed("raw.reviews", rows, start)
    record("ingest_events", start, 8, rows_read=8)
    error = failure("ingest_events", start, settings)
    failed = [r for r in error.results if not r.ok]
    assert [r.name for r in failed] == ["null_rates:raw.reviews"]
    assert failed[0].message == (
        "user_id null in 1 of 8 rows (12.5%); rating null in 1 of 8 rows (12.5%); "
        "text null in 1 of 8 rows (12.5%), over the maximum 0.0%"
    )
    assert failed[0].figures["over"]["text"] == {"rows": 8, "nulls": 1, "rate": 0.125}
    assert "- null_rates:raw.reviews: user_id null in 1 of 8 rows (12.5%);" in str(error)
    results = by_name(error.results)
    assert results["null_rates:raw.events"].message == "no rows in the interval"
    assert results["schema_drift:raw.reviews"].message == "schema as defined"
    assert [r.name for r in error.results] == [
        "row_count",
        "quarantine_rate",
        "null_rates:raw.events",
        "null_rates:raw.reviews",
        "schema_drift:raw.events",
        "schema_drift:raw.reviews",
        "schema_drift:raw.places",
        "schema_drift:raw.quarantine",
        "schema_drift:ops.task_metrics",
    ]
    lenient = replace(settings, check_max_null_rate=0.125)  # at the threshold: a pass
    passed = by_name(run_checks("ingest_events", start, start + DAY, settings=lenient))
    assert passed["null_rates:raw.reviews"].message == "8 rows, null rates at most 12.5%"


def test_null_check_of_an_interval_without_rows_passes_saying_so(settings) -> None:  # type: ignore[no-untyped-def]
    settings = replace(settings, check_min_history=1_000_000)  # other tests' ingest_events rows are no history here
    start = day(8, 1)
    record("ingest_events", start, 0, rows_read=0)
    results = by_name(run_checks("ingest_events", start, start + DAY, settings=settings))
    assert results["null_rates:raw.events"].ok
    assert results["null_rates:raw.events"].message == "no rows in the interval"
    assert results["row_count"].message.startswith("not enough history")


# schema drift


def test_schema_drift_names_missing_added_and_retyped_columns(unit_home) -> None:  # type: ignore[no-untyped-def]
    from pyiceberg.types import LongType, StringType

    from placerec.catalog import get_catalog
    from placerec.tables import table_def

    catalog = get_catalog()
    definition = replace(table_def(EVENTS.identifier), namespace="checks_drift")  # not the shared raw.events
    catalog.create_namespace_if_not_exists("checks_drift")
    table = catalog.create_table(definition.identifier, schema=definition.schema())
    assert check_schema(definition, table.schema()).message == "schema as defined"
    with table.update_schema() as update:
        update.delete_column("device")
        update.add_column("channel", StringType())
        update.update_column("rating", LongType())
    result = check_schema(definition, catalog.load_table(definition.identifier).schema())
    assert not result.ok
    assert (
        result.message == "drifted from placerec.tables: missing: device; added: channel; changed: rating: int -> long"
    )
    assert result.figures == {"missing": ["device"], "added": ["channel"], "changed": ["rating: int -> long"]}
    gone = check_schema(definition, None)
    assert not gone.ok and gone.message == "checks_drift.events does not exist in the catalog"


def test_results_are_json_for_the_task(settings) -> None:  # type: ignore[no-untyped-def]
    record("check_json", day(9, 1), 3, rows_read=3)
    results = run_checks("check_json", day(9, 1), day(9, 2), settings=settings)
    assert json.loads(json.dumps([r.as_dict() for r in results]))[0]["name"] == "row_count"
    with pytest.raises(ValueError, match="aware and non-empty"):
        run_checks("check_json", day(9, 2), day(9, 1), settings=settings)
