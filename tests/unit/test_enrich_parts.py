"""Pieces of enrichment with hand-computed expectations: prices and budget, intervals of asset-triggered
runs, gold-set scoring and prompt promotion, and the profile/interest transforms on a few rows."""

from __future__ import annotations

import json
import threading
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from placerec.enrich.budget import Budget, BudgetExhausted, PriceTable, parse_prices
from placerec.settings import Settings, get_settings

pytestmark = pytest.mark.unit

UTC = timezone.utc


# prices and budget


def test_parse_prices_and_cost() -> None:
    prices = PriceTable.from_spec("my-model=0.5/2, gpt-4o-mini=1/1")
    assert prices.prices["my-model"] == (0.5, 2.0)
    assert prices.prices["gpt-4o-mini"] == (1.0, 1.0)  # settings override the built-in table
    assert prices.cost("my-model", 1_000_000, 500_000) == pytest.approx(0.5 + 1.0)
    assert prices.cost("unknown", 10**9, 10**9) == 0.0 and not prices.known("unknown")


@pytest.mark.parametrize("spec", ["x=1", "x=a/b", "=1/2", "x=-1/2", "x=1/2/3"])
def test_parse_prices_rejects_bad_specs(spec: str) -> None:
    with pytest.raises(ValueError, match="bad price"):
        parse_prices(spec)


def test_budget_reserves_worst_case_and_settles_to_usage() -> None:
    b = Budget(tokens=1000, prices=PriceTable.from_spec())
    b.reserve(300, 300)
    with pytest.raises(BudgetExhausted):
        b.reserve(300, 300)  # 1200 reserved would pass 1000
    assert b.exhausted
    b2 = Budget(tokens=1000, prices=PriceTable.from_spec())
    b2.reserve(300, 300)
    b2.settle(300, 300, 250, 50)  # really used 300
    b2.reserve(300, 300)  # 300 spent + 600 reserved = 900 <= 1000
    assert (b2.spent_in, b2.spent_out) == (250, 50)


def test_budget_by_cost() -> None:
    prices = PriceTable.from_spec("m=1000000/1000000")  # one dollar per token
    b = Budget(cost=5.0, model="m", prices=prices)
    b.reserve(2, 2)
    with pytest.raises(BudgetExhausted):
        b.reserve(1, 1)  # would be $6


def test_budget_is_never_exceeded_by_concurrent_requests() -> None:
    b = Budget(tokens=10_000, prices=PriceTable.from_spec())
    granted: list[int] = []

    def worker() -> None:
        for _ in range(50):
            try:
                b.reserve(90, 10)
            except BudgetExhausted:
                return
            granted.append(100)
            b.settle(90, 10, 90, 10)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(granted) == 10_000 and b.spent_in + b.spent_out == 10_000


# intervals of asset-triggered runs


def _event(start: datetime | None, end: datetime | None) -> Any:
    return SimpleNamespace(source_dag_run=SimpleNamespace(data_interval_start=start, data_interval_end=end))


def test_interval_from_triggering_events_spans_their_runs() -> None:
    from placerec.orchestration import interval_from_context

    d1, d2, d3 = (datetime(2026, 11, n, tzinfo=UTC) for n in (1, 2, 3))
    events = {"raw.reviews": [_event(d2, d3), _event(d1, d2)], "raw.events": [_event(d1, d2)]}
    assert interval_from_context({}, None, None, events) == {"start": d1.isoformat(), "end": d3.isoformat()}


def _announced(start: datetime, end: datetime, emitted: datetime) -> Any:
    return SimpleNamespace(
        extra={"start": start.isoformat(), "end": end.isoformat()}, source_dag_run=None, timestamp=emitted
    )


