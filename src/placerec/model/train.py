"""Spark job ``train_hybrid``: fit, evaluate on a time split, gate, and write the top-K lists.

For a data interval ending at ``end`` (test span ``d`` = ``train_test_days``):

1. validation fit: train on events before ``end - (n+1)d``, score the next ``d`` days; the ALS weight
   (``train_als_reg_grid``) and the blend (``k``, ``beta``) with the best NDCG@10 there are chosen;
2. test fits, rolling-origin: for each of the ``n`` spans (``train_eval_cuts``) ending at ``end``,
   train on events before the span, test on it: the hybrid with that blend against popularity,
   CF-only, content-only, EASE and the ``implicit`` library's ALS, overall and for cold, light and
   heavy users, pooled over the (user, span) pairs (:func:`pooled_table`); the gate compares NDCG@10
   (``gate``);
3. full fit on everything before ``end``: top-K per user with reasons, into
   ``model.recommendations`` (partition = model version), factors into ``model.factors``, the run
   into ``model.runs``, a markdown report with charts under ``<home>/reports/<model version>/``.

Each fit sees only events before its cut (interactions, ALS, content vectors: ``model.content``).
Test positives are the places a user clicked, saved, navigated to, reviewed or visited in the test
span that were in the catalogue at the cut and not in their training history. Ids whose history hit
``interaction_max_places`` (merged or bot-like ids) are left out of the evaluation.

The model version is derived from the as-of day, the parameters and the input snapshot ids, so a
rerun of the same interval on the same inputs rewrites the same partition with the same rows.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

import numpy as np
import scipy.sparse as sp

from placerec.enrich.profiles import as_of
from placerec.model import metrics, references
from placerec.model.content import interest_vectors, place_vectors
from placerec.model.hybrid import (
    CF_ONLY,
    CONTENT_ONLY,
    Blend,
    Scorer,
    SegmentBlend,
    Split,
    catalogue_top,
    check_content_mass,
    choose_blend,
)
from placerec.model.interactions import interaction_rows, parse_weights
from placerec.model.oracle import ORACLE, ORACLE_LABEL, Truth, load_truth, oracle_scores
from placerec.ops import places_as_of, read_at, record_job_metrics, snapshot_ids
from placerec.settings import Settings, get_settings

if TYPE_CHECKING:
    import pyarrow as pa
    from pyspark.sql import DataFrame, SparkSession

log = logging.getLogger(__name__)

JOB = "train_hybrid"
EVAL_K = 10
POSITIVE_EVENTS = ("click", "save", "navigate", "review", "visit")
SEGMENTS = ("all", "cold", "light", "heavy")
COLD_SEARCHED = "cold, searched"
"""A reported subset of the cold segment: cold users with a search interest before the cut (their
searches are all the cold-start path has to go on); reported, never blended on its own."""
REPORT_SEGMENTS = (*SEGMENTS, COLD_SEARCHED)
GATE_BASELINES = ("popularity", "cf", "content")
INPUTS = [
    "raw.events",
    "raw.places",
    "raw.place_versions",
    "features.review_keywords",
    "features.place_profiles",
    "features.user_interests",
]
METHODS = ("hybrid", "popularity", "cf", "content", "ease", "implicit_als")
CF_ENGINES = ("implicit", "spark")
PROTOCOLS = ("nsmc",)
IMPLICIT_REFERENCE_REG = 0.05
"""The ``implicit_als`` reference row's L2 weight: a fixed, untuned configuration (15 iterations),
unlike the collaborative part, whose weight the validation span chooses (``train_als_reg_grid``)."""
GAP_CLOSED = "gap closed"
"""Row key: the share of the popularity-to-oracle NDCG@10 gap a method closes (generated data only)."""
VS_POPULARITY = f"ndcg@{EVAL_K} vs popularity"
"""Row key: mean paired NDCG@10 difference to popularity over the same users (``… lo``/``… hi``: its
95 % bootstrap interval)."""


POPULAR_IN_DISTRICT = 10
"""A place is "popular in <district> this week" when among this many most engaged-with there in the
7 days before the cut."""


@dataclass(frozen=True)
class RestsOn:
    """What a recommended place with no praised keyword matching the user rests on, said instead."""

    district: dict[int, str]
    popular_in_district: frozenset[int]

    def reason(self, item: int, warm: bool, interests: Sequence[str]) -> str:
        district = self.district.get(item)
        if item in self.popular_in_district and district:
            return f"popular in {district} this week"
        if warm:  # the collaborative part: what users with overlapping histories chose
            return "chosen by users with a history like yours"
        if interests:  # a cold user's list: the content part, from their searches
            return "close to your searches: " + ", ".join(interests[:2])
        return "popular overall"


@dataclass(frozen=True)
class GateDecision:
    promote: bool
    forced: bool
    reason: str


def gate(
    hybrid_ndcg: float,
    baselines: dict[str, float],
    promoted_ndcg: float | None,
    tolerance: float,
    force: bool = False,
) -> GateDecision:
    """Promote only if NDCG@10 ≥ the best baseline's and ≥ (1 - tolerance) × the promoted model's.

    ``force`` promotes anyway; the decision then says it was forced (recorded in ``model.runs``).
    """
    best_name, best = max(baselines.items(), key=lambda kv: kv[1]) if baselines else ("none", float("-inf"))
    refusals = []
    if not hybrid_ndcg >= best:
        refusals.append(f"NDCG@10 {hybrid_ndcg:.4f} < baseline {best_name} {best:.4f}")
    if promoted_ndcg is not None and not hybrid_ndcg >= promoted_ndcg * (1.0 - tolerance):
        refusals.append(f"NDCG@10 {hybrid_ndcg:.4f} < promoted {promoted_ndcg:.4f} - {tolerance:.0%}")
    if not refusals:
        return GateDecision(True, False, "passed")
    if force:
        return GateDecision(True, True, "forced: " + "; ".join(refusals))
    return GateDecision(False, False, "refused: " + "; ".join(refusals))


def _ids(df: DataFrame, column: str) -> np.ndarray:
    values = df.select(column).where(f"{column} IS NOT NULL").distinct().toArrow().column(0).to_pylist()
    return np.array(sorted(values), dtype=object)


def _index(universe: np.ndarray, values: Sequence[Any]) -> np.ndarray:
    """Positions of ``values`` in the sorted ``universe`` (-1 when absent)."""
    arr = np.array(values, dtype=object)
    if not len(arr):
        return np.empty(0, dtype=np.int64)
    pos = np.searchsorted(universe, arr)
    pos = np.clip(pos, 0, len(universe) - 1)
    return np.where(universe[pos] == arr, pos, -1).astype(np.int64)


def _vector_matrix(table: pa.Table, key: str, universe: np.ndarray, dim_hint: int = 0) -> np.ndarray:
    keys = table.column(key).to_pylist()
    vectors = table.column("embedding").to_pylist()
    dim = next((len(v) for v in vectors if v), dim_hint)
    out = np.zeros((len(universe), dim), dtype=np.float32)
    pos = _index(universe, keys)
    for p, v in zip(pos, vectors, strict=True):
        if p >= 0 and v:
            out[p] = v
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    return np.divide(out, norms, out=np.zeros_like(out), where=norms > 0)


class Trainer:
    """One training run's inputs (fixed snapshots) and the splits built from them."""

    def __init__(self, spark: SparkSession, end: datetime, settings: Settings) -> None:
        from pyspark.sql import functions as F

        self.spark, self.end, self.s = spark, end, settings
        self.snaps = snapshot_ids(INPUTS)
        self.stats: dict[str, Any] = {}
        self.events = (
            read_at(spark, "raw.events", self.snaps)
            .where(F.col("event_ts") < F.lit(end).cast("timestamp"))
            .select("event_type", "event_ts", "user_id", "place_id", "query", "rating", "source")
            .localCheckpoint()
        )
        self.places = places_as_of(spark, self.snaps, end).select("place_id", "category", "district", "updated_ts")
        self.users = _ids(self.events, "user_id")
        self.items = np.array(
            sorted(set(_ids(self.events, "place_id").tolist()) | set(_ids(self.places, "place_id").tolist())),
            dtype=object,
        )
        groups = self.places.select("place_id", F.concat_ws("|", "district", "category").alias("g")).toArrow()
        names = {g: i + 1 for i, g in enumerate(sorted(set(groups.column("g").to_pylist())))}
        self.groups = np.zeros(len(self.items), dtype=np.int64)
        for p, g in zip(
            _index(self.items, groups.column("place_id").to_pylist()), groups.column("g").to_pylist(), strict=True
        ):
            if p >= 0:
                self.groups[p] = names[g]
        self.positive: dict[int, list[str]] = {}
        """Per item: the keywords its reviews praise (``positive_keywords``), the only possible reasons."""
        self.interest_keywords: dict[int, list[str]] = {}

    def split(self, cut: datetime, *, keep_text: bool = False) -> Split:
        """Everything known before ``cut`` (not yet factorised: :meth:`factorise`)."""
        from pyspark.sql import functions as F

        began = time.monotonic()
        inter = interaction_rows(self.events, cut, self.s).select("user_id", "place_id", "weight").toArrow()
        u = _index(self.users, inter.column("user_id").to_pylist())
        i = _index(self.items, inter.column("place_id").to_pylist())
        w = inter.column("weight").to_numpy().astype(np.float32)
        train = sp.csr_matrix((w, (u, i)), shape=(len(self.users), len(self.items)), dtype=np.float32)
        weighted = [k for k, v in parse_weights(self.s.interaction_weights).items() if v > 0]
        engaged = (
            self.events.where((F.col("event_ts") < F.lit(cut).cast("timestamp")) & F.col("event_type").isin(weighted))
            .where("user_id IS NOT NULL AND place_id IS NOT NULL")
            .select("user_id", "place_id")
            .distinct()
            .toArrow()
        )
        eu = _index(self.users, engaged.column("user_id").to_pylist())
        ei = _index(self.items, engaged.column("place_id").to_pylist())
        seen = sp.csr_matrix((np.ones(len(eu), dtype=np.float32), (eu, ei)), shape=(len(self.users), len(self.items)))
        seen_items = self.events.where(F.col("event_ts") < F.lit(cut).cast("timestamp"))
        catalogue = set(_ids(seen_items, "place_id").tolist()) | set(
            _ids(self.places.where(F.col("updated_ts") < F.lit(cut).cast("timestamp")), "place_id").tolist()
        )
        candidates = np.zeros(len(self.items), dtype=bool)
        candidates[_index(self.items, sorted(catalogue))] = True

        places = place_vectors(self.spark, cut, self.snaps, self.s, self.stats).toArrow()
        item_vectors = _vector_matrix(places, "place_id", self.items)
        interests = interest_vectors(self.spark, self.events, cut, self.snaps, self.s, self.stats).toArrow()
        interest = (
            _vector_matrix(interests, "user_id", self.users, item_vectors.shape[1])
            if interests.num_rows
            else np.zeros((len(self.users), item_vectors.shape[1]), dtype=np.float32)
        )
        if keep_text:
            praised = (
                places.column("positive_keywords").to_pylist()
                if "positive_keywords" in places.column_names
                else [[]] * places.num_rows
            )
            self.positive = {
                int(p): list(k or [])
                for p, k in zip(_index(self.items, places.column("place_id").to_pylist()), praised, strict=True)
                if p >= 0
            }
            self.interest_keywords = {
                int(p): list(k or [])
                for p, k in zip(
                    _index(self.users, interests.column("user_id").to_pylist()),
                    interests.column("keywords").to_pylist(),
                    strict=True,
                )
                if p >= 0
            }
        popularity = np.asarray(train.sum(axis=0)).ravel()
        split = Split(cut, self.users, self.items, train, candidates, item_vectors, interest, popularity, self.groups)
        split.seen = seen
        log.info(
            "split at %s: %d interactions, %d users with history, %d candidate places (%.1fs)",
            cut.isoformat(),
            train.nnz,
            int((split.history > 0).sum()),
            int(candidates.sum()),
            time.monotonic() - began,
        )
        return split

    def first_event(self) -> datetime | None:
        """When the earliest event before the end happened (None without any)."""
        from pyspark.sql import functions as F

        row = self.events.agg(F.min("event_ts")).first()
        first = row[0] if row is not None else None
        return first.replace(tzinfo=timezone.utc) if first is not None and first.tzinfo is None else first

    def factorise(self, split: Split, reg: float) -> Split:
        """The collaborative part of ``split``: ALS factors by the configured engine (:func:`fit_cf`)."""
        began = time.monotonic()
        split.user_factors, split.item_factors = fit_cf(self.spark, split.train, self.s, reg)
        seconds = time.monotonic() - began
        self.stats.setdefault("cf_fit_seconds", []).append(round(seconds, 3))
        log.info("%s ALS at %s (reg %g): %.1fs", self.s.train_cf_engine, split.cut.isoformat(), reg, seconds)
        return split

    def rests_on(self) -> RestsOn:
        """Each item's district, and the items among the :data:`POPULAR_IN_DISTRICT` most engaged-with
        in their district (weighted event types) in the 7 days before ``end``."""
        from pyspark.sql import Window
        from pyspark.sql import functions as F

        weighted = [k for k, v in parse_weights(self.s.interaction_weights).items() if v > 0]
        since = F.lit(self.end - timedelta(days=7)).cast("timestamp")
        week = (
            self.events.where((F.col("event_ts") >= since) & F.col("event_type").isin(weighted))
            .where("place_id IS NOT NULL")
            .groupBy("place_id")
            .agg(F.count(F.lit(1)).alias("n"))
        )
        rank = Window.partitionBy("district").orderBy(F.col("n").desc(), F.col("place_id"))
        top = (
            week.join(self.places.select("place_id", "district"), "place_id")
            .where("district IS NOT NULL")
            .withColumn("rank", F.row_number().over(rank))
            .where(F.col("rank") <= POPULAR_IN_DISTRICT)
            .select("place_id")
            .toArrow()
        )
        districts = self.places.select("place_id", "district").where("district IS NOT NULL").toArrow()
        index = _index(self.items, districts.column("place_id").to_pylist())
        return RestsOn(
            {int(p): d for p, d in zip(index, districts.column("district").to_pylist(), strict=True) if p >= 0},
            frozenset(int(p) for p in _index(self.items, top.column("place_id").to_pylist()) if p >= 0),
        )

    def empty_spans(self, spans: list[tuple[datetime, datetime]]) -> str:
        """Why training cannot be evaluated: spans without a single positive event ("" if none)."""
        from pyspark.sql import functions as F

        empty = []
        for lo, hi in spans:
            found = self.events.where(
                (F.col("event_ts") >= F.lit(lo).cast("timestamp"))
                & (F.col("event_ts") < F.lit(hi).cast("timestamp"))
                & F.col("event_type").isin(list(POSITIVE_EVENTS))
            ).limit(1)
            if not found.count():
                empty.append(f"no {', '.join(POSITIVE_EVENTS)} events in [{lo.isoformat()}, {hi.isoformat()})")
        return "; ".join(empty)

    def truth(self, split: Split, until: datetime) -> tuple[np.ndarray, list[np.ndarray]]:
        """Evaluation users (row indices) and their held-out positives in ``[split.cut, until)``."""
        from pyspark.sql import functions as F

        held = (
            self.events.where(
                (F.col("event_ts") >= F.lit(split.cut).cast("timestamp"))
                & (F.col("event_ts") < F.lit(until).cast("timestamp"))
                & F.col("event_type").isin(list(POSITIVE_EVENTS))
            )
            .select("user_id", "place_id")
            .where("user_id IS NOT NULL AND place_id IS NOT NULL")
            .distinct()
            .toArrow()
        )
        u = _index(self.users, held.column("user_id").to_pylist())
        i = _index(self.items, held.column("place_id").to_pylist())
        ok = (u >= 0) & (i >= 0)
        u, i = u[ok], i[ok]
        ok = split.candidates[i] & (np.asarray(split.excluded[u, i]).ravel() == 0)
        u, i = u[ok], i[ok]
        merged = split.history >= self.s.interaction_max_places
        order = np.lexsort((i, u))
        u, i = u[order], i[order]
        users, starts = np.unique(u, return_index=True)
        groups = np.split(i, starts[1:]) if len(u) else []
        keep = ~merged[users]
        return users[keep], [g for g, k in zip(groups, keep, strict=True) if k]


