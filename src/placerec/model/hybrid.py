"""The hybrid recommender: collaborative factors, content cosine and a popularity prior, blended per user.

For user ``u`` and place ``p``, with each part standardised over the candidate places of ``u``'s row
(z-scores, so the parts are on one scale whatever the model):

    score(u, p) = w(u) · z_cf(u, p) + (1 - w(u)) · c(u) · z_content(u, p) + beta · z_prior(p)
    w(u) = n(u) / (n(u) + k)        n(u) = places in u's training history
    c(u) = m(u) / (m(u) + m0)       m(u) = u's decayed interaction weight (+ 1 with a search interest)

so the blend moves from content to collaborative filtering as a user's history grows; a user with no
history gets content from their search interests plus the prior. ``k`` and ``beta`` are chosen on a
validation split (``choose_blend``), never on the test split, separately for cold, light and heavy
users (``segment_of``): how much the prior should count differs most between those groups.

``c(u)`` is the content's confidence: the content vector is a normalised mean, so without it a
single review from a year ago (decayed to nearly nothing) would steer a user's list as firmly as one
from yesterday. With ``m0`` (``train_content_mass``) a faded history hands the list back to the
prior; ``m0 = 0`` gives every user with any history or interest full content weight.

z_cf is the ALS dot product; z_content the cosine between the user's content vector (the weighted
mean of the embeddings of the places they engaged with, plus their search-interest embedding) and
each place's profile embedding; z_prior the log of the place's time-decayed popularity mixed with
its popularity within its district and category (so a cold user whose interests point to one kind
of place sees that kind's favourites, not only the city's).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
import scipy.sparse as sp

from placerec.model import metrics
from placerec.model.references import top_k

BATCH = 2048
K_GRID = (0.5, 2.0, 5.0, 20.0, 100.0)
BETA_GRID = (0.0, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0)
SEGMENTS = ("cold", "light", "heavy")


def segment_of(history: np.ndarray, cold_max: int, light_max: int) -> np.ndarray:
    """``cold`` (at most ``cold_max`` training places), ``light`` (up to ``light_max``) or ``heavy``."""
    return np.where(history <= cold_max, "cold", np.where(history <= light_max, "light", "heavy"))


def _normalise(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return np.divide(x, norms, out=np.zeros_like(x), where=norms > 0)


def _zscore_rows(x: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Standardise each row over the candidate columns (``mask``); constant rows become 0."""
    cand = x[:, mask]
    mean = cand.mean(axis=1, keepdims=True)
    std = cand.std(axis=1, keepdims=True)
    out = np.zeros_like(x)
    np.divide(x - mean, std, out=out, where=std > 1e-12)
    return out


def _zscore(x: np.ndarray, mask: np.ndarray) -> np.ndarray:
    z = _zscore_rows(x[None, :].astype(np.float32), mask)[0]
    return z


@dataclass
class Split:
    """What is known at one cut (``train`` holds only events before it): ids, matrix, vectors."""

    cut: datetime
    users: np.ndarray
    items: np.ndarray
    train: sp.csr_matrix
    candidates: np.ndarray
    """bool per item: in the catalogue at the cut (only these are recommended)."""
    item_vectors: np.ndarray
    interest: np.ndarray
    popularity: np.ndarray
    """time-decayed interaction weight per item (the popularity baseline ranks by it)."""
    groups: np.ndarray
    """int per item: its (district, category) group, for the cold-start prior."""
    user_factors: np.ndarray | None = None
    item_factors: np.ndarray | None = None
    seen: sp.csr_matrix | None = None
    """Every place each user engaged with before the cut, including what the per-user cap left out of
    ``train``: none of it is ever recommended back (default: ``train``)."""
    user_index: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.user_index = {u: i for i, u in enumerate(self.users.tolist())}

    @property
    def excluded(self) -> sp.csr_matrix:
        return self.seen if self.seen is not None else self.train

    @property
    def history(self) -> np.ndarray:
        """Places in each user's training history."""
        return np.diff(self.train.indptr)

    def prior(self) -> np.ndarray:
        """z(log popularity) mixed half and half with z(popularity share of the item's group's best)."""
        pop = np.log1p(np.maximum(self.popularity, 0.0))
        best = np.zeros(int(self.groups.max(initial=0)) + 1)
        np.maximum.at(best, self.groups, pop)
        share = np.divide(pop, best[self.groups], out=np.zeros_like(pop), where=best[self.groups] > 0)
        return (0.5 * _zscore(pop, self.candidates) + 0.5 * _zscore(share, self.candidates)).astype(np.float32)

    def user_content(self) -> np.ndarray:
        """Each user's content vector: normalised history mean plus normalised interest, normalised."""
        hist = _normalise(np.asarray(self.train @ self.item_vectors, dtype=np.float32))
        return _normalise(hist + self.interest)


