"""
### ingest_events

Daily ingestion of behaviour logs. For the run's data interval it reads the landing files that
log shippers delivered (`<landing>/{events,reviews,places}/dt=YYYY-MM-DD/*.jsonl`; temp files,
symlinks and other entries are skipped, each with its reason), validates every line (any bytes: a
row or a reason), de-duplicates by id (also against rows already ingested for the interval from
other files), and then

* overwrites the interval of `raw.events`,
* MERGEs `raw.reviews` (by review_id) and `raw.places` (by place_id, newest wins),
* replaces the interval's rows in `raw.quarantine` (file, line, reason, detail for every reject;
  every file not read) in the commit that makes the whole interval visible to readers at once,
* records rows read / written / quarantined, files skipped and seconds in `ops.task_metrics`,

then checks the interval (`check_data_quality`, same code as `placerec check --job ingest_events
--start <ds>`): rows written against the trailing median of earlier days, the quarantine rate, nulls
in required columns, the tables' schemas against their definitions. A failed check fails the run with
every failed check and its figures (and alerts, when `PLACEREC_ALERT_WEBHOOK_URL` is set), and nothing
is announced. The `raw.*` Assets (which start `enrich_reviews`) are announced only when it found
landing files.

Reruns and backfills of an interval give the same rows; a killed run leaves the previous state
visible and is completed by its retry. An interval with no landing files is left untouched.
Same code as `placerec ingest-events --start <ds>` at a shell.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import DAG

from placerec.orchestration import (
    DAILY,
    DEFAULT_ARGS,
    announce,
    check_data_quality,
    if_ingested,
    ingest_params,
    optional_arg,
    spark_job,
    table_asset,
)

with DAG(
    dag_id="ingest_events",
    description="Landing files of one day → raw.events / raw.reviews / raw.places (+ quarantine)",
    doc_md=__doc__,
    schedule=DAILY,
    start_date=pendulum.datetime(2026, 10, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    tags=["placerec", "ingest"],
    params=ingest_params(),
):
    ingest = spark_job(
        task_id="ingest_landing_files",
        job="ingest_events",
        args=[
            "--start",
            "{{ data_interval_start.isoformat() }}",
            "--end",
            "{{ data_interval_end.isoformat() }}",
            "--run-id",
            "{{ run_id }}",
            "--landing",
            optional_arg("landing"),
        ],
    )
    raw = [table_asset(f"raw.{t}") for t in ("events", "reviews", "places", "quarantine")]
    ingest >> check_data_quality("ingest_events") >> if_ingested() >> announce("announce_raw", raw)
