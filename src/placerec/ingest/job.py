"""Spark job ``ingest_events``: one data interval of landing files into ``raw.*``.

extract: list and read the interval's landing lines (with file and line number);
transform: validate each line, split valid from rejected, de-duplicate by id;
load: overwrite the interval of ``raw.events`` (and of ``raw.place_versions``, the places it delivered),
MERGE ``raw.reviews`` and ``raw.places``,
replace this (job, interval)'s rows of ``raw.quarantine`` (lines rejected, files not read) in the
commit that makes the interval visible (:mod:`placerec.ingest.commit`), record ``ops.task_metrics``.
Which files are read is :mod:`placerec.ingest.files`; what a line must be, :mod:`placerec.ingest.records`.
A rerun of the same interval produces the same rows; a killed run leaves the previous state visible.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlparse

from placerec.ingest import commit
from placerec.ingest.files import Listing, SkippedFile, from_placeholder, list_landing, placeholder_mark, stage
from placerec.ingest.records import COLUMNS, FEEDS, ID_FIELD, MAX_RECORD_BYTES, record_text, validate_line
from placerec.ops import TaskMetrics, interval_filter, record_metrics, write_quarantine

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession
    from pyspark.sql.types import StructType

log = logging.getLogger(__name__)

JOB = "ingest_events"
FEED_TABLE = {"events": "raw.events", "reviews": "raw.reviews", "places": "raw.places"}


@dataclass
class IngestResult:
    """What one run did, per feed; also the payload of ``ops.task_metrics.details``."""

    interval_start: datetime
    interval_end: datetime
    files: dict[str, int] = field(default_factory=dict)
    files_skipped: dict[str, dict[str, int]] = field(default_factory=dict)
    read: dict[str, int] = field(default_factory=dict)
    written: dict[str, int] = field(default_factory=dict)
    quarantined: dict[str, dict[str, int]] = field(default_factory=dict)
    merged: dict[str, dict[str, int]] = field(default_factory=dict)
    seconds: float = 0.0
    skipped: bool = False
    restored: list[str] = field(default_factory=list)
    landing: str = ""
    """The landing root read: the data-quality checks compare a day only with days of the same source."""

    @property
    def rows_read(self) -> int:
        return sum(self.read.values())

    @property
    def rows_written(self) -> int:
        return sum(self.written.values())

    @property
    def rows_quarantined(self) -> int:
        return sum(sum(v.values()) for v in self.quarantined.values())

    def as_dict(self) -> dict[str, Any]:
        return {
            "interval_start": self.interval_start.isoformat(),
            "interval_end": self.interval_end.isoformat(),
            "files": self.files,
            "files_skipped": self.files_skipped,
            "read": self.read,
            "written": self.written,
            "quarantined": self.quarantined,
            "merged": self.merged,
            "rows_read": self.rows_read,
            "rows_written": self.rows_written,
            "rows_quarantined": self.rows_quarantined,
            "seconds": round(self.seconds, 3),
            "skipped": self.skipped,
            "restored": self.restored,
            "landing": self.landing,
        }


# A landing file is read by Spark's text source, a line at a time: a file of any size streams
# through, and a large one is split between tasks. Each split's lines are counted where they are
# read; a file's line numbers add the lines of its earlier splits (``_number_lines``).
_SPLIT_COLUMNS = ("source_file", "_block", "_index")
_BATCH_ROWS = 4096


def _text_lines(spark: SparkSession, staged: dict[str, str]) -> DataFrame:
    """Every physical line of the ``staged`` files (:func:`placerec.ingest.files.stage`) as
    ``(_path, _block, value)``: ``value`` the raw bytes, ``_block`` the offset in its file where the
    line's split starts."""
    from pyspark.sql import functions as F

    return (
        spark.read.option("lineSep", "\n")
        .text(sorted(staged))
        .select(
            F.col("_metadata.file_path").alias("_path"),
            F.col("_metadata.file_block_start").alias("_block"),
            F.col("value").cast("binary").alias("value"),
        )
    )