def cf_regs(s: Settings) -> list[float]:
    """The L2 weights the validation span chooses from: the ``implicit`` engine's grid, or Spark's one
    ``regParam``. Raises ``ValueError`` on an unknown engine or a grid that is not positive numbers."""
    if s.train_cf_engine not in CF_ENGINES:
        raise ValueError(f"train_cf_engine must be one of {', '.join(CF_ENGINES)}; got {s.train_cf_engine!r}")
    if s.train_cf_engine == "spark":
        return [s.train_spark_als_reg]
    try:
        regs = [float(x) for x in s.train_als_reg_grid.split(",") if x.strip()]
    except ValueError:
        regs = []
    if not regs or any(not np.isfinite(r) or r <= 0 for r in regs):
        raise ValueError(
            f"train_als_reg_grid must be positive numbers separated by commas; got {s.train_als_reg_grid!r}"
        )
    return sorted(set(regs))


def fit_cf(spark: SparkSession, train: sp.csr_matrix, s: Settings, reg: float) -> tuple[np.ndarray, np.ndarray]:
    """ALS with implicit preferences on the training matrix: (user factors, item factors).

    ``train_cf_engine`` picks the engine: the ``implicit`` library in this process (the embedded
    default: no Spark job, ~0.2 s on the demo, ~20 s on NSMC's 518k interactions) or Spark ML ALS on
    ``spark`` (:func:`fit_spark_als`, for data that outgrows one machine). Both are seeded by
    ``train_seed``. Their ``reg`` differ in meaning: Spark scales it by each row's rating count.
    """
    n_users, n_items = train.shape
    if train.nnz == 0:
        zeros = np.zeros((n_users, s.train_factors), dtype=np.float32)
        return zeros, np.zeros((n_items, s.train_factors), dtype=np.float32)
    if s.train_cf_engine == "spark":
        return fit_spark_als(spark, train, s, reg)
    model = references.ImplicitALS(
        factors=s.train_factors,
        regularization=reg,
        alpha=s.train_als_alpha,
        iterations=s.train_als_iterations,
        random_state=s.train_seed,
    ).fit(train)
    assert model.user_factors_ is not None and model.item_factors_ is not None
    return model.user_factors_, model.item_factors_


