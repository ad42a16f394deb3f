"""The NSMC data README's protocol (``placerec.model.protocol``): hand-made reviews, and the real file."""

from __future__ import annotations

import csv
import gzip
import sys
from datetime import date

import numpy as np
import pytest

from placerec.model import protocol
from placerec.model.metrics import ndcg_per_user

from ..conftest import NSMC_DIR

CUT, END = 100, 110


def _build(rows: list[tuple[str, str, int]], heavy: int = 3) -> protocol.Protocol:
    who, what, day = zip(*rows, strict=True)
    return protocol.build(list(who), list(what), np.array(day), CUT, END, heavy=heavy)


ROWS = [
    # a: two training items; in the test span one old (not a positive), one new, one unknown item
    ("a", "m1", 90), ("a", "m2", 95), ("a", "m1", 101), ("a", "m3", 103), ("a", "m9", 104),
    # b: one training item, its first test review on day 102, a second one later
    ("b", "m2", 50), ("b", "m3", 105), ("b", "m1", 102),
    # h: four training reviews (three of one item): over heavy=3, dropped from both sides
    ("h", "m3", 10), ("h", "m3", 11), ("h", "m3", 12), ("h", "m4", 13), ("h", "m1", 101),
    # c: only in the test span (not a training user), d: no positive (reviews only what it knew)
    ("c", "m1", 101), ("c", "m2", 101), ("d", "m4", 99), ("d", "m4", 106),
    # after the end: ignored
    ("a", "m4", 110),
]  # fmt: skip


def test_the_protocol_keeps_training_users_and_their_new_known_items() -> None:
    p = _build(ROWS)
    assert p.users.tolist() == ["a", "b", "d"]  # h dropped as heavy, c not in training
    assert p.items.tolist() == ["m1", "m2", "m4"]  # m3 was only reviewed by the dropped h
    assert p.heavy_ids == 1
    # a pair reviewed twice is one positive in the matrix
    assert p.train.toarray().tolist() == [[1, 1, 0], [0, 1, 0], [0, 0, 1]]
    evaluated = {p.users[u]: [p.items[i] for i in t] for u, t in zip(p.eval_users, p.truth, strict=True)}
    # a: m1 known before, m3 and m9 unknown to training; b: m1 (m3 unknown); d: nothing new
    assert evaluated == {"b": ["m1"]}
    assert p.first_test_day.tolist() == [102]
    assert protocol.summary(p) == {
        "interactions": 4, "users": 3, "items": 3, "evaluation users": 1, "positives": 1, "heavy ids dropped": 1,
    }  # fmt: skip


def test_a_users_first_test_day_is_their_earliest_new_review() -> None:
    p = _build([("a", "m1", 1), ("b", "m2", 1), ("a", "m2", 108), ("a", "m2", 104), ("b", "m1", 109)])
    days = dict(zip(p.users[p.eval_users].tolist(), p.first_test_day.tolist(), strict=True))
    assert days == {"a": 104, "b": 109}


def test_popularity_counts_distinct_reviewers_test_only_ids_included() -> None:
    p = _build(ROWS)
    assert protocol.distinct_reviewers(p, 0, CUT).tolist() == [1, 2, 1]  # a's two m1 reviews count once
    # in the test span: m1 by a, b, c (c is no training user but a real reviewer); m4 by d
    assert protocol.distinct_reviewers(p, CUT, END).tolist() == [3, 1, 1]


def test_time_aware_popularity_counts_up_to_each_users_first_test_day() -> None:
    rows = [("u", "x", 1), ("v", "x", 1), ("w", "y", 1), ("e", "z", 1)]
    rows += [("u", "y", 105), ("v", "z", 101)]  # u's first test day 105, v's 101
    rows += [(f"n{j}", "z", 102) for j in range(3)]  # z is the hit between v's and u's days
    p = _build(rows)
    lists = protocol.time_aware_lists(p, k=2, days=30)
    by_user = {p.users[u]: [p.items[i] for i in row if i >= 0] for u, row in zip(p.eval_users, lists, strict=True)}
    # v at day 101 sees training counts only (x 2, y 1, z 1); x is v's own: y, z by index
    assert by_user["v"] == ["y", "z"]
    # u at day 105 also sees day 101-102's five reviews of z: z first
    assert by_user["u"] == ["z", "y"]