@dataclass(frozen=True)
class Blend:
    """How the parts mix: ``mode`` per_user (the hybrid), cf, content or popularity."""

    k: float = 5.0
    beta: float = 0.5
    mode: str = "per_user"

    def cf_weight(self, history: np.ndarray) -> np.ndarray:
        if self.mode == "cf":
            return np.ones(len(history), dtype=np.float32)
        if self.mode in ("content", "popularity"):
            return np.zeros(len(history), dtype=np.float32)
        return (history / (history + self.k)).astype(np.float32)

    def params(self) -> dict[str, str]:
        return {"blend_k": str(self.k), "blend_beta": str(self.beta), "blend_mode": self.mode}


CF_ONLY = Blend(mode="cf", beta=0.0)
CONTENT_ONLY = Blend(mode="content", beta=0.0)


@dataclass(frozen=True)
class SegmentBlend:
    """The hybrid: one per-user blend per segment (chosen on validation)."""

    by_segment: dict[str, Blend]
    mode: str = "per_user"

    def params(self) -> dict[str, str]:
        return {f"blend_{seg}": f"k={b.k},beta={b.beta}" for seg, b in sorted(self.by_segment.items())}

    def arrays(self, segments: np.ndarray, history: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per user: the CF weight and the prior weight."""
        w = np.zeros(len(segments), dtype=np.float32)
        beta = np.zeros(len(segments), dtype=np.float32)
        for seg, blend in self.by_segment.items():
            mask = segments == seg
            w[mask] = blend.cf_weight(history[mask])
            beta[mask] = blend.beta
        return w, beta


def check_content_mass(content_mass: float) -> None:
    if content_mass < 0:
        raise ValueError(f"PLACEREC_TRAIN_CONTENT_MASS must be >= 0, got {content_mass}")


def content_confidence(split: Split, content_mass: float) -> np.ndarray:
    """Per user ``m / (m + content_mass)``, ``m`` = decayed interaction weight + 1 with a search
    interest; 1 for every user when ``content_mass`` is 0 (users without content have none to weigh)."""
    check_content_mass(content_mass)
    mass = np.asarray(split.train.sum(axis=1), dtype=np.float64).ravel()
    mass += np.linalg.norm(split.interest, axis=1) > 0
    if content_mass == 0:
        return np.ones(len(mass), dtype=np.float32)
    return (mass / (mass + content_mass)).astype(np.float32)


class Scorer:
    """Scores users in batches; parts are computed once per batch and reused across blends."""

    def __init__(self, split: Split, cold_max: int = 2, light_max: int = 10, content_mass: float = 0.0) -> None:
        self.split = split
        self.content = split.user_content()
        self.confidence = content_confidence(split, content_mass)
        self.prior = split.prior()
        self.history = split.history
        self.segments = segment_of(self.history, cold_max, light_max)

    def parts(self, users: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        s, mask = self.split, self.split.candidates
        if s.user_factors is not None and s.item_factors is not None:
            cf = s.user_factors[users] @ s.item_factors.T
        else:
            cf = np.zeros((len(users), len(s.items)), dtype=np.float32)
        content = self.content[users] @ s.item_vectors.T
        z_content = _zscore_rows(content.astype(np.float32), mask) * self.confidence[users][:, None]
        return _zscore_rows(cf.astype(np.float32), mask), z_content

    def combine(
        self, users: np.ndarray, parts: tuple[np.ndarray, np.ndarray], blend: Blend | SegmentBlend
    ) -> np.ndarray:
        if blend.mode == "popularity":
            scores = np.broadcast_to(np.log1p(self.split.popularity).astype(np.float32), (len(users), len(self.prior)))
            return np.array(scores)
        z_cf, z_ct = parts
        if isinstance(blend, SegmentBlend):
            w_u, beta_u = blend.arrays(self.segments[users], self.history[users])
            w, beta = w_u[:, None], beta_u[:, None]
        else:
            w = blend.cf_weight(self.history[users])[:, None]
            beta = np.full((len(users), 1), blend.beta, dtype=np.float32)
        return w * z_cf + (1.0 - w) * z_ct + beta * self.prior[None, :]

    def recommend(self, users: np.ndarray, blend: Blend | SegmentBlend, k: int) -> np.ndarray:
        """Top-``k`` candidate places per user, training places excluded; -1 pads short lists."""
        out = []
        for batch in _batches(users):
            scores = self.combine(batch, self.parts(batch), blend)
            out.append(self._top(scores, batch, k))
        return np.vstack(out) if out else np.empty((0, k), dtype=np.int64)

    def _top(self, scores: np.ndarray, users: np.ndarray, k: int) -> np.ndarray:
        return catalogue_top(self.split, scores, users, k)


def catalogue_top(split: Split, scores: np.ndarray, users: np.ndarray, k: int) -> np.ndarray:
    """Top-``k`` of ``scores`` over the catalogue at the cut, without what each user engaged with."""
    masked = np.where(split.candidates[None, :], scores, -np.inf).astype(np.float32)
    return top_k(masked, split.excluded, users, k)


def _batches(users: np.ndarray, size: int = BATCH) -> Iterator[np.ndarray]:
    for i in range(0, len(users), size):
        yield users[i : i + size]


def choose_blend(
    scorer: Scorer,
    users: np.ndarray,
    truth: Sequence[np.ndarray],
    k: int = 10,
    k_grid: Sequence[float] = K_GRID,
    beta_grid: Sequence[float] = BETA_GRID,
) -> tuple[SegmentBlend, list[dict[str, Any]]]:
    """Per segment, the blend with the best NDCG@k on (validation) ``users``; ties go to the first
    grid point (smallest ``k``, then smallest ``beta``). A segment without validation users gets the
    overall best. Returns the choice and every grid point's score per segment, for the run's record.
    """
    grid = [Blend(kk, b) for kk in k_grid for b in beta_grid]
    names = ("all", *SEGMENTS)
    sums = np.zeros((len(grid), len(names)))
    counts = np.zeros(len(names))
    for start in range(0, len(users), BATCH):
        batch = users[start : start + BATCH]
        batch_truth = truth[start : start + BATCH]
        segs = scorer.segments[batch]
        masks = [np.ones(len(batch), dtype=bool)] + [segs == s for s in SEGMENTS]
        counts += [m.sum() for m in masks]
        parts = scorer.parts(batch)
        for g, blend in enumerate(grid):
            recs = scorer._top(scorer.combine(batch, parts, blend), batch, k)
            gains = metrics.ndcg_per_user(recs, batch_truth, k)
            sums[g] += [gains[m].sum() for m in masks]
    means = sums / np.maximum(counts, 1)
    best = {name: int(np.argmax(np.round(means[:, j], 9))) for j, name in enumerate(names)}
    chosen = {seg: grid[best[seg] if counts[j + 1] else best["all"]] for j, seg in enumerate(SEGMENTS)}
    table = [
        {"k": b.k, "beta": b.beta, **{f"{name}/ndcg@{k}": float(means[g, j]) for j, name in enumerate(names)}}
        for g, b in enumerate(grid)
    ]
    return SegmentBlend(chosen), table