def fit_spark_als(spark: SparkSession, train: sp.csr_matrix, s: Settings, reg: float) -> tuple[np.ndarray, np.ndarray]:
    """Spark ML ALS (implicit preferences) on the training matrix: (user factors, item factors)."""
    import pyarrow as pa
    from pyspark.ml.recommendation import ALS

    n_users, n_items = train.shape
    user_f = np.zeros((n_users, s.train_factors), dtype=np.float32)
    item_f = np.zeros((n_items, s.train_factors), dtype=np.float32)
    coo = train.tocoo()
    order = np.lexsort((coo.col, coo.row))
    table = pa.table(
        {
            "u": coo.row[order].astype(np.int32),
            "i": coo.col[order].astype(np.int32),
            "w": coo.data[order].astype(np.float32),
        }
    )
    frame = spark.createDataFrame(table).coalesce(2)
    als = ALS(
        rank=s.train_factors,
        maxIter=s.train_als_iterations,
        regParam=reg,
        alpha=s.train_als_alpha,
        implicitPrefs=True,
        userCol="u",
        itemCol="i",
        ratingCol="w",
        seed=s.train_seed,
        numUserBlocks=2,
        numItemBlocks=2,
    )
    model = als.fit(frame)
    for target, factors in ((user_f, model.userFactors), (item_f, model.itemFactors)):
        tbl = factors.toArrow()
        ids = tbl.column("id").to_numpy()
        # flat Arrow values straight into numpy: to_pylist() costs ~1 KB of Python objects per factor
        flat = tbl.column("features").combine_chunks().flatten().to_numpy(zero_copy_only=False)
        target[ids] = flat.astype(np.float32).reshape(len(ids), s.train_factors)
    return user_f, item_f


