"""Spark job ``publish_index``: versioned OpenSearch indices, bulk-loaded, validated, swapped in atomically.

For the promoted model (``model.runs``) and the features it was trained with:

1. build the documents of each family (``indices.FAMILIES``) from Iceberg at fixed snapshots:
   places (catalogue + profile keywords + embedding + decayed popularity), recommendations (one
   document per user: the ranked list with scores and reasons), users (search-interest vectors);
2. create ``<alias>-<version>`` per family with refresh off and no replicas, bulk-load it from the
   Spark partitions in parallel (``streaming_bulk`` per partition, chunks capped in bytes, HTTP 429
   retried with exponential back-off), then refresh and restore the live settings;
3. validate: document counts equal the source rows, k-NN recall@10 against exact cosine on a sample
   of place vectors ≥ ``publish_min_recall``, canned queries answer;
4. only then move every alias in one ``_aliases`` request; keep the newest ``index_keep_versions``
   versions for ``placerec rollback``, delete older ones.

Any failure before the swap deletes the new indices and leaves the aliases where they were; every
index's fate is a row of ``ops.index_versions`` (with the source snapshot ids and model version).
A rerun for inputs the live version was already built from does nothing unless forced.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

import numpy as np
import opensearchpy

from placerec.serve import indices
from placerec.serve.client import opensearch_client
from placerec.settings import Settings, get_settings

if TYPE_CHECKING:
    from opensearchpy import OpenSearch
    from pyspark.sql import DataFrame, SparkSession

log = logging.getLogger(__name__)

JOB = "publish_index"
INPUTS = [
    "raw.places",
    "raw.place_versions",
    "features.place_profiles",
    "features.user_interests",
    "features.interactions",
]
ID_FIELD = {"places": "place_id", "recommendations": "user_id", "users": "user_id"}
RECALL_K = 10
SERVED = ("live", "previous", "rolled-back")
"""Statuses of versions that passed validation and went live: the only ones rollback may return to."""


class PublishError(RuntimeError):
    """The build or its validation failed: the new indices were removed, the aliases did not move."""


@dataclass
class Sources:
    """What one publish reads: the model version, the snapshots, the document frames per family."""

    model_version: str
    trained_for: Any
    snapshots: dict[str, str]
    frames: dict[str, DataFrame]
    dim: int
    key: str = ""


@dataclass
class LoadResult:
    ok: int = 0
    failed: int = 0
    errors: list[str] = field(default_factory=list)
    seconds: float = 0.0


# ---------------------------------------------------------------------------------------------- sources


def promoted_model(spark: SparkSession, model_version: str = "") -> tuple[str, Any]:
    """``(model_version, trained_for)`` of ``model_version``, or of the newest promoted run."""
    from pyspark.sql import functions as F

    runs = spark.table("model.runs")
    if model_version:
        row = runs.where(F.col("model_version") == model_version).select("model_version", "trained_for").first()
        if row is None:
            raise PublishError(f"model version {model_version!r} is not in model.runs")
    else:
        row = runs.where("promoted").orderBy(F.col("created_at").desc()).select("model_version", "trained_for").first()
        if row is None:
            raise PublishError("no promoted model in model.runs: run train_hybrid first (or give --model-version)")
    return str(row["model_version"]), row["trained_for"]


def _as_of(frame: DataFrame, day: Any) -> DataFrame:
    """The newest ``built_for`` partition on or before ``day``."""
    from pyspark.sql import functions as F

    row = frame.where(F.col("built_for") <= F.lit(day)).agg(F.max("built_for").alias("d")).first()
    if row is None or row["d"] is None:
        return frame.limit(0)
    return frame.where(F.col("built_for") == F.lit(row["d"]))


def source_frames(spark: SparkSession, model_version: str, trained_for: Any, s: Settings) -> Sources:
    """The document frames of every family, read at the current snapshots of the inputs."""
    from pyspark.sql import functions as F

    from placerec.ops import places_as_of, read_at, snapshot_ids

    snaps = snapshot_ids([*INPUTS, "model.recommendations"])
    # the catalogue of the day the model was trained for (a late publish shows no later renames)
    after = trained_for + timedelta(days=1)
    day_end = datetime(after.year, after.month, after.day, tzinfo=timezone.utc)
    places = places_as_of(spark, snaps, day_end)
    profiles = _as_of(read_at(spark, "features.place_profiles", snaps), trained_for).select(
        "place_id", "top_keywords", "positive_keywords", "embedding"
    )
    popularity = (
        _as_of(read_at(spark, "features.interactions", snaps), trained_for)
        .groupBy("place_id")
        .agg(F.sum("weight").cast("float").alias("popularity"))
    )
    place_docs = (
        places.join(profiles, "place_id", "left")
        .join(popularity, "place_id", "left")
        .select(
            "place_id",
            "name",
            "category",
            "district",
            "address",
            F.when(F.col("lat").isNotNull() & F.col("lon").isNotNull(), F.struct("lat", "lon")).alias("location"),
            F.coalesce(F.col("top_keywords"), F.array().cast("array<string>")).alias("keywords"),
            F.coalesce(F.col("positive_keywords"), F.array().cast("array<string>")).alias("praised"),
            F.coalesce(F.col("popularity"), F.lit(0.0)).cast("float").alias("popularity"),
            F.col("embedding").cast("array<float>").alias("embedding"),
        )
    )
    recs = read_at(spark, "model.recommendations", snaps).where(F.col("model_version") == model_version)
    meta = places.select("place_id", "name", "category", "district")
    rec_docs = (
        recs.join(meta, "place_id", "left")
        .groupBy("user_id")
        .agg(
            F.array_sort(
                F.collect_list(F.struct("rank", "place_id", "score", "reason", "name", "category", "district"))
            ).alias("items")
        )
        .select(
            "user_id",
            F.lit(model_version).alias("model_version"),
            F.transform("items", lambda x: x["place_id"]).alias("place_ids"),
            "items",
        )
    )
    interests = _as_of(read_at(spark, "features.user_interests", snaps), trained_for)
    user_docs = (
        interests.where(F.col("embedding").isNotNull())
        .groupBy("user_id")
        .agg(F.min_by(F.struct("keywords", "embedding"), F.col("origin")).alias("u"))
        .select(
            "user_id",
            F.coalesce(F.col("u.keywords"), F.array().cast("array<string>")).alias("keywords"),
            F.col("u.embedding").cast("array<float>").alias("embedding"),
        )
    )
    first = profiles.where(F.size("embedding") > 0).select(F.size("embedding").alias("d")).first()
    dim = int(first["d"]) if first else 384
    sources = Sources(
        model_version,
        trained_for,
        snaps,
        {"places": place_docs, "recommendations": rec_docs, "users": user_docs},
        dim,
    )
    sources.key = publish_key(sources, s)
    return sources


def publish_key(sources: Sources, s: Settings) -> str:
    """What the documents and the index definitions depend on, hashed: equal keys, equal indices."""
    knobs = [s.index_prefix, s.index_shards, s.knn_m, s.knn_ef_construction, sources.dim]
    raw = json.dumps([sources.model_version, str(sources.trained_for), sources.snapshots, knobs], sort_keys=True)
    return hashlib.sha256(raw.encode()).hexdigest()[:8]


# ---------------------------------------------------------------------------------------------- documents


def _is_vector(value: Any) -> bool:
    """Lucene's cosine space rejects zero-length vectors: such a place is indexed without one."""
    return bool(value) and any(v != 0.0 for v in value)


