"""Ranking metrics against values worked out by hand, their edge cases, and the perfect-list property."""

from __future__ import annotations

import math

import numpy as np
import pytest

from placerec.model.metrics import (
    catalog_coverage,
    evaluate,
    hit_rate_at_k,
    intra_list_diversity,
    map_at_k,
    ndcg_at_k,
    novelty,
    paired_bootstrap,
    recall_at_k,
)

pytestmark = pytest.mark.unit

# Two users, k = 3.
# user 0: list 5, 1, 7; relevant {1, 7, 4} -> hits at ranks 2 and 3, min(k, |truth|) = 3
# user 1: list 2, 9, pad; relevant {3} -> no hit
RECS = np.array([[5, 1, 7], [2, 9, -1]])
TRUTH = [np.array([1, 7, 4]), np.array([3])]

# user 0: recall 2/3; user 1: 0
RECALL = (2 / 3 + 0) / 2
# user 0: DCG = 1/log2(3) + 1/log2(4) = 0.6309 + 0.5; IDCG over 3 hits = 1/log2(2) + 1/log2(3) + 1/log2(4)
NDCG = ((1 / math.log2(3) + 1 / math.log2(4)) / (1 / math.log2(2) + 1 / math.log2(3) + 1 / math.log2(4)) + 0) / 2
# user 0: precision@2 = 1/2, precision@3 = 2/3, AP = (1/2 + 2/3) / 3 = 7/18
MAP = (7 / 18 + 0) / 2
HIT_RATE = (1 + 0) / 2


def test_two_users_by_hand() -> None:
    assert recall_at_k(RECS, TRUTH, 3) == pytest.approx(RECALL)
    assert ndcg_at_k(RECS, TRUTH, 3) == pytest.approx(NDCG)
    assert ndcg_at_k(RECS, TRUTH, 3) == pytest.approx(0.5 * 1.1309297535714575 / 2.1309297535714575)
    assert map_at_k(RECS, TRUTH, 3) == pytest.approx(MAP)
    assert hit_rate_at_k(RECS, TRUTH, 3) == pytest.approx(HIT_RATE)


def test_k_smaller_than_list_ignores_later_ranks() -> None:
    recs = np.array([[0, 1, 2, 3]])
    truth = [np.array([0, 3])]
    # k = 2: only item 0 (rank 1) is a hit; item 3 sits at rank 4. min(2, 2) = 2
    assert recall_at_k(recs, truth, 2) == pytest.approx(1 / 2)
    assert ndcg_at_k(recs, truth, 2) == pytest.approx(1 / (1 + 1 / math.log2(3)))
    assert map_at_k(recs, truth, 2) == pytest.approx((1 / 1) / 2)
    # k = 4: hits at ranks 1 and 4; AP = (1/1 + 2/4) / 2
    assert recall_at_k(recs, truth, 4) == pytest.approx(1.0)
    assert ndcg_at_k(recs, truth, 4) == pytest.approx((1 + 1 / math.log2(5)) / (1 + 1 / math.log2(3)))
    assert map_at_k(recs, truth, 4) == pytest.approx(0.75)


def test_truth_larger_than_k_is_capped() -> None:
    recs = np.array([[0, 1, 2]])
    truth = [np.array([0, 9, 8, 7, 6])]
    # one hit at rank 1 of k = 2, normalised by min(2, 5) = 2 (not by 5)
    assert recall_at_k(recs, truth, 2) == pytest.approx(1 / 2)
    assert ndcg_at_k(recs, truth, 2) == pytest.approx(1 / (1 + 1 / math.log2(3)))
    assert map_at_k(recs, truth, 2) == pytest.approx(1 / 2)
    # a list made only of relevant items scores 1 although 3 relevant items are left out
    assert recall_at_k(np.array([[9, 8]]), truth, 2) == pytest.approx(1.0)