def _split_lines(staged: dict[str, str], batches: Iterable[Any]) -> Iterator[tuple[str, int, int, bytes]]:
    """``(source_file, split offset, 1-based index in the split, line bytes without a final CR)``, in order."""
    key: tuple[str, int] | None = None
    index, rel = 0, ""
    for batch in batches:
        paths, blocks, values = (batch.column(i).to_pylist() for i in range(3))
        for path, block, value in zip(paths, blocks, values, strict=True):
            if (path, block) != key:
                key, index, rel = (path, block), 0, staged[unquote(urlparse(path).path)]
            index += 1
            yield rel, block, index, value.removesuffix(b"\r")


def _number_lines(split_rows: DataFrame) -> DataFrame:
    """Replace ``(_block, _index)`` by ``source_line``, the 1-based line number within the file.

    ``split_rows`` is materialised (a checkpoint): whether any file was split is looked up first.
    """
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    rest = [c for c in split_rows.columns if c not in _SPLIT_COLUMNS]
    if split_rows.where(F.col("_block") > 0).isEmpty():  # no file was split (the usual case): no join
        return split_rows.select("source_file", F.col("_index").alias("source_line"), *rest)
    per_split = split_rows.groupBy("source_file", "_block").agg(F.count(F.lit(1)).alias("_n"))
    earlier = Window.partitionBy("source_file").orderBy("_block").rowsBetween(Window.unboundedPreceding, -1)
    offsets = per_split.select("source_file", "_block", F.coalesce(F.sum("_n").over(earlier), F.lit(0)).alias("_off"))
    return split_rows.join(F.broadcast(offsets), ["source_file", "_block"]).select(
        "source_file", (F.col("_off") + F.col("_index")).cast("long").alias("source_line"), *rest
    )


def _split_schema(schema: StructType) -> StructType:
    """``schema`` (which starts with source_file, source_line) with the split's ``(_block, _index)`` instead."""
    from pyspark.sql.types import LongType, StructField, StructType

    rest = [f for f in schema.fields if f.name not in ("source_file", "source_line")]
    return StructType(
        [schema["source_file"], StructField("_block", LongType()), StructField("_index", LongType()), *rest]
    )


def _map_lines(
    spark: SparkSession, staged: dict[str, str], schema: StructType, row: Callable[[bytes], tuple[Any, ...]]
) -> DataFrame:
    """``(source_file, source_line, *row(line bytes))`` for every line of the ``staged`` files, computed
    in Spark's Python workers (``mapInArrow``) and materialised once (a local checkpoint)."""
    from pyspark.sql.pandas.types import to_arrow_schema

    if not staged:
        return spark.createDataFrame([], schema)
    split_schema = _split_schema(schema)
    arrow_schema = to_arrow_schema(split_schema)

    def to_batch(rows: list[tuple[Any, ...]]) -> Any:
        import pyarrow as pa

        columns = [pa.array(list(c), f.type) for c, f in zip(zip(*rows, strict=True), arrow_schema, strict=True)]
        return pa.RecordBatch.from_arrays(columns, schema=arrow_schema)

    def batches(source: Iterable[Any]) -> Iterator[Any]:
        rows: list[tuple[Any, ...]] = []
        for rel, block, index, value in _split_lines(staged, source):
            rows.append((rel, block, index, *row(value)))
            if len(rows) == _BATCH_ROWS:
                yield to_batch(rows)
                rows = []
        if rows:
            yield to_batch(rows)

    return _number_lines(_text_lines(spark, staged).mapInArrow(batches, split_schema).localCheckpoint())


def _line_schema() -> StructType:
    from pyspark.sql.types import LongType, StringType, StructField, StructType

    return StructType(
        [
            StructField("source_file", StringType()),
            StructField("source_line", LongType()),
            StructField("value", StringType()),
        ]
    )