def documents(frame: DataFrame, family: str) -> DataFrame:
    """``(_id, _source)`` per row of a family's frame: the bulk document as JSON, encoded by Spark in the JVM.

    Null fields are left out; a zero or empty embedding is left out (Lucene's cosine space rejects
    it: the place is indexed without a vector); empty keywords are dropped. Encoding here rather
    than in Python keeps the vectors out of Python objects: the bulk load only streams strings.
    """
    from pyspark.sql import functions as F

    columns = []
    for name in frame.columns:
        column = F.col(name)
        if name == "embedding":
            column = F.when(F.exists(column, lambda x: x != 0), column)
        elif name in ("keywords", "praised"):
            column = F.filter(column, lambda x: x.isNotNull() & (x != ""))
        columns.append(column.alias(name))
    return frame.select(
        F.col(ID_FIELD[family]).cast("string").alias("_id"),
        F.to_json(F.struct(*columns), {"ignoreNullFields": "true"}).alias("_source"),
    )


def encoded(frame: DataFrame, family: str, s: Settings) -> DataFrame:
    """``documents`` in ``publish_partitions`` partitions, cached: the rows are shuffled once, before
    encoding (not the JSON), and the counts and the bulk load read the same cached strings."""
    return documents(frame.repartition(max(1, s.publish_partitions)), family).persist()


