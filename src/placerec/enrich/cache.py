"""``ops.llm_cache``: every paid result keyed by what produced it, so a replay or backfill never pays twice.

A key is (kind, model, version, content hash): ``kind`` is ``keywords`` (version = prompt or rule-set
version) or ``embedding`` (version = ``query``/``passage``). Only final outcomes are cached: keywords,
or a permanent rejection (invalid output, request refused); transient failures are not, so a later
run tries again.

Calls for cache misses run inside Spark partitions (``call_misses``), a chunk at a time; each chunk's
results are collected once and appended to the cache before the next chunk starts, so a crash loses
at most one chunk of work and nothing is ever called twice within a run. Rows are only appended;
readers take the newest row per key, so two overlapping runs cannot make a key ambiguous.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

log = logging.getLogger(__name__)

TABLE = "ops.llm_cache"
KEYWORDS, EMBEDDING = "keywords", "embedding"
USAGE_MARK = "__usage__"


def text_hash(text: str) -> str:
    """sha256 of the UTF-8 text: the same hash ``raw.reviews.content_hash`` carries."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def cache_key(kind: str, model: str, version: str, content_hash: str) -> str:
    return hashlib.sha256("\x1f".join((kind, model, version, content_hash)).encode("utf-8")).hexdigest()


def lookup(spark: SparkSession, kind: str, model: str, version: str) -> DataFrame:
    """Cached results for (kind, model, version): ``content_hash, result`` with the newest row per key."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    rows = spark.table(TABLE).where(
        (F.col("kind") == kind) & (F.col("model") == model) & (F.col("prompt_version") == version)
    )
    newest = Window.partitionBy("cache_key").orderBy(F.col("created_at").desc())
    return (
        rows.withColumn("_n", F.row_number().over(newest))
        .where("_n = 1")
        .select("content_hash", "result", "created_at")
    )


@dataclass(frozen=True)
class Outcome:
    """What a worker returns for one text: a cacheable result JSON, or a transient failure reason."""

    content_hash: str
    result: str | None
    transient_reason: str | None = None
    tokens_in: int = 0
    tokens_out: int = 0
    attempted: bool = True
    """False when the worker never sent it (its share of the budget was spent)."""


@dataclass
class CallStats:
    """Totals of one ``call_misses`` run (the usage the workers reported, summed)."""

    sent: int = 0
    """Texts the workers sent to the endpoint (whatever came back)."""
    cached: int = 0
    transient: dict[str, str] = field(default_factory=dict)
    """content hash → reason, for texts that got no final result (not cached)."""
    deferred: int = 0
    """Texts never sent because the budget ran out."""
    usage: dict[str, float] = field(default_factory=dict)
    chunks: int = 0
    seconds: float = 0.0

    def transient_frame(self, spark: SparkSession, key: str, reason: str) -> DataFrame:
        """The transient failures as a DataFrame ``(key, reason)`` (typed even when empty)."""
        rows = sorted(self.transient.items()) or [("", "")]
        return spark.createDataFrame(rows, f"{key} string, {reason} string").where(f"{key} != ''")

    def add_usage(self, usage: dict[str, float]) -> None:
        for k, v in usage.items():
            if isinstance(v, (int, float)):
                self.usage[k] = self.usage.get(k, 0) + v


Worker = Callable[[list[tuple[str, str]], dict[str, Any]], tuple[list[Outcome], dict[str, float]]]
"""Runs in a Spark Python worker: (hash, text) items and the chunk's budget share → outcomes and usage."""


_OUTCOME_SCHEMA = (
    "content_hash string, result string, reason string, tokens_in long, tokens_out long, attempted boolean"
)


def _run_partition(worker: Worker, share: dict[str, Any], batches: Iterable[Any]) -> Iterator[Any]:
    """``mapInArrow`` body: the partition's ``(content_hash, text)`` items through ``worker``, as one batch
    of outcomes plus a last row carrying the worker's usage."""
    import pyarrow as pa

    items = [item for batch in batches for item in zip(*(c.to_pylist() for c in batch.columns), strict=True)]
    if not items:
        return
    outcomes, usage = worker(items, share)
    rows = [(o.content_hash, o.result, o.transient_reason, o.tokens_in, o.tokens_out, o.attempted) for o in outcomes]
    rows.append((USAGE_MARK, json.dumps(usage), None, 0, 0, False))
    names = ("content_hash", "result", "reason", "tokens_in", "tokens_out", "attempted")
    types = (pa.string(), pa.string(), pa.string(), pa.int64(), pa.int64(), pa.bool_())
    columns = [pa.array(list(col), t) for col, t in zip(zip(*rows, strict=True), types, strict=True)]
    yield pa.RecordBatch.from_arrays(columns, names=list(names))


def call_misses(
    spark: SparkSession,
    items: list[tuple[str, str]],
    *,
    kind: str,
    model: str,
    version: str,
    worker: Worker,
    partitions: int,
    chunk_size: int,
    budget_share: Callable[[CallStats], dict[str, Any] | None] = lambda stats: {},
) -> CallStats:
    """Call ``worker`` on ``items`` (distinct content hashes, none cached yet) and cache the final results.

    ``budget_share`` is asked before each chunk what each partition may still spend (None: stop, the
    budget is spent; the remaining items count as deferred).
    """
    stats = CallStats()
    began = time.monotonic()
    for offset in range(0, len(items), chunk_size):
        chunk = items[offset : offset + chunk_size]
        share = budget_share(stats)
        if share is None:
            stats.deferred += len(items) - offset
            for content_hash, _ in items[offset:]:
                stats.transient[content_hash] = "budget_exhausted: the run's budget was spent before this review"
            break
        n_parts = max(1, min(partitions, len(chunk)))
        frame = spark.createDataFrame(chunk, "content_hash string, text string").repartition(n_parts)
        rows = frame.mapInArrow(functools.partial(_run_partition, worker, share), _OUTCOME_SCHEMA).collect()
        stats.chunks += 1
        fresh = []
        for content_hash, result, reason, t_in, t_out, attempted in rows:
            if content_hash == USAGE_MARK:
                stats.add_usage(json.loads(result))
                continue
            stats.sent += attempted
            stats.deferred += not attempted
            if result is None:
                stats.transient[content_hash] = reason or "unknown"
            else:
                fresh.append((content_hash, result, t_in, t_out))
        append(spark, kind, model, version, fresh)
        stats.cached += len(fresh)
        log.info(
            "%s: chunk %d: %d sent, %d cached, %d transient (%.1f s so far)",
            kind,
            stats.chunks,
            len(chunk),
            len(fresh),
            len(chunk) - len(fresh),
            time.monotonic() - began,
        )
    stats.seconds = time.monotonic() - began
    return stats


def append(spark: SparkSession, kind: str, model: str, version: str, rows: list[tuple[str, str, int, int]]) -> None:
    """Append (content_hash, result, tokens_in, tokens_out) rows under (kind, model, version)."""
    if not rows:
        return
    now = datetime.now(timezone.utc)  # when it was paid for: audit only, never a data timestamp
    data = [
        (cache_key(kind, model, version, h), kind, model, version, h, r, int(ti), int(to), now) for h, r, ti, to in rows
    ]
    schema = spark.table(TABLE).schema
    spark.createDataFrame(data, schema).writeTo(TABLE).append()


def per_partition(value: int, parts: int) -> int:
    """A rate or concurrency split over partitions so that their sum never exceeds ``value`` (at least 1)."""
    return max(1, value // max(1, parts))
