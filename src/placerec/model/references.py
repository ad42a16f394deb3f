"""Reference recommenders the hybrid model must beat, all trained on the same user × item matrix.

``train`` is a ``scipy.sparse.csr_matrix`` of shape ``(n_users, n_items)`` with implicit-feedback
weights. Every model follows :class:`Recommender`: ``fit(train)`` then ``scores(users)``, a dense
float32 ``(len(users), n_items)`` block; :func:`recommend` turns scores into top-k lists in
batches, never recommending an item the user already has in ``train``.
"""

from __future__ import annotations

from typing import Protocol, Self

import numpy as np
import numpy.typing as npt
import scipy.linalg
import scipy.sparse as sp

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float32]

PAD = -1


class Recommender(Protocol):
    """What :func:`recommend` needs from a model."""

    def fit(self, train: sp.csr_matrix) -> Self:
        """Learn from the ``(n_users, n_items)`` training matrix; returns the model."""
        ...

    def scores(self, users: npt.ArrayLike) -> FloatArray:
        """Dense float32 ``(len(users), n_items)`` scores; higher means recommend first."""
        ...


def _as_csr(train: sp.spmatrix | sp.sparray) -> sp.csr_matrix:
    if not sp.issparse(train):
        raise TypeError(f"train must be a scipy sparse matrix, got {type(train).__name__}")
    return sp.csr_matrix(train)


def _user_index(users: npt.ArrayLike, n_users: int) -> IntArray:
    index = np.asarray(users, dtype=np.int64).ravel()
    if index.size and (index.min() < 0 or index.max() >= n_users):
        raise IndexError(f"user indices must lie in [0, {n_users}), got {index.min()}..{index.max()}")
    return index


def top_k(scores: npt.ArrayLike, seen: sp.csr_matrix, users: npt.ArrayLike, k: int) -> IntArray:
    """The ``k`` best-scored items of each row of ``scores``, best first.

    Row ``r`` of ``scores`` belongs to user ``users[r]``; items stored (non-zero) in that user's row
    of ``seen`` are excluded, as are ``-inf`` and ``nan`` scores. Equal scores are ordered by lower
    item index, so the result is deterministic. A row with fewer than ``k`` candidates is padded
    with ``-1``. Returns int64 ``(len(users), k)``; ``scores`` is not modified.
    """
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    block = np.array(scores, copy=True)
    if block.ndim != 2:
        raise ValueError(f"scores must be 2-D (len(users), n_items), got shape {block.shape}")
    if not np.issubdtype(block.dtype, np.floating):
        block = block.astype(np.float64)
    n_rows, n_items = block.shape
    seen = _as_csr(seen)
    if seen.shape[1] != n_items:
        raise ValueError(f"seen has {seen.shape[1]} items, scores {n_items}")
    index = _user_index(users, seen.shape[0])
    if index.size != n_rows:
        raise ValueError(f"{index.size} users for {n_rows} rows of scores")

    rows_seen = seen[index]
    rows_seen.eliminate_zeros()
    block[np.repeat(np.arange(n_rows), np.diff(rows_seen.indptr)), rows_seen.indices] = -np.inf
    block[np.isnan(block)] = -np.inf

    if n_items <= k:
        chosen = np.broadcast_to(np.arange(n_items), (n_rows, n_items))
    else:
        chosen = np.argpartition(block, n_items - k, axis=1)[:, n_items - k :]
        # argpartition picks arbitrarily among the items tied with the k-th best score; rows where
        # such a tie crosses the cut are redone by _fill_ties.
        kept = np.take_along_axis(block, chosen, axis=1)
        threshold = kept.min(axis=1, keepdims=True)
        crossing = np.flatnonzero((block == threshold).sum(axis=1) > (kept == threshold).sum(axis=1))
        if crossing.size:
            chosen[crossing] = _fill_ties(block[crossing], threshold[crossing], k)
    values = np.take_along_axis(block, chosen, axis=1)
    order = np.lexsort((chosen, -values), axis=1)
    ranked = np.take_along_axis(chosen, order, axis=1).astype(np.int64)
    ranked[np.take_along_axis(values, order, axis=1) == -np.inf] = PAD
    if ranked.shape[1] < k:
        ranked = np.hstack([ranked, np.full((n_rows, k - ranked.shape[1]), PAD, dtype=np.int64)])
    return ranked