def test_events_of_intervals_the_dag_already_completed_since_are_left_out(unit_home) -> None:  # type: ignore[no-untyped-def]
    """After a backfill (or a manual run) the next asset-triggered run covers only what is new, although
    Airflow hands it every event since its previous asset-triggered run."""
    from placerec.catalog import ensure_tables_once
    from placerec.ops import TaskMetrics, record_metrics
    from placerec.orchestration import completed_after, interval_from_context

    ensure_tables_once(get_settings())
    d = [datetime(2032, 6, n, tzinfo=UTC) for n in range(1, 6)]
    emitted = datetime.now(UTC) - timedelta(hours=2)  # the events' wall-clock time, before the backfill
    backlog = [_announced(d[i], d[i + 1], emitted + timedelta(minutes=i)) for i in range(3)]  # days 1..3
    new_day = _announced(d[3], d[4], emitted + timedelta(minutes=30))
    events = {"raw.events": [*backlog, new_day]}
    # nothing done yet: the run spans every announced day
    assert interval_from_context({}, None, None, events, done=completed_after("ui_job_x")) == {
        "start": d[0].isoformat(),
        "end": d[4].isoformat(),
    }
    # a backfill did days 1..3 after their events were emitted (recorded now, after `emitted`)
    for i in range(3):
        record_metrics(TaskMetrics("chain_job_x", d[i], d[i + 1], f"backfill-{i}"))
    done = completed_after("chain_job_x")
    assert interval_from_context({}, None, None, events, done=done) == {
        "start": d[3].isoformat(),
        "end": d[4].isoformat(),
    }
    # an event emitted after the run that covered its day is new again (the day was re-ingested)
    again = _announced(d[1], d[2], datetime.now(UTC) + timedelta(hours=1))
    assert interval_from_context({}, None, None, {"raw.events": [again]}, done=done)["start"] == d[1].isoformat()
    # every event done: the newest one counts
    assert interval_from_context({}, None, None, {"raw.events": backlog}, done=done) == {
        "start": d[2].isoformat(),
        "end": d[3].isoformat(),
    }


def test_interval_announced_in_event_extra_wins_over_the_source_run() -> None:
    from placerec.orchestration import interval_from_context

    d1, d2, d8 = (datetime(2026, 11, n, tzinfo=UTC) for n in (1, 2, 8))
    # an asset-triggered producer (enrich) has no interval of its own; it announces one in extra
    announced = SimpleNamespace(
        source_dag_run=SimpleNamespace(data_interval_start=None, data_interval_end=None),
        extra={"start": d1.isoformat(), "end": d8.isoformat()},
    )
    plain = SimpleNamespace(source_dag_run=SimpleNamespace(data_interval_start=d1, data_interval_end=d2), extra={})
    got = interval_from_context({}, None, None, {"features.place_profiles": [announced], "x": [plain]})
    assert got == {"start": d1.isoformat(), "end": d8.isoformat()}


def test_interval_params_win_and_default_to_one_day() -> None:
    from placerec.orchestration import interval_from_context

    got = interval_from_context({"start": "2026-11-05", "end": ""}, None, None, {})
    assert got == {"start": "2026-11-05T00:00:00+00:00", "end": "2026-11-06T00:00:00+00:00"}


def test_interval_uses_own_data_interval_and_refuses_none() -> None:
    from placerec.orchestration import interval_from_context

    d1, d2 = datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 11, 2, tzinfo=UTC)
    assert interval_from_context({}, d1, d2, None)["start"] == d1.isoformat()
    with pytest.raises(ValueError, match="no data interval"):
        interval_from_context({}, d1, d1, {"raw.reviews": [_event(None, None)]})
    with pytest.raises(ValueError, match="empty data interval"):
        interval_from_context({"start": "2026-11-02", "end": "2026-11-01"}, None, None, None)


# gold-set scoring and promotion


def test_match_uses_head_words_one_to_one() -> None:
    from placerec.enrich.evaluate import match

    predicted = [{"term": "분위기 좋음"}, {"term": "직원분들"}, {"term": "분위기"}, {"term": "주차"}]
    gold = [{"term": "분위기"}, {"term": "친절한 직원"}, {"term": "가격"}]
    assert match(predicted, gold) == [(0, 0), (1, 1)]


