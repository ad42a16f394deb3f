"""Ingestion through the real Airflow: a backfill run by the scheduler, rerun, same rows.

A day of demo data goes to its own landing root (passed as the DAG's `landing` Param) and to a
day no demo uses, so this test and `make demo` never touch each other's rows. The first backfill
also covers the next day, which has no landing files: it runs, and announces nothing downstream.
The rerun backfills the data day again.
"""

from __future__ import annotations

import dataclasses
import json
from collections import Counter
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from placerec.airflow_api import AirflowApi
from placerec.catalog import get_catalog
from placerec.demo import generate
from placerec.demo.generator import FEED_REASONS
from placerec.settings import Settings, get_settings

from ..conftest import SERVICE_HOME, after_demo

pytestmark = pytest.mark.integration

FIRST, DAYS = after_demo(0), 1
LAST = FIRST + timedelta(days=DAYS - 1)
EMPTY = LAST + timedelta(days=1)  # backfilled too: no landing files that day
LO = datetime(FIRST.year, FIRST.month, FIRST.day, tzinfo=timezone.utc)
HI = LO + timedelta(days=DAYS)
OWNED = f"job = 'ingest_events' and interval_start >= '{LO.isoformat()}' and interval_start < '{HI.isoformat()}'"


@pytest.fixture(scope="module")
def service_settings() -> Settings:
    # the environment's ports and URLs (a CI run may move them), the services' state folder
    return dataclasses.replace(get_settings(), home=SERVICE_HOME)


@pytest.fixture(scope="module")
def api(service_settings: Settings) -> AirflowApi:
    api = AirflowApi(service_settings)
    api.wait_for_dag("ingest_events")
    return api


@pytest.fixture(scope="module")
def landing() -> tuple[Path, dict[str, Any], list[dict[str, Any]]]:
    root = SERVICE_HOME / "test-landing" / "ingest-airflow"
    # 20% malformed so that every kind of bad record occurs in every feed, even at this small size
    manifest = generate(root, FIRST, DAYS, seed=7, places=150, users=300, events=6000, malformed_rate=0.2)
    malformed = [json.loads(line) for line in (root / "_truth" / "malformed.jsonl").read_text().splitlines()]
    return root, manifest, malformed


def run_backfill(api: AirflowApi, root: Path, last: date = EMPTY, spark_conn_id: str = "") -> dict[str, str]:
    """Backfill FIRST..``last`` from ``root`` (through the Spark connection given, else the default); the
    run id of each day."""
    api.set_paused("enrich_reviews", True)  # only ingestion is under test here
    api.set_paused("ingest_events", False)
    for stale in api.active_backfills("ingest_events"):
        api.wait_backfill(stale["id"], "ingest_events", FIRST, EMPTY, timeout=1800)
    conf = {"landing": str(root), "spark_conn_id": spark_conn_id}
    backfill_id = api.create_backfill("ingest_events", FIRST, last, reprocess="completed", conf=conf)
    runs = api.wait_backfill(backfill_id, "ingest_events", FIRST, last, timeout=1800)
    days = [FIRST + timedelta(days=i) for i in range((last - FIRST).days + 1)]
    assert [r.logical_date[:10] for r in runs] == [d.isoformat() for d in days]
    assert {r.run_type for r in runs} == {"backfill"}
    return {r.logical_date[:10]: r.run_id for r in runs}


def table_state(settings: Settings) -> dict[str, Any]:
    catalog = get_catalog(settings)
    window = f"event_ts >= '{LO.isoformat()}' and event_ts < '{HI.isoformat()}'"
    events = (
        catalog.load_table("raw.events").scan(row_filter=window, selected_fields=("event_id", "event_ts")).to_arrow()
    )
    ids = events.column("event_id").to_pylist()
    reviews = (
        catalog.load_table("raw.reviews")
        .scan(
            row_filter=f"review_ts >= '{LO.isoformat()}' and review_ts < '{HI.isoformat()}'",
            selected_fields=("review_id",),
        )
        .to_arrow()
    )
    quarantine = (
        catalog.load_table("raw.quarantine")
        .scan(
            row_filter=OWNED,
            selected_fields=("feed", "source_file", "source_line", "reason"),
        )
        .to_arrow()
        .to_pylist()
    )
    metrics = (
        catalog.load_table("ops.task_metrics")
        .scan(
            row_filter=OWNED,
        )
        .to_arrow()
        .to_pylist()
    )
    per_day = Counter(ts.astimezone(timezone.utc).date().isoformat() for ts in events.column("event_ts").to_pylist())
    return {
        "event_ids": sorted(ids),
        "events_per_day": dict(per_day),
        "reviews": sorted(reviews.column("review_id").to_pylist()),
        "quarantine": sorted((q["source_file"], q["source_line"], q["reason"]) for q in quarantine),
        "metrics": {m["interval_start"].date().isoformat(): m for m in metrics},
    }