def _fill_ties(block: npt.NDArray[np.floating], threshold: npt.NDArray[np.floating], k: int) -> IntArray:
    """For each row, every item scored above ``threshold`` and then the items equal to it, by
    lowest index, up to ``k`` in all (unordered; ``threshold`` is the row's k-th best score)."""
    selected = block > threshold
    room = k - selected.sum(axis=1)
    at = block == threshold
    # np.nonzero lists each row's tied items in index order; keep the first `room` of each row.
    tied_rows, tied_items = np.nonzero(at)
    per_row = at.sum(axis=1)
    first = np.cumsum(per_row) - per_row
    keep = np.arange(tied_rows.size) - first[tied_rows] < room[tied_rows]
    selected[tied_rows[keep], tied_items[keep]] = True
    return np.nonzero(selected)[1].reshape(block.shape[0], k)


def recommend(model: Recommender, train: sp.csr_matrix, users: npt.ArrayLike, k: int, batch: int = 2048) -> IntArray:
    """Top-k item lists ``(len(users), k)`` for ``users``, excluding what each has in ``train``.

    Scores are computed ``batch`` users at a time, so memory stays at about
    ``batch × n_items`` floats whatever the number of users.
    """
    if batch < 1:
        raise ValueError(f"batch must be at least 1, got {batch}")
    train = _as_csr(train)
    index = _user_index(users, train.shape[0])
    out = np.empty((index.size, k), dtype=np.int64)
    for start in range(0, index.size, batch):
        chunk = index[start : start + batch]
        out[start : start + chunk.size] = top_k(model.scores(chunk), train, chunk, k)
    return out


class Popularity:
    """The same ranking for everyone: items by a per-item weight, by default their column sum in
    ``train`` (total interaction weight)."""

    def __init__(self, weights: npt.ArrayLike | None = None) -> None:
        self.weights = None if weights is None else np.asarray(weights, dtype=np.float32).ravel()
        self.item_weights_: FloatArray | None = None

    def fit(self, train: sp.csr_matrix) -> Self:
        train = _as_csr(train)
        if self.weights is None:
            self.item_weights_ = np.asarray(train.sum(axis=0), dtype=np.float32).ravel()
        elif self.weights.size != train.shape[1]:
            raise ValueError(f"{self.weights.size} weights for {train.shape[1]} items")
        else:
            self.item_weights_ = self.weights
        return self

    def scores(self, users: npt.ArrayLike) -> FloatArray:
        if self.item_weights_ is None:
            raise RuntimeError("Popularity.fit must be called before scores")
        n = np.asarray(users).size
        return np.repeat(self.item_weights_[None, :], n, axis=0)


class EASE:
    """Embarrassingly Shallow Autoencoder (Steck, 2019): an item × item linear model in closed form.

    ``P = (XᵀX + λI)⁻¹`` and ``B = I - P · diag(1 / diag(P))``, i.e. ``B[i, j] = -P[i, j] / P[j, j]``
    with a zero diagonal; a user's scores are ``x_u · B``. ``X`` is ``train`` binarised
    (``binary=True``) or with its weights. The dense ``n_items²`` matrices make this a reference
    for catalogues up to ``max_items`` items (20,000 items is ~1.6 GB of float32 per matrix).
    """

    def __init__(self, lam: float = 500.0, *, binary: bool = True, max_items: int = 20_000) -> None:
        if lam <= 0:
            raise ValueError(f"lam must be positive, got {lam}")
        self.lam = lam
        self.binary = binary
        self.max_items = max_items
        self.item_weights_: FloatArray | None = None
        self._x: sp.csr_matrix | None = None

    def fit(self, train: sp.csr_matrix) -> Self:
        x = _as_csr(train).astype(np.float32)
        n_items = x.shape[1]
        if n_items > self.max_items:
            gib = 2 * 4 * n_items**2 / 2**30
            raise ValueError(
                f"EASE needs dense {n_items}×{n_items} matrices (~{gib:.1f} GiB of float32) and is "
                f"limited to max_items={self.max_items} items; raise max_items or use a factor model"
            )
        if self.binary:
            x.data = (x.data != 0).astype(np.float32)
        x.eliminate_zeros()
        gram = (x.T @ x).toarray().astype(np.float32)
        gram[np.diag_indices(n_items)] += self.lam
        # λ > 0 keeps XᵀX + λI well conditioned, so float32 is enough; the weights are built in
        # place to hold peak memory near two n_items² matrices.
        weights = scipy.linalg.inv(gram, overwrite_a=True, check_finite=False).astype(np.float32, copy=False)
        weights /= -np.diag(weights).copy()[None, :]
        weights[np.diag_indices(n_items)] = 0.0
        self.item_weights_ = weights
        self._x = x
        return self

    def scores(self, users: npt.ArrayLike) -> FloatArray:
        if self.item_weights_ is None or self._x is None:
            raise RuntimeError("EASE.fit must be called before scores")
        index = _user_index(users, self._x.shape[0])
        return np.asarray(self._x[index] @ self.item_weights_, dtype=np.float32)