def test_score_is_micro_averaged() -> None:
    from placerec.enrich.evaluate import GoldReview, score

    gold = [
        GoldReview("a", "demo", "t", ({"term": "분위기", "aspect": "분위기", "sentiment": "positive"},)),
        GoldReview("b", "nsmc", "t", ({"term": "연기", "aspect": "기타", "sentiment": "negative"}, {"term": "스토리"})),
    ]
    predicted = [
        [{"term": "분위기", "aspect": "분위기", "sentiment": "negative"}, {"term": "커피"}],
        [{"term": "연기", "aspect": "기타", "sentiment": "negative"}],
    ]
    s = score(gold, predicted).summary()
    # 2 matched of 3 predicted and 3 gold
    assert (s["precision"], s["recall"], s["f1"]) == (0.6667, 0.6667, 0.6667)
    assert s["sentiment_accuracy"] == 0.5 and s["aspect_accuracy"] == 1.0
    assert s["by_source"]["nsmc"] == {"precision": 1.0, "recall": 0.5, "f1": 0.6667}


def test_goldset_is_labelled_and_valid() -> None:
    from placerec.enrich.evaluate import load_goldset
    from placerec.enrich.llm import ASPECTS, SENTIMENTS

    gold = load_goldset()
    assert len(gold) >= 60 and len({g.id for g in gold}) == len(gold)
    assert {g.source for g in gold} == {"demo", "nsmc"}
    for g in gold:
        for k in g.keywords:
            assert k["aspect"] in ASPECTS and k["sentiment"] in SENTIMENTS and k["term"].strip()


@pytest.fixture
def prompts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    from placerec.enrich.llm import PROMPTS_DIR

    for name in ("keywords-v1.md", "registry.json"):
        (tmp_path / name).write_text((PROMPTS_DIR / name).read_text(encoding="utf-8"), encoding="utf-8")
    (tmp_path / "keywords-v2.md").write_text("A different prompt.", encoding="utf-8")
    monkeypatch.setenv("PLACEREC_PROMPTS_DIR", str(tmp_path))
    get_settings.cache_clear()
    yield tmp_path
    get_settings.cache_clear()


def test_promotion_refuses_a_worse_prompt_unless_forced(prompts: Path) -> None:
    from placerec.enrich import registry
    from placerec.enrich.evaluate import PromotionRefused, promote

    assert registry.promoted_prompt() == "keywords-v1"
    with pytest.raises(PromotionRefused, match="below the promoted keywords-v1"):
        promote("m", "keywords-v2", 0.40, 0.55, force=False, digest="g")
    assert registry.promoted_prompt() == "keywords-v1"
    promote("m", "keywords-v2", 0.40, 0.55, force=True, digest="g")
    data = registry.load()
    assert data["promoted"] == "keywords-v2" and data["history"][-1]["forced"] is True
    promote("m", "keywords-v1", 0.55, 0.40, force=False, digest="g")
    assert registry.promoted_prompt() == "keywords-v1" and registry.load()["history"][-1]["forced"] is False


# profile and interest transforms


def test_place_profile_rows(spark) -> None:  # type: ignore[no-untyped-def]
    from placerec.enrich.profiles import place_profile_rows

    end = datetime(2026, 11, 3, tzinfo=UTC)
    ts = [end - timedelta(days=1), end - timedelta(days=60)]
    keywords = spark.createDataFrame(
        [
            ("p1", "분위기 좋음", "positive", 1.0, ts[0]),
            ("p1", "분위기 좋음", "positive", 0.5, ts[0]),
            ("p1", "주차 불편", "negative", 1.0, ts[0]),
            ("p1", "오래된 메뉴", "neutral", 1.0, ts[1]),  # two half-lives old: weight 1/4
            ("p9", "유령", "positive", 1.0, ts[0]),  # a place not in the catalogue: no profile
        ],
        "place_id string, keyword string, sentiment string, weight double, review_ts timestamp",
    )
    places = spark.createDataFrame(
        [("p1", "카페 소담", "카페", "성수동"), ("p2", "한우집", "고깃집", "마포구")],
        "place_id string, name string, category string, district string",
    )
    s = replace(get_settings(), profile_half_life_days=30.0, profile_top_keywords=10)
    rows = {r["place_id"]: r.asDict() for r in place_profile_rows(keywords, places, end, s).collect()}
    assert set(rows) == {"p1", "p2"}
    assert rows["p1"]["top_keywords"] == ["분위기 좋음", "주차 불편", "오래된 메뉴"]
    assert rows["p1"]["profile_text"] == (
        "카페 소담 · 카페 · 성수동. 좋은 점: 분위기 좋음. 아쉬운 점: 주차 불편. 특징: 오래된 메뉴"
    )
    assert rows["p2"]["top_keywords"] == [] and rows["p2"]["profile_text"] == "한우집 · 고깃집 · 마포구"
    assert len(rows["p1"]["text_hash"]) == 64
    # a reason may only be praise: the complaint and the neutral keyword are not positive
    assert rows["p1"]["positive_keywords"] == ["분위기 좋음"] and rows["p2"]["positive_keywords"] == []