def bulk_partition(rows: Iterable[Any], index: str, s: Settings) -> Iterator[tuple[int, int, list[str]]]:
    """Load one Spark partition of ``(_id, _source)`` rows; yield ``(ok, failed, first errors)``.

    ``publish_threads`` ``streaming_bulk`` loops share the partition's rows, so a partition keeps that
    many bulk requests in flight (one loop would leave the node idle while it waits for each answer).
    """
    import threading
    from concurrent.futures import ThreadPoolExecutor

    from opensearchpy import helpers

    threads = max(1, s.publish_threads)
    client = opensearch_client(s, pool_maxsize=threads)
    source, lock = iter(rows), threading.Lock()

    def shared() -> Iterator[Any]:
        while True:
            with lock:
                row = next(source, None)
            if row is None:
                return
            yield row

    def expand(row: Any) -> tuple[dict[str, Any], str]:
        # The source is JSON already; the index travels in the request's URL. The action stays a dict:
        # the helper's error path (a whole request refused, e.g. 429) reads it as one.
        return {"index": {"_id": row[0]}}, row[1]

    def stream() -> tuple[int, int, list[str]]:
        ok = failed = 0
        errors: list[str] = []
        try:
            for success, info in helpers.streaming_bulk(
                client,
                shared(),
                chunk_size=s.publish_chunk_docs,
                max_chunk_bytes=s.publish_chunk_bytes,
                max_retries=s.publish_max_retries,
                initial_backoff=1,
                max_backoff=30,
                raise_on_error=False,
                raise_on_exception=False,
                expand_action_callback=expand,
                index=index,
            ):
                if success:
                    ok += 1
                else:
                    failed += 1
                    if len(errors) < 3:
                        errors.append(_short_error(info))
        except Exception as exc:  # a transport failure the helper re-raises (e.g. 429 after every retry)
            failed += 1
            errors.append(f"{type(exc).__name__}: {str(exc)[:300]}")
        return ok, failed, errors

    try:
        with ThreadPoolExecutor(threads, thread_name_prefix="bulk") as pool:
            results = list(pool.map(lambda _: stream(), range(threads)))
    finally:
        client.close()
    yield (
        sum(r[0] for r in results),
        sum(r[1] for r in results),
        [e for r in results for e in r[2]][:3],
    )


def _bulk_batches(index: str, s: Settings, batches: Iterable[Any]) -> Iterator[Any]:
    """``mapInArrow`` body: :func:`bulk_partition` over the partition's ``(_id, _source)`` rows."""
    import pyarrow as pa

    rows = (pair for b in batches for pair in zip(b.column(0).to_pylist(), b.column(1).to_pylist(), strict=True))
    for ok, failed, errors in bulk_partition(rows, index, s):
        yield pa.RecordBatch.from_pydict(
            {"ok": [ok], "failed": [failed], "errors": [errors]},
            schema=pa.schema([("ok", pa.int64()), ("failed", pa.int64()), ("errors", pa.list_(pa.string()))]),
        )


def _short_error(info: Any) -> str:
    try:
        ((op, body),) = info.items()
        err = body.get("error") or body.get("status")
        return f"{op} {body.get('_id')}: {json.dumps(err, ensure_ascii=False)[:300]}"
    except Exception:
        return str(info)[:300]


def load(docs: DataFrame, index: str, s: Settings) -> LoadResult:
    """Bulk-load ``documents(...)`` rows into ``index``, one ``streaming_bulk`` per Spark partition at once.

    The job hands it ``publish_partitions`` cached partitions: the shuffle happens once, on the rows,
    before encoding (not on the JSON) and before this is timed."""
    began = time.monotonic()
    loaded = docs.mapInArrow(functools.partial(_bulk_batches, index, s), "ok long, failed long, errors array<string>")
    counts = loaded.collect()
    result = LoadResult(seconds=time.monotonic() - began)
    for ok, failed, errors in counts:
        result.ok += ok
        result.failed += failed
        result.errors.extend(errors)
    return result


# ---------------------------------------------------------------------------------------------- validation