class _FactorModel:
    """Scores from learned user and item factors: ``user_factors[users] @ item_factors.T``."""

    user_factors_: FloatArray | None = None
    item_factors_: FloatArray | None = None

    def scores(self, users: npt.ArrayLike) -> FloatArray:
        if self.user_factors_ is None or self.item_factors_ is None:
            raise RuntimeError(f"{type(self).__name__}.fit must be called before scores")
        index = _user_index(users, self.user_factors_.shape[0])
        return np.asarray(self.user_factors_[index] @ self.item_factors_.T, dtype=np.float32)


class ImplicitALS(_FactorModel):
    """Weighted matrix factorisation by alternating least squares (Hu, Koren & Volinsky, 2008),
    through ``implicit.cpu.als.AlternatingLeastSquares``.

    ``implicit`` uses ``alpha · weight`` as the confidence of an observed pair (unobserved pairs
    have confidence 1). ``num_threads=0`` uses every core; a fixed ``random_state`` fixes the
    initial factors.
    """

    def __init__(
        self,
        factors: int = 64,
        regularization: float = 0.01,
        alpha: float = 10.0,
        iterations: int = 15,
        random_state: int = 42,
        num_threads: int = 0,
    ) -> None:
        self.factors = factors
        self.regularization = regularization
        self.alpha = alpha
        self.iterations = iterations
        self.random_state = random_state
        self.num_threads = num_threads

    def fit(self, train: sp.csr_matrix) -> Self:
        # implicit runs its own thread pool; a multi-threaded BLAS underneath it oversubscribes the
        # cores (implicit warns about this at construction), so BLAS is held to one thread here.
        from implicit.cpu.als import AlternatingLeastSquares
        from threadpoolctl import threadpool_limits

        user_items = _as_csr(train).astype(np.float32)
        with threadpool_limits(limits=1, user_api="blas"):
            model = AlternatingLeastSquares(
                factors=self.factors,
                regularization=self.regularization,
                alpha=self.alpha,
                iterations=self.iterations,
                random_state=self.random_state,
                num_threads=self.num_threads,
            )
            model.fit(user_items, show_progress=False)
        self.user_factors_ = np.asarray(model.user_factors, dtype=np.float32)
        self.item_factors_ = np.asarray(model.item_factors, dtype=np.float32)
        return self


class ImplicitBPR(_FactorModel):
    """Bayesian Personalised Ranking (Rendle et al., 2009) by SGD, through
    ``implicit.cpu.bpr.BayesianPersonalizedRanking``.

    BPR reads ``train`` as binary (weights are ignored). Its factors carry an extra column: a
    constant 1 on the user side and the item bias on the item side, so the dot product includes
    the bias. Hogwild SGD makes results depend on thread timing: only ``num_threads=1`` with a
    fixed ``random_state`` is reproducible.
    """

    def __init__(
        self,
        factors: int = 64,
        learning_rate: float = 0.01,
        regularization: float = 0.01,
        iterations: int = 100,
        random_state: int = 42,
        num_threads: int = 0,
    ) -> None:
        self.factors = factors
        self.learning_rate = learning_rate
        self.regularization = regularization
        self.iterations = iterations
        self.random_state = random_state
        self.num_threads = num_threads

    def fit(self, train: sp.csr_matrix) -> Self:
        from implicit.cpu.bpr import BayesianPersonalizedRanking

        model = BayesianPersonalizedRanking(
            factors=self.factors,
            learning_rate=self.learning_rate,
            regularization=self.regularization,
            iterations=self.iterations,
            random_state=self.random_state,
            num_threads=self.num_threads,
        )
        model.fit(_as_csr(train).astype(np.float32), show_progress=False)
        self.user_factors_ = np.asarray(model.user_factors, dtype=np.float32)
        self.item_factors_ = np.asarray(model.item_factors, dtype=np.float32)
        return self
