"""Spark job ``extract_review_keywords``: keywords of one interval's reviews into ``features.review_keywords``.

extract: the interval's reviews from ``raw.reviews`` (by ``review_ts``) and what ``ops.llm_cache``
already holds for (model, prompt version);
transform: only the distinct content hashes not cached yet are sent to the extractor, concurrently
inside Spark partitions, under the job's rate limits and budget (see ``enrich.cache``);
load: the cache first (chunk by chunk), then the interval of ``features.review_keywords`` is replaced
from the cache, every review without keywords gets a quarantine row with its reason (per review day),
and usage, tokens and cost go to ``ops.task_metrics``.

A second run of the same interval sends nothing: every review's result is in the cache.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from placerec.enrich import cache
from placerec.enrich.budget import Budget, PriceTable
from placerec.enrich.llm import KeywordResult, estimate_tokens, load_prompt
from placerec.ops import (
    TaskMetrics,
    day_quarantine_rows,
    interval_filter,
    read_at,
    record_metrics,
    snapshot_ids,
    write_day_quarantine,
)
from placerec.settings import Settings, get_settings

if TYPE_CHECKING:
    from pyspark.sql import Column, SparkSession

log = logging.getLogger(__name__)

JOB = "extract_review_keywords"
RESULT_SCHEMA = (
    "struct<keywords:array<struct<term:string,aspect:string,sentiment:string,weight:double,evidence:string>>,"
    "error:string,extractor:string>"
)
_RECORD_TEXT_CHARS = 2000
# The user message around a review, for estimates before any call (see llm.KeywordExtractor._messages).
_USER_FRAME_TOKENS = 60


@dataclass(frozen=True)
class ExtractorSpec:
    """Which extractor a run uses; picklable, so Spark workers can build the same one."""

    kind: str
    model: str
    prompt_version: str
    base_url: str = ""
    rpm: int = 0
    tpm: int = 0
    concurrency: int = 1
    max_output_tokens: int = 0
    settings: Settings = field(default_factory=get_settings, repr=False, compare=False)
    """The driver's settings: Spark workers do not see environment changes made after they start."""

    @property
    def identity(self) -> dict[str, str]:
        return {"extractor": self.kind, "model": self.model, "prompt_version": self.prompt_version}


def resolve_extractor(
    kind: str | None = None,
    model: str | None = None,
    prompt_version: str | None = None,
    settings: Settings | None = None,
) -> ExtractorSpec:
    """The extractor a run uses: arguments, else settings, else the promoted prompt version."""
    s = settings or get_settings()
    kind = kind or s.keyword_extractor
    if kind == "local":
        from placerec.enrich.local import LocalKeywordExtractor

        local = LocalKeywordExtractor(embed=_never_embed, settings=s, version=prompt_version or "local-v1")
        return ExtractorSpec("local", model or local.model, local.prompt_version, settings=s)
    if kind == "llm":
        from placerec.enrich.registry import promoted_prompt

        version = prompt_version or s.keyword_prompt_version or promoted_prompt()
        load_prompt(version)  # fail here, not in a worker, on an unknown version
        return ExtractorSpec(
            "llm",
            model or s.llm_model,
            version,
            base_url=s.llm_base_url,
            rpm=s.llm_rpm,
            tpm=s.llm_tpm,
            concurrency=s.llm_concurrency,
            max_output_tokens=s.llm_max_output_tokens,
            settings=s,
        )
    raise ValueError(f"unknown keyword extractor {kind!r}: expected 'local' or 'llm'")


def _never_embed(texts: list[str]) -> list[list[float]]:
    raise RuntimeError("this extractor instance only describes itself")