def exact_top(queries: np.ndarray, vectors: np.ndarray, k: int) -> np.ndarray:
    """Row indices of the ``k`` nearest ``vectors`` (cosine) to each query, best first."""

    def unit(x: np.ndarray) -> np.ndarray:
        n = np.linalg.norm(x, axis=1, keepdims=True)
        return np.divide(x, n, out=np.zeros_like(x), where=n > 0)

    sims = unit(queries) @ unit(vectors).T
    k = min(k, vectors.shape[0])
    part = np.argpartition(-sims, k - 1, axis=1)[:, :k]
    order = np.take_along_axis(sims, part, axis=1).argsort(axis=1)[:, ::-1]
    return np.take_along_axis(part, order, axis=1)


def recall_at_k(found: list[list[str]], exact: list[list[str]], k: int = RECALL_K) -> float:
    """Mean share of each exact top-k the index returned (1.0 for no queries)."""
    if not exact:
        return 1.0
    return float(
        np.mean([len(set(f[:k]) & set(e[:k])) / max(1, min(k, len(e))) for f, e in zip(found, exact, strict=True)])
    )


def knn_recall(client: OpenSearch, index: str, ids: list[str], vectors: np.ndarray, s: Settings) -> float:
    """k-NN recall@10 of ``index`` against exact cosine over the source ``vectors`` (a sample of queries)."""
    if not ids:
        return 1.0
    rng = np.random.default_rng(s.train_seed)
    picks = rng.choice(len(ids), size=min(s.publish_recall_sample, len(ids)), replace=False)
    exact_rows = exact_top(vectors[picks], vectors, RECALL_K)
    exact = [[ids[j] for j in row] for row in exact_rows]
    found: list[list[str]] = []
    for start in range(0, len(picks), 50):
        body: list[dict[str, Any]] = []
        for p in picks[start : start + 50]:
            body.append({"index": index})
            body.append(
                {
                    "size": RECALL_K,
                    "_source": False,
                    "query": indices.knn_clause(vectors[p].tolist(), RECALL_K, s),
                }
            )
        for response in client.msearch(body=body)["responses"]:
            if "error" in response:
                raise PublishError(f"k-NN query failed on {index}: {json.dumps(response['error'])[:300]}")
            found.append([h["_id"] for h in response["hits"]["hits"]])
    return recall_at_k(found, exact)


def validate(
    client: OpenSearch, names: dict[str, str], expected: dict[str, int], sources: Sources, s: Settings
) -> dict[str, Any]:
    """Counts, k-NN recall and canned queries against the new (not yet live) indices."""
    from pyspark.sql import functions as F

    problems: list[str] = []
    counts = {f: int(client.count(index=names[f])["count"]) for f in indices.FAMILIES}
    for f in indices.FAMILIES:
        if counts[f] != expected[f]:
            problems.append(f"{names[f]} holds {counts[f]} documents, the source has {expected[f]}")

    vec = sources.frames["places"].where(F.col("embedding").isNotNull()).select("place_id", "embedding").toArrow()
    pairs = [(p, v) for p, v in zip(vec.column(0).to_pylist(), vec.column(1).to_pylist(), strict=True) if _is_vector(v)]
    ids = [p for p, _ in pairs]
    vectors = np.array([v for _, v in pairs], dtype=np.float32).reshape(len(pairs), -1)
    recall = knn_recall(client, names["places"], ids, vectors, s)
    if recall < s.publish_min_recall:
        problems.append(f"k-NN recall@{RECALL_K} {recall:.3f} < {s.publish_min_recall} against exact cosine")

    canned: dict[str, Any] = {}
    if ids:
        first = ids[0]
        hit = client.search(
            index=names["places"],
            body={
                "size": 1,
                "_source": False,
                "query": indices.knn_clause(vectors[0].tolist(), 1, s),
            },
        )["hits"]["hits"]
        canned["places_knn_self"] = bool(hit) and hit[0]["_id"] == first
        if not canned["places_knn_self"]:
            problems.append(f"k-NN on place {first}'s own vector did not return it first")
    if expected["places"]:
        keyword_row = sources.frames["places"].where(F.size("keywords") > 0).select("place_id", "keywords").first()
        if keyword_row is not None:
            word = keyword_row["keywords"][0]
            hits = client.search(index=names["places"], body={"query": {"match": {"keywords": word}}})
            canned["places_keyword_hits"] = int(hits["hits"]["total"]["value"])
            if not canned["places_keyword_hits"]:
                problems.append(f"keyword query {word!r} found nothing in {names['places']}")
    if expected["recommendations"]:
        row = sources.frames["recommendations"].select("user_id", F.size("items").alias("n")).first()
        assert row is not None
        doc = client.get(index=names["recommendations"], id=row["user_id"])["_source"]
        canned["recommendations_list"] = len(doc.get("items", []))
        if len(doc.get("items", [])) != row["n"]:
            problems.append(
                f"user {row['user_id']}: {len(doc.get('items', []))} recommendations, source has {row['n']}"
            )
    if expected["users"]:
        row = sources.frames["users"].select("user_id").first()
        assert row is not None
        doc = client.get(index=names["users"], id=row["user_id"])["_source"]
        canned["users_vector"] = "embedding" in doc
    return {
        "counts": counts,
        "expected": expected,
        "recall@10": round(recall, 4),
        "canned": canned,
        "problems": problems,
    }