def eval_cuts(end: datetime, span: timedelta, wanted: int, first_event: datetime | None) -> list[datetime]:
    """The test cuts, oldest first: ``wanted`` consecutive spans ending at ``end`` (rolling-origin
    evaluation), fewer when the data is too short for them: the validation cut before the first
    must leave at least one span of history after the first event. Always at least one."""
    for n in range(wanted, 1, -1):
        if first_event is not None and end - (n + 1) * span >= first_event + span:
            return [end - j * span for j in range(n, 0, -1)]
    return [end - span]


def choose_cf_and_blend(
    trainer: Trainer, val: Split, users: np.ndarray, truth: list[np.ndarray], regs: Sequence[float]
) -> tuple[float, SegmentBlend, list[dict[str, Any]], dict[str, Any]]:
    """The ALS weight and the blend chosen on validation: per weight in ``regs``, factorise and score
    CF-only over the validation users with a history (the only ones CF serves); the best weight's
    factors (ties: the smallest weight) are kept, then the blend is chosen with them
    (:func:`choose_blend`). Choosing the blend once, not per weight, keeps the validation cost near
    one blend grid (minutes on NSMC).
    Returns (reg, blend, its grid, the record)."""
    scorer = _scorer(val, trainer.s)
    warm = [j for j, u in enumerate(users.tolist()) if val.history[u] > 0]
    warm_users, warm_truth = users[warm], [truth[j] for j in warm]
    tried: dict[str, float] = {}
    best: tuple[float, float, Any, Any] | None = None
    for reg in regs:
        trainer.factorise(val, reg)
        score = (
            round(metrics.ndcg_at_k(scorer.recommend(warm_users, CF_ONLY, EVAL_K), warm_truth, EVAL_K), 9)
            if len(warm_users)
            else 0.0
        )
        tried[f"{reg:g}"] = score
        if best is None or score > best[0]:
            best = (score, reg, val.user_factors, val.item_factors)
    assert best is not None, "cf_regs returns at least one weight"
    _, reg, val.user_factors, val.item_factors = best
    blend, grid = choose_blend(scorer, users, truth, EVAL_K)
    record = {
        "engine": trainer.s.train_cf_engine,
        "reg": reg,
        f"validation cf ndcg@{EVAL_K} by reg": tried,
        "validation users with a history": len(warm_users),
    }
    return reg, blend, grid, record