def build_extractor(spec: ExtractorSpec, partitions: int = 1, share: dict[str, Any] | None = None) -> Any:
    """The extractor a worker runs: limits and budget are this partition's share of the job's."""
    if spec.kind == "local":
        from placerec.enrich.local import LocalKeywordExtractor

        return LocalKeywordExtractor(version=spec.prompt_version, settings=spec.settings)
    from placerec.enrich.llm import KeywordExtractor

    share = share or {}
    budget = None
    if share.get("tokens") is not None or share.get("cost") is not None:
        tokens = share.get("tokens")
        budget = Budget(
            tokens=None if tokens is None else int(tokens),
            cost=share.get("cost"),
            model=spec.model,
            prices=PriceTable.from_spec(spec.settings.llm_prices),
        )
    return KeywordExtractor(
        base_url=spec.base_url,
        model=spec.model,
        prompt_version=spec.prompt_version,
        rpm=cache.per_partition(spec.rpm, partitions),
        tpm=cache.per_partition(spec.tpm, partitions),
        concurrency=cache.per_partition(spec.concurrency, partitions),
        max_output_tokens=spec.max_output_tokens,
        budget=budget,
        settings=spec.settings,
    )


def result_json(result: KeywordResult, extractor: str) -> str:
    """What the cache keeps for a final outcome: the keywords, or the permanent rejection."""
    if result.error is not None:
        return json.dumps({"error": result.error, "extractor": extractor}, ensure_ascii=False)
    keywords = [asdict(k) for k in result.keywords]
    return json.dumps({"keywords": keywords, "extractor": extractor}, ensure_ascii=False, sort_keys=True)


def keyword_worker(spec: ExtractorSpec, partitions: int) -> cache.Worker:
    """The function Spark partitions run: extract, then sort outcomes into cacheable and transient."""

    def work(items: list[tuple[str, str]], share: dict[str, Any]) -> tuple[list[cache.Outcome], dict[str, float]]:
        extractor = build_extractor(spec, partitions, share)
        try:
            results = extractor.extract_many([text for _, text in items])
            usage = extractor.usage.as_dict()
        finally:
            extractor.close()
        outcomes = []
        for (content_hash, _), r in zip(items, results, strict=True):
            if r.transient:
                outcomes.append(
                    cache.Outcome(content_hash, None, r.error, r.tokens_in, r.tokens_out, attempted=r.attempts > 0)
                )
            else:
                outcomes.append(cache.Outcome(content_hash, result_json(r, spec.kind), None, r.tokens_in, r.tokens_out))
        return outcomes, usage

    return work


@dataclass
class Estimate:
    """What sending the cache misses would take, before anything is sent."""

    calls: int = 0
    tokens_in: int = 0
    tokens_out_max: int = 0
    cost_max: float = 0.0
    priced: bool = True


def estimate(spec: ExtractorSpec, texts: list[str], prices: PriceTable) -> Estimate:
    """Worst-case tokens and cost of one request per text (no repairs or retries)."""
    if spec.kind != "llm":
        return Estimate(calls=len(texts), priced=True)
    system = estimate_tokens(load_prompt(spec.prompt_version))
    t_in = sum(system + _USER_FRAME_TOKENS + estimate_tokens(t) for t in texts)
    t_out = spec.max_output_tokens * len(texts)
    return Estimate(len(texts), t_in, t_out, prices.cost(spec.model, t_in, t_out), prices.known(spec.model))


@dataclass
class KeywordRun:
    """What one run did; also the ``details`` of its ``ops.task_metrics`` row."""

    interval_start: datetime
    interval_end: datetime
    extractor: dict[str, str]
    reviews: int = 0
    sampled_out: int = 0
    """Reviews of the interval left for a later run by ``max_per_place`` (not quarantined: not tried)."""
    distinct_texts: int = 0
    cache_hits: int = 0
    misses: int = 0
    sent: int = 0
    deferred: int = 0
    budget_exhausted: bool = False
    budget: dict[str, float | None] = field(default_factory=dict)
    """The run's ceilings (``tokens``, ``cost``; None: none), as the placerec page shows them."""
    keyword_rows: int = 0
    reviews_with_keywords: int = 0
    quarantined: dict[str, int] = field(default_factory=dict)
    usage: dict[str, float] = field(default_factory=dict)
    tokens: int = 0
    cost: float = 0.0
    priced: bool = True
    call_seconds: float = 0.0
    seconds: float = 0.0
    dry_run: bool = False
    estimate: dict[str, Any] | None = None

    @property
    def rows_quarantined(self) -> int:
        return sum(self.quarantined.values())

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _quarantine_record() -> Column:
    from pyspark.sql import functions as F

    return F.to_json(
        F.struct(
            "review_id",
            "place_id",
            "user_id",
            "content_hash",
            F.substring("text", 1, _RECORD_TEXT_CHARS).alias("text"),
        )
    )