# ---------------------------------------------------------------------------------------------- aliases


def alias_targets(client: OpenSearch, alias: str) -> list[str]:
    """Indices ``alias`` points at now ([] if it does not exist)."""
    from opensearchpy.exceptions import NotFoundError

    try:
        return sorted(client.indices.get_alias(name=alias).keys())
    except NotFoundError:
        return []


def swap_aliases(client: OpenSearch, targets: dict[str, str], s: Settings) -> dict[str, list[str]]:
    """Point each family's alias at ``targets[family]`` in one atomic ``_aliases`` request; return the old targets."""
    actions: list[dict[str, Any]] = []
    before: dict[str, list[str]] = {}
    for family, index in targets.items():
        alias = indices.alias_name(s, family)
        before[family] = alias_targets(client, alias)
        actions += [{"remove": {"index": old, "alias": alias}} for old in before[family] if old != index]
        actions.append({"add": {"index": index, "alias": alias}})
    client.indices.update_aliases(body={"actions": actions})
    return before


def version_of(index: str, family: str, s: Settings) -> str:
    return index.removeprefix(indices.alias_name(s, family) + "-")


def versions_present(client: OpenSearch, s: Settings) -> dict[str, set[str]]:
    """Version → families that have an index in the cluster."""
    found: dict[str, set[str]] = {}
    for family in indices.FAMILIES:
        pattern = indices.alias_name(s, family) + "-*"
        for row in client.cat.indices(index=pattern, format="json", h="index"):
            found.setdefault(version_of(row["index"], family, s), set()).add(family)
    return found


def live_version(client: OpenSearch, s: Settings) -> str | None:
    """The version every alias points at (None if none is live; error if the aliases disagree)."""
    versions = set()
    for family in indices.FAMILIES:
        for index in alias_targets(client, indices.alias_name(s, family)):
            versions.add(version_of(index, family, s))
    if len(versions) > 1:
        raise PublishError(f"aliases point at different versions: {sorted(versions)}")
    return versions.pop() if versions else None


def delete_version(client: OpenSearch, version: str, s: Settings) -> None:
    for family in indices.FAMILIES:
        client.indices.delete(index=indices.index_name(s, family, version), ignore_unavailable=True)


# ---------------------------------------------------------------------------------------------- record


def record_versions(
    version: str,
    sources: Sources | None,
    status: str,
    details: dict[str, Any],
    s: Settings,
    docs: dict[str, int] | None = None,
    only: list[str] | None = None,
) -> None:
    """Upsert the ``ops.index_versions`` rows (one per family) of ``version`` with ``status``."""
    import pyarrow as pa

    from placerec.catalog import get_catalog
    from placerec.tables import load_table

    table = load_table(get_catalog(), "ops.index_versions")
    now = datetime.now(timezone.utc)
    names = [indices.index_name(s, f, version) for f in indices.FAMILIES if only is None or f in only]
    existing = {r["index_name"]: r for r in table.scan(row_filter=f"version = '{version}'").to_arrow().to_pylist()}
    rows = []
    for f in indices.FAMILIES:
        name = indices.index_name(s, f, version)
        if name not in names:
            continue
        old = existing.get(name, {})
        rows.append(
            {
                "index_name": name,
                "alias": indices.alias_name(s, f),
                "model_version": sources.model_version if sources else old.get("model_version"),
                "source_snapshots": sources.snapshots if sources else dict(old.get("source_snapshots") or []),
                "docs": (docs or {}).get(f, old.get("docs")),
                "status": status,
                "created_at": old.get("created_at") or now,
                "version": version,
                "family": f,
                "publish_key": sources.key if sources else old.get("publish_key"),
                "details": json.dumps(details, sort_keys=True, default=str),
                "updated_at": now,
            }
        )
    arrow_schema = table.schema().as_arrow()
    frame = pa.Table.from_pylist(rows, schema=arrow_schema)
    table.upsert(frame, join_cols=["index_name"])