def score_protocol(trainer: Trainer, split: Split, end: datetime, blend: SegmentBlend, s: Settings) -> dict[str, Any]:
    """The NSMC data README's protocol on the test split's review events (:mod:`placerec.model.protocol`):
    its sizes and rows, the hybrid, our popularity and CF-only scored on its users and positives."""
    import pyarrow.compute as pc
    from pyspark.sql import functions as F

    from placerec.model import protocol

    began = time.monotonic()
    reviews = (
        trainer.events.where((F.col("event_type") == "review") & F.col("place_id").isNotNull())
        .select("user_id", "place_id", "event_ts")
        .toArrow()
    )
    days = pc.cast(pc.cast(reviews.column("event_ts"), "date32"), "int32").to_numpy(zero_copy_only=False)
    epoch = datetime(1970, 1, 1, tzinfo=timezone.utc)
    p = protocol.build(
        reviews.column("user_id").to_numpy(zero_copy_only=False),
        reviews.column("place_id").to_numpy(zero_copy_only=False),
        days,
        (split.cut - epoch).days,
        (end - epoch).days,
    )
    users = np.array([split.user_index[x] for x in p.users[p.eval_users].tolist()], dtype=np.int64)
    column = {place: j for j, place in enumerate(p.items.tolist())}
    # our item index → the protocol's column; the -1 padding (index -1) maps to the appended -1
    remap = np.array([column.get(x, -1) for x in split.items.tolist()] + [-1], dtype=np.int64)
    scorer = _scorer(split, s)
    ours = {
        name: remap[scorer.recommend(users, b, EVAL_K)]
        for name, b in (("hybrid", blend), ("popularity", Blend(mode="popularity")), ("cf", CF_ONLY))
    }
    rows = protocol.evaluate(p, ours, seed=s.train_seed)
    log.info("protocol %s: %s (%.1fs)", s.train_protocol, protocol.summary(p), time.monotonic() - began)
    return {"name": s.train_protocol, "sizes": protocol.summary(p), "table": rows}


def _scorer(split: Split, s: Settings) -> Scorer:
    return Scorer(split, s.train_cold_max, s.train_light_max, s.train_content_mass)


@dataclass
class CutScores:
    """One test cut's evaluation: figures per method and segment, and what pooling cuts needs."""

    rows: list[dict[str, Any]]
    """``metrics.evaluate`` figures per (method, segment), no paired comparison yet."""
    gains: dict[str, np.ndarray]
    """NDCG@10 per evaluated user, per method."""
    masks: dict[str, np.ndarray]
    """Per reported segment: which evaluated users belong to it."""
    users: np.ndarray
    """The evaluated users' ids (a user evaluated at several cuts is one cluster in the intervals)."""


def score_cut(
    split: Split,
    users: np.ndarray,
    truth: list[np.ndarray],
    blend: SegmentBlend,
    s: Settings,
    methods: Sequence[str] = METHODS,
    world: Truth | None = None,
) -> CutScores:
    """Every method on one split, overall and per segment (:func:`evaluate_methods` for one cut)."""
    scorer = _scorer(split, s)
    recs: dict[str, np.ndarray] = {}
    blends: dict[str, Blend | SegmentBlend] = {
        "hybrid": blend,
        "popularity": Blend(mode="popularity"),
        "cf": CF_ONLY,
        "content": CONTENT_ONLY,
    }
    for name in methods:
        if name in blends:
            recs[name] = scorer.recommend(users, blends[name], EVAL_K)
        elif name == "ease":
            recs[name] = _reference_lists(references.EASE(lam=500.0).fit(split.train), split, users)
        elif name == "implicit_als":
            model = references.ImplicitALS(
                factors=s.train_factors,
                alpha=s.train_als_alpha,
                regularization=IMPLICIT_REFERENCE_REG,
                iterations=15,
                random_state=s.train_seed,
            ).fit(split.train)
            recs[name] = _reference_lists(model, split, users)
    ceiling = oracle_scores(world, split, users) if world is not None else None
    if ceiling is not None:
        recs[ORACLE] = catalogue_top(split, ceiling, np.asarray(users), EVAL_K)
    segments = scorer.segments[users]
    searched = np.linalg.norm(split.interest[users], axis=1) > 0 if len(users) else np.zeros(0, dtype=bool)
    masks = {
        segment: (
            np.ones(len(users), dtype=bool)
            if segment == "all"
            else (segments == "cold") & searched
            if segment == COLD_SEARCHED
            else segments == segment
        )
        for segment in REPORT_SEGMENTS
    }
    # Metrics see the catalogue at the cut only: item ids are renumbered over the candidates, so
    # coverage is a share of what could have been recommended.
    cand = np.flatnonzero(split.candidates)
    renumber = np.full(len(split.items) + 1, -1, dtype=np.int64)
    renumber[cand] = np.arange(len(cand))
    popularity = np.asarray((split.train > 0).sum(axis=0)).ravel()[cand]
    n_train_users = int((split.history > 0).sum())
    rows = []
    for name, lists in recs.items():
        lists = renumber[lists]  # -1 padding maps to the last slot, which is -1
        for segment, mask in masks.items():
            if not mask.any():
                continue
            figures = metrics.evaluate(
                lists[mask],
                [renumber[t] for t, m in zip(truth, mask, strict=True) if m],
                EVAL_K,
                n_items=len(cand),
                item_popularity=popularity,
                n_train_users=max(1, n_train_users),
                item_vectors=split.item_vectors[cand],
            )
            rows.append({"method": name, "segment": segment, **figures})
    gains = {name: metrics.ndcg_per_user(lists, truth, EVAL_K) for name, lists in recs.items()}
    return CutScores(rows, gains, masks, split.users[np.asarray(users, dtype=np.int64)])