def read_lines(spark: SparkSession, staged: dict[str, str]) -> DataFrame:
    """One row per physical line: (source_file relative to the landing root, 1-based source_line,
    value as quarantine shows it)."""
    mark = placeholder_mark()

    def shown(value: bytes) -> tuple[str]:
        found = from_placeholder(value, mark)
        return (record_text(value if found is None else found[1]),)

    return _map_lines(spark, staged, _line_schema(), shown)


def _feed_schema(feed: str) -> StructType:
    from pyspark.sql.types import (
        DoubleType,
        IntegerType,
        LongType,
        StringType,
        StructField,
        StructType,
        TimestampType,
    )

    types = {
        "event_ts": TimestampType(),
        "review_ts": TimestampType(),
        "updated_ts": TimestampType(),
        "rating": IntegerType(),
        "position": IntegerType(),
        "lat": DoubleType(),
        "lon": DoubleType(),
    }
    cols = [StructField(c, types.get(c, StringType())) for c in COLUMNS[feed]]
    return StructType(
        [
            StructField("source_file", StringType()),
            StructField("source_line", LongType()),
            *cols,
            StructField("reason", StringType()),
            StructField("detail", StringType()),
            StructField("record", StringType()),
            StructField("record_bytes", LongType()),
        ]
    )


def parse(spark: SparkSession, staged: dict[str, str], feed: str, start: datetime, end: datetime) -> DataFrame:
    """Validate every line of the ``staged`` files; valid rows carry the feed's columns, rejected rows a
    reason and detail. Every row keeps its record as quarantine would show it (a duplicate needs it)."""
    width = len(COLUMNS[feed])
    mark = placeholder_mark()

    def check(value: bytes) -> tuple[Any, ...]:
        found = from_placeholder(value, mark)
        if found is not None:  # a line too long to stage, replaced by its size and first bytes
            size, prefix = found
            detail = f"{size} bytes > {MAX_RECORD_BYTES}"
            return (*(None,) * width, "oversized_record", detail, record_text(prefix), size)
        verdict = validate_line(feed, value, start, end)
        values = verdict.values if verdict.values is not None else (None,) * width
        return (*values, verdict.reason, verdict.detail, record_text(value), len(value))

    return _map_lines(spark, staged, _feed_schema(feed), check)


def mark_duplicates(
    valid: DataFrame, key: str, previous: DataFrame | None = None, newest: str | None = None
) -> DataFrame:
    """``valid`` with ``reason``/``detail`` set on the rows not to load, null on the rows to load.

    One row per ``key`` is kept: the first by (file, line), the others are ``duplicate_id``; with
    ``newest`` (a timestamp column, for upserted feeds) the one with the newest value, the first among
    equals, and rows with an older value are ``superseded``. A key of ``previous`` (rows already in
    the table, from other files) is a ``duplicate_id`` too.
    """
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    if newest is None:
        order = [F.col("source_file"), F.col("source_line")]
    else:
        order = [F.col(newest).desc_nulls_last(), F.col("source_file"), F.col("source_line")]
    w = Window.partitionBy(key).orderBy(*order)
    ranked = (
        valid.withColumn("_rank", F.row_number().over(w))
        .withColumn("_keep_file", F.first("source_file").over(w))
        .withColumn("_keep_line", F.first("source_line").over(w))
    )
    is_dup = F.col("_rank") > 1
    reason = F.when(is_dup, F.lit("duplicate_id"))
    if newest is None:
        again = F.format_string("%s %s first seen at %s:%d", F.lit(key), F.col(key), "_keep_file", "_keep_line")
    else:
        ranked = ranked.withColumn("_keep_ts", F.first(newest).over(w))
        older = F.col("_keep_ts").isNotNull() & (F.col(newest).isNull() | (F.col(newest) < F.col("_keep_ts")))
        reason = F.when(is_dup & older, F.lit("superseded")).otherwise(reason)
        again = F.format_string(
            "%s %s: the version at %s:%d (%s %s) is kept",
            F.lit(key),
            F.col(key),
            "_keep_file",
            "_keep_line",
            F.lit(newest),
            F.coalesce(F.col("_keep_ts").cast("string"), F.lit("unset")),
        )
    detail = F.when(is_dup, again)
    if previous is not None:
        first = F.min(F.struct("source_file", "source_line")).alias("_prev")
        seen = previous.groupBy(key).agg(first).select(key, "_prev.source_file", "_prev.source_line")
        ranked = ranked.join(seen.toDF(key, "_prev_file", "_prev_line"), key, "left")
        known = F.format_string("%s %s already ingested from %s:%d", F.lit(key), F.col(key), "_prev_file", "_prev_line")
        reason = F.when(F.col("_prev_file").isNotNull(), F.lit("duplicate_id")).otherwise(reason)
        detail = F.when(F.col("_prev_file").isNotNull(), known).otherwise(detail)
    marked = ranked.withColumn("reason", reason).withColumn("detail", detail)
    return marked.select(valid.columns if "reason" in valid.columns else [*valid.columns, "reason", "detail"])


