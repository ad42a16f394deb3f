"""Writes every job shares: its quarantine rows, its ``ops.task_metrics`` row, interval filters, snapshot ids."""

from __future__ import annotations

import json
import logging
import random
import time
import warnings
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame, SparkSession


log = logging.getLogger(__name__)

_COMMIT_ATTEMPTS = 10


def interval_filter(column: str, start: datetime, end: datetime) -> Column:
    """``start <= column < end`` for a timestamp column."""
    from pyspark.sql import functions as F

    return (F.col(column) >= F.lit(start).cast("timestamp")) & (F.col(column) < F.lit(end).cast("timestamp"))


def write_quarantine(
    rows: DataFrame, job: str, start: datetime, end: datetime | None = None, options: dict[str, str] | None = None
) -> None:
    """Replace a job's quarantine rows whose ``interval_start`` lies in ``[start, end)`` (just ``start`` if no end).

    The table is partitioned by (job, day of interval_start), so this is a file swap. ``options`` are
    write options (ingest's commit property: :mod:`placerec.ingest.commit`).
    """
    from pyspark.sql import functions as F

    cond = F.col("job") == F.lit(job)
    if end is None:
        cond = cond & (F.col("interval_start") == F.lit(start).cast("timestamp"))
    else:
        cond = cond & interval_filter("interval_start", start, end)
    writer = rows.writeTo("raw.quarantine")
    for key, value in (options or {}).items():
        writer = writer.option(key, value)
    writer.overwrite(cond)


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


def record_metrics(m: TaskMetrics) -> None:
    """Replace the row for (job, interval_start): the last run of an interval wins.

    One pyiceberg commit (delete the interval's row, append the new one) rather than a Spark MERGE:
    a single row does not need a cluster, and every job records one (about a second saved each).
    Runs of one job for other intervals may rewrite the same data file at the same time; the
    later commit is refused (a conflict, or files it replaces are gone) and made again on the new
    state, so no run's row is lost.
    """
    import pyarrow as pa
    from pyiceberg.exceptions import CommitFailedException, ValidationException

    from placerec.catalog import get_catalog

    if "'" in m.job:
        raise ValueError(f"job name {m.job!r} may not contain a quote")
    row = {
        "job": m.job,
        "interval_start": m.interval_start,
        "interval_end": m.interval_end,
        "run_id": m.run_id,
        "rows_read": int(m.rows_read),
        "rows_written": int(m.rows_written),
        "rows_quarantined": int(m.rows_quarantined),
        "calls": int(m.calls),
        "cache_hits": int(m.cache_hits),
        "tokens": int(m.tokens),
        "cost": float(m.cost),
        "seconds": float(round(m.seconds, 3)),
        "details": json.dumps(m.details, sort_keys=True, default=str),
        "recorded_at": datetime.now(timezone.utc),  # when it was measured, not a data timestamp
    }
    same_interval = f"job = '{m.job}' AND interval_start = '{m.interval_start.isoformat()}'"
    catalog = get_catalog()
    for attempt in range(_COMMIT_ATTEMPTS):
        table = catalog.load_table("ops.task_metrics")
        try:
            with warnings.catch_warnings():  # an interval's first run has no row to replace
                warnings.filterwarnings("ignore", "Delete operation did not match any records", UserWarning)
                table.overwrite(pa.Table.from_pylist([row], schema=table.schema().as_arrow()), same_interval)
            return
        except (CommitFailedException, ValidationException) as exc:
            if attempt + 1 == _COMMIT_ATTEMPTS:
                raise
            log.info("ops.task_metrics: another run committed first (%s); recording %s again", exc, m.job)
            time.sleep(random.uniform(0.1, 0.3) * (1 + attempt))  # noqa: S311 (jitter: writers fall out of step)


def record_job_metrics(
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
    record_metrics(TaskMetrics(job, start, end, run_id, seconds=seconds, details=details, **figures))
    log.info("%s %s", job, json.dumps(details, default=str, sort_keys=True))


def snapshot_ids(tables: list[str]) -> dict[str, str]:
    """The Iceberg snapshot id a job reads each table at (``""`` for a table without snapshots): the
    current one, except ``raw.events`` / ``raw.reviews`` / ``raw.places`` / ``raw.place_versions``, read
    as of the last complete ingest run (:mod:`placerec.ingest.commit`), so no reader sees half an interval."""
    from placerec.ingest.commit import committed_snapshot_ids

    return committed_snapshot_ids(tables)


PLACE_TABLES = ["raw.places", "raw.place_versions"]
"""What :func:`places_as_of` reads: a job calling it names both in its :func:`snapshot_ids`."""


def places_as_of(spark: SparkSession, snapshots: dict[str, str], end: datetime) -> DataFrame:
    """The place catalogue (``raw.places``' columns) as it stood at ``end``, from ``raw.places`` and
    ``raw.place_versions`` at ``snapshots``: see :func:`catalogue_at`."""
    return catalogue_at(read_at(spark, "raw.places", snapshots), read_at(spark, "raw.place_versions", snapshots), end)


def catalogue_at(current: DataFrame, versions: DataFrame, end: datetime) -> DataFrame:
    """Pure transform: each place's newest record among those ingest runs delivered for intervals
    starting before ``end`` (``versions``, ``raw.place_versions``' rows), newest as ``raw.places``' MERGE
    decides it (the greater ``updated_ts``, a missing one losing; on a tie, the later delivery). So a job
    built for a past day sees that day's places, not those a later day added or renamed, however late
    it runs (a backfill, a rerun).

    Places in ``current`` (``raw.places``) without any recorded version (ingested before
    ``raw.place_versions`` existed) are taken as they are there.
    """
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    newest = Window.partitionBy("place_id").orderBy(
        F.col("updated_ts").desc_nulls_last(),
        F.col("seen_at").desc(),
        F.col("source_file").desc(),
        F.col("source_line").desc(),
    )
    then = (
        versions.where(F.col("seen_at") < F.lit(end).cast("timestamp"))
        .withColumn("_newest", F.row_number().over(newest))
        .where(F.col("_newest") == 1)
        .select(*current.columns)
    )
    unversioned = current.join(versions.select("place_id").distinct(), "place_id", "left_anti")
    return then.unionByName(unversioned)


def read_at(spark: SparkSession, table: str, snapshots: dict[str, str]) -> DataFrame:
    """``table`` as of the snapshot recorded in ``snapshots`` (so outputs trace to exactly what they read)."""
    sid = snapshots.get(table)
    if not sid:
        return spark.table(table)
    return spark.read.option("snapshot-id", sid).table(table)
