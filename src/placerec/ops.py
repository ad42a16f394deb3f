"""Writes every job shares: its quarantine rows, its ``ops.task_metrics`` row, interval filters, snapshot ids."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame, SparkSession


log = logging.getLogger(__name__)

_MERGE_ATTEMPTS = 5
_CONFLICT_MARKERS = ("CommitFailedException", "ValidationException", "conflicting files", "Missing required files")


def interval_filter(column: str, start: datetime, end: datetime) -> Column:
    """``start <= column < end`` for a timestamp column."""
    from pyspark.sql import functions as F

    return (F.col(column) >= F.lit(start).cast("timestamp")) & (F.col(column) < F.lit(end).cast("timestamp"))


def write_quarantine(rows: DataFrame, job: str, start: datetime, end: datetime | None = None) -> None:
    """Replace a job's quarantine rows whose ``interval_start`` lies in ``[start, end)`` (just ``start`` if no end).

    The table is partitioned by (job, day of interval_start), so this is a file swap.
    """
    from pyspark.sql import functions as F

    cond = F.col("job") == F.lit(job)
    if end is None:
        cond = cond & (F.col("interval_start") == F.lit(start).cast("timestamp"))
    else:
        cond = cond & interval_filter("interval_start", start, end)
    rows.writeTo("raw.quarantine").overwrite(cond)


def day_quarantine_rows(failed: DataFrame, job: str, feed: str, ts_column: str, record: Column) -> DataFrame:
    """Rows of ``failed`` (with ``error`` = ``<reason>: <detail>``, source_file, source_line) as quarantine
    rows keyed by the day of ``ts_column``, so a multi-day run and later single-day reruns own the same rows."""
    from pyspark.sql import functions as F

    day = F.date_trunc("day", ts_column)
    return failed.select(
        F.lit(job).alias("job"),
        day.alias("interval_start"),
        (day + F.expr("INTERVAL 1 DAY")).alias("interval_end"),
        F.lit(feed).alias("feed"),
        "source_file",
        "source_line",
        F.split("error", ":", 2).getItem(0).alias("reason"),
        F.trim(F.split("error", ":", 2).getItem(1)).alias("detail"),
        record.alias("record"),
        F.length(record).cast("long").alias("record_bytes"),
    )


def write_day_quarantine(rows: DataFrame, job: str, start: datetime, end: datetime) -> None:
    """Replace a job's per-day quarantine rows for every day ``[start, end)`` touches."""
    day_start = start.replace(hour=0, minute=0, second=0, microsecond=0)
    write_quarantine(rows, job, day_start, max(end, day_start + timedelta(days=1)))


@dataclass
class TaskMetrics:
    """One row of ``ops.task_metrics``: what a job did for an interval."""

    job: str
    interval_start: datetime
    interval_end: datetime
    run_id: str
    rows_read: int = 0
    rows_written: int = 0
    rows_quarantined: int = 0
    calls: int = 0
    cache_hits: int = 0
    tokens: int = 0
    cost: float = 0.0
    seconds: float = 0.0
    details: dict[str, Any] = field(default_factory=dict)


def record_metrics(spark: SparkSession, m: TaskMetrics) -> None:
    """Upsert the row for (job, interval_start): the last run of an interval wins."""
    row = (
        m.job,
        m.interval_start,
        m.interval_end,
        m.run_id,
        int(m.rows_read),
        int(m.rows_written),
        int(m.rows_quarantined),
        int(m.calls),
        int(m.cache_hits),
        int(m.tokens),
        float(m.cost),
        float(round(m.seconds, 3)),
        json.dumps(m.details, sort_keys=True, default=str),
        datetime.now(timezone.utc),  # when it was measured, not a data timestamp
    )
    schema = spark.table("ops.task_metrics").schema
    spark.createDataFrame([row], schema).createOrReplaceTempView("incoming_task_metrics")
    merge = """
        MERGE INTO ops.task_metrics t USING incoming_task_metrics s
        ON t.job = s.job AND t.interval_start = s.interval_start
        WHEN MATCHED THEN UPDATE SET *
        WHEN NOT MATCHED THEN INSERT *
    """
    for attempt in range(_MERGE_ATTEMPTS):
        try:
            spark.sql(merge)
            return
        except Exception as exc:
            # Runs of one job for other intervals may rewrite the same small data file at the same
            # time; Iceberg refuses the later commit. The row is ours alone: merge it again.
            if attempt + 1 == _MERGE_ATTEMPTS or not any(m in str(exc) for m in _CONFLICT_MARKERS):
                raise
            time.sleep(1 + attempt)


def record_job_metrics(
    spark: SparkSession,
    job: str,
    start: datetime,
    end: datetime,
    run_id: str,
    began: float,
    details: dict[str, Any],
    **figures: Any,
) -> None:
    """Record a job's row: its seconds since ``began`` (monotonic) go into ``details`` too; log the details."""
    seconds = time.monotonic() - began
    details["seconds"] = round(seconds, 3)
    record_metrics(spark, TaskMetrics(job, start, end, run_id, seconds=seconds, details=details, **figures))
    log.info("%s %s", job, json.dumps(details, default=str, sort_keys=True))


def snapshot_ids(tables: list[str]) -> dict[str, str]:
    """Current Iceberg snapshot id of each table (``""`` for a table without snapshots)."""
    from placerec.catalog import get_catalog

    catalog = get_catalog()
    out = {}
    for identifier in tables:
        snap = catalog.load_table(identifier).current_snapshot()
        out[identifier] = "" if snap is None else str(snap.snapshot_id)
    return out


def read_at(spark: SparkSession, table: str, snapshots: dict[str, str]) -> DataFrame:
    """``table`` as of the snapshot recorded in ``snapshots`` (so outputs trace to exactly what they read)."""
    sid = snapshots.get(table)
    if not sid:
        return spark.table(table)
    return spark.read.option("snapshot-id", sid).table(table)
