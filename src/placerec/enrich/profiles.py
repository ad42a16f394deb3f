"""Spark jobs ``build_place_profiles`` and ``extract_search_interests``: keyword profiles and their vectors.

Both are "as of" jobs: for a data interval ending at ``end`` they read everything before ``end``
(time-decayed, half-life in settings) and replace the partition ``built_for`` = the interval's last
day (for user interests: of their origin) with the state as of that day, recording the Iceberg
snapshots they read. Every day keeps its own set, so a late backfill never rolls the newest set back;
readers take the latest ``built_for``. Vectors go through ``enrich.vectors`` (cached by text hash).

Place profile text: name, category and district, then the place's strongest keywords split by
sentiment ("좋은 점" / "아쉬운 점" / "특징"). A place without reviews still gets a profile (and a vector)
from its name, category and district, so new places are never invisible to content similarity.

User interests (cold start): the keywords of a user's search queries over the last
``interest_window_days`` days, extracted by the same extractor and cache as reviews, ranked by
recency-weighted frequency, embedded as a *query* (e5 distinguishes queries from passages).
"""

from __future__ import annotations

import logging
import time
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING, Any

from placerec.enrich import cache
from placerec.enrich.budget import PriceTable
from placerec.enrich.keywords import RESULT_SCHEMA, ExtractorSpec, keyword_worker, resolve_extractor
from placerec.enrich.vectors import embed_texts
from placerec.ops import (
    PLACE_TABLES,
    day_quarantine_rows,
    interval_filter,
    places_as_of,
    read_at,
    record_job_metrics,
    snapshot_ids,
    write_day_quarantine,
)
from placerec.settings import Settings, get_settings

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame, SparkSession

log = logging.getLogger(__name__)

PROFILES_JOB = "build_place_profiles"
INTERESTS_JOB = "extract_search_interests"
SEARCH_ORIGIN = "search"
_POSITIVE, _NEGATIVE = 0.2, -0.2


def as_of(end: datetime) -> date:
    """The last day a run for ``[start, end)`` includes."""
    return (end - timedelta(microseconds=1)).date()


def time_decay(ts: str, end: datetime, half_life_days: float) -> Column:
    """``0.5 ** (age in days at end / half-life)`` of timestamp column ``ts`` (1 at ``end``, never above)."""
    from pyspark.sql import functions as F

    age_days = (F.lit(end).cast("timestamp").cast("double") - F.col(ts).cast("double")) / 86400.0
    return F.pow(F.lit(0.5), F.greatest(age_days, F.lit(0.0)) / F.lit(half_life_days))