def test_padding_is_never_a_hit() -> None:
    # User 1's padding would encode as the (user 0, item 2) pair if it were not masked.
    recs = np.array([[0, 1], [-1, -1]])
    truth = [np.array([2]), np.array([0])]
    assert hit_rate_at_k(recs, truth, 2) == 0.0
    assert recall_at_k(recs, truth, 2) == 0.0
    # a hit after padding keeps its rank: rank 3 -> DCG 1/log2(4) = 0.5, precision@3 = 1/3
    recs = np.array([[-1, -1, 4]])
    truth = [np.array([4])]
    assert recall_at_k(recs, truth, 3) == pytest.approx(1.0)
    assert ndcg_at_k(recs, truth, 3) == pytest.approx(0.5)
    assert map_at_k(recs, truth, 3) == pytest.approx(1 / 3)


def test_duplicate_truth_items_count_once() -> None:
    # |truth| = |{1}| = 1, so one hit in the top 2 is a recall of 1/min(2, 1) = 1
    assert recall_at_k(np.array([[1, 5]]), [np.array([1, 1])], 2) == pytest.approx(1.0)


def test_list_equal_to_truth_scores_one() -> None:
    rng = np.random.default_rng(3)
    k = 10
    truth = [rng.choice(500, size=size, replace=False) for size in (1, 3, 10, 25, 7)]
    recs = np.full((len(truth), k), -1)
    for row, items in enumerate(truth):
        shown = rng.permutation(items)[:k]
        recs[row, : shown.size] = shown
    for metric in (recall_at_k, ndcg_at_k, map_at_k, hit_rate_at_k):
        assert metric(recs, truth, k) == pytest.approx(1.0), metric.__name__


@pytest.mark.parametrize(
    ("recs", "truth", "k", "message"),
    [
        (np.array([[1, 2]]), [np.array([], dtype=int)], 2, "no held-out items"),
        (np.array([[1, 2]]), [np.array([1])], 3, "exceeds"),
        (np.array([[1, 1]]), [np.array([1])], 2, "repeats"),
        (np.array([[1, 2]]), [np.array([1]), np.array([2])], 2, "entries"),
        (np.array([[1, -2]]), [np.array([1])], 2, "negative"),
        (np.array([[1.0, 2.0]]), [np.array([1])], 2, "integer"),
    ],
)
def test_invalid_input_is_rejected(recs: np.ndarray, truth: list[np.ndarray], k: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        recall_at_k(recs, truth, k)


def test_catalog_coverage() -> None:
    recs = np.array([[0, 1, -1], [1, 2, 3]])
    # top 2: {0, 1} ∪ {1, 2} = 3 items of 10; top 3 adds item 3 (padding is not an item)
    assert catalog_coverage(recs, 2, 10) == pytest.approx(0.3)
    assert catalog_coverage(recs, 3, 10) == pytest.approx(0.4)
    with pytest.raises(ValueError, match="outside the catalog"):
        catalog_coverage(recs, 3, 3)


def test_novelty() -> None:
    # 8 training users; items 0..4 were used by 8, 4, 2, 0 and 1 of them
    popularity = np.array([8, 4, 2, 0, 1])
    recs = np.array([[0, 1], [2, 3]])
    # -log2(8/8) = 0, -log2(4/8) = 1, -log2(2/8) = 2, item 3 counted as 1 user: -log2(1/8) = 3
    assert novelty(recs, 2, popularity, 8) == pytest.approx((0 + 1 + 2 + 3) / 4)
    # padding is not a recommended item
    assert novelty(np.array([[1, -1]]), 2, popularity, 8) == pytest.approx(1.0)
    assert math.isnan(novelty(np.array([[-1, -1]]), 2, popularity, 8))


def test_intra_list_diversity() -> None:
    vectors = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [0.0, 0.0], [2.0, 0.0]])
    recs = np.array(
        [
            [0, 1, 2],  # cos(0,1) = 0, cos(0,2) = cos(1,2) = 1/√2 -> mean distance (1 + 2(1 - 1/√2)) / 3
            [0, 4, 3],  # item 4 is item 0 scaled: distance 0; item 3 is a zero vector, skipped
            [1, -1, -1],  # a single item: no pair, user skipped
            [3, 0, -1],  # one usable item: user skipped
        ]
    )
    expected = ((1 + 2 * (1 - 1 / math.sqrt(2))) / 3 + 0.0) / 2
    assert intra_list_diversity(recs, 3, vectors) == pytest.approx(expected)
    # k = 2 keeps only the first pair of each list: user 0 -> 1, user 1 -> 0
    assert intra_list_diversity(recs, 2, vectors) == pytest.approx(0.5)
    assert math.isnan(intra_list_diversity(recs[2:], 3, vectors))


