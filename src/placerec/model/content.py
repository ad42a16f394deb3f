"""Content vectors as of a cut: place profile embeddings and search-interest embeddings.

A model evaluated at cut ``T`` must not see anything from after ``T``, content included. When the
enrich DAG wrote a set for exactly the day before ``T`` (``built_for``) it is read as is; otherwise the
set is rebuilt here from the rows dated before ``T`` with the very transforms the enrich jobs use
(``place_profile_rows``, ``interest_rows``) and the same caches, so this costs embedding calls only for
profile texts never seen before, and never an LLM call (queries without cached keywords are described
by their own text, as in the enrich job).
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from placerec.enrich import cache
from placerec.enrich.keywords import RESULT_SCHEMA, resolve_extractor
from placerec.enrich.profiles import SEARCH_ORIGIN, as_of, interest_rows, place_profile_rows
from placerec.enrich.vectors import embed_texts
from placerec.ops import interval_filter, places_as_of, read_at
from placerec.settings import Settings

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

log = logging.getLogger(__name__)


def place_vectors(
    spark: SparkSession, cut: datetime, snaps: dict[str, str], settings: Settings, stats: dict[str, Any]
) -> DataFrame:
    """``place_id, positive_keywords, embedding`` as of ``cut`` (profiles built before
    ``positive_keywords`` existed give it empty: no keyword is known to be praised)."""
    from pyspark.sql import functions as F

    day = as_of(cut)
    stored = read_at(spark, "features.place_profiles", snaps).where(F.col("built_for") == F.lit(day))
    if stored.limit(1).count():
        stats["place_vectors"] = f"features.place_profiles built_for {day}"
        positive = F.coalesce(F.col("positive_keywords"), F.array().cast("array<string>")).alias("positive_keywords")
        return stored.select("place_id", positive, "embedding")
    keywords = read_at(spark, "features.review_keywords", snaps).where(
        F.col("review_ts") < F.lit(cut).cast("timestamp")
    )
    places = places_as_of(spark, snaps, cut)
    rows = place_profile_rows(keywords, places, cut, settings).localCheckpoint()
    vectors, call_stats, hits = embed_texts(
        spark, rows.select("text_hash", F.col("profile_text").alias("text")), "passage", settings
    )
    stats["place_vectors"] = f"rebuilt as of {cut.isoformat()}"
    stats["place_embedding_calls"] = stats.get("place_embedding_calls", 0) + int(call_stats.usage.get("calls", 0))
    stats["place_embedding_cache_hits"] = stats.get("place_embedding_cache_hits", 0) + hits
    return rows.join(vectors, "text_hash").select("place_id", "positive_keywords", "embedding")


def interest_vectors(
    spark: SparkSession,
    events: DataFrame,
    cut: datetime,
    snaps: dict[str, str],
    settings: Settings,
    stats: dict[str, Any],
) -> DataFrame:
    """``user_id, keywords, embedding`` of search interests as of ``cut`` (users with searches only)."""
    from pyspark.sql import functions as F

    day = as_of(cut)
    stored = read_at(spark, "features.user_interests", snaps).where(
        (F.col("built_for") == F.lit(day)) & (F.col("origin") == SEARCH_ORIGIN)
    )
    if stored.limit(1).count():
        stats["interest_vectors"] = f"features.user_interests built_for {day}"
        return stored.select("user_id", "keywords", "embedding")
    searches = (
        events.where((F.col("event_type") == "search") & F.col("query").isNotNull() & F.col("user_id").isNotNull())
        .where(interval_filter("event_ts", cut - timedelta(days=settings.interest_window_days), cut))
        .select("user_id", "event_ts", F.trim("query").alias("query"))
        .withColumn("query_hash", F.sha2("query", 256))
    )
    if not searches.limit(1).count():
        stats["interest_vectors"] = "no searches before the cut"
        return spark.createDataFrame([], "user_id string, keywords array<string>, embedding array<float>")
    spec = resolve_extractor(settings=settings)
    known = (
        cache.lookup(spark, cache.KEYWORDS, spec.model, spec.prompt_version)
        .select(F.col("content_hash").alias("query_hash"), F.from_json("result", RESULT_SCHEMA).alias("r"))
        .where(F.col("r.error").isNull())
    )
    rows = interest_rows(searches, known, cut, settings).localCheckpoint()
    vectors, call_stats, _hits = embed_texts(
        spark, rows.select("text_hash", F.col("interest_text").alias("text")), "query", settings
    )
    stats["interest_vectors"] = f"rebuilt as of {cut.isoformat()}"
    stats["interest_embedding_calls"] = stats.get("interest_embedding_calls", 0) + int(call_stats.usage.get("calls", 0))
    return rows.join(vectors, "text_hash").select("user_id", "keywords", "embedding")