def place_profile_rows(keywords: DataFrame, places: DataFrame, end: datetime, settings: Settings) -> DataFrame:
    """Pure transform: review keywords + places → ``place_id, top_keywords, profile_text, text_hash``."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    sentiment = (
        F.when(F.col("sentiment") == "positive", 1.0).when(F.col("sentiment") == "negative", -1.0).otherwise(0.0)
    )
    scored = (
        keywords.where(F.col("keyword").isNotNull() & (F.length(F.trim("keyword")) > 0))
        .withColumn("decay", time_decay("review_ts", end, settings.profile_half_life_days))
        .groupBy("place_id", F.trim("keyword").alias("keyword"))
        .agg(
            F.sum(F.coalesce(F.col("weight"), F.lit(0.5)) * F.col("decay")).alias("score"),
            F.avg(sentiment).alias("sentiment"),
            F.count("*").alias("mentions"),
        )
    )
    rank = Window.partitionBy("place_id").orderBy(F.col("score").desc(), F.col("keyword"))
    top = scored.withColumn("rank", F.row_number().over(rank)).where(F.col("rank") <= settings.profile_top_keywords)
    grouped = top.groupBy("place_id").agg(
        F.sort_array(F.collect_list(F.struct("rank", "keyword", "sentiment"))).alias("top")
    )

    def names(cond: str) -> Column:
        return F.array_join(F.expr(f"transform(filter(top, x -> {cond}), x -> x.keyword)"), ", ")

    profiles = places.select("place_id", "name", "category", "district").join(grouped, "place_id", "left")
    header = F.concat_ws(" · ", F.col("name"), F.col("category"), F.col("district"))
    parts = F.concat_ws(
        ". ",
        header,
        F.when(
            names(f"x.sentiment > {_POSITIVE}") != "", F.concat(F.lit("좋은 점: "), names(f"x.sentiment > {_POSITIVE}"))
        ),
        F.when(
            names(f"x.sentiment < {_NEGATIVE}") != "",
            F.concat(F.lit("아쉬운 점: "), names(f"x.sentiment < {_NEGATIVE}")),
        ),
        F.when(
            names(f"x.sentiment BETWEEN {_NEGATIVE} AND {_POSITIVE}") != "",
            F.concat(F.lit("특징: "), names(f"x.sentiment BETWEEN {_NEGATIVE} AND {_POSITIVE}")),
        ),
    )
    none = F.array().cast("array<string>")
    return profiles.select(
        "place_id",
        F.coalesce(F.expr("transform(top, x -> x.keyword)"), none).alias("top_keywords"),
        parts.alias("profile_text"),
        # what a recommendation may give as its reason: never a complaint (sentiment at or below 0.2)
        F.coalesce(F.expr(f"transform(filter(top, x -> x.sentiment > {_POSITIVE}), x -> x.keyword)"), none).alias(
            "positive_keywords"
        ),
    ).withColumn("text_hash", F.sha2("profile_text", 256))


def run_build_place_profiles(
    spark: SparkSession,
    start: datetime,
    end: datetime,
    *,
    run_id: str = "manual",
    settings: Settings | None = None,
) -> dict[str, Any]:
    """Rebuild ``features.place_profiles`` as of ``end``; returns what it did (also in ``ops.task_metrics``)."""
    from pyspark.sql import functions as F

    from placerec.catalog import ensure_tables_once

    s = settings or get_settings()
    began = time.monotonic()
    ensure_tables_once()
    built_for = as_of(end)
    details: dict[str, Any] = {"built_for": str(built_for), "embedding_model": s.embeddings_model}

    snaps = snapshot_ids(["features.review_keywords", *PLACE_TABLES])
    keywords = read_at(spark, "features.review_keywords", snaps).where(
        F.col("review_ts") < F.lit(end).cast("timestamp")
    )
    places = places_as_of(spark, snaps, end)
    rows = place_profile_rows(keywords, places, end, s).localCheckpoint()
    vectors, stats, hits = embed_texts(
        spark, rows.select("text_hash", F.col("profile_text").alias("text")), "passage", s
    )
    out = rows.join(vectors, "text_hash", "left").select(
        "place_id",
        "top_keywords",
        "profile_text",
        "embedding",
        F.lit(s.embeddings_model).alias("embedding_model"),
        F.col("text_hash").alias("profile_hash"),
        F.lit(built_for).alias("built_for"),
        F.create_map(*[x for k, v in sorted(snaps.items()) for x in (F.lit(k), F.lit(v))]).alias("source_snapshots"),
        "positive_keywords",
    )
    out = out.localCheckpoint()
    missing = out.where(F.col("embedding").isNull()).count()
    if missing:
        raise RuntimeError(f"{missing} place profiles have no embedding after embedding them")
    out.writeTo("features.place_profiles").overwrite(F.col("built_for") == F.lit(built_for))
    details.update(
        places=out.count(),
        with_keywords=out.where(F.size("top_keywords") > 0).count(),
        embedded=stats.cached,
        cache_hits=hits,
        embedding_calls=int(stats.usage.get("calls", 0)),
        source_snapshots=snaps,
    )
    record_job_metrics(PROFILES_JOB, start, end, run_id, began, details, rows_written=details["places"])
    return details


def interest_rows(searches: DataFrame, query_keywords: DataFrame, end: datetime, settings: Settings) -> DataFrame:
    """Pure transform: search events + per-query keywords → ``user_id, keywords, interest_text, text_hash``."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    per_query = query_keywords.select("query_hash", F.explode("r.keywords").alias("k")).select(
        "query_hash", F.trim("k.term").alias("keyword"), F.coalesce("k.weight", F.lit(0.5)).alias("weight")
    )
    scored = (
        searches.withColumn("decay", time_decay("event_ts", end, settings.profile_half_life_days))
        .join(per_query, "query_hash")
        .groupBy("user_id", "keyword")
        .agg(F.sum(F.col("weight") * F.col("decay")).alias("score"))
    )
    rank = Window.partitionBy("user_id").orderBy(F.col("score").desc(), F.col("keyword"))
    top = (
        scored.withColumn("rank", F.row_number().over(rank))
        .where(F.col("rank") <= settings.profile_top_keywords)
        .groupBy("user_id")
        .agg(F.sort_array(F.collect_list(F.struct("rank", "keyword"))).alias("top"))
        .select("user_id", F.expr("transform(top, x -> x.keyword)").alias("keywords"))
    )
    # A user whose queries gave no keywords is still described by the queries themselves.
    recent_queries = searches.groupBy("user_id").agg(
        F.slice(F.sort_array(F.collect_set(F.struct(F.col("event_ts"), F.col("query"))), asc=False), 1, 5).alias("q")
    )
    users = recent_queries.join(top, "user_id", "left")
    text = F.when(F.size(F.coalesce("keywords", F.array())) > 0, F.array_join("keywords", ", ")).otherwise(
        F.array_join(F.expr("transform(q, x -> x.query)"), ", ")
    )
    return users.select(
        "user_id",
        F.coalesce("keywords", F.array().cast("array<string>")).alias("keywords"),
        text.alias("interest_text"),
    ).withColumn("text_hash", F.sha2("interest_text", 256))