def test_evaluate_keys_and_values() -> None:
    vectors = np.eye(10)
    result = evaluate(RECS, TRUTH, 3, n_items=10, item_popularity=np.full(10, 2), n_train_users=4, item_vectors=vectors)
    assert list(result) == [
        "recall@3",
        "ndcg@3",
        "map@3",
        "hit_rate@3",
        "coverage@3",
        "novelty@3",
        "diversity@3",
        "users",
    ]
    assert result["recall@3"] == pytest.approx(RECALL)
    assert result["ndcg@3"] == pytest.approx(NDCG)
    assert result["map@3"] == pytest.approx(MAP)
    assert result["hit_rate@3"] == pytest.approx(HIT_RATE)
    # items 5, 1, 7, 2, 9 of 10
    assert result["coverage@3"] == pytest.approx(0.5)
    # every item used by 2 of 4 training users: -log2(1/2) = 1
    assert result["novelty@3"] == pytest.approx(1.0)
    # orthogonal vectors: every pair at distance 1
    assert result["diversity@3"] == pytest.approx(1.0)
    assert result["users"] == 2.0

    without = evaluate(RECS, TRUTH, 3, n_items=10, item_popularity=np.full(10, 2), n_train_users=4)
    assert math.isnan(without["diversity@3"])


def test_paired_bootstrap_interval() -> None:
    # identical figures: no difference, and no interval around it
    same = np.array([0.0, 1.0, 0.5, 0.0])
    assert paired_bootstrap(same, same) == (0.0, 0.0, 0.0)
    # a constant shift of 0.1 is the difference whatever users a resample draws
    diff, lo, hi = paired_bootstrap(same + 0.1, same)
    assert diff == pytest.approx(0.1) and lo == pytest.approx(0.1) and hi == pytest.approx(0.1)
    # 10,000 users whose difference is +1 for 30 % of them, else 0: mean 0.3, sd sqrt(0.21); the
    # interval is close to the normal one (± 1.96 · sd / √n = ± 0.00898) and seeded (same twice)
    a = np.zeros(10_000)
    a[:3000] = 1.0
    diff, lo, hi = paired_bootstrap(a, np.zeros(10_000), seed=7)
    assert diff == pytest.approx(0.3)
    assert lo == pytest.approx(0.3 - 0.00898, abs=0.002) and hi == pytest.approx(0.3 + 0.00898, abs=0.002)
    assert paired_bootstrap(a, np.zeros(10_000), seed=7) == (diff, lo, hi)
    # a difference hidden in noise: the interval spans 0
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 2, 200).astype(float)
    _, lo, hi = paired_bootstrap(noise, rng.integers(0, 2, 200).astype(float))
    assert lo < 0 < hi
    with pytest.raises(ValueError):
        paired_bootstrap(np.array([]), np.array([]))


def test_paired_bootstrap_resamples_whole_groups() -> None:
    rng = np.random.default_rng(1)
    a, b = rng.random(300), rng.random(300)
    plain = paired_bootstrap(a, b, seed=3)
    # a group per pair, in order: the plain bootstrap's draws and figures
    assert paired_bootstrap(a, b, seed=3, groups=np.arange(300)) == pytest.approx(plain)
    # every user evaluated twice with the same figures: as independent pairs the interval narrows by
    # about √2; grouped by user it is the interval of the single copy
    twice = (np.concatenate([a, a]), np.concatenate([b, b]))
    naive = paired_bootstrap(*twice, seed=3)
    grouped = paired_bootstrap(*twice, seed=3, groups=np.concatenate([np.arange(300), np.arange(300)]))
    assert grouped == pytest.approx(plain)
    assert (naive[2] - naive[1]) < 0.8 * (plain[2] - plain[1])
    # labels of any kind, strings included
    ids = np.array([f"u{i}" for i in range(300)] * 2)
    assert paired_bootstrap(*twice, seed=3, groups=ids) == pytest.approx(plain)
    with pytest.raises(ValueError, match="groups must label every pair"):
        paired_bootstrap(a, b, groups=np.arange(3))