def recorded(s: Settings) -> list[dict[str, Any]]:
    """The ``ops.index_versions`` rows of this prefix's aliases, newest version first."""
    from placerec.catalog import get_catalog
    from placerec.tables import load_table

    aliases = {indices.alias_name(s, f) for f in indices.FAMILIES}
    rows = load_table(get_catalog(), "ops.index_versions").scan().to_arrow().to_pylist()
    rows = [r for r in rows if r.get("alias") in aliases]
    return sorted(rows, key=lambda r: (r.get("version") or "", r.get("family") or ""), reverse=True)


# ---------------------------------------------------------------------------------------------- the job


def new_version(sources: Sources, now: datetime | None = None) -> str:
    stamp = (now or datetime.now(timezone.utc)).strftime("%Y%m%d%H%M%S")
    return f"v{stamp}-{sources.key}"


def run_publish_index(
    spark: SparkSession,
    start: datetime,
    end: datetime,
    *,
    run_id: str = "manual",
    model_version: str = "",
    force: bool = False,
    dry_run: bool = False,
    settings: Settings | None = None,
) -> dict[str, Any]:
    """Build, validate and (unless ``dry_run``) swap in one version of every index family."""
    from placerec.catalog import ensure_tables_once
    from placerec.ops import record_job_metrics

    s = settings or get_settings()
    began = time.monotonic()
    ensure_tables_once()
    model_version, trained_for = promoted_model(spark, model_version)
    sources = source_frames(spark, model_version, trained_for, s)
    client = opensearch_client(s)
    details: dict[str, Any] = {"model_version": model_version, "publish_key": sources.key, "dry_run": dry_run}

    try:
        live = live_version(client, s)
    except opensearchpy.exceptions.ConnectionError as exc:
        raise PublishError(f"OpenSearch at {s.opensearch_url} is unreachable, nothing changed: {exc}") from None
    details["orphans_deleted"] = delete_orphans(client, s, live)
    if live and live.endswith("-" + sources.key) and not force and not dry_run:
        details.update(version=live, status="unchanged", reason="the live version was built from these inputs")
        record_job_metrics(JOB, start, end, run_id, began, details)
        log.info("publish_index: live version %s already built from these inputs (force to rebuild)", live)
        return details

    version = new_version(sources)
    names = {f: indices.index_name(s, f, version) for f in indices.FAMILIES}
    details.update(version=version, indices=names, live_before=live)
    # encoded once and kept: the counts below and the bulk load read the same rows
    docs = {f: encoded(sources.frames[f], f, s) for f in indices.FAMILIES}
    try:
        expected = {f: int(docs[f].count()) for f in indices.FAMILIES}
        record_versions(version, sources, "building", details, s, docs=expected)
        try:
            build(client, sources, docs, names, expected, details, s)
        except Exception as exc:
            try:
                delete_version(client, version, s)
            except opensearchpy.exceptions.ConnectionError as gone:  # the node went away mid-build
                log.warning("could not delete the half-built %s (%s): the next run deletes it", version, gone)
                exc = PublishError(f"OpenSearch at {s.opensearch_url} became unreachable during the build: {exc}")
            status = "rejected" if "validation failed" in str(exc) else "failed"
            details.update(status=status, reason=str(exc)[:1000])
            record_versions(version, sources, status, details, s)
            record_job_metrics(JOB, start, end, run_id, began, details)
            raise exc if isinstance(exc, PublishError) else PublishError(f"build of {version} failed: {exc}") from exc
    finally:
        for frame in docs.values():
            frame.unpersist()

    if dry_run:
        delete_version(client, version, s)
        details["status"] = "dry-run"
        record_versions(version, sources, "dry-run", details, s, docs=expected)
        record_job_metrics(JOB, start, end, run_id, began, details, rows_written=0)
        return details

    before = swap_aliases(client, names, s)
    details.update(status="live", aliases_before=before)
    record_versions(version, sources, "live", details, s, docs=expected)
    if live:
        record_versions(live, None, "previous", {"superseded_by": version}, s)
    details["deleted"] = prune(client, s, keep=version)
    record_job_metrics(JOB, start, end, run_id, began, details, rows_written=sum(expected.values()))
    return details