def _budget_share(
    limits: tuple[int | None, float | None], spec: ExtractorSpec, prices: PriceTable, partitions: int
) -> Any:
    """Before each chunk: each partition's share of what the budget has left, or None to stop."""
    tokens_limit, cost_limit = limits
    if spec.kind != "llm" or (tokens_limit is None and cost_limit is None):
        return lambda stats: {}
    worst_request = estimate_tokens(load_prompt(spec.prompt_version)) + _USER_FRAME_TOKENS + spec.max_output_tokens

    def share(stats: cache.CallStats) -> dict[str, Any] | None:
        if any(reason.startswith("budget_exhausted") for reason in stats.transient.values()):
            return None
        t_in, t_out = int(stats.usage.get("tokens_in", 0)), int(stats.usage.get("tokens_out", 0))
        out: dict[str, Any] = {}
        if tokens_limit is not None:
            left = tokens_limit - t_in - t_out
            if left < worst_request:
                return None
            out["tokens"] = left // partitions
        if cost_limit is not None:
            left_cost = cost_limit - prices.cost(spec.model, t_in, t_out)
            if left_cost < prices.cost(spec.model, worst_request - spec.max_output_tokens, spec.max_output_tokens):
                return None
            out["cost"] = left_cost / partitions
        return out

    return share