@pytest.fixture(scope="module")
def first_run(api: AirflowApi, landing, service_settings: Settings) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    began = datetime.now(timezone.utc)
    runs = run_backfill(api, landing[0])
    return table_state(service_settings) | {"runs": runs, "began": began}


def test_backfill_ingests_every_valid_record(first_run: dict[str, Any], landing) -> None:  # type: ignore[no-untyped-def]
    _, manifest, _ = landing
    expected_events = {day: c["valid"] for day, c in manifest["counts"]["events"].items()}
    assert first_run["events_per_day"] == expected_events
    assert len(first_run["event_ids"]) == len(set(first_run["event_ids"])), "duplicate event ids ingested"
    assert len(first_run["reviews"]) == sum(c["valid"] for c in manifest["counts"]["reviews"].values())


def test_every_malformed_record_is_quarantined_with_its_reason(first_run: dict[str, Any], landing) -> None:  # type: ignore[no-untyped-def]
    malformed = landing[2]
    expected = sorted((m["file"], m["line"], m["reason"]) for m in malformed)
    assert first_run["quarantine"] == expected
    kinds = {(m["feed"], m["reason"]) for m in malformed}
    assert kinds == {(feed, reason) for feed, reasons in FEED_REASONS.items() for reason in reasons}


def test_task_metrics_account_for_every_line(first_run: dict[str, Any], landing) -> None:  # type: ignore[no-untyped-def]
    _, manifest, _ = landing
    for day in (FIRST, LAST):
        m = first_run["metrics"][day.isoformat()]
        lines = sum(manifest["counts"][feed][day.isoformat()]["lines"] for feed in ("events", "reviews", "places"))
        assert m["rows_read"] == lines
        assert m["rows_written"] + m["rows_quarantined"] == lines
        assert m["run_id"].startswith("backfill__") and m["seconds"] > 0


def test_rerun_gives_identical_rows(
    first_run: dict[str, Any], api: AirflowApi, landing, service_settings: Settings
) -> None:  # type: ignore[no-untyped-def]
    run_backfill(api, landing[0], last=LAST)
    second = table_state(service_settings)
    for day in (FIRST, LAST):  # the rerun really ran: its metrics are newer
        assert second["metrics"][day.isoformat()]["recorded_at"] > first_run["metrics"][day.isoformat()]["recorded_at"]
    for key in ("event_ids", "events_per_day", "reviews", "quarantine"):
        assert second[key] == first_run[key], key


def test_only_days_with_landing_files_announce_the_raw_assets(first_run: dict[str, Any], api: AirflowApi) -> None:
    runs = first_run["runs"]
    states = {
        day: {t["task_id"]: t["state"] for t in api.task_instances("ingest_events", run_id)}
        for day, run_id in runs.items()
    }
    for day in (FIRST, LAST):
        assert states[day.isoformat()]["announce_raw"] == "success", states
    # the empty day ran (and was recorded as skipped) but announced nothing: no enrich run for it
    assert states[EMPTY.isoformat()]["ingest_landing_files"] == "success", states
    assert states[EMPTY.isoformat()]["announce_raw"] == "skipped", states
    # backfill run ids repeat across backfills of a long-lived instance: only this backfill's events count
    announced = {
        e.get("source_run_id")
        for e in api.asset_events("iceberg://placerec/raw/events")
        if datetime.fromisoformat(e["timestamp"]) >= first_run["began"]
    }
    assert {runs[FIRST.isoformat()], runs[LAST.isoformat()]} <= announced
    assert runs[EMPTY.isoformat()] not in announced