def build(
    client: OpenSearch,
    sources: Sources,
    docs: dict[str, DataFrame],
    names: dict[str, str],
    expected: dict[str, int],
    details: dict[str, Any],
    s: Settings,
) -> None:
    """Create, bulk-load, refresh and validate the new indices (not live yet); raise on any shortfall."""
    analyzer = indices.korean_analyzer(client)
    for f in indices.FAMILIES:
        client.indices.create(
            index=names[f],
            body={"settings": indices.build_settings(s, analyzer), "mappings": indices.mappings(f, sources.dim, s)},
        )
    loads = {f: load(docs[f], names[f], s) for f in indices.FAMILIES}
    details["load"] = {
        f: {
            "docs": r.ok,
            "failed": r.failed,
            "seconds": round(r.seconds, 3),
            "docs_per_s": round(r.ok / r.seconds, 1) if r.seconds else None,
            "errors": r.errors,
        }
        for f, r in loads.items()
    }
    failed = {f: r for f, r in loads.items() if r.failed or r.ok != expected[f]}
    if failed:
        reason = "; ".join(
            f"{names[f]}: {r.ok}/{expected[f]} documents loaded, {r.failed} failed ({'; '.join(r.errors[:2])})"
            for f, r in failed.items()
        )
        raise PublishError(f"bulk load failed: {reason}")
    for f in indices.FAMILIES:
        client.indices.refresh(index=names[f])
        client.indices.put_settings(index=names[f], body=indices.live_settings(s))
    client.cluster.health(index=list(names.values()), wait_for_status="yellow")
    details["validation"] = validate(client, names, expected, sources, s)
    if details["validation"]["problems"]:
        raise PublishError("validation failed: " + "; ".join(details["validation"]["problems"]))


def surplus_versions(client: OpenSearch, s: Settings, keep: str) -> list[str]:
    """Versions beyond the newest ``index_keep_versions`` (``keep``, the live one, always counts as kept)."""
    present = sorted(versions_present(client, s), reverse=True)
    return [v for v in present if v != keep][max(0, s.index_keep_versions - 1) :]


def prune(client: OpenSearch, s: Settings, keep: str) -> list[str]:
    """Delete all but the newest ``index_keep_versions`` versions (never the live one)."""
    extra = surplus_versions(client, s, keep)
    for v in extra:
        delete_version(client, v, s)
        record_versions(v, None, "deleted", {"pruned_after": keep}, s)
    return extra


def delete_orphans(client: OpenSearch, s: Settings, live: str | None) -> list[str]:
    """Delete indices an interrupted build left behind (present, not live, never validated)."""
    validated = {r["version"] for r in recorded(s) if r["status"] in SERVED}
    orphans = sorted(v for v in versions_present(client, s) if v != live and v not in validated)
    for v in orphans:
        delete_version(client, v, s)
        record_versions(v, None, "failed", {"reason": "left behind by an interrupted build; deleted"}, s)
    return orphans


def rollback(to: str = "", settings: Settings | None = None) -> dict[str, str]:
    """Point every alias back at version ``to`` (default: the newest complete version older than the live one)."""
    s = settings or get_settings()
    client = opensearch_client(s)
    live = live_version(client, s)
    validated = {r["version"] for r in recorded(s) if r["status"] in SERVED}
    complete = sorted(
        (v for v, fams in versions_present(client, s).items() if fams == set(indices.FAMILIES) and v in validated),
        reverse=True,
    )
    if to:
        if to not in complete:
            raise PublishError(
                f"version {to!r} has no complete set of indices; present: {', '.join(complete) or 'none'}"
            )
        target = to
    else:
        older = [v for v in complete if live is None or v < live]
        if not older:
            raise PublishError(f"no version older than the live one ({live}) to roll back to")
        target = older[0]
    if target == live:
        return {"from": live or "", "to": target, "status": "unchanged"}
    swap_aliases(client, {f: indices.index_name(s, f, target) for f in indices.FAMILIES}, s)
    record_versions(target, None, "live", {"rolled_back_from": live}, s)
    if live:
        record_versions(live, None, "rolled-back", {"rolled_back_to": target}, s)
    return {"from": live or "", "to": target, "status": "rolled back"}
