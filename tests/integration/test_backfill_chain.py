"""A 2-day chain backfill (``placerec backfill --through enrich``) gives exactly the tables that 2 daily
runs give: each day ingested by its own ``ingest_events`` run and then enriched for that day, before
the next day is ingested, as the schedule orders them; then the same days backfilled (the same order:
a one-day ingest backfill, then the day's enrich run); every table the chain writes compared, row by
row, for those days.
(The daily enrich runs are triggered with the day's interval rather than by the Assets: an
asset-triggered run takes every event since the DAG's previous asset-triggered run, so events other
tests left would widen it; see the README.)

Through the real Airflow, Spark and Iceberg of ``placerec dev up`` (the service catalog), under days
no other test uses. ``train_hybrid`` and ``publish_index`` stay paused here (minutes per day each);
their runs are the same per-day triggers.
"""

from __future__ import annotations

import dataclasses
import shutil
from collections.abc import Iterator
from datetime import date, datetime, timedelta, timezone
from typing import Any

import pytest

from placerec.airflow_api import AirflowApi
from placerec.backfill import DAG_OF, STAGES, BackfillError, format_plan, plan_backfill, run_backfill
from placerec.catalog import get_catalog
from placerec.demo import generate
from placerec.settings import Settings, get_settings

from ..conftest import SERVICE_HOME, after_demo

pytestmark = pytest.mark.integration

FIRST, DAYS = after_demo(8), 2
LAST = FIRST + timedelta(days=DAYS - 1)
ENRICH_JOBS = ("extract_review_keywords", "build_place_profiles", "extract_search_interests")
# what differs between two runs of the same interval by design: when and by which run, and the
# snapshot ids a later run reads (the second pass finds the LLM cache warm, so calls differ too)
VOLATILE = {"source_snapshots", "run_id", "seconds", "recorded_at", "details", "calls", "cache_hits", "tokens", "cost"}


def _utc(d: date) -> datetime:
    return datetime(d.year, d.month, d.day, tzinfo=timezone.utc)


@pytest.fixture(scope="module")
def settings() -> Settings:
    return dataclasses.replace(get_settings(), home=SERVICE_HOME)


@pytest.fixture(scope="module")
def api(settings: Settings) -> Iterator[AirflowApi]:
    client = AirflowApi(settings)
    dags = [DAG_OF[s] for s in STAGES]
    for dag in dags:
        client.wait_for_dag(dag)
    before = {dag: client.is_paused(dag) for dag in dags}
    yield client
    for dag, paused in before.items():
        client.set_paused(dag, paused)


def _frozen(value: Any) -> Any:
    if isinstance(value, float):
        return round(value, 6)
    if isinstance(value, list):
        return tuple(_frozen(v) for v in value)
    if isinstance(value, dict):
        return tuple(sorted((k, _frozen(v)) for k, v in value.items()))
    return value


def _rows(settings: Settings, table: str, where: str) -> list[tuple[Any, ...]]:
    data = get_catalog(settings).load_table(table).scan(row_filter=where).to_arrow().to_pylist()
    return sorted(tuple((k, _frozen(v)) for k, v in sorted(r.items()) if k not in VOLATILE) for r in data)


def contents(settings: Settings) -> dict[str, list[tuple[Any, ...]]]:
    """Every table the chain writes through enrich, for the test's days."""
    lo, hi = _utc(FIRST).isoformat(), _utc(LAST + timedelta(days=1)).isoformat()
    span = lambda column: f"{column} >= '{lo}' and {column} < '{hi}'"  # noqa: E731
    days = ", ".join(f"'{(FIRST + timedelta(days=i)).isoformat()}'" for i in range(DAYS))
    jobs = ", ".join(f"'{j}'" for j in ("ingest_events", *ENRICH_JOBS))
    return {
        "raw.events": _rows(settings, "raw.events", span("event_ts")),
        "raw.reviews": _rows(settings, "raw.reviews", span("review_ts")),
        # the whole table: a MERGE by place_id where the newest updated_ts wins (the test's places share
        # ids with the demo's, so its own rows may all be superseded; the table must come out the same)
        "raw.places": _rows(settings, "raw.places", "true"),
        "raw.quarantine": _rows(settings, "raw.quarantine", f"job = 'ingest_events' and {span('interval_start')}"),
        "features.review_keywords": _rows(settings, "features.review_keywords", span("review_ts")),
        "features.place_profiles": _rows(settings, "features.place_profiles", f"built_for in ({days})"),
        "features.user_interests": _rows(settings, "features.user_interests", f"built_for in ({days})"),
        "ops.task_metrics": _rows(settings, "ops.task_metrics", f"job in ({jobs}) and {span('interval_start')}"),
    }