def quarantine_rows(rejected: DataFrame, feed: str, job: str, start: datetime, end: datetime) -> DataFrame:
    """Rejected rows in the shape of ``raw.quarantine``."""
    from pyspark.sql import functions as F

    return rejected.select(
        F.lit(job).alias("job"),
        F.lit(start).cast("timestamp").alias("interval_start"),
        F.lit(end).cast("timestamp").alias("interval_end"),
        F.lit(feed).alias("feed"),
        "source_file",
        "source_line",
        "reason",
        "detail",
        "record",
        "record_bytes",
    )


def _table_columns(spark: SparkSession, table: str) -> list[str]:
    return [f.name for f in spark.table(table).schema.fields]


def _counts_by_reason(df: DataFrame) -> dict[str | None, int]:
    """Rows of ``df`` per ``reason`` (None: valid rows), one Spark job."""
    return {r["reason"]: int(r["n"]) for r in df.groupBy("reason").count().withColumnRenamed("count", "n").collect()}


def retained_events(spark: SparkSession, files: list[str], start: datetime, end: datetime) -> DataFrame:
    """Rows of the interval in ``raw.events`` that came from files other than ``files`` (materialised:
    they are read before the interval is overwritten)."""
    from pyspark.sql import functions as F

    cols = _table_columns(spark, "raw.events")
    existing = spark.table("raw.events").where(interval_filter("event_ts", start, end))
    retained = existing.where(~F.col("source_file").isin(files)) if files else existing
    return retained.select(cols).localCheckpoint()


def load_events(spark: SparkSession, fresh: DataFrame, retained: DataFrame, start: datetime, end: datetime) -> None:
    """Overwrite the interval of ``raw.events`` with ``retained`` rows plus this batch's ``fresh`` ones."""
    cols = _table_columns(spark, "raw.events")
    # Iceberg's write asks Spark for rows hashed and sorted by day (the table's partition), so each
    # task writes one day's file at a time: with many days (a history import) an open Parquet
    # writer per day would exhaust the heap. A shuffle of our own before it would only add one.
    out = retained.unionByName(fresh.select(cols))
    out.writeTo("raw.events").overwrite(interval_filter("event_ts", start, end))


def load_place_versions(spark: SparkSession, fresh: DataFrame, start: datetime, end: datetime) -> None:
    """Overwrite the interval of ``raw.place_versions`` with this batch's places (one per place, its
    newest), each seen at ``start``: a rerun of the interval writes the same rows."""
    from pyspark.sql import functions as F

    cols = [c for c in _table_columns(spark, "raw.place_versions") if c != "seen_at"]
    out = fresh.select(*cols, F.lit(start).cast("timestamp").alias("seen_at"))
    out.writeTo("raw.place_versions").overwrite(interval_filter("seen_at", start, end))


