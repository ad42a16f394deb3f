"""Top-K ranking metrics for batch recommendations, in plain numpy.

Every function takes ``recs``, an int array of shape ``(n_users, K)`` holding item indices in rank
order (``-1`` pads a list shorter than ``K``; padding is never a hit), and, where relevance matters,
``truth``: one int array per ``recs`` row with that user's held-out relevant items. Metrics are
averaged over users. A user with no held-out item has no defined recall, so an empty ``truth``
entry is an error: callers drop such users before evaluating.

Relevance is binary and ``|truth|`` counts distinct items. With ``hits[u, i] = 1`` when the item
at rank ``i`` (1-based) of user ``u`` is relevant and ``R_u = min(k, |truth_u|)``:

- Recall@k  = Σ_{i≤k} hits[u, i] / R_u
- NDCG@k    = DCG / IDCG, DCG = Σ_{i≤k} hits[u, i] / log2(i + 1), IDCG = Σ_{i≤R_u} 1 / log2(i + 1)
- MAP@k     = (1 / R_u) Σ_{i≤k} hits[u, i] · precision@i, precision@i = Σ_{j≤i} hits[u, j] / i
- HitRate@k = share of users with at least one hit in the top k

Dividing by ``R_u`` instead of ``|truth_u|`` is the usual "Recall@K" of recommender-systems papers:
a user with more held-out items than ``k`` can still score 1 with a perfect list.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]

PAD = -1
# Users per block when gathering item vectors for the diversity metric: bounds memory at
# about block × k × dim × 8 bytes.
_DIVERSITY_BLOCK = 1024


def _top(recs: npt.ArrayLike, k: int) -> IntArray:
    """The first ``k`` columns of ``recs`` as int64, after checking shape, ``k`` and duplicates."""
    arr = np.asarray(recs)
    if arr.ndim != 2:
        raise ValueError(f"recs must be 2-D (n_users, K), got shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"recs must hold integer item indices, got dtype {arr.dtype}")
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    if k > arr.shape[1]:
        raise ValueError(f"k={k} exceeds the {arr.shape[1]} columns of recs")
    top = arr[:, :k].astype(np.int64, copy=False)
    if top.size and top.min() < PAD:
        raise ValueError(f"recs holds negative item indices other than the padding {PAD}")
    if k > 1:
        ordered = np.sort(top, axis=1)
        # A repeated item would count its hit twice and push recall above 1.
        if np.any((ordered[:, 1:] == ordered[:, :-1]) & (ordered[:, 1:] != PAD)):
            raise ValueError("recs repeats an item within a user's list")
    return top


def _hits(top: IntArray, truth: Sequence[npt.ArrayLike]) -> tuple[BoolArray, IntArray]:
    """The ``(n_users, k)`` hit matrix and each user's number of distinct relevant items.

    Each (user, item) pair becomes one int64 key ``user * width + item``; the relevant keys are
    sorted once and every recommended key is looked up with a binary search, so the cost is
    ``O(n_users · k · log(|truth|))`` with no Python loop over items.
    """
    n_users = top.shape[0]
    if len(truth) != n_users:
        raise ValueError(f"truth has {len(truth)} entries for {n_users} rows of recs")
    if n_users == 0:
        raise ValueError("no users to evaluate")
    parts = [np.asarray(t, dtype=np.int64).ravel() for t in truth]
    lengths = np.fromiter((p.size for p in parts), dtype=np.int64, count=n_users)
    if np.any(lengths == 0):
        raise ValueError(f"{int(np.sum(lengths == 0))} users have no held-out items; drop them before evaluating")
    items = np.concatenate(parts)
    if items.min() < 0:
        raise ValueError("truth holds negative item indices")
    width = int(max(items.max(), top.max())) + 1
    owners = np.repeat(np.arange(n_users, dtype=np.int64), lengths)
    relevant = np.sort(owners * width + items)
    relevant = relevant[np.concatenate(([True], relevant[1:] != relevant[:-1]))]
    n_relevant = np.bincount(relevant // width, minlength=n_users).astype(np.int64)

    keys = np.arange(n_users, dtype=np.int64)[:, None] * width + top
    pos = np.minimum(np.searchsorted(relevant, keys), relevant.size - 1)
    hits = (relevant[pos] == keys) & (top != PAD)
    return hits, n_relevant


def _discounts(k: int) -> FloatArray:
    """``1 / log2(rank + 1)`` for ranks ``1..k``."""
    return 1.0 / np.log2(np.arange(2, k + 2, dtype=np.float64))


def _recall(hits: BoolArray, n_relevant: IntArray) -> float:
    ideal = np.minimum(n_relevant, hits.shape[1])
    return float(np.mean(hits.sum(axis=1) / ideal))


def _ndcg_rows(hits: BoolArray, n_relevant: IntArray) -> FloatArray:
    k = hits.shape[1]
    discounts = _discounts(k)
    dcg = hits @ discounts
    idcg = np.cumsum(discounts)[np.minimum(n_relevant, k) - 1]
    return np.asarray(dcg / idcg, dtype=np.float64)


def _ndcg(hits: BoolArray, n_relevant: IntArray) -> float:
    return float(np.mean(_ndcg_rows(hits, n_relevant)))


def _map(hits: BoolArray, n_relevant: IntArray) -> float:
    k = hits.shape[1]
    precision = np.cumsum(hits, axis=1) / np.arange(1, k + 1, dtype=np.float64)
    average_precision = np.sum(precision * hits, axis=1) / np.minimum(n_relevant, k)
    return float(np.mean(average_precision))


def _hit_rate(hits: BoolArray) -> float:
    return float(np.mean(hits.any(axis=1)))


def recall_at_k(recs: npt.ArrayLike, truth: Sequence[npt.ArrayLike], k: int) -> float:
    """Mean over users of ``|top-k ∩ truth| / min(k, |truth|)``.

    The denominator is capped at ``k`` so a perfect list scores 1 even when a user has more
    held-out items than ``k`` (the common "Recall@K" of recommender-systems papers).
    """
    return _recall(*_hits(_top(recs, k), truth))


def ndcg_at_k(recs: npt.ArrayLike, truth: Sequence[npt.ArrayLike], k: int) -> float:
    """Mean over users of binary-relevance NDCG@k.

    ``DCG = Σ 1 / log2(rank + 1)`` over the hits in the top k (rank from 1); the ideal DCG places
    ``min(k, |truth|)`` hits at ranks ``1..min(k, |truth|)``.
    """
    return _ndcg(*_hits(_top(recs, k), truth))


def ndcg_per_user(recs: npt.ArrayLike, truth: Sequence[npt.ArrayLike], k: int) -> FloatArray:
    """NDCG@k of each user (the terms ``ndcg_at_k`` averages), for per-group means."""
    return _ndcg_rows(*_hits(_top(recs, k), truth))


def map_at_k(recs: npt.ArrayLike, truth: Sequence[npt.ArrayLike], k: int) -> float:
    """Mean over users of ``AP@k = (1 / min(k, |truth|)) Σ_{i ≤ k, hit at i} precision@i``."""
    return _map(*_hits(_top(recs, k), truth))


def hit_rate_at_k(recs: npt.ArrayLike, truth: Sequence[npt.ArrayLike], k: int) -> float:
    """Share of users with at least one relevant item in their top k."""
    hits, _ = _hits(_top(recs, k), truth)
    return _hit_rate(hits)


def catalog_coverage(recs: npt.ArrayLike, k: int, n_items: int) -> float:
    """Distinct items across all users' top-k lists, divided by ``n_items`` (padding excluded)."""
    return _coverage(_top(recs, k), n_items)