def run_extract_review_keywords(
    spark: SparkSession,
    start: datetime,
    end: datetime,
    *,
    run_id: str = "manual",
    spec: ExtractorSpec | None = None,
    budget_tokens: int | None = None,
    budget_cost: float | None = None,
    dry_run: bool = False,
    max_per_place: int | None = None,
    settings: Settings | None = None,
) -> KeywordRun:
    """Extract keywords for the reviews of ``[start, end)``; see the module docstring.

    ``max_per_place`` samples a history backfill: only each place's newest N reviews of the interval
    are enriched (the others are counted in ``sampled_out`` and left for a run without the cap).
    """
    from pyspark.sql import functions as F

    from placerec.catalog import ensure_tables_once

    if start.tzinfo is None or end.tzinfo is None or not start < end:
        raise ValueError(f"interval must be aware and non-empty: [{start}, {end})")
    s = settings or get_settings()
    spec = spec or resolve_extractor(settings=s)
    prices = PriceTable.from_spec(s.llm_prices)
    began = time.monotonic()
    ensure_tables_once()
    run = KeywordRun(start, end, spec.identity, dry_run=dry_run)
    run.budget = {"tokens": budget_tokens, "cost": budget_cost}

    reviews = (
        read_at(spark, "raw.reviews", snapshot_ids(["raw.reviews"]))  # as of the last complete ingest run
        .where(interval_filter("review_ts", start, end))
        .select("review_id", "place_id", "user_id", "text", "content_hash", "review_ts", "source_file", "source_line")
        .localCheckpoint()
    )
    if max_per_place is not None:
        from pyspark.sql import Window

        newest = Window.partitionBy("place_id").orderBy(F.col("review_ts").desc(), F.col("review_id"))
        every = reviews.count()
        reviews = (
            reviews.withColumn("_n", F.row_number().over(newest))
            .where(F.col("_n") <= max(1, max_per_place))
            .drop("_n")
            .localCheckpoint()
        )
        run.sampled_out = every - reviews.count()
    known = cache.lookup(spark, cache.KEYWORDS, spec.model, spec.prompt_version).select("content_hash", "result")
    texts = reviews.select("content_hash", "text").dropDuplicates(["content_hash"])
    misses = [(r["content_hash"], r["text"]) for r in texts.join(known, "content_hash", "left_anti").collect()]
    misses.sort()
    run.reviews = reviews.count()
    run.distinct_texts = texts.count()
    run.misses = len(misses)
    run.cache_hits = run.distinct_texts - run.misses
    est = estimate(spec, [t for _, t in misses], prices)
    run.estimate = asdict(est)
    run.priced = est.priced or spec.kind != "llm"
    if dry_run:
        run.seconds = time.monotonic() - began
        return run

    partitions = max(1, s.enrich_partitions)
    stats = cache.call_misses(
        spark,
        misses,
        kind=cache.KEYWORDS,
        model=spec.model,
        version=spec.prompt_version,
        worker=keyword_worker(spec, partitions),
        partitions=partitions,
        chunk_size=max(1, s.enrich_chunk_size),
        budget_share=_budget_share((budget_tokens, budget_cost), spec, prices, partitions),
    )
    run.sent = stats.sent
    run.deferred = stats.deferred
    run.usage = stats.usage
    run.call_seconds = round(stats.seconds, 3)
    run.budget_exhausted = any(r.startswith("budget_exhausted") for r in stats.transient.values())
    t_in, t_out = int(stats.usage.get("tokens_in", 0)), int(stats.usage.get("tokens_out", 0))
    run.tokens = t_in + t_out
    run.cost = round(prices.cost(spec.model, t_in, t_out), 6) if spec.kind == "llm" else 0.0

    cached = cache.lookup(spark, cache.KEYWORDS, spec.model, spec.prompt_version).select("content_hash", "result")
    transient_df = stats.transient_frame(spark, "content_hash", "transient")
    joined = (
        reviews.join(cached, "content_hash", "left")
        .join(transient_df, "content_hash", "left")
        .withColumn("r", F.from_json("result", RESULT_SCHEMA))
        .withColumn(
            "error",
            F.when(F.col("result").isNull(), F.coalesce("transient", F.lit("llm_unavailable: no result"))).otherwise(
                F.col("r.error")
            ),
        )
        .localCheckpoint()
    )
    ok = joined.where(F.col("error").isNull())
    keywords = ok.select(
        "review_id",
        "place_id",
        "user_id",
        F.posexplode("r.keywords").alias("pos", "k"),
        "content_hash",
        "review_ts",
    ).select(
        "review_id",
        "place_id",
        "user_id",
        F.col("k.term").alias("keyword"),
        F.col("k.aspect").alias("aspect"),
        F.col("k.sentiment").alias("sentiment"),
        F.col("k.weight").alias("weight"),
        F.col("k.evidence").alias("evidence"),
        F.lit(spec.kind).alias("extractor"),
        F.lit(spec.model).alias("model"),
        F.lit(spec.prompt_version).alias("prompt_version"),
        "content_hash",
        "review_ts",
    )
    keywords = keywords.sortWithinPartitions("review_ts").localCheckpoint()
    run.keyword_rows = keywords.count()
    run.reviews_with_keywords = keywords.select("review_id").distinct().count()
    keywords.writeTo("features.review_keywords").overwrite(interval_filter("review_ts", start, end))

    failed = joined.where(F.col("error").isNotNull())
    quarantine = day_quarantine_rows(failed, JOB, "reviews", "review_ts", _quarantine_record()).localCheckpoint()
    run.quarantined = {r["reason"]: int(r["count"]) for r in quarantine.groupBy("reason").count().collect()}
    write_day_quarantine(quarantine, JOB, start, end)

    run.seconds = time.monotonic() - began
    record_metrics(
        TaskMetrics(
            JOB,
            start,
            end,
            run_id,
            rows_read=run.reviews,
            rows_written=run.keyword_rows,
            rows_quarantined=run.rows_quarantined,
            calls=int(stats.usage.get("calls", 0)),
            cache_hits=run.cache_hits,
            tokens=run.tokens,
            cost=run.cost,
            seconds=run.seconds,
            details=run.as_dict(),
        ),
    )
    log.info("extract_review_keywords %s", json.dumps(run.as_dict(), default=str, sort_keys=True))
    return run