def merge_by_key(
    spark: SparkSession, table: str, key: str, incoming: DataFrame, newer: str | None = None
) -> dict[str, int]:
    """MERGE ``incoming`` into ``table`` by ``key``: insert new keys, update keys whose content changed.

    With ``newer`` (a timestamp column), an update also needs the incoming row to be at least as new.
    Returns counts of inserted, updated and unchanged rows.
    """
    from pyspark.sql import functions as F

    cols = _table_columns(spark, table)
    content = [c for c in cols if c not in (key, "source_file", "source_line")]
    src = incoming.select(cols)
    target = spark.table(table).select([F.col(c).alias(f"_t_{c}") for c in cols])
    joined = src.join(target, src[key] == target[f"_t_{key}"], "left")
    changed_cond = " OR ".join(f"NOT (s.{c} <=> t.{c})" for c in content)
    changed_df = " OR ".join(f"NOT ({c} <=> _t_{c})" for c in content)
    newer_df = f" AND (_t_{newer} IS NULL OR {newer} >= _t_{newer})" if newer else ""
    matched = F.col(f"_t_{key}").isNotNull()
    counted = joined.agg(
        F.count(F.lit(1)).alias("total"),
        F.sum(F.when(~matched, 1).otherwise(0)).alias("inserted"),
        F.sum(F.when(matched & F.expr(f"({changed_df}){newer_df}"), 1).otherwise(0)).alias("updated"),
    ).first()
    assert counted is not None  # a global aggregate has one row
    total, inserted, updated = int(counted["total"]), int(counted["inserted"] or 0), int(counted["updated"] or 0)
    if inserted or updated:  # else the MERGE would change nothing (a rerun): no commit, no rewritten files
        view = f"incoming_{table.replace('.', '_')}"
        src.createOrReplaceTempView(view)
        newer_sql = f" AND (t.{newer} IS NULL OR s.{newer} >= t.{newer})" if newer else ""
        spark.sql(
            f"""
            MERGE INTO {table} t USING {view} s ON t.{key} = s.{key}
            WHEN MATCHED AND ({changed_cond}){newer_sql} THEN UPDATE SET *
            WHEN NOT MATCHED THEN INSERT *
            """
        )
    return {"inserted": inserted, "updated": updated, "unchanged": total - inserted - updated}


def skipped_file_rows(
    spark: SparkSession, feed: str, skipped: tuple[SkippedFile, ...], job: str, start: datetime, end: datetime
) -> DataFrame:
    """One ``raw.quarantine`` row per file not read: ``source_line`` 0 (the whole file), no record."""
    schema = spark.table("raw.quarantine").schema
    rows = [(job, start, end, feed, f.relative, 0, f.reason, f.detail, None, f.size) for f in skipped]
    return spark.createDataFrame(rows, schema)


def _metrics(job: str, run_id: str, result: IngestResult) -> TaskMetrics:
    return TaskMetrics(
        job,
        result.interval_start,
        result.interval_end,
        run_id,
        rows_read=result.rows_read,
        rows_written=result.rows_written,
        rows_quarantined=result.rows_quarantined,
        seconds=result.seconds,
        details=result.as_dict(),
    )


def _ingest_feed(
    spark: SparkSession, feed: str, staged: dict[str, str], start: datetime, end: datetime, result: IngestResult
) -> DataFrame:
    """Validate, de-duplicate and load one feed's staged files; fills ``result``, returns the rejected rows."""
    from pyspark.sql import functions as F

    parsed = parse(spark, staged, feed, start, end)
    key = ID_FIELD[feed]
    valid, rejected = parsed.where(F.col("reason").isNull()), parsed.where(F.col("reason").isNotNull())
    # events overwrite their interval: rows other files put there stay, and their ids are known
    retained = retained_events(spark, sorted(staged.values()), start, end) if feed == "events" else None
    known = None if retained is None or retained.isEmpty() else retained  # usually empty: no join then
    newest = "updated_ts" if feed == "places" else None
    # every line once, with its verdict: materialised, then counted in one job
    classified = rejected.unionByName(mark_duplicates(valid, key, known, newest)).localCheckpoint()
    counts = _counts_by_reason(classified)
    result.read[feed] = sum(counts.values())
    result.quarantined[feed] = {str(reason): n for reason, n in counts.items() if reason is not None}
    fresh = classified.where(F.col("reason").isNull())
    if retained is not None:
        load_events(spark, fresh, retained, start, end)
        result.written[feed] = counts.get(None, 0)
    else:
        merged = merge_by_key(spark, FEED_TABLE[feed], key, fresh, newer=newest)
        if feed == "places":
            load_place_versions(spark, fresh, start, end)
        # Every unique valid record is now in the table (new, updated or already identical),
        # so a rerun reports the same figure; the breakdown says what changed.
        result.written[feed] = sum(merged.values())
        result.merged[feed] = merged
    return classified.where(F.col("reason").isNotNull())