def _daily(api: AirflowApi, root: str) -> None:
    """Each day in turn, as the schedule orders them: its ingest run, then that day's enrich run (with
    the day as its interval, what its ingest run's Assets announce), before the next day is ingested."""
    api.set_paused("train_hybrid", True)
    api.set_paused("publish_index", True)
    for i in range(DAYS):
        day = FIRST + timedelta(days=i)
        api.set_paused("enrich_reviews", True)
        api.set_paused("ingest_events", False)
        api.delete_runs_at("ingest_events", _utc(day))
        # the run the schedule makes for day D: logical date D, interval [D, D+1)
        interval = (_utc(day), _utc(day + timedelta(days=1)))
        run_id = api.trigger("ingest_events", {"landing": root}, logical_date=_utc(day), data_interval=interval)
        assert api.wait_run("ingest_events", run_id, timeout=900) == "success"
        api.set_paused("ingest_events", True)
        api.set_paused("enrich_reviews", False)
        conf = {"start": day.isoformat(), "end": (day + timedelta(days=1)).isoformat()}
        run_id = api.trigger("enrich_reviews", conf)
        assert api.wait_run("enrich_reviews", run_id, timeout=900) == "success"


def test_a_two_day_backfill_gives_the_tables_of_two_daily_runs(api: AirflowApi, settings: Settings) -> None:
    root = SERVICE_HOME / "test-landing" / "chain"
    shutil.rmtree(root, ignore_errors=True)
    generate(root, FIRST, DAYS, seed=17, places=60, users=150, events=1500, malformed_rate=0.03)

    _daily(api, str(root))
    daily = contents(settings)
    assert all(daily[t] for t in daily), {t: len(rows) for t, rows in daily.items()}
    assert len({r for r in daily["features.place_profiles"]}) == len(daily["features.place_profiles"])

    too_early = plan_backfill(date(2026, 9, 30), LAST, "enrich", landing=str(root), settings=settings)
    with pytest.raises(BackfillError, match="ingest_events starts on 2026-10-01: no run of it can cover 2026-09-30"):
        run_backfill(too_early, settings=settings)
    plan = plan_backfill(FIRST, LAST, "enrich", landing=str(root), settings=settings)
    assert f"ingest_events -> enrich_reviews ({2 * DAYS} runs" in format_plan(plan)
    began = datetime.now(timezone.utc)
    results = run_backfill(plan, settings=settings, timeout=900)
    assert [(r.step.dag_id, r.step.first, r.state) for r in results] == [
        (dag, FIRST + timedelta(days=i), "success") for i in range(DAYS) for dag in ("ingest_events", "enrich_reviews")
    ]
    # the backfill rewrote every day (equal tables are not a backfill that did nothing)
    lo, hi = _utc(FIRST).isoformat(), _utc(LAST + timedelta(days=1)).isoformat()
    jobs = ", ".join(f"'{j}'" for j in ("ingest_events", *ENRICH_JOBS))
    recorded = (
        get_catalog(settings)
        .load_table("ops.task_metrics")
        .scan(row_filter=f"job in ({jobs}) and interval_start >= '{lo}' and interval_start < '{hi}'")
        .to_arrow()
        .to_pylist()
    )
    assert len(recorded) == 4 * DAYS and all(r["recorded_at"] > began for r in recorded), recorded
    # Airflow's backfill reprocesses the days' existing runs (same run ids, now of type backfill)
    backfill_runs = {r["dag_run_id"] for r in api.dag_runs("ingest_events", since=began)} | {
        r.run_id for r in api.runs("ingest_events", FIRST, LAST) if r.run_type == "backfill"
    }
    assert {r["run_id"] for r in recorded if r["job"] == "ingest_events"} <= backfill_runs
    backfilled = contents(settings)
    differ = {t: (len(daily[t]), len(backfilled[t])) for t in daily if backfilled[t] != daily[t]}
    assert not differ, f"tables the backfill wrote otherwise than the daily runs (rows daily, backfilled): {differ}"
    # the DAGs' pause states are as they were before the backfill
    assert api.is_paused("ingest_events") and not api.is_paused("enrich_reviews")
    assert api.is_paused("train_hybrid") and api.is_paused("publish_index")