def _coverage(top: IntArray, n_items: int) -> float:
    if n_items < 1:
        raise ValueError(f"n_items must be at least 1, got {n_items}")
    shown = top[top != PAD]
    if shown.size and shown.max() >= n_items:
        raise ValueError(f"recs holds item {int(shown.max())} outside the catalog of {n_items} items")
    in_any_list = np.zeros(n_items, dtype=bool)
    in_any_list[shown] = True
    return int(in_any_list.sum()) / n_items


def novelty(recs: npt.ArrayLike, k: int, item_popularity: npt.ArrayLike, n_train_users: int) -> float:
    """Mean self-information ``-log2(p_i)`` of the recommended items, in bits.

    ``p_i = item_popularity[i] / n_train_users`` is the share of training users who interacted
    with item ``i``. An item no training user touched is counted as if one had (count 1), so its
    novelty is the largest finite value, ``log2(n_train_users)``, rather than infinity. The mean
    runs over every filled (user, rank) slot of the top k lists; ``nan`` when every slot is padding.
    """
    return _novelty(_top(recs, k), item_popularity, n_train_users)


def _novelty(top: IntArray, item_popularity: npt.ArrayLike, n_train_users: int) -> float:
    if n_train_users < 1:
        raise ValueError(f"n_train_users must be at least 1, got {n_train_users}")
    counts = np.asarray(item_popularity, dtype=np.float64).ravel()
    shown = top[top != PAD]
    if shown.size == 0:
        return float("nan")
    if shown.max() >= counts.size:
        raise ValueError(f"recs holds item {int(shown.max())} but item_popularity covers {counts.size} items")
    p = np.maximum(counts[shown], 1.0) / n_train_users
    return float(np.mean(-np.log2(p)))


def intra_list_diversity(recs: npt.ArrayLike, k: int, item_vectors: npt.ArrayLike) -> float:
    """Mean over users of the mean pairwise cosine distance ``1 - cos`` within their top k.

    Vectors are L2-normalised here. Padding and items with an all-zero vector (no content) take no
    part in any pair; a user left with fewer than two usable items is skipped; ``nan`` when no
    user remains.
    """
    return _diversity(_top(recs, k), item_vectors)