def run_ingest(
    spark: SparkSession,
    landing: Path,
    start: datetime,
    end: datetime,
    run_id: str = "manual",
    job: str = JOB,
) -> IngestResult:
    """Ingest every feed's landing files for ``[start, end)``; see the module docstring."""
    from placerec.catalog import ensure_tables_once
    from placerec.settings import get_settings

    if start.tzinfo is None or end.tzinfo is None or not start < end:
        raise ValueError(f"interval must be aware and non-empty: [{start}, {end})")
    began = time.monotonic()
    ensure_tables_once()
    home = get_settings().home
    with commit.ingest_lock(home) as lock:
        result = IngestResult(start, end, landing=str(landing))
        listings = {feed: list_landing(landing, feed, start, end) for feed in FEEDS}
        result.files = {feed: len(listing.read) for feed, listing in listings.items()}
        result.files_skipped = {feed: _reasons(listing) for feed, listing in listings.items()}
        for feed, listing in listings.items():
            for f in listing.skipped:
                log.warning("%s: not read: %s (%s: %s)", feed, f.relative, f.reason, f.detail)
        if not any(listing.read for listing in listings.values()):
            # Nothing to read: leave the tables alone rather than erase an interval ingested before.
            log.warning("no landing files to read under %s for [%s, %s); nothing written", landing, start, end)
            result.skipped = True
            result.seconds = time.monotonic() - began
            record_metrics(_metrics(job, run_id, result))
            return result
        result.restored = commit.prepare(spark, lock.unfinished)
        lock.begin(run_id, start, end)
        staging = home / "staging" / job / f"{start:%Y%m%dT%H%M%S}-{end:%Y%m%dT%H%M%S}"
        try:
            rejected = _load_feeds(spark, listings, staging, start, end, job, result)
            # the one commit that makes the interval visible: quarantine rows + the tables' snapshot ids
            write_quarantine(rejected, job, start, options=commit.commit_option(start, end, run_id))
            lock.finish()
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        result.seconds = time.monotonic() - began
        record_metrics(_metrics(job, run_id, result))
    log.info("ingested %s", json.dumps(result.as_dict(), sort_keys=True))
    return result


def _reasons(listing: Listing) -> dict[str, int]:
    return dict(Counter(f.reason for f in listing.skipped))


def _load_feeds(
    spark: SparkSession,
    listings: dict[str, Listing],
    staging: Path,
    start: datetime,
    end: datetime,
    job: str,
    result: IngestResult,
) -> DataFrame:
    """Load each feed that has files to read; returns every quarantine row of the interval (lines, files)."""
    began = time.monotonic()
    parts = []
    for feed in FEEDS:
        listing = listings[feed]
        if listing.skipped:
            parts.append(skipped_file_rows(spark, feed, listing.skipped, job, start, end))
        if not listing.read:  # nothing to read for this feed: its table stays as it is
            result.read[feed], result.written[feed], result.quarantined[feed] = 0, 0, {}
            if feed != "events":
                result.merged[feed] = {"inserted": 0, "updated": 0, "unchanged": 0}
            continue
        staged = stage(list(listing.read), staging / feed)
        rejected = _ingest_feed(spark, feed, staged, start, end, result)
        parts.append(quarantine_rows(rejected, feed, job, start, end))
        seconds = time.monotonic() - began
        log.info("%s: %d read, %d written in %.1fs", feed, result.read[feed], result.written[feed], seconds)
    out = parts[0]
    for part in parts[1:]:
        out = out.unionByName(part)
    return out