def run_extract_search_interests(
    spark: SparkSession,
    start: datetime,
    end: datetime,
    *,
    run_id: str = "manual",
    spec: ExtractorSpec | None = None,
    settings: Settings | None = None,
) -> dict[str, Any]:
    """Rebuild the ``search`` rows of ``features.user_interests`` as of ``end``."""
    from pyspark.sql import functions as F

    from placerec.catalog import ensure_tables_once

    s = settings or get_settings()
    spec = spec or resolve_extractor(settings=s)
    began = time.monotonic()
    ensure_tables_once()
    built_for = as_of(end)
    details: dict[str, Any] = {"built_for": str(built_for), **spec.identity, "window_days": s.interest_window_days}

    snaps = snapshot_ids(["raw.events"])
    window_start = end - timedelta(days=s.interest_window_days)
    searches = (
        read_at(spark, "raw.events", snaps)
        .where((F.col("event_type") == "search") & interval_filter("event_ts", window_start, end))
        .where(F.col("query").isNotNull() & F.col("user_id").isNotNull())
        .select("user_id", "event_ts", F.trim("query").alias("query"), "source_file", "source_line")
        .withColumn("query_hash", F.sha2("query", 256))
        .localCheckpoint()
    )
    queries = searches.select("query_hash", "query").dropDuplicates(["query_hash"])
    known = cache.lookup(spark, cache.KEYWORDS, spec.model, spec.prompt_version)
    misses = sorted(
        (r["query_hash"], r["query"])
        for r in queries.join(
            known.select(F.col("content_hash").alias("query_hash")), "query_hash", "left_anti"
        ).collect()
    )
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
    )
    results = (
        cache.lookup(spark, cache.KEYWORDS, spec.model, spec.prompt_version)
        .select(F.col("content_hash").alias("query_hash"), F.from_json("result", RESULT_SCHEMA).alias("r"))
        .join(queries.select("query_hash"), "query_hash")
        .localCheckpoint()
    )
    ok = results.where(F.col("r.error").isNull())
    rows = interest_rows(searches, ok, end, s).localCheckpoint()
    vectors, estats, hits = embed_texts(
        spark, rows.select("text_hash", F.col("interest_text").alias("text")), "query", s
    )
    out = rows.join(vectors, "text_hash", "left").select(
        "user_id",
        F.lit(SEARCH_ORIGIN).alias("origin"),
        "keywords",
        "embedding",
        F.lit(s.embeddings_model).alias("embedding_model"),
        F.lit(built_for).alias("built_for"),
        F.create_map(*[x for k, v in sorted(snaps.items()) for x in (F.lit(k), F.lit(v))]).alias("source_snapshots"),
    )
    out.writeTo("features.user_interests").overwrite(
        (F.col("origin") == SEARCH_ORIGIN) & (F.col("built_for") == F.lit(built_for))
    )

    # Queries without keywords (rejected, or left for a later run) are accounted for, per search day.
    transient = stats.transient_frame(spark, "query_hash", "error")
    failed = (
        results.where(F.col("r.error").isNotNull())
        .select("query_hash", F.col("r.error").alias("error"))
        .unionByName(transient)
        .join(searches.where(interval_filter("event_ts", start, end)), "query_hash")
    )
    record = F.to_json(F.struct("user_id", "query", "query_hash"))
    quarantine = day_quarantine_rows(failed, INTERESTS_JOB, "events", "event_ts", record).localCheckpoint()
    write_day_quarantine(quarantine, INTERESTS_JOB, start, end)
    t_in, t_out = int(stats.usage.get("tokens_in", 0)), int(stats.usage.get("tokens_out", 0))
    n_queries = queries.count()
    details.update(
        users=rows.count(),
        searches=searches.count(),
        queries=n_queries,
        query_cache_hits=n_queries - len(misses),
        extracted=stats.cached,
        embedded=estats.cached,
        embedding_cache_hits=hits,
        quarantined=quarantine.count(),
        source_snapshots=snaps,
    )
    record_job_metrics(
        INTERESTS_JOB,
        start,
        end,
        run_id,
        began,
        details,
        rows_written=details["users"],
        rows_quarantined=details["quarantined"],
        calls=int(stats.usage.get("calls", 0) + estats.usage.get("calls", 0)),
        tokens=int(t_in + t_out),
        cost=PriceTable.from_spec(s.llm_prices).cost(spec.model, t_in, t_out) if spec.kind == "llm" else 0.0,
    )
    return details