def _diversity(top: IntArray, item_vectors: npt.ArrayLike) -> float:
    # For m unit vectors with sum s, Σ_{i<j} cos(v_i, v_j) = (|s|² - m) / 2, so a user's mean
    # pairwise distance is 1 - (|s|² - m) / (m (m - 1)): O(k·dim) per user instead of O(k²·dim).
    vectors = np.asarray(item_vectors, dtype=np.float64)
    if vectors.ndim != 2:
        raise ValueError(f"item_vectors must be 2-D (n_items, dim), got shape {vectors.shape}")
    if top.size and top.max() >= vectors.shape[0]:
        raise ValueError(f"recs holds item {int(top.max())} but item_vectors has {vectors.shape[0]} rows")
    norms = np.linalg.norm(vectors, axis=1)
    usable_item = norms > 0
    # float32 halves the memory traffic of the gather, which dominates; sums of <= k unit vectors
    # keep ample precision.
    unit = np.divide(vectors, norms[:, None], out=np.zeros_like(vectors), where=usable_item[:, None])
    unit32 = unit.astype(np.float32)

    per_user: list[FloatArray] = []
    for start in range(0, top.shape[0], _DIVERSITY_BLOCK):
        block = top[start : start + _DIVERSITY_BLOCK]
        usable = (block != PAD) & usable_item[np.maximum(block, 0)]
        weights = usable.astype(np.float32)[:, None, :]
        summed = (weights @ unit32[np.maximum(block, 0)])[:, 0, :].astype(np.float64)
        m = usable.sum(axis=1).astype(np.float64)
        keep = m >= 2
        squared = np.einsum("ud,ud->u", summed[keep], summed[keep])
        similarity = (squared - m[keep]) / (m[keep] * (m[keep] - 1))
        per_user.append(1.0 - similarity)
    scored = np.concatenate(per_user) if per_user else np.empty(0)
    return float(np.mean(scored)) if scored.size else float("nan")


def evaluate(
    recs: npt.ArrayLike,
    truth: Sequence[npt.ArrayLike],
    k: int,
    *,
    n_items: int,
    item_popularity: npt.ArrayLike,
    n_train_users: int,
    item_vectors: npt.ArrayLike | None = None,
) -> dict[str, float]:
    """Every metric of this module at ``k``, keyed ``recall@k``, ``ndcg@k``, ``map@k``,
    ``hit_rate@k``, ``coverage@k``, ``novelty@k``, ``diversity@k`` (``nan`` without
    ``item_vectors``), plus ``users``, the number of users evaluated."""
    top = _top(recs, k)
    hits, n_relevant = _hits(top, truth)
    diversity = float("nan") if item_vectors is None else _diversity(top, item_vectors)
    return {
        f"recall@{k}": _recall(hits, n_relevant),
        f"ndcg@{k}": _ndcg(hits, n_relevant),
        f"map@{k}": _map(hits, n_relevant),
        f"hit_rate@{k}": _hit_rate(hits),
        f"coverage@{k}": _coverage(top, n_items),
        f"novelty@{k}": _novelty(top, item_popularity, n_train_users),
        f"diversity@{k}": diversity,
        "users": float(hits.shape[0]),
    }


def paired_bootstrap(
    a: npt.ArrayLike,
    b: npt.ArrayLike,
    *,
    samples: int = 1000,
    level: float = 0.95,
    seed: int = 0,
    groups: npt.ArrayLike | None = None,
) -> tuple[float, float, float]:
    """Mean of ``a - b`` over paired per-user figures (e.g. ``ndcg_per_user`` of two methods on the
    same users) and its percentile bootstrap interval at ``level``: users are resampled with
    replacement ``samples`` times. With ``groups`` (a label per pair, e.g. the user id when a user is
    evaluated at several cuts) whole groups are resampled (a cluster bootstrap), so pairs that are not
    independent do not narrow the interval. Seeded, so the same inputs give the same interval. An
    interval that contains 0 means the data cannot tell the two methods apart."""
    diff = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    if diff.ndim != 1 or not len(diff):
        raise ValueError("paired_bootstrap needs two equally long, non-empty 1-d arrays")
    if groups is None:
        sums, counts = diff, np.ones(len(diff), dtype=np.float64)
    else:
        labels = np.asarray(groups)
        if labels.shape != diff.shape:
            raise ValueError(f"groups must label every pair: {labels.shape} labels for {diff.shape} pairs")
        # clusters in first-seen order: with one pair each, the draws are those of the plain bootstrap
        _, first, inverse = np.unique(labels, return_index=True, return_inverse=True)
        rank = np.empty(len(first), dtype=np.int64)
        rank[np.argsort(first, kind="stable")] = np.arange(len(first))
        cluster = rank[inverse.ravel()]
        sums = np.bincount(cluster, weights=diff).astype(np.float64)
        counts = np.bincount(cluster).astype(np.float64)
    rng = np.random.default_rng(seed)
    means = np.empty(samples)
    block = max(1, 2_000_000 // len(sums))
    for start in range(0, samples, block):
        n = min(block, samples - start)
        draw = rng.integers(0, len(sums), size=(n, len(sums)))
        means[start : start + n] = sums[draw].sum(axis=1) / counts[draw].sum(axis=1)
    tail = (1.0 - level) / 2.0 * 100.0
    lo, hi = np.percentile(means, [tail, 100.0 - tail])
    return float(diff.mean()), float(lo), float(hi)