def pooled_table(cuts: Sequence[CutScores], seed: int) -> list[dict[str, Any]]:
    """The table over one or more test cuts: each (method, segment)'s figures are the mean over its
    evaluated (user, cut) pairs, i.e. the cuts' figures weighted by their users (coverage, novelty
    and diversity: the users-weighted mean of the cuts' values); ``users`` counts the pairs. Every
    method's paired NDCG@10 difference to popularity resamples users (all of a user's cuts together).
    """
    merged: dict[tuple[str, str], dict[str, Any]] = {}
    for cut in cuts:
        for row in cut.rows:
            key = (row["method"], row["segment"])
            n = row["users"]
            into = merged.setdefault(key, {"method": key[0], "segment": key[1], "users": 0.0, "_w": {}})
            into["users"] += n
            for metric, value in row.items():
                if metric not in ("method", "segment", "users"):
                    into["_w"][metric] = into["_w"].get(metric, 0.0) + value * n
    rows = []
    for (name, segment), row in merged.items():
        weighted = row.pop("_w")
        figures = {metric: total / row["users"] for metric, total in weighted.items()}
        out = {"method": name, "segment": segment, **figures, "users": row["users"]}
        if name != "popularity" and all("popularity" in c.gains for c in cuts):
            ours = np.concatenate([c.gains[name][c.masks[segment]] for c in cuts])
            base = np.concatenate([c.gains["popularity"][c.masks[segment]] for c in cuts])
            ids = np.concatenate([c.users[c.masks[segment]] for c in cuts])
            diff, lo, hi = metrics.paired_bootstrap(ours, base, seed=seed, groups=ids)
            out |= {VS_POPULARITY: diff, f"{VS_POPULARITY} lo": lo, f"{VS_POPULARITY} hi": hi}
        rows.append(out)
    return with_gap_closed(rows)


def evaluate_methods(
    split: Split,
    users: np.ndarray,
    truth: list[np.ndarray],
    blend: SegmentBlend,
    s: Settings,
    methods: Sequence[str] = METHODS,
    world: Truth | None = None,
) -> list[dict[str, Any]]:
    """Every method on the same split, overall and per segment: rows of ``metrics.evaluate`` figures.

    With ``world`` (a generated world's hidden truth covering the users) an ``oracle`` row too, and
    each row's share of the popularity-to-oracle NDCG gap it closes (:data:`GAP_CLOSED`).
    """
    return pooled_table([score_cut(split, users, truth, blend, s, methods, world)], s.train_seed)


