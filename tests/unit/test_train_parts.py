"""Train: interaction weights (Spark, hand-computed), the hybrid scorer on a planted world, the gate."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import datetime, timezone

import numpy as np
import pytest
import scipy.sparse as sp

from placerec.ingest.commit import mark_committed
from placerec.model.hybrid import (
    CF_ONLY,
    CONTENT_ONLY,
    Blend,
    Scorer,
    Split,
    choose_blend,
    content_confidence,
    segment_of,
)
from placerec.model.interactions import interaction_rows, parse_weights
from placerec.model.train import gate, run_train_hybrid
from placerec.settings import Settings

pytestmark = pytest.mark.unit

END = datetime(2026, 11, 8, tzinfo=timezone.utc)


def _events(spark, rows):  # type: ignore[no-untyped-def]
    schema = "event_type string, event_ts timestamp, user_id string, place_id string, rating int, source string"
    return spark.createDataFrame(rows, schema)


def _ts(day: int, hour: int = 12) -> datetime:
    return datetime(2026, 11, day, hour, tzinfo=timezone.utc)


def test_parse_weights_rejects_bad_specs() -> None:
    assert parse_weights("view=1, click=2.5") == {"view": 1.0, "click": 2.5}
    for bad in ("view", "view=x", "view=-1", "=2", "impression=0"):
        with pytest.raises(ValueError):
            parse_weights(bad)


def test_interaction_weights_decay_rating_and_cut(spark) -> None:  # type: ignore[no-untyped-def]
    s = Settings(interaction_weights="view=1,click=2,review=6", interaction_half_life_days=1.0)
    rows = [
        # u1/p1: a click exactly one day before END (half-life 1 day): 2 * 0.5 = 1.0
        ("click", datetime(2026, 11, 7, tzinfo=timezone.utc), "u1", "p1", None, "demo"),
        # plus a view two days before END: 1 * 0.25 = 0.25  -> total 1.25, 2 events
        ("view", datetime(2026, 11, 6, tzinfo=timezone.utc), "u1", "p1", None, "demo"),
        # u1/p2: a 3-star demo review (scale 1..5) at END - 0: 6 * 3/5 = 3.6 (age 0 -> no decay)
        ("review", datetime(2026, 11, 7, 23, 59, 59, tzinfo=timezone.utc), "u1", "p2", 3, "demo"),
        # nsmc rating 10 of 1..10 -> factor 1.0; one day old -> 6 * 1.0 * 0.5 = 3.0
        ("review", datetime(2026, 11, 7, tzinfo=timezone.utc), "u2", "m1", 10, "nsmc"),
        # impressions and searches weigh nothing; events at or after END never count
        ("impression", _ts(7), "u1", "p3", None, "demo"),
        ("click", END, "u1", "p4", None, "demo"),
        ("click", _ts(9), "u2", "p4", None, "demo"),
    ]
    got = {(r.user_id, r.place_id): r for r in interaction_rows(_events(spark, rows), END, s).collect()}
    assert set(got) == {("u1", "p1"), ("u1", "p2"), ("u2", "m1")}
    assert got[("u1", "p1")].weight == pytest.approx(1.25)
    assert got[("u1", "p1")].events == 2
    assert got[("u1", "p2")].weight == pytest.approx(3.6, rel=1e-4)
    assert got[("u2", "m1")].weight == pytest.approx(3.0)


def test_interaction_caps_heavy_ids(spark) -> None:  # type: ignore[no-untyped-def]
    s = Settings(
        interaction_weights="click=1",
        interaction_half_life_days=1e9,
        interaction_user_cap=2.0,
        interaction_max_places=3,
    )
    # one heavy id: 5 places with 1..5 clicks; a light id with a single click
    rows = [("click", _ts(1), "heavy", f"p{p}", None, "demo") for p in range(1, 6) for _ in range(p)]
    rows.append(("click", _ts(1), "light", "p1", None, "demo"))
    got = interaction_rows(_events(spark, rows), END, s).collect()
    heavy = {r.place_id: r.weight for r in got if r.user_id == "heavy"}
    # the 3 strongest places (5, 4, 3 clicks = 12) scaled to a total of 2.0
    assert set(heavy) == {"p5", "p4", "p3"}
    assert heavy["p5"] == pytest.approx(5 * 2.0 / 12)
    assert sum(heavy.values()) == pytest.approx(2.0)
    assert [r.weight for r in got if r.user_id == "light"] == [pytest.approx(1.0)]


def _world() -> Split:
    """Two tastes: users 0-3 like items 0-2 (vector e0), users 4-7 items 3-5 (e1); item 6 is very
    popular and neutral; item 7 is not in the catalogue; user 8 is cold with an e1 interest."""
    n_users, n_items = 9, 8
    train = np.zeros((n_users, n_items), dtype=np.float32)
    for u in range(4):
        train[u, u % 3] = 1.0
        train[u, (u + 1) % 3] = 1.0
    for u in range(4, 8):
        train[u, 3 + u % 3] = 1.0
    train[:8, 6] = 0.0
    vectors = np.zeros((n_items, 2), dtype=np.float32)
    vectors[:3, 0] = 1.0
    vectors[3:6, 1] = 1.0
    vectors[6] = [0.7, 0.7]
    vectors[7] = [0.0, 1.0]
    interest = np.zeros((n_users, 2), dtype=np.float32)
    interest[8] = [0.0, 1.0]
    popularity = np.array([1, 1, 1, 1, 1, 1, 50, 100], dtype=np.float64)
    candidates = np.ones(n_items, dtype=bool)
    candidates[7] = False
    split = Split(
        END,
        np.array([f"u{i}" for i in range(n_users)], dtype=object),
        np.array([f"p{i}" for i in range(n_items)], dtype=object),
        sp.csr_matrix(train),
        candidates,
        vectors,
        interest,
        popularity,
        np.ones(n_items, dtype=np.int64),
    )
    # planted factors: the taste as a 2-d factor
    split.user_factors = np.array([[1, 0]] * 4 + [[0, 1]] * 4 + [[0, 0]], dtype=np.float32)
    split.item_factors = vectors.copy()
    return split


def test_scorer_excludes_seen_and_non_catalogue() -> None:
    split = _world()
    recs = Scorer(split).recommend(np.arange(9), Blend(k=1.0, beta=0.5), k=8)
    for u in range(9):
        listed = [int(i) for i in recs[u] if i >= 0]
        assert 7 not in listed, "item 7 is outside the catalogue"
        assert not set(listed) & set(split.train[u].indices.tolist()), "a training place came back"
        assert len(listed) == len(set(listed))


def test_content_serves_the_cold_user_and_cf_the_tastes() -> None:
    split = _world()
    scorer = Scorer(split)
    # user 0 (taste e0, seen 0 and 1): CF and content both put the unseen e0 item 2 first
    assert scorer.recommend(np.array([0]), CF_ONLY, 1)[0, 0] == 2
    assert scorer.recommend(np.array([0]), CONTENT_ONLY, 1)[0, 0] == 2
    # the cold user has no factors; content from the e1 interest picks an e1 item, popularity the hub
    assert scorer.recommend(np.array([8]), CONTENT_ONLY, 1)[0, 0] in (3, 4, 5)
    assert scorer.recommend(np.array([8]), Blend(mode="popularity"), 1)[0, 0] == 6
    # per-user weight: no history -> 0 (content), long history -> close to 1 (CF)
    w = Blend(k=2.0).cf_weight(np.array([0, 2, 200]))
    assert w[0] == 0.0 and w[1] == pytest.approx(0.5) and w[2] > 0.98


def test_faded_history_hands_the_list_back_to_the_prior() -> None:
    split = _world()
    # user 4 (taste e1) engaged once long ago: weight decayed to 0.001; user 5 the same taste, fresh
    train = split.train.tolil()
    train[4, :] = 0
    train[4, 4] = 0.001
    train[5, :] = 0
    train[5, 4] = 6.0
    split.train = train.tocsr()
    conf = content_confidence(split, 1.0)
    assert conf[4] == pytest.approx(0.001 / 1.001, rel=1e-4) and conf[5] == pytest.approx(6 / 7)
    assert conf[8] == pytest.approx(0.5)  # no history, a search interest: m = 1
    assert (content_confidence(split, 0.0) == 1.0).all()
    with pytest.raises(ValueError):
        content_confidence(split, -1.0)
    blend = Blend(k=1000.0, beta=0.1)  # content (times its confidence) against the prior
    faded, fresh = Scorer(split, content_mass=1.0).recommend(np.array([4, 5]), blend, 1)[:, 0]
    assert faded == 6, "a faded history falls back to the popular hub"
    assert fresh in (3, 5), "a fresh one keeps its taste"
    # without the confidence the faded user is steered by the old engagement as firmly as the fresh
    assert Scorer(split, content_mass=0.0).recommend(np.array([4]), blend, 1)[0, 0] in (3, 5)


def test_choose_blend_prefers_the_blend_that_finds_held_out_items() -> None:
    split = _world()
    # held out: each taste user's remaining in-taste item; the cold user's is an e1 item
    users = np.arange(9)
    truth = [np.array([({0, 1, 2} - set(split.train[u].indices.tolist())).pop()]) for u in range(4)]
    truth += [np.array([3 + (u + 1) % 3]) for u in range(4, 8)]
    truth.append(np.array([4]))
    scorer = Scorer(split, cold_max=1, light_max=10)  # users 4-8 (0-1 places) cold, 0-3 (2 places) light
    blend, grid = choose_blend(scorer, users, truth, k=1, k_grid=(1.0,), beta_grid=(0.0, 10.0))
    # a huge prior weight would recommend the hub (item 6) to everyone and find nothing
    assert blend.by_segment["cold"].beta == 0.0 and blend.by_segment["light"].beta == 0.0
    assert grid[0]["all/ndcg@1"] > grid[1]["all/ndcg@1"]
    assert grid[0]["light/ndcg@1"] == 1.0  # every light user's held-out item first
    # no heavy user in validation: the overall best stands in
    assert blend.by_segment["heavy"] == grid_blend(grid[0])


def grid_blend(row: dict[str, float]) -> Blend:
    return Blend(row["k"], row["beta"])


def test_gate() -> None:
    base = {"popularity": 0.10, "cf": 0.12, "content": 0.08}
    assert gate(0.13, base, None, 0.02).promote
    refused = gate(0.11, base, None, 0.02)
    assert not refused.promote and "cf" in refused.reason
    # within 2 % of the promoted model passes; further below is refused
    assert gate(0.13, base, 0.1320, 0.02).promote
    assert not gate(0.13, base, 0.1400, 0.02).promote
    forced = gate(0.11, base, None, 0.02, force=True)
    assert forced.promote and forced.forced and forced.reason.startswith("forced")
    assert not gate(0.13, base, None, 0.02, force=True).forced


def test_segments() -> None:
    assert segment_of(np.array([0, 2, 3, 10, 11]), 2, 10).tolist() == ["cold", "cold", "light", "light", "heavy"]


# --- the Trainer on real Spark and Iceberg (private unit catalog); content vectors are given
# directly so this tier needs no embeddings endpoint (the integration test embeds for real).

T0 = datetime(1999, 1, 1, tzinfo=timezone.utc)  # earlier than any other test's rows in the catalog


def _at(day: int, hour: int = 12) -> datetime:
    return datetime(1999, 1, day, hour, tzinfo=timezone.utc)


def _trainer_world(spark, monkeypatch):  # type: ignore[no-untyped-def]
    from placerec.catalog import get_catalog
    from placerec.model import train as train_mod
    from placerec.tables import ensure_tables

    ensure_tables(get_catalog())
    clicks = []
    # days 1-5: users a* like places x1..x3, users b* like y1..y3 (before the test cut, day 6)
    for d in range(1, 6):
        for u in range(6):
            clicks.append(("click", _at(d, 8 + u), f"a{u}", f"x{1 + (u + d) % 3}"))
            clicks.append(("click", _at(d, 8 + u), f"b{u}", f"y{1 + (u + d) % 3}"))
    # day 6 (test): a0 discovers x4 (new to everyone), b0 revisits y1 (seen: not a positive),
    # and "late" only appears now (cold at the cut) and saves y2
    clicks += [("save", _at(6), "a0", "x4"), ("click", _at(6), "b0", "y1"), ("save", _at(6, 9), "late", "y2")]
    # an impression of x4 on day 2 puts x4 in the catalogue without making it anyone's history
    clicks.append(("impression", _at(2), "b5", "x4"))
    # day 7 and later must never reach a fit cut at day 6 or 7
    clicks.append(("click", _at(7), "a1", "y3"))
    schema = spark.table("raw.events").schema
    given = ("event_id", "event_type", "event_ts", "user_id", "place_id", "source", "source_file", "source_line")
    rows = [
        tuple(dict(zip(given, (f"e{i}", t, ts, u, p, "test", "f", i), strict=True)).get(f.name) for f in schema.fields)
        for i, (t, ts, u, p) in enumerate(clicks)
    ]
    from pyspark.sql import functions as F

    spark.createDataFrame(rows, schema).writeTo("raw.events").overwrite(
        (F.col("event_ts") < F.lit(_at(20))) & (F.col("source") == "test")
    )
    mark_committed(spark, _at(1), _at(20), "test-world")  # readers see raw.* as of the last ingest commit
    places = sorted({p for *_, p in clicks})

    def vectors(spark_, cut, snaps, settings, stats):  # type: ignore[no-untyped-def]
        return spark.createDataFrame(
            [(p, [p[0]], [1.0, 0.0] if p[0] == "x" else [0.0, 1.0]) for p in places],
            "place_id string, top_keywords array<string>, embedding array<float>",
        )

    def interests(spark_, events, cut, snaps, settings, stats):  # type: ignore[no-untyped-def]
        return spark.createDataFrame([], "user_id string, keywords array<string>, embedding array<float>")

    monkeypatch.setattr(train_mod, "place_vectors", vectors)
    monkeypatch.setattr(train_mod, "interest_vectors", interests)
    return clicks


def test_no_event_at_or_after_the_cut_reaches_training(spark, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from placerec.model.train import Trainer

    clicks = _trainer_world(spark, monkeypatch)
    s = Settings(train_factors=4, train_als_iterations=3, interaction_half_life_days=7.0)
    trainer = Trainer(spark, _at(8, 0), s)
    cut = _at(6, 0)
    split = trainer.split(cut)
    coo = split.train.tocoo()
    got = {(split.users[u], split.items[i]) for u, i in zip(coo.row, coo.col, strict=True)}
    expected = {(u, p) for t, ts, u, p in clicks if ts < cut and t != "impression"}
    assert got == expected
    assert ("a0", "x4") not in got and ("late", "y2") not in got and ("a1", "y3") not in got
    assert split.history[split.user_index["late"]] == 0

    users, truth = trainer.truth(split, _at(7, 0))
    held = {split.users[u]: {split.items[i] for i in t} for u, t in zip(users, truth, strict=True)}
    # b0's y1 was seen in training: not a positive; the day-7 click is outside [cut, day 7)
    assert held == {"a0": {"x4"}, "late": {"y2"}}


@pytest.mark.parametrize("engine", ["implicit", "spark"])
def test_same_seed_same_factors(spark, monkeypatch, engine) -> None:  # type: ignore[no-untyped-def]
    from placerec.model.train import Trainer, fit_cf

    _trainer_world(spark, monkeypatch)
    s = Settings(train_factors=4, train_als_iterations=3, train_cf_engine=engine)
    trainer = Trainer(spark, _at(8, 0), s)
    # a span without positive events is named (train_hybrid then skips instead of failing)
    assert trainer.empty_spans([(_at(6, 0), _at(7, 0))]) == ""
    assert "[1999-01-07T13:00:00+00:00" in trainer.empty_spans([(_at(6, 0), _at(7, 0)), (_at(7, 13), _at(8, 0))])
    split = trainer.split(_at(6, 0))
    assert split.user_factors is None  # the split is factorised on request, with the chosen weight
    trainer.factorise(split, 0.5)
    again = fit_cf(spark, split.train, s, 0.5)
    assert split.user_factors is not None and split.item_factors is not None
    assert np.array_equal(split.user_factors, again[0]) and np.array_equal(split.item_factors, again[1])
    other = fit_cf(spark, split.train, replace(s, train_seed=7), 0.5)
    assert not np.array_equal(split.user_factors, other[0])
    # the weight reaches the engine: a far stronger one shrinks the factors
    strong = fit_cf(spark, split.train, s, 500.0)
    assert np.linalg.norm(strong[1]) < 0.5 * np.linalg.norm(split.item_factors)
    assert len(trainer.stats["cf_fit_seconds"]) == 1


def test_the_als_weights_come_from_the_engine_setting() -> None:
    from placerec.model.train import cf_regs

    assert cf_regs(Settings()) == [16.0, 64.0, 256.0]
    assert cf_regs(Settings(train_als_reg_grid=" 8, 2,8 ,")) == [2.0, 8.0]
    assert cf_regs(Settings(train_cf_engine="spark", train_als_reg_grid="nonsense")) == [0.05]
    for grid in ("", ",", "a", "1,b", "0", "-1", "nan", "inf"):
        with pytest.raises(ValueError, match="train_als_reg_grid"):
            cf_regs(Settings(train_als_reg_grid=grid))
    with pytest.raises(ValueError, match="train_cf_engine must be one of implicit, spark; got 'mllib'"):
        cf_regs(Settings(train_cf_engine="mllib"))


def test_every_method_is_scored_over_the_catalogue_only() -> None:
    from placerec.model.hybrid import SegmentBlend
    from placerec.model.train import evaluate_methods

    split = _world()
    # every user's held-out place is item 7's twin... except that item 7 is outside the catalogue:
    # no list may contain it, and coverage counts the 7 catalogue items only
    users = np.arange(9)
    truth = [np.array([3 if u >= 4 else 2]) for u in range(9)]
    blend = SegmentBlend({seg: Blend(k=1.0, beta=0.5) for seg in ("cold", "light", "heavy")})
    rows = evaluate_methods(split, users, truth, blend, Settings(train_factors=2), methods=METHODS_ALL)
    assert {r["method"] for r in rows} == set(METHODS_ALL)
    for r in rows:
        assert 0.0 <= r["coverage@10"] <= 1.0
        if r["segment"] == "all":
            # 9 users × up to 8 unseen catalogue places: every list holds only catalogue items, and
            # with lists of 10 over a 7-item catalogue every candidate is shown to someone
            assert r["coverage@10"] == pytest.approx(1.0), r["method"]


METHODS_ALL = ("hybrid", "popularity", "cf", "content", "ease", "implicit_als")


def test_a_negative_content_mass_is_refused_before_any_work() -> None:
    with pytest.raises(ValueError, match="PLACEREC_TRAIN_CONTENT_MASS"):
        run_train_hybrid(None, END, END, settings=Settings(train_content_mass=-1.0))  # type: ignore[arg-type]


def test_a_reason_is_praise_that_matches_the_user_never_a_complaint() -> None:
    """Hand-made: items 0..4; user 0 engaged with item 0 (praised for 조용함 and 디저트); user 1 only searched."""
    from types import SimpleNamespace

    import scipy.sparse as sp

    from placerec.model.train import RestsOn, reasons_for

    train = sp.csr_matrix(np.array([[3.0, 0, 0, 0, 0], [0, 0, 0, 0, 0]], dtype=np.float32))
    split = SimpleNamespace(train=train)
    positive = {0: ["조용함", "디저트"], 1: ["디저트", "뷰"], 2: [], 3: ["주차 편함"], 4: ["조용함"]}
    # what the profile calls complaints (e.g. 가격 비쌈, 양 적음) is not in `positive` at all: it cannot match
    interests = {1: ["뷰", "조용함"]}
    rests_on = RestsOn({0: "성수동", 1: "성수동", 2: "강남구", 3: "마포구", 4: "성수동"}, frozenset({2}))

    reasons, matched = reasons_for(0, np.array([1, 2, 3, 4]), split, positive, interests, rests_on)  # type: ignore[arg-type]
    assert reasons == [
        ["디저트"],  # praised, and praised at the place the user chose
        ["popular in 강남구 this week"],  # nothing matches: what it rests on
        ["chosen by users with a history like yours"],  # 주차 편함 is praise the user never showed interest in
        ["조용함"],
    ]
    assert matched == [True, False, False, True]

    reasons, matched = reasons_for(1, np.array([1, 3, 4]), split, positive, interests, rests_on)  # type: ignore[arg-type]
    assert reasons == [["뷰"], ["close to your searches: 뷰, 조용함"], ["조용함"]]
    assert matched == [True, False, True]
    # a user with neither history nor searches: popularity is all the list rests on
    reasons, _ = reasons_for(1, np.array([3]), split, positive, {}, rests_on)  # type: ignore[arg-type]
    assert reasons == [["popular overall"]]


def test_the_oracle_ranks_by_the_worlds_own_utility_and_only_where_its_truth_covers(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from types import SimpleNamespace

    from placerec.demo.generator import expected_engagement, utility
    from placerec.model.oracle import load_truth, oracle_scores

    truth_dir = tmp_path / "_truth"
    truth_dir.mkdir()
    users = [
        {"user_id": "u1", "home_district": "성수동", "category_weights": {"카페": 0.9, "한식": 0.1},
         "aspect_weights": {"맛": 0.2, "분위기": 0.8}},
        {"user_id": "u2", "home_district": "마포구", "category_weights": {"카페": 0.1, "한식": 0.9},
         "aspect_weights": {"맛": 1.0, "분위기": 0.0}},
    ]  # fmt: skip

    def place(pid: str, category: str, district: str, taste: float, mood: float, pop: float) -> dict[str, object]:
        return {
            "place_id": pid,
            "category": category,
            "district": district,
            "quality": {"맛": taste, "분위기": mood},
            "popularity": pop,
        }

    places = [
        place("cafe-home", "카페", "성수동", 0.0, 0.9, 1.0),
        place("cafe-far", "카페", "마포구", 0.0, 0.9, 1.0),
        place("hansik", "한식", "마포구", 0.9, -0.5, 4.0),
    ]  # fmt: skip
    (truth_dir / "users.jsonl").write_text("".join(json.dumps(u, ensure_ascii=False) + "\n" for u in users))
    (truth_dir / "places.jsonl").write_text("".join(json.dumps(p, ensure_ascii=False) + "\n" for p in places))
    world = load_truth(truth_dir)
    assert world is not None and load_truth(tmp_path) is None

    split = SimpleNamespace(
        users=np.array(["u1", "u2"], dtype=object),
        items=np.array(["cafe-home", "cafe-far", "hansik"], dtype=object),
        candidates=np.ones(3, dtype=bool),
    )
    scores = oracle_scores(world, split, np.array([0, 1]))  # type: ignore[arg-type]
    assert scores is not None
    # u1: home 성수동, favourite categories 카페 and 한식 (two of two)
    assert scores[0, 0] == pytest.approx(expected_engagement(utility(0.9, True, 0.8 * 0.9, 1.0), 1.0, True, True))
    assert scores[0, 1] == pytest.approx(expected_engagement(utility(0.9, False, 0.8 * 0.9, 1.0), 1.0, False, True))
    assert scores[1, 2] == pytest.approx(expected_engagement(utility(0.9, True, 0.9, 4.0), 4.0, True, True))
    assert list(np.argsort(-scores[0])) == [0, 1, 2] and int(np.argmax(scores[1])) == 2
    # data the truth does not describe (another world, real data): no oracle
    other = SimpleNamespace(users=np.array(["x1", "x2"], dtype=object), items=split.items, candidates=split.candidates)
    assert oracle_scores(world, other, np.array([0, 1])) is None  # type: ignore[arg-type]


def test_the_gap_a_method_closes_between_popularity_and_the_oracle() -> None:
    from placerec.model.train import GAP_CLOSED, with_gap_closed

    rows = [
        {"method": "popularity", "segment": "all", "ndcg@10": 0.1},
        {"method": "hybrid", "segment": "all", "ndcg@10": 0.25},
        {"method": "oracle", "segment": "all", "ndcg@10": 0.4},
        {"method": "hybrid", "segment": "cold", "ndcg@10": 0.3},  # no oracle row in that segment
    ]
    out = {(r["method"], r["segment"]): r.get(GAP_CLOSED) for r in with_gap_closed(rows)}
    assert out[("hybrid", "all")] == pytest.approx(0.5)
    assert out[("popularity", "all")] == 0 and out[("oracle", "all")] == 1
    assert out[("hybrid", "cold")] is None


def test_rolling_cuts_fit_the_data_they_have() -> None:
    from datetime import timedelta

    from placerec.model.train import eval_cuts

    end, day = _at(11, 0), timedelta(days=1)
    assert eval_cuts(end, day, 3, _at(1, 0)) == [_at(8, 0), _at(9, 0), _at(10, 0)]
    # the validation cut before the first test cut keeps one span of history: only two cuts fit
    assert eval_cuts(end, day, 3, _at(7, 0)) == [_at(9, 0), _at(10, 0)]
    assert eval_cuts(end, day, 3, _at(10, 0)) == [_at(10, 0)] == eval_cuts(end, day, 3, None)
    assert eval_cuts(end, 2 * day, 2, _at(1, 0)) == [_at(7, 0), _at(9, 0)]


def test_pooled_figures_weigh_each_cut_by_its_users_and_group_users_across_cuts() -> None:
    from placerec.model.train import VS_POPULARITY, CutScores, pooled_table

    def cut(users: list[str], hybrid: list[float], popularity: list[float]) -> CutScores:
        rows = [
            {"method": m, "segment": "all", "ndcg@10": float(np.mean(g)), "coverage@10": c, "users": float(len(g))}
            for m, g, c in (("hybrid", hybrid, 0.5), ("popularity", popularity, 0.1))
        ]
        gains = {"hybrid": np.array(hybrid), "popularity": np.array(popularity)}
        return CutScores(rows, gains, {"all": np.ones(len(users), dtype=bool)}, np.array(users, dtype=object))

    one = cut(["a", "b"], [1.0, 0.0], [0.0, 0.0])
    two = cut(["a", "c", "d", "e"], [1.0, 1.0, 0.0, 0.0], [0.5, 0.0, 0.0, 0.0])
    table = {r["method"]: r for r in pooled_table([one, two], seed=1)}
    assert table["hybrid"]["users"] == 6 and table["hybrid"]["ndcg@10"] == pytest.approx(3 / 6)
    assert table["popularity"]["ndcg@10"] == pytest.approx(0.5 / 6)
    assert table["hybrid"]["coverage@10"] == pytest.approx(0.5)  # the users-weighted mean of the cuts'
    assert table["hybrid"][VS_POPULARITY] == pytest.approx(2.5 / 6)
    assert (
        table["hybrid"][f"{VS_POPULARITY} lo"]
        <= table["hybrid"][VS_POPULARITY]
        <= table["hybrid"][f"{VS_POPULARITY} hi"]
    )
    assert VS_POPULARITY not in table["popularity"]
    # one cut: the figures of that cut as they are
    single = {r["method"]: r for r in pooled_table([one], seed=1)}
    assert single["hybrid"]["ndcg@10"] == 0.5 and single["hybrid"]["users"] == 2
