"""The NSMC data README's evaluation protocol, reproduced inside a training run.

``../shared/data/nsmc/README.md`` publishes reference figures measured on one protocol: train on
the reviews dated before the cut (2015-02-01), test on the cut .. 2015-04-30; a review is a positive;
ids with more than 500 training reviews are dropped from both sides; test positives are each
training user's test-period items that exist in training and that the user had not reviewed
before; metrics @10 over the users with at least one such positive. Our own evaluation differs on
purpose (it keeps ids first seen in the test span, as cold users, and caps heavy ids instead of
dropping them), so its figures are not comparable with that table.

:func:`build` derives exactly that protocol's users, items and positives from the review events
the run read; :func:`evaluate` scores the README's reference methods on them in the same run (their
published figures beside ours), the time-aware popularity of Ji et al. (SIGIR 2020), and the run's
own methods, with paired bootstrap intervals against the 30-day popularity row and our popularity.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp

from placerec.model import metrics, references

K = 10
HEAVY_REVIEWS = 500
POPULAR_DAYS = 30
SEGMENT = "protocol"
PUBLISHED = "published ndcg@10"
"""Row key: the figure the data README publishes for the method (its table, same protocol)."""

# The data README's table (NDCG@10), and what each row is here.
README_ROWS: dict[str, tuple[str, float]] = {
    "popularity_all_time": ("popularity, all time", 0.0000),
    "popularity_30d": ("popularity, last 30 days of training", 0.0045),
    "ease_500": ("EASE (lambda 500)", 0.0029),
    "implicit_als_128": ("implicit ALS (128 factors, alpha 10, 15 iterations)", 0.0020),
    "implicit_bpr_128": ("implicit BPR (128 factors, 100 iterations)", 0.0022),
}
TIME_AWARE = "time_aware_popularity"
"""Popularity counted when each user is served (Ji et al., SIGIR 2020, "A Re-visit of the Popularity
Baseline in Recommender Systems"): distinct reviewers per item in the 30 days before the day of the
user's first test-period review, other users' test-period reviews included, as a live service would
count them. It sees data no cut-based method sees, so it is a reference, never a gate."""


@dataclass
class Protocol:
    """The protocol's training matrix and evaluation set (indices into ``users`` × ``items``)."""

    users: np.ndarray
    items: np.ndarray
    train: sp.csr_matrix
    """1.0 per (user, item) reviewed before the cut (a review is a positive)."""
    eval_users: np.ndarray
    truth: list[np.ndarray]
    first_test_day: np.ndarray
    """Per evaluation user: the day (days since 1970-01-01) of their first test-period review."""
    day: np.ndarray
    item: np.ndarray
    reviewer: np.ndarray
    """Every kept review of an item known in training (heavy ids dropped): its day, item index and
    reviewer (a code over every kept id, those first seen in the test span included)."""
    heavy_ids: int
    cut_day: int


def build(
    user_ids: Sequence[str] | np.ndarray,
    item_ids: Sequence[str] | np.ndarray,
    days: np.ndarray,
    cut_day: int,
    end_day: int,
    heavy: int = HEAVY_REVIEWS,
) -> Protocol:
    """The protocol over reviews given as parallel arrays (``days``: days since the epoch): training
    is ``day < cut_day``, test ``cut_day <= day < end_day``. A repeated (user, item) review counts
    once in the matrix and every time in the heavy-id count (reviews, not items)."""
    ids = np.asarray(user_ids, dtype=object)
    places = np.asarray(item_ids, dtype=object)
    days = np.asarray(days, dtype=np.int64)
    if not (len(ids) == len(places) == len(days)):
        raise ValueError("user_ids, item_ids and days must be equally long")
    training = days < cut_day
    authors, per_author = np.unique(ids[training], return_counts=True)
    dropped = set(authors[per_author > heavy].tolist())
    keep = np.fromiter((u not in dropped for u in ids), dtype=bool, count=len(ids))
    keep &= days < end_day
    who, what, days = ids[keep], places[keep], days[keep]
    training = days < cut_day
    if not training.any():
        raise ValueError(f"no reviews before the cut (day {cut_day}) by an id with at most {heavy} of them")

    users = np.unique(who[training])
    items = np.unique(what[training])
    _, reviewer = np.unique(who, return_inverse=True)  # every kept id, test-only ones too
    u = np.searchsorted(users, who)
    i = np.searchsorted(items, what)
    known_u = (u < len(users)) & (users[np.minimum(u, len(users) - 1)] == who)
    known_i = (i < len(items)) & (items[np.minimum(i, len(items) - 1)] == what)
    tu, ti = u[training], i[training]
    train = sp.csr_matrix(
        (np.ones(len(tu), dtype=np.float32), (tu, ti)), shape=(len(users), len(items)), dtype=np.float32
    )
    train.data[:] = 1.0  # duplicates summed by the constructor: a pair is one positive

    test = ~training & known_u & known_i
    pair = u.astype(np.int64) * max(len(items), 1) + i
    new = test & ~np.isin(pair, pair[training])
    order = np.lexsort((days[new], u[new]))  # per user, by day
    nu, ni, nd = u[new][order], i[new][order], days[new][order]
    eval_users, starts = np.unique(nu, return_index=True)
    return Protocol(
        users=users,
        items=items,
        train=train,
        eval_users=eval_users.astype(np.int64),
        truth=[np.unique(g).astype(np.int64) for g in np.split(ni, starts[1:])] if len(nu) else [],
        first_test_day=nd[starts].astype(np.int64),
        day=days[known_i],
        item=i[known_i],
        reviewer=reviewer[known_i],
        heavy_ids=len(dropped),
        cut_day=cut_day,
    )


def distinct_reviewers(p: Protocol, start_day: int, end_day: int) -> np.ndarray:
    """Per item: how many distinct kept ids reviewed it in ``[start_day, end_day)``."""
    window = (p.day >= start_day) & (p.day < end_day)
    pairs = np.unique(np.stack([p.reviewer[window], p.item[window]]), axis=1) if window.any() else np.zeros((2, 0))
    return np.bincount(pairs[1].astype(np.int64), minlength=len(p.items)).astype(np.float32)


def time_aware_lists(p: Protocol, k: int = K, days: int = POPULAR_DAYS) -> np.ndarray:
    """:data:`TIME_AWARE` top-``k`` per evaluation user, training items excluded."""
    out = np.full((len(p.eval_users), k), -1, dtype=np.int64)
    for day in np.unique(p.first_test_day).tolist():
        rows = np.flatnonzero(p.first_test_day == day)
        counts = distinct_reviewers(p, day - days, day)
        users = p.eval_users[rows]
        out[rows] = references.top_k(np.repeat(counts[None, :], len(users), axis=0), p.train, users, k)
    return out


def reference_models(p: Protocol, seed: int) -> dict[str, Callable[[], references.Recommender]]:
    """The data README's rows as models on the protocol's matrix (built when called)."""
    return {
        "popularity_all_time": lambda: references.Popularity(distinct_reviewers(p, -(2**40), p.cut_day)),
        "popularity_30d": lambda: references.Popularity(distinct_reviewers(p, p.cut_day - POPULAR_DAYS, p.cut_day)),
        "ease_500": lambda: references.EASE(lam=500.0),
        "implicit_als_128": lambda: references.ImplicitALS(factors=128, alpha=10.0, iterations=15, random_state=seed),
        "implicit_bpr_128": lambda: references.ImplicitBPR(
            factors=128, iterations=100, random_state=seed, num_threads=1
        ),
    }


def evaluate(
    p: Protocol,
    ours: Mapping[str, np.ndarray],
    *,
    seed: int = 42,
    methods: Sequence[str] = (*README_ROWS, TIME_AWARE),
) -> list[dict[str, Any]]:
    """Rows (``segment`` = ``protocol``) for the run's own methods' lists ``ours`` (top-``K`` in the
    protocol's item indices, one row per evaluation user) and the reference ``methods``. Every row
    but the baselines' carries its paired NDCG@10 difference to ``popularity_30d`` and, when ``ours``
    has ``popularity``, to it as well."""
    lists: dict[str, np.ndarray] = dict(ours)
    models = reference_models(p, seed)
    for name in methods:
        if name == TIME_AWARE:
            lists[name] = time_aware_lists(p)
        else:
            lists[name] = references.recommend(models[name]().fit(p.train), p.train, p.eval_users, K)
    gains = {name: metrics.ndcg_per_user(recs, p.truth, K) for name, recs in lists.items()}
    rows = []
    for name, recs in lists.items():
        row: dict[str, Any] = {
            "method": name,
            "segment": SEGMENT,
            f"recall@{K}": metrics.recall_at_k(recs, p.truth, K),
            f"ndcg@{K}": float(gains[name].mean()),
            f"hit_rate@{K}": metrics.hit_rate_at_k(recs, p.truth, K),
            PUBLISHED: README_ROWS[name][1] if name in README_ROWS else float("nan"),
            "users": len(p.eval_users),
        }
        for baseline in ("popularity_30d", "popularity"):
            if baseline in gains and name not in (baseline, "popularity_30d"):
                diff, lo, hi = metrics.paired_bootstrap(gains[name], gains[baseline], seed=seed)
                key = f"ndcg@{K} vs {baseline}"
                row |= {key: diff, f"{key} lo": lo, f"{key} hi": hi}
        rows.append(row)
    return rows


def summary(p: Protocol) -> dict[str, int]:
    """The protocol's sizes, to compare with the data README's (518,029 interactions, 86,490 users,
    13,481 items, 10,200 users with 26,712 positives)."""
    return {
        "interactions": int(p.train.nnz),
        "users": len(p.users),
        "items": len(p.items),
        "evaluation users": len(p.eval_users),
        "positives": int(sum(len(t) for t in p.truth)),
        "heavy ids dropped": p.heavy_ids,
    }