def test_evaluate_scores_ours_and_the_references_on_the_same_users() -> None:
    rng = np.random.default_rng(3)
    rows = [(f"u{n}", f"m{int(rng.zipf(1.6)) % 40}", int(rng.integers(0, CUT))) for n in range(60) for _ in range(4)]
    rows += [(f"u{n}", f"m{int(rng.zipf(1.6)) % 40}", int(rng.integers(CUT, END))) for n in range(60)]
    p = _build(rows, heavy=500)
    perfect = np.full((len(p.eval_users), protocol.K), -1, dtype=np.int64)
    perfect[:, 0] = [t[0] for t in p.truth]
    ours = {"hybrid": perfect, "popularity": np.full_like(perfect, -1)}
    table = {r["method"]: r for r in protocol.evaluate(p, ours)}
    assert set(table) == {"hybrid", "popularity", *protocol.README_ROWS, protocol.TIME_AWARE}
    assert table["hybrid"]["ndcg@10"] == pytest.approx(ndcg_per_user(perfect, p.truth, 10).mean())
    assert table["hybrid"]["hit_rate@10"] == 1.0 and table["popularity"]["ndcg@10"] == 0.0
    assert table["popularity_30d"]["published ndcg@10"] == 0.0045 and np.isnan(table["hybrid"]["published ndcg@10"])
    diff = table["hybrid"]["ndcg@10 vs popularity_30d"]
    assert diff == pytest.approx(table["hybrid"]["ndcg@10"] - table["popularity_30d"]["ndcg@10"])
    assert table["hybrid"]["ndcg@10 vs popularity_30d lo"] <= diff <= table["hybrid"]["ndcg@10 vs popularity_30d hi"]
    assert table["hybrid"]["ndcg@10 vs popularity"] == pytest.approx(table["hybrid"]["ndcg@10"])
    assert "ndcg@10 vs popularity_30d" not in table["popularity_30d"]
    assert all(r["users"] == len(p.eval_users) for r in table.values())
    # the report names the baseline of each comparison; the published figure sits beside each row
    from placerec.model.report import format_protocol

    text = format_protocol({"name": "nsmc", "sizes": protocol.summary(p), "table": list(table.values())}, 10)
    assert "| protocol | hybrid | ndcg@10 vs popularity_30d |" in text and "| protocol | hybrid | ndcg@10 |" in text
    assert "| popularity_30d | " in text and "0.0045" in text and f"evaluation users {len(p.eval_users)}" in text


def test_no_training_review_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="no reviews before the cut"):
        _build([("a", "m1", 101)])
    with pytest.raises(ValueError, match="equally long"):
        protocol.build(["a"], ["m1", "m2"], np.array([1]), CUT, END)


@pytest.mark.skipif(not (NSMC_DIR / "reviews.tsv.gz").is_file(), reason="needs ../shared/data/nsmc")
def test_on_the_real_file_it_is_exactly_the_data_readmes_protocol() -> None:
    csv.field_size_limit(sys.maxsize)
    epoch = date(1970, 1, 1)
    who, what, days = [], [], []
    with gzip.open(NSMC_DIR / "reviews.tsv.gz", "rt", encoding="utf-8", newline="") as f:
        reader = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        next(reader)
        for row in reader:
            who.append(row[1])
            what.append(row[2])
            days.append((date.fromisoformat(row[4]) - epoch).days)
    cut, end = (date(2015, 2, 1) - epoch).days, (date(2015, 5, 1) - epoch).days
    p = protocol.build(who, what, np.array(days), cut, end)
    # the figures the data README states for its table
    assert protocol.summary(p) | {"heavy ids dropped": 0} == {
        "interactions": 518_029, "users": 86_490, "items": 13_481, "evaluation users": 10_200,
        "positives": 26_712, "heavy ids dropped": 0,
    }  # fmt: skip
    lists = protocol.reference_models(p, 42)["popularity_30d"]().fit(p.train)
    from placerec.model.references import recommend

    recs = recommend(lists, p.train, p.eval_users, 10)
    assert round(float(ndcg_per_user(recs, p.truth, 10).mean()), 4) == 0.0045
