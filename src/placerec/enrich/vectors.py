"""Embedding texts through the cache: the shared step of place profiles and user interests.

Texts are keyed by their sha256; vectors already in ``ops.llm_cache`` for (embedding model, input
type) are reused, the rest are embedded inside Spark partitions in batches and cached first.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from placerec.enrich import cache
from placerec.settings import Settings

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

_DIGITS = 6


def embedding_worker(input_type: str, settings: Settings) -> cache.Worker:
    """Embeds a partition's texts through the configured endpoint, ``batch_size`` at a time."""

    def work(items: list[tuple[str, str]], share: dict[str, Any]) -> tuple[list[cache.Outcome], dict[str, float]]:
        from placerec.enrich.embeddings import EmbeddingClient

        with EmbeddingClient(settings=settings) as client:
            vectors = client.embed([text for _, text in items], input_type)  # type: ignore[arg-type]
            usage = client.usage
        outcomes = [
            cache.Outcome(h, json.dumps([round(float(x), _DIGITS) for x in v]))
            for (h, _), v in zip(items, vectors, strict=True)
        ]
        return outcomes, {
            "calls": usage.calls,
            "texts": usage.texts,
            "tokens_in": usage.tokens,
            "seconds": usage.seconds,
        }

    return work


def embed_texts(
    spark: SparkSession, texts: DataFrame, input_type: str, settings: Settings
) -> tuple[DataFrame, cache.CallStats, int]:
    """Vectors for a DataFrame of ``(text_hash, text)``: ``(text_hash, embedding)``, call stats, cache hits."""
    from pyspark.sql import functions as F

    model = settings.embeddings_model
    distinct = texts.dropDuplicates(["text_hash"])
    known = cache.lookup(spark, cache.EMBEDDING, model, input_type).select(F.col("content_hash").alias("text_hash"))
    misses = sorted((r["text_hash"], r["text"]) for r in distinct.join(known, "text_hash", "left_anti").collect())
    hits = distinct.count() - len(misses)
    stats = cache.call_misses(
        spark,
        misses,
        kind=cache.EMBEDDING,
        model=model,
        version=input_type,
        worker=embedding_worker(input_type, settings),
        partitions=max(1, settings.enrich_partitions),
        chunk_size=max(1, settings.enrich_chunk_size * 4),
    )
    if stats.transient:
        raise RuntimeError(f"{len(stats.transient)} texts got no embedding: {next(iter(stats.transient.values()))}")
    vectors = cache.lookup(spark, cache.EMBEDDING, model, input_type).select(
        F.col("content_hash").alias("text_hash"), F.from_json("result", "array<float>").alias("embedding")
    )
    return vectors, stats, hits