def with_gap_closed(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each row of a segment that has popularity and oracle rows gets :data:`GAP_CLOSED`: (its NDCG −
    popularity's) / (the oracle's − popularity's); none where the oracle does not beat popularity."""
    ndcg = f"ndcg@{EVAL_K}"
    by = {(r["method"], r["segment"]): r[ndcg] for r in rows}
    for r in rows:
        floor, ceiling = by.get(("popularity", r["segment"])), by.get((ORACLE, r["segment"]))
        if floor is not None and ceiling is not None and ceiling > floor:
            r[GAP_CLOSED] = (r[ndcg] - floor) / (ceiling - floor)
    return rows


def _reference_lists(model: references.Recommender, split: Split, users: np.ndarray) -> np.ndarray:
    """Top-10 of a reference model over the same candidates as ours (the catalogue at the cut)."""
    out = []
    for b in range(0, len(users), 2048):
        batch = users[b : b + 2048]
        out.append(catalogue_top(split, model.scores(batch), batch, EVAL_K))
    return np.vstack(out) if out else np.empty((0, EVAL_K), dtype=np.int64)


def _version(end: datetime, params: dict[str, str], snaps: dict[str, str]) -> str:
    digest = hashlib.sha256(json.dumps([params, snaps], sort_keys=True).encode()).hexdigest()[:8]
    return f"hybrid-{as_of(end):%Y%m%d}-{digest}"


def _params(s: Settings) -> dict[str, str]:
    names = [
        "interaction_weights",
        "interaction_half_life_days",
        "interaction_user_cap",
        "interaction_max_places",
        "train_top_k",
        "train_factors",
        "train_cf_engine",
        "train_als_iterations",
        "train_als_reg_grid",
        "train_spark_als_reg",
        "train_als_alpha",
        "train_seed",
        "train_test_days",
        "train_cold_max",
        "train_light_max",
        "train_content_mass",
        "train_gate_tolerance",
        "embeddings_model",
    ]
    return {n: str(getattr(s, n)) for n in names}


def promoted_ndcg(spark: SparkSession, exclude: str) -> tuple[str, float] | None:
    """The newest promoted run other than ``exclude``: (version, its hybrid NDCG@10 on its own test)."""
    from pyspark.sql import functions as F

    row = (
        spark.table("model.runs")
        .where(F.col("promoted") & (F.col("model_version") != exclude))
        .orderBy(F.col("created_at").desc())
        .select("model_version", F.col("metrics")[f"hybrid/all/ndcg@{EVAL_K}"].alias("ndcg"))
        .first()
    )
    if row is None or row["ndcg"] is None:
        return None
    return str(row["model_version"]), float(row["ndcg"])


def reasons_for(
    user: int,
    places: np.ndarray,
    split: Split,
    positive: dict[int, list[str]],
    interests: dict[int, list[str]],
    rests_on: RestsOn,
    limit: int = 3,
) -> tuple[list[list[str]], list[bool]]:
    """Per recommended place, its reasons and whether they are matched keywords.

    A reason is a keyword the place's reviews praise (``positive``) that matches what the user showed
    interest in: their searches' keywords (``interests``) or the praised keywords of the places they
    engaged with most. A complaint is never a reason. A place with no match says what the list rests
    on instead (:class:`RestsOn`): its district's weekly popularity, the user's history, their searches.
    """
    row = split.train.getrow(user)
    strongest = row.indices[np.argsort(-row.data, kind="stable")][:10]
    searched = interests.get(user, [])
    wanted = set(searched)
    for p in strongest:
        wanted.update(positive.get(int(p), []))
    reasons, matched = [], []
    for p in places:
        found = [k for k in positive.get(int(p), []) if k in wanted][:limit]
        reasons.append(found or [rests_on.reason(int(p), row.nnz > 0, searched)])
        matched.append(bool(found))
    return reasons, matched


def run_train_hybrid(
    spark: SparkSession,
    start: datetime,
    end: datetime,
    *,
    run_id: str = "manual",
    force: bool = False,
    methods: Sequence[str] = METHODS,
    settings: Settings | None = None,
) -> dict[str, Any]:
    """Fit, evaluate, gate and write one model version for the interval ending at ``end``."""
    import pyarrow as pa

    from placerec.catalog import ensure_tables_once
    from placerec.model.report import format_protocol, write_report

    s = settings or get_settings()
    unknown = set(methods) - set(METHODS)
    if unknown or "hybrid" not in methods:
        raise ValueError(f"methods must include hybrid and come from {', '.join(METHODS)}; got {sorted(methods)}")
    check_content_mass(s.train_content_mass)  # before minutes of splits, not in the scorer after them
    regs = cf_regs(s)
    if s.train_protocol and s.train_protocol not in PROTOCOLS:
        raise ValueError(f"train_protocol must be empty or one of {', '.join(PROTOCOLS)}; got {s.train_protocol!r}")
    began = time.monotonic()
    ensure_tables_once()
    if s.train_eval_cuts < 1:
        raise ValueError(f"train_eval_cuts must be at least 1; got {s.train_eval_cuts}")
    span = timedelta(days=s.train_test_days)
    trainer = Trainer(spark, end, s)
    cuts = eval_cuts(end, span, s.train_eval_cuts, trainer.first_event())
    test_cut, val_cut = cuts[-1], cuts[0] - span
    params = _params(s)
    version = _version(end, params, trainer.snaps)
    details: dict[str, Any] = {
        "model_version": version,
        "test": [cuts[0].isoformat(), end.isoformat()],
        "test_cuts": [c.isoformat() for c in cuts],
    }

    empty = trainer.empty_spans([(val_cut, cuts[0]), (test_cut, end)])
    if empty:
        # Nothing to choose a blend on or to evaluate with (an empty day, or too little history):
        # no model is written and nothing is promoted; the record says why.
        details.update(model_version=None, promoted=False, forced=False, gate=f"skipped: {empty}", table=[])
        record_job_metrics(JOB, start, end, run_id, began, details)
        log.warning("train_hybrid skipped: %s", empty)
        return details

    val = trainer.split(val_cut)
    val_users, val_truth = trainer.truth(val, cuts[0])
    if not len(val_users):
        raise ValueError(f"no validation positives in [{val_cut}, {cuts[0]}): too little data before {end}")
    reg, blend, grid, cf_choice = choose_cf_and_blend(trainer, val, val_users, val_truth, regs)
    details["cf"] = cf_choice
    del val

    world = load_truth(s.truth_path)
    scored: list[CutScores] = []
    evaluated: list[str] = []
    for cut in cuts:
        test = trainer.factorise(trainer.split(cut), reg)
        test_users, test_truth = trainer.truth(test, cut + span)
        if not len(test_users):
            if cut == test_cut:
                raise ValueError(f"no test positives in [{cut}, {end}): nothing to evaluate the model on")
            log.warning("no test positives in [%s, %s): that cut is left out", cut, cut + span)
            continue
        scored.append(score_cut(test, test_users, test_truth, blend, s, methods, world))
        evaluated.append(cut.isoformat())
        if s.train_protocol and cut == test_cut:
            details["protocol"] = score_protocol(trainer, test, end, blend, s)
        del test
    table = pooled_table(scored, s.train_seed)
    details["test_cuts"] = evaluated
    test_users = np.concatenate([c.users for c in scored])
    details["oracle"] = (
        ORACLE_LABEL
        if any(r["method"] == ORACLE for r in table)
        else ("truth does not cover the data" if world else None)
    )

    ndcg = f"ndcg@{EVAL_K}"
    overall = {r["method"]: r[ndcg] for r in table if r["segment"] == "all"}
    current = promoted_ndcg(spark, version)
    decision = gate(
        overall["hybrid"],
        {m: overall[m] for m in GATE_BASELINES if m in overall},
        current[1] if current else None,
        s.train_gate_tolerance,
        force,
    )

    full = trainer.factorise(trainer.split(end, keep_text=True), reg)
    scorer = _scorer(full, s)
    has_content = np.linalg.norm(full.interest, axis=1) > 0
    users = np.flatnonzero((full.history > 0) | has_content)
    rows: dict[str, list[Any]] = {k: [] for k in ("user_id", "rank", "place_id", "score", "reason")}
    rests_on = trainer.rests_on()
    warm_top, warm_matched, fallbacks = 0, 0, 0
    for b in range(0, len(users), 2048):
        batch = users[b : b + 2048]
        scores = scorer.combine(batch, scorer.parts(batch), blend)
        top = catalogue_top(full, scores, batch, s.train_top_k)
        for r, user in enumerate(batch):
            places = top[r][top[r] >= 0]
            reasons, matched = reasons_for(
                int(user), places, full, trainer.positive, trainer.interest_keywords, rests_on
            )
            fallbacks += matched.count(False)
            if full.history[user] > 0:
                warm_top += len(matched[:EVAL_K])
                warm_matched += sum(matched[:EVAL_K])
            n = len(places)
            rows["user_id"].extend([full.users[user]] * n)
            rows["rank"].extend(range(1, n + 1))
            rows["place_id"].extend(full.items[places].tolist())
            rows["score"].extend(scores[r, places].astype(float).tolist())
            rows["reason"].extend(reasons)
    recs = pa.table(
        {
            "model_version": pa.array([version] * len(rows["user_id"]), pa.string()),
            "user_id": pa.array(rows["user_id"], pa.string()),
            "rank": pa.array(rows["rank"], pa.int32()),
            "place_id": pa.array(rows["place_id"], pa.string()),
            "score": pa.array(rows["score"], pa.float64()),
            "reason": pa.array(rows["reason"], pa.list_(pa.string())),
        }
    )
    _overwrite(spark, "model.recommendations", recs, version)
    _overwrite(spark, "model.factors", _factor_table(version, full), version)

    metric_map = {
        f"{r['method']}/{r['segment']}/{k}": f"{v:.6f}"
        for r in table
        for k, v in r.items()
        if k not in ("method", "segment")
    }
    for r in details.get("protocol", {}).get("table", []):
        metric_map |= {
            f"{r['method']}/{r['segment']}/{k}": f"{v:.6f}"
            for k, v in r.items()
            if k not in ("method", "segment") and np.isfinite(v)
        }
    metric_map["gate"] = decision.reason
    reason_figures = {
        f"warm top-{EVAL_K} items": warm_top,
        f"warm top-{EVAL_K} with a matched keyword": round(warm_matched / warm_top, 4) if warm_top else None,
        "recommendations resting on a fallback reason": round(fallbacks / recs.num_rows, 4) if recs.num_rows else None,
    }
    metric_map[f"reasons/warm/matched@{EVAL_K}"] = str(reason_figures[f"warm top-{EVAL_K} with a matched keyword"])
    run_params = {**params, **blend.params(), "cf_reg": f"{reg:g}"}
    _record_run(spark, version, as_of(end), run_params, trainer.snaps, metric_map, decision)
    report_dir = s.home / "reports" / version
    summary = {
        "as of": str(as_of(end)),
        "test span": f"{cuts[0]:%Y-%m-%d %H:%M} .. {end:%Y-%m-%d %H:%M} UTC, "
        + (f"{len(scored)} rolling cuts of {s.train_test_days} d (pooled)" if len(scored) > 1 else "one cut"),
        "blend (chosen on validation)": "; ".join(
            f"{seg} k={b.k} beta={b.beta}" for seg, b in blend.by_segment.items()
        ),
        "collaborative part": f"{s.train_cf_engine} ALS, reg {reg:g} (chosen on validation from "
        f"{', '.join(f'{r:g}' for r in regs)}), fits "
        f"{', '.join(f'{x:.1f}' for x in trainer.stats['cf_fit_seconds'])} s",
        "evaluation users": f"{len(test_users)} (user, cut) pairs of {len(set(test_users.tolist()))} users "
        f"(validation {len(val_users)})",
        "gate": decision.reason,
        "promoted": str(decision.promote) + (" (forced)" if decision.forced else ""),
        "compared with": f"{current[0]} NDCG@10 {current[1]:.4f}" if current else "no promoted model yet",
        "reference ceiling": details["oracle"] or "none (no generated world's truth: real data)",
        "reasons": (
            f"{warm_matched} of {warm_top} warm users' top-{EVAL_K} items have a praised keyword matching the user; "
            f"{fallbacks} of {recs.num_rows} recommendations say what they rest on instead"
        ),
    }
    report = write_report(
        report_dir,
        title=f"Training run {version}",
        model_version=version,
        summary=summary,
        table=table,
        segments=[seg for seg in REPORT_SEGMENTS if any(r["segment"] == seg for r in table)],
        k=EVAL_K,
        sections=[("The data README's protocol", format_protocol(details["protocol"], EVAL_K))]
        if "protocol" in details
        else [],
    )
    details.update(
        promoted=decision.promote,
        forced=decision.forced,
        gate=decision.reason,
        blend=blend.params(),
        validation_grid=grid,
        evaluation_users=len(test_users),
        table=table,
        recommendations=recs.num_rows,
        users_recommended=len(users),
        reasons=reason_figures,
        report=str(report),
        source_snapshots=trainer.snaps,
        **trainer.stats,
    )
    record_job_metrics(
        JOB,
        start,
        end,
        run_id,
        began,
        details,
        rows_read=int(trainer.events.count()),
        rows_written=recs.num_rows,
    )
    return details


def _factor_table(version: str, split: Split) -> pa.Table:
    import pyarrow as pa

    assert split.user_factors is not None and split.item_factors is not None
    has_user = np.linalg.norm(split.user_factors, axis=1) > 0
    has_item = np.linalg.norm(split.item_factors, axis=1) > 0
    ids = split.users[has_user].tolist() + split.items[has_item].tolist()
    kinds = ["user"] * int(has_user.sum()) + ["place"] * int(has_item.sum())
    vectors = np.vstack([split.user_factors[has_user], split.item_factors[has_item]])
    return pa.table(
        {
            "model_version": pa.array([version] * len(ids), pa.string()),
            "kind": pa.array(kinds, pa.string()),
            "id": pa.array(ids, pa.string()),
            "vector": pa.array(vectors.tolist(), pa.list_(pa.float32())),
        }
    )


def _overwrite(spark: SparkSession, table: str, rows: pa.Table, version: str) -> None:
    from pyspark.sql import functions as F

    frame = spark.createDataFrame(rows, schema=spark.table(table).schema)
    frame.writeTo(table).overwrite(F.col("model_version") == F.lit(version))


def _record_run(
    spark: SparkSession,
    version: str,
    trained_for: Any,
    params: dict[str, str],
    snaps: dict[str, str],
    metric_map: dict[str, str],
    decision: GateDecision,
) -> None:
    schema = spark.table("model.runs").schema
    row = (
        version,
        trained_for,
        params,
        snaps,
        metric_map,
        decision.promote,
        decision.forced,
        datetime.now(timezone.utc),  # when the run was recorded, not a data timestamp
    )
    spark.createDataFrame([row], schema).createOrReplaceTempView("incoming_model_run")
    spark.sql(
        """
        MERGE INTO model.runs t USING incoming_model_run s ON t.model_version = s.model_version
        WHEN MATCHED THEN UPDATE SET *
        WHEN NOT MATCHED THEN INSERT *
        """
    )