def test_the_spark_submit_road_is_one_param_away(first_run: dict[str, Any], api: AirflowApi) -> None:
    """`spark_conn_id=spark_default`: the same task through spark-submit (local master), not the Connect server."""
    logical = datetime(EMPTY.year, EMPTY.month, EMPTY.day, tzinfo=timezone.utc) + timedelta(days=1)
    api.delete_runs_at("ingest_events", logical)  # this test's own day, from an earlier session
    run_id = api.trigger(
        "ingest_events",
        {"spark_conn_id": "spark_default"},
        logical_date=logical,
        run_id=f"spark_submit_road__{datetime.now(timezone.utc):%Y%m%dT%H%M%S}",
    )
    assert api.wait_run("ingest_events", run_id, timeout=900) == "success"
    log = api.task_log("ingest_events", run_id, "ingest_landing_files")
    assert "Spark-Submit cmd: spark-submit --master local[*]" in log and "through Spark Connect" not in log, log[-3000:]
    assert f'"interval_start": "{EMPTY.isoformat()}T00:00:00+00:00"' in log  # the job ran, on the empty day
    states = {t["task_id"]: t["state"] for t in api.task_instances("ingest_events", run_id)}
    assert states == {
        "ingest_landing_files": "success",
        "check_data_quality": "success",
        "if_ingested": "success",
        "announce_raw": "skipped",
    }


def test_placerec_airflow_runs_the_cli_against_the_local_instance() -> None:
    import os
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-m", "placerec.cli", "airflow", "dags", "list", "-o", "json"],
        env={**os.environ, "PLACEREC_HOME": str(SERVICE_HOME)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    listed = json.loads(done.stdout[done.stdout.index("[{") :])  # Airflow prints warnings first
    assert {"dag_id": "ingest_events"}.items() <= next(d for d in listed if d["dag_id"] == "ingest_events").items()


def _crash_and_restart_airflow() -> None:
    """Airflow as a crash leaves it: its whole process tree (scheduler, API server, DAG processor,
    triggerer, task runners and their tasks) SIGKILLed at once; then the real `placerec dev up` again."""
    import os
    import signal
    import subprocess
    import sys

    from placerec.dev.process import read_pid_file, stop

    rec = read_pid_file(SERVICE_HOME / "run" / "airflow.pid")
    assert rec is not None and stop(rec, first_signal=signal.SIGKILL, timeout=10)
    placerec = str(Path(sys.executable).with_name("placerec"))
    env = {**os.environ, "PLACEREC_HOME": str(SERVICE_HOME)}
    subprocess.run([placerec, "dev", "up", "--only", "airflow"], env=env, check=True, timeout=600)


@pytest.mark.reliability
def test_airflow_crashed_in_the_middle_of_a_backfill(
    first_run: dict[str, Any], api: AirflowApi, landing, service_settings: Settings, record_property
) -> None:  # type: ignore[no-untyped-def]
    """Airflow killed (SIGKILL, every process) while a backfill's ingest task runs, then started again:
    the backfill finishes, no day's tries ever overlapped, and the tables equal a clean run's."""
    import itertools
    import time

    api.set_paused("enrich_reviews", True)
    api.set_paused("ingest_events", False)
    for stale in api.active_backfills("ingest_events"):
        api.wait_backfill(stale["id"], "ingest_events", FIRST, EMPTY, timeout=1800)
    conf = {"landing": str(landing[0]), "spark_conn_id": ""}
    backfill_id = api.create_backfill("ingest_events", FIRST, LAST, reprocess="completed", conf=conf)
    deadline = time.monotonic() + 600
    while True:  # until the day's ingest task runs
        runs = [r for r in api.runs("ingest_events", FIRST, LAST) if r.run_type == "backfill"]
        tis = [t for r in runs for t in api.task_instances("ingest_events", r.run_id)]
        if any(t["task_id"] == "ingest_landing_files" and t["state"] == "running" for t in tis):
            break
        assert time.monotonic() < deadline, "the backfill's ingest task never started"
        time.sleep(0.5)
    time.sleep(2.0)  # inside the job: its Spark session is open
    _crash_and_restart_airflow()
    runs = api.wait_backfill(backfill_id, "ingest_events", FIRST, LAST, timeout=1200)
    assert {r.state for r in runs} == {"success"}, runs
    after = table_state(service_settings)
    for key in ("event_ids", "events_per_day", "reviews", "quarantine"):
        assert after[key] == first_run[key], key
    for run in runs:  # a day's tries never overlapped in time: the killed one ended before the next began
        tries = api.task_tries("ingest_events", run.run_id, "ingest_landing_files")
        assert len(tries) >= 2, tries
        spans = [(t["start_date"], t["end_date"]) for t in tries if t["start_date"]]
        assert all(a[1] is not None and a[1] <= b[0] for a, b in itertools.pairwise(spans)), spans
    record_property("faults_injected", 1)
    record_property("faults_survived", 1)
    record_property("rows_lost", len(set(first_run["event_ids"]) - set(after["event_ids"])))