def test_interest_rows(spark) -> None:  # type: ignore[no-untyped-def]
    from pyspark.sql import functions as F

    from placerec.enrich.keywords import RESULT_SCHEMA
    from placerec.enrich.profiles import interest_rows

    end = datetime(2026, 11, 3, tzinfo=UTC)
    t = end - timedelta(hours=1)
    searches = spark.createDataFrame(
        [("u1", t, "성수 조용한 카페", "q1"), ("u1", t, "성수 디저트", "q2"), ("u2", t, "ㅋㅋ", "q3")],
        "user_id string, event_ts timestamp, query string, query_hash string",
    )
    results = {
        "q1": {"keywords": [{"term": "성수", "weight": 1.0}, {"term": "조용한 카페", "weight": 0.5}]},
        "q2": {"keywords": [{"term": "성수", "weight": 1.0}, {"term": "디저트", "weight": 0.8}]},
        "q3": {"keywords": []},
    }
    qk = spark.createDataFrame([(k, json.dumps(v)) for k, v in results.items()], "query_hash string, result string")
    qk = qk.select("query_hash", F.from_json("result", RESULT_SCHEMA).alias("r"))
    rows = {r["user_id"]: r.asDict() for r in interest_rows(searches, qk, end, get_settings()).collect()}
    assert rows["u1"]["keywords"] == ["성수", "디저트", "조용한 카페"]
    assert rows["u1"]["interest_text"] == "성수, 디저트, 조용한 카페"
    assert rows["u2"]["keywords"] == [] and rows["u2"]["interest_text"] == "ㅋㅋ"


# LLM settings from an Airflow connection


