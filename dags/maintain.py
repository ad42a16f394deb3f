"""
### maintain

Weekly upkeep, for the week that ended (Sundays 03:00 UTC, clear of the daily ingest at midnight):

1. **maintain_tables**: for every Iceberg table, one after another, Iceberg's Spark procedures
   `rewrite_data_files` (a partition's small files, one per daily write or metrics row, merged when
   it has at least `PLACEREC_MAINTAIN_MIN_INPUT_FILES`), `expire_snapshots` (older than
   `PLACEREC_MAINTAIN_SNAPSHOT_MAX_AGE_DAYS` before the week's end, beyond the newest
   `PLACEREC_MAINTAIN_SNAPSHOT_RETAIN_LAST`; the last ingest commit is always kept) and
   `remove_orphan_files` (unreferenced files older than `PLACEREC_MAINTAIN_ORPHAN_MIN_AGE_DAYS`).
   Data files and snapshots before and after, orphans removed and seconds per table go to
   `ops.task_metrics`; a table without snapshots is skipped with that reason.
2. **prune_index_versions**: OpenSearch index versions beyond the newest
   `PLACEREC_INDEX_KEEP_VERSIONS` (the live one counted) that no alias points at are deleted and
   marked `deleted` in `ops.index_versions`. Independent of the first task: a cluster that is down
   does not hold back the tables.

Weekly rather than daily: compaction rewrites data (the costly part, on a small machine) and a week
of snapshots is cheap metadata; the cut-offs, not the frequency, decide what time travel reaches.
A rerun for the same week changes nothing more. Params: `dry_run` only counts what would change;
`tables` limits the first task to some tables.

Same code as `placerec maintain` / `placerec prune-index-versions --start … --end …` at a shell.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import DAG
from airflow.timetables.interval import CronDataIntervalTimetable

from placerec.orchestration import (
    DEFAULT_ARGS,
    flag_param,
    optional_arg,
    optional_text_param,
    spark_conn_param,
    spark_job,
)

WEEKLY = CronDataIntervalTimetable("0 3 * * 0", timezone="UTC")
INTERVAL = [
    "--start",
    "{{ data_interval_start.isoformat() }}",
    "--end",
    "{{ data_interval_end.isoformat() }}",
    "--run-id",
    "{{ run_id }}",
    "--dry-run",
    "{{ params.dry_run }}",
]

with DAG(
    dag_id="maintain",
    description="Iceberg compaction, snapshot expiry and orphan removal per table; old index versions deleted",
    doc_md=__doc__,
    schedule=WEEKLY,
    start_date=pendulum.datetime(2026, 10, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    tags=["placerec", "maintain"],
    params={
        "dry_run": flag_param(
            "Only count what would change: files to compact, snapshots, orphans, index versions.", "Dry run"
        ),
        "tables": optional_text_param(
            "Only these Iceberg tables, comma-separated namespace.name (empty: every table).", "Tables", "Scope"
        ),
        "spark_conn_id": spark_conn_param(),
    },
):
    spark_job(
        task_id="maintain_tables",
        job="maintain",
        args=[*INTERVAL, "--table", optional_arg("tables")],
    )
    spark_job(
        task_id="prune_index_versions",
        job="prune_index_versions",
        args=INTERVAL,
        connections=("opensearch",),
    )
