"""Reference recommenders: EASE against a hand-inverted matrix, top-k selection rules, popularity,
and the implicit ALS/BPR wrappers on a planted two-community matrix."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import scipy.sparse as sp

from placerec.model.references import EASE, ImplicitALS, ImplicitBPR, Popularity, recommend, top_k

pytestmark = pytest.mark.unit

# Users × items 0..2: items 0 and 1 co-occur twice, items 1 and 2 once, items 0 and 2 never.
SMALL = sp.csr_matrix(
    np.array(
        [
            [1, 1, 0],
            [1, 1, 0],
            [0, 1, 1],
            [1, 0, 0],
        ],
        dtype=np.float32,
    )
)


def test_ease_matches_hand_inverse() -> None:
    # XᵀX = [[3, 2, 0], [2, 3, 1], [0, 1, 1]]; with λ = 1, A = XᵀX + I = [[4, 2, 0], [2, 4, 1], [0, 1, 2]].
    # det A = 4(4·2 - 1·1) - 2(2·2 - 1·0) = 28 - 8 = 20; cofactors give
    # P = A⁻¹ = (1/20) [[7, -4, 2], [-4, 8, -4], [2, -4, 12]].
    # B[i, j] = -P[i, j] / P[j, j]: B01 = 4/8, B02 = -2/12, B10 = 4/7, B12 = 4/12, B20 = -2/7, B21 = 4/8.
    expected = np.array(
        [
            [0.0, 1 / 2, -1 / 6],
            [4 / 7, 0.0, 1 / 3],
            [-2 / 7, 1 / 2, 0.0],
        ]
    )
    model = EASE(lam=1.0).fit(SMALL)
    assert model.item_weights_ is not None
    np.testing.assert_allclose(model.item_weights_, expected, atol=1e-5)
    # user 3 has item 0 only: its scores are row 0 of B; item 1 (co-occurs) beats item 2 (never does)
    np.testing.assert_allclose(model.scores(np.array([3])), [[0.0, 0.5, -1 / 6]], atol=1e-5)
    recs = recommend(model, SMALL, np.arange(4), 3)
    np.testing.assert_array_equal(recs, [[2, -1, -1], [2, -1, -1], [0, -1, -1], [1, 2, -1]])


def test_ease_binary_ignores_weights() -> None:
    weighted = SMALL.multiply(np.array([[5.0], [1.0], [3.0], [2.0]], dtype=np.float32)).tocsr()
    binary = EASE(lam=1.0).fit(weighted).item_weights_
    as_weights = EASE(lam=1.0, binary=False).fit(weighted).item_weights_
    np.testing.assert_allclose(binary, EASE(lam=1.0).fit(SMALL).item_weights_, atol=1e-6)
    assert not np.allclose(binary, as_weights, atol=1e-3)


def test_ease_refuses_large_catalogues() -> None:
    with pytest.raises(ValueError, match="max_items=2"):
        EASE(max_items=2).fit(SMALL)


def test_top_k_excludes_seen_and_breaks_ties_by_item_index() -> None:
    scores = np.array([[0.5, 0.9, 0.9, 0.1, 0.9]], dtype=np.float32)
    seen = sp.csr_matrix(np.array([[0, 0, 0, 0, 0], [0, 0, 1, 0, 0]]))
    original = scores.copy()
    # user 1 has item 2: the 0.9 tie between items 1 and 4 goes to the lower index first
    np.testing.assert_array_equal(top_k(scores, seen, np.array([1]), 3), [[1, 4, 0]])
    np.testing.assert_array_equal(top_k(scores, seen, np.array([0]), 3), [[1, 2, 4]])
    # four candidates left for k = 6: padded with -1
    np.testing.assert_array_equal(top_k(scores, seen, np.array([1]), 6), [[1, 4, 0, 3, -1, -1]])
    np.testing.assert_array_equal(scores, original)


def test_top_k_tie_at_the_cut_takes_lowest_indices() -> None:
    # 1,000 equal scores: a plain argpartition may return any five of them
    scores = np.zeros((2, 1000), dtype=np.float32)
    scores[1, 700] = 1.0
    seen = sp.csr_matrix((2, 1000), dtype=np.float32)
    np.testing.assert_array_equal(top_k(scores, seen, np.array([0, 1]), 5), [[0, 1, 2, 3, 4], [700, 0, 1, 2, 3]])


def test_top_k_drops_minus_inf_and_nan_and_ignores_stored_zeros() -> None:
    scores = np.array([[np.nan, 2.0, -np.inf, 1.0]])
    # an explicitly stored 0 is not an interaction
    seen = sp.csr_matrix((np.array([0.0]), (np.array([0]), np.array([1]))), shape=(1, 4))
    np.testing.assert_array_equal(top_k(scores, seen, np.array([0]), 3), [[1, 3, -1]])


def test_recommend_is_independent_of_batch_size() -> None:
    rng = np.random.default_rng(5)
    train = sp.random(50, 30, density=0.2, format="csr", random_state=5, dtype=np.float32)
    model = EASE(lam=10.0).fit(train)
    users = rng.permutation(50)[:37]
    whole = recommend(model, train, users, 7)
    np.testing.assert_array_equal(recommend(model, train, users, 7, batch=4), whole)
    # the seen items of each user never appear
    for row, user in enumerate(users):
        assert not set(whole[row]) & set(train[user].indices)


def test_popularity_ranks_by_column_sum() -> None:
    train = sp.csr_matrix(
        np.array(
            [
                [1, 0, 1, 0],
                [2, 0, 1, 0],
                [0, 1, 1, 0],
            ],
            dtype=np.float32,
        )
    )
    # column sums 3, 1, 3, 0: items 0 and 2 tie (lower index first), then 1, then 3
    model = Popularity().fit(train)
    np.testing.assert_array_equal(recommend(model, train, np.array([0, 2]), 3), [[1, 3, -1], [0, 3, -1]])
    custom = Popularity(weights=np.array([0.0, 0.0, 0.0, 9.0])).fit(train)
    np.testing.assert_array_equal(recommend(custom, train, np.array([0]), 2), [[3, 1]])
    with pytest.raises(ValueError, match="3 weights for 4 items"):
        Popularity(weights=np.ones(3)).fit(train)


def two_communities(seed: int = 7) -> tuple[sp.csr_matrix, np.ndarray]:
    """60 users in two groups of 30; group g uses items 20g..20g+19 only, 8 of them each in train.

    Returns the training matrix and each user's group.
    """
    rng = np.random.default_rng(seed)
    rows: list[int] = []
    cols: list[int] = []
    for user in range(60):
        group = user // 30
        rows += [user] * 8
        cols += list(rng.choice(20, 8, replace=False) + 20 * group)
    train = sp.csr_matrix((np.ones(len(rows), dtype=np.float32), (rows, cols)), shape=(60, 40))
    return train, np.arange(60) // 30


def in_group_share(recs: np.ndarray, group: np.ndarray) -> float:
    return float(np.mean(recs // 20 == group[:, None]))


@pytest.mark.parametrize(
    "make",
    [
        lambda seed: ImplicitALS(factors=4, random_state=seed, num_threads=1),
        lambda seed: ImplicitBPR(factors=4, random_state=seed, num_threads=1),
    ],
    ids=["als", "bpr"],
)
def test_factor_models_are_seeded_and_find_the_communities(make: Callable[[int], ImplicitALS | ImplicitBPR]) -> None:
    train, group = two_communities()
    users = np.arange(60)
    first = recommend(make(1).fit(train), train, users, 5)
    np.testing.assert_array_equal(recommend(make(1).fit(train), train, users, 5), first)
    assert not np.array_equal(make(1).fit(train).user_factors_, make(2).fit(train).user_factors_)
    # Each user has 12 unseen items of their own group left; a model that learnt nothing would
    # put about half of its picks in the other group (popularity does, below).
    assert in_group_share(first, group) >= 0.9
    assert in_group_share(recommend(Popularity().fit(train), train, users, 5), group) < 0.75