@pytest.mark.parametrize(
    "conn",
    [
        '{"conn_type": "openai", "host": "https://llm.example/v1", "password": "sk-conn", "extra": {"model": "m-1"}}',
        "openai://:sk-conn@llm.example/v1?model=m-1",
        '{"conn_type": "openai", "host": "https://llm.example/v1", "password": "sk-conn",'
        ' "extra": "{\\"model\\": \\"m-1\\", \\"rpm\\": 90, \\"tpm\\": \\"4000\\"}"}',
        "openai://:sk-conn@llm.example/v1?model=m-1&rpm=90&tpm=4000",
    ],
)
def test_llm_settings_from_an_airflow_connection(conn: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_LLM_DEFAULT", conn)
    monkeypatch.delenv("PLACEREC_LLM_BASE_URL", raising=False)
    monkeypatch.delenv("PLACEREC_LLM_API_KEY", raising=False)
    monkeypatch.delenv("PLACEREC_LLM_MODEL", raising=False)
    get_settings.cache_clear()
    try:
        s = get_settings()
        assert (s.llm_base_url, s.llm_api_key, s.llm_model) == ("https://llm.example/v1", "sk-conn", "m-1")
        assert (s.llm_rpm, s.llm_tpm) == ((90, 4000) if "rpm" in conn else (Settings.llm_rpm, Settings.llm_tpm))
        assert "sk-conn" not in repr(s)
        monkeypatch.setenv("PLACEREC_LLM_MODEL", "explicit")
        get_settings.cache_clear()
        assert get_settings().llm_model == "explicit"
    finally:
        get_settings.cache_clear()


def test_a_connection_with_a_bad_rate_limit_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_LLM_DEFAULT", "openai://:sk-conn@llm.example/v1?rpm=fast")
    get_settings.cache_clear()
    try:
        with pytest.raises(ValueError, match="connection llm_default: rpm must be a whole number") as refused:
            get_settings()
        assert "sk-conn" not in str(refused.value)
    finally:
        get_settings.cache_clear()


def test_eval_keywords_refuses_a_worse_prompt_through_the_cli(prompts: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The real openai client against the fault server; the registry says v1 scored F1 0.99."""
    from click.testing import CliRunner

    from placerec.cli import main
    from placerec.enrich import registry
    from placerec.enrich.evaluate import goldset_digest, score_key
    from tests.fault_server import FaultServer

    with FaultServer() as server:
        for name, value in (("BASE_URL", server.base_url), ("MODEL", "fault-eval"), ("TPM", "100000000")):
            monkeypatch.setenv(f"PLACEREC_LLM_{name}", value)
        get_settings.cache_clear()
        data = registry.load()
        data["scores"][score_key("llm", "fault-eval", "keywords-v1", goldset_digest())] = {"f1": 0.99}
        registry.save(data)
        args = ["eval-keywords", "--extractor", "llm", "--prompt-version", "keywords-v2", "--promote"]
        refused = CliRunner().invoke(main, args)
        assert refused.exit_code == 2, refused.output
        assert "REFUSED" in refused.output and "keywords-v2 scores F1" in refused.output
        assert registry.promoted_prompt() == "keywords-v1"
        scores = registry.load()["scores"][score_key("llm", "fault-eval", "keywords-v2", goldset_digest())]
        assert 0 < scores["f1"] < 0.99 and scores["reviews"] >= 60
        forced = CliRunner().invoke(main, [*args, "--force"])
        assert forced.exit_code == 0, forced.output
        assert "promoted keywords-v2 (was keywords-v1) [forced]" in forced.output
        assert registry.promoted_prompt() == "keywords-v2" and registry.load()["history"][-1]["forced"] is True
        assert server.requests >= 2 * 60


def test_a_manual_run_with_an_empty_form_takes_the_latest_complete_interval(unit_home) -> None:  # type: ignore[no-untyped-def]
    """Skipped ingest days, dry runs and unpromoted models are not complete intervals; the newest complete one wins."""
    from placerec.catalog import ensure_tables_once
    from placerec.ops import TaskMetrics, record_metrics
    from placerec.orchestration import interval_from_context, latest_complete_interval
    from placerec.settings import get_settings

    ensure_tables_once(get_settings())
    # the newest days any test records (others use 2030..2034) in this session's shared ops.task_metrics
    day = [datetime(2099, 11, d, tzinfo=timezone.utc) for d in range(1, 8)]
    with pytest.raises(ValueError, match="no_such_job has not completed one yet"):
        latest_complete_interval("no_such_job")
    record_metrics(TaskMetrics("ingest_events", day[1], day[2], "r1"))
    record_metrics(TaskMetrics("ingest_events", day[3], day[4], "r2"))
    record_metrics(TaskMetrics("ingest_events", day[5], day[6], "r3", details={"skipped": "no landing files"}))
    record_metrics(TaskMetrics("train_hybrid", day[0], day[3], "t1", details={"promoted": True}))
    record_metrics(TaskMetrics("train_hybrid", day[1], day[5], "t2", details={"promoted": False}))
    assert latest_complete_interval("ingest_events") == (day[3], day[4])
    assert latest_complete_interval("train_hybrid") == (day[0], day[3])
    got = interval_from_context({"start": None, "end": None}, None, None, {}, latest=lambda: (day[3], day[4]))
    assert got == {"start": day[3].isoformat(), "end": day[4].isoformat()}
    # the form's fields and the triggering events still come first
    got = interval_from_context({"start": "2026-11-02"}, None, None, {}, latest=lambda: (day[3], day[4]))
    assert got["start"] == "2026-11-02T00:00:00+00:00"
