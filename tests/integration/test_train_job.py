"""`placerec train-hybrid` end to end on demo data: real Spark (ALS), Iceberg, the real e5 endpoint.

Four days of demo data in a private state folder are ingested and their reviews' keywords extracted
(offline extractor), then trained as of day 5 (test on day 4, validation on day 3). Checked from the
tables, independently of the job's own figures: training places never come back, lists are ranked
1..n, reasons are keywords of the place's reviews, the run and its report are recorded, and a rerun
on the same inputs writes the same version and rows.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from placerec.catalog import get_catalog
from placerec.settings import Settings

from ..conftest import SERVICE_HOME

pytestmark = pytest.mark.integration

FIRST = date(2026, 9, 1)
END = "2026-09-05"
POSITIVE = {"view", "click", "save", "navigate", "review", "visit"}


def cli(home: Path, *args: str, timeout: int = 1200, **extra: str) -> str:
    env = {**os.environ, "PLACEREC_HOME": str(home), "PLACEREC_TRAIN_TOP_K": "20", **extra}
    done = subprocess.run(
        [sys.executable, "-m", "placerec.cli", *args], env=env, capture_output=True, text=True, timeout=timeout
    )
    assert done.returncode == 0, done.stderr[-4000:]
    return done.stdout


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    home = tmp_path_factory.mktemp("train-home")
    (home / "cache").symlink_to(SERVICE_HOME / "cache", target_is_directory=True)
    landing = home / "landing"
    cli(home, "demo-data", "--days", "4", "--start", FIRST.isoformat(), "--places", "120", "--users", "400",
        "--events", "8000", "--malformed-rate", "0", "--seed", "5", "--out", str(landing))  # fmt: skip
    cli(home, "ingest-events", "--start", FIRST.isoformat(), "--end", END, "--landing", str(landing))
    cli(home, "extract-review-keywords", "--start", FIRST.isoformat(), "--end", END)
    first = json.loads(cli(home, "train-hybrid", "--start", FIRST.isoformat(), "--end", END, "--json"))
    return {"home": home, "first": first, "settings": Settings(home=home)}


def scan(settings: Settings, table: str, row_filter: str = "true") -> list[dict[str, Any]]:
    return get_catalog(settings).load_table(table).scan(row_filter=row_filter).to_arrow().to_pylist()


def test_lists_exclude_training_places_and_are_ranked(trained: dict[str, Any]) -> None:
    s, version = trained["settings"], trained["first"]["model_version"]
    recs = scan(s, "model.recommendations", f"model_version = '{version}'")
    assert recs, "no recommendations written"
    seen: dict[str, set[str]] = {}
    for e in scan(s, "raw.events"):
        if e["event_type"] in POSITIVE and e["user_id"] and e["place_id"]:
            seen.setdefault(e["user_id"], set()).add(e["place_id"])
    by_user: dict[str, list[dict[str, Any]]] = {}
    for r in recs:
        by_user.setdefault(r["user_id"], []).append(r)
    for user, rows in by_user.items():
        rows.sort(key=lambda r: r["rank"])
        assert [r["rank"] for r in rows] == list(range(1, len(rows) + 1))
        assert len(rows) <= 20
        places = [r["place_id"] for r in rows]
        assert len(set(places)) == len(places)
        assert not set(places) & seen.get(user, set()), f"{user} was recommended a place from their history"
        scores = [r["score"] for r in rows]
        assert scores == sorted(scores, reverse=True)
    assert len(by_user) == trained["first"]["users_recommended"]


def test_reasons_are_praise_of_the_place_or_what_the_list_rests_on(trained: dict[str, Any]) -> None:
    """A reason is a keyword the place's reviews praise (mean sentiment over its mentions before the
    cut above 0.2, recomputed here from ``features.review_keywords``), else one sentence of what the
    list rests on; never empty, never a complaint."""
    s, first = trained["settings"], trained["first"]
    recs = scan(s, "model.recommendations", f"model_version = '{first['model_version']}'")
    assert recs and all(r["reason"] for r in recs), "a recommendation without a reason"
    mentions: dict[tuple[str, str], list[float]] = {}
    value = {"positive": 1.0, "negative": -1.0}
    for k in scan(s, "features.review_keywords", f"review_ts < '{END}T00:00:00+00:00'"):
        mentions.setdefault((k["place_id"], k["keyword"].strip()), []).append(value.get(k["sentiment"], 0.0))
    fallbacks = (
        "popular in ",
        "chosen by users with a history like yours",
        "close to your searches: ",
        "popular overall",
    )
    matched = 0
    for r in recs:
        if r["reason"][0].startswith(fallbacks):
            assert len(r["reason"]) == 1, r
            continue
        matched += 1
        assert len(r["reason"]) <= 3, r
        for word in r["reason"]:
            said = mentions.get((r["place_id"], word))
            assert said and sum(said) / len(said) > 0.2, (r, word, said)
    assert matched, "no recommendation has a matched keyword"
    figures = first["reasons"]
    assert figures["recommendations resting on a fallback reason"] == round((len(recs) - matched) / len(recs), 4)
    assert 0 < figures["warm top-10 with a matched keyword"] <= 1


def test_run_is_recorded_with_inputs_metrics_and_report(trained: dict[str, Any]) -> None:
    s, first = trained["settings"], trained["first"]
    runs = scan(s, "model.runs", f"model_version = '{first['model_version']}'")
    assert len(runs) == 1
    run = runs[0]
    assert run["promoted"] == first["promoted"]
    snapshots = dict(run["input_snapshots"])
    assert snapshots["raw.events"] == first["source_snapshots"]["raw.events"] != ""
    metrics = dict(run["metrics"])
    for method in ("hybrid", "popularity", "cf", "content", "ease", "implicit_als"):
        assert 0.0 <= float(metrics[f"{method}/all/ndcg@10"]) <= 1.0
    # every method's paired difference to popularity, with its interval around it
    for segment in ("all", "cold", "light", "heavy"):
        if f"hybrid/{segment}/ndcg@10" not in metrics:
            continue
        diff = float(metrics[f"hybrid/{segment}/ndcg@10 vs popularity"])
        gap = float(metrics[f"hybrid/{segment}/ndcg@10"]) - float(metrics[f"popularity/{segment}/ndcg@10"])
        assert diff == pytest.approx(gap, abs=2e-6)
        assert float(metrics[f"hybrid/{segment}/ndcg@10 vs popularity lo"]) <= diff
        assert diff <= float(metrics[f"hybrid/{segment}/ndcg@10 vs popularity hi"])
    assert "popularity/all/ndcg@10 vs popularity" not in metrics
    # the ALS weight is the validation grid's best, recorded with every weight's score
    cf = first["cf"]
    tried = cf["validation cf ndcg@10 by reg"]
    assert cf["engine"] == "implicit" and set(tried) == {"16", "64", "256"}
    assert tried[f"{cf['reg']:g}"] == max(tried.values())
    assert dict(run["params"])["cf_reg"] == f"{cf['reg']:g}"
    assert len(first["cf_fit_seconds"]) == 3 + 2  # the grid on validation, then the test and full fits
    report = Path(first["report"])
    text = report.read_text()
    assert report.is_file() and "ndcg@10" in text and "Differences to popularity" in text
    assert (report.parent / "ndcg_by_segment.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    factors = scan(s, "model.factors", f"model_version = '{first['model_version']}'")
    assert {f["kind"] for f in factors} == {"user", "place"}


def test_rerun_writes_the_same_version_and_rows(trained: dict[str, Any]) -> None:
    home, s, first = trained["home"], trained["settings"], trained["first"]
    before = scan(s, "model.recommendations", f"model_version = '{first['model_version']}'")
    # the rerun also scores the data README's protocol (not a model parameter: the same version)
    args = ("train-hybrid", "--start", FIRST.isoformat(), "--end", END, "--methods", "hybrid,cf", "--json")
    again = json.loads(cli(home, *args, PLACEREC_TRAIN_PROTOCOL="nsmc"))
    assert again["model_version"] == first["model_version"]
    protocol = again["protocol"]
    rows = {r["method"]: r for r in protocol["table"]}
    assert {"hybrid", "popularity", "cf", "popularity_30d", "time_aware_popularity"} <= set(rows)
    assert protocol["sizes"]["evaluation users"] == rows["hybrid"]["users"] > 0
    # the protocol's users are training users: at most the test users that have a history
    assert protocol["sizes"]["evaluation users"] <= again["evaluation_users"]
    assert 0.0 <= rows["hybrid"]["ndcg@10"] <= 1.0 and "ndcg@10 vs popularity_30d" in rows["hybrid"]
    run = scan(s, "model.runs", f"model_version = '{first['model_version']}'")[0]
    assert dict(run["metrics"])["hybrid/protocol/ndcg@10"] == f"{rows['hybrid']['ndcg@10']:.6f}"
    after = scan(s, "model.recommendations", f"model_version = '{first['model_version']}'")

    def key(rows: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
        return sorted((r["user_id"], r["rank"], r["place_id"], round(r["score"], 5)) for r in rows)

    assert key(after) == key(before)
    hybrid = {r["segment"]: r["ndcg@10"] for r in first["table"] if r["method"] == "hybrid"}
    assert {r["segment"]: r["ndcg@10"] for r in again["table"] if r["method"] == "hybrid"} == hybrid


def test_the_generated_worlds_truth_gives_an_oracle_row_with_the_gap_each_method_closes(
    trained: dict[str, Any],
) -> None:
    from placerec.model.oracle import ORACLE_LABEL
    from placerec.model.train import GAP_CLOSED

    first = trained["first"]
    assert first["oracle"] == ORACLE_LABEL
    overall = {r["method"]: r for r in first["table"] if r["segment"] == "all"}
    assert "oracle" in overall and overall["oracle"][GAP_CLOSED] == 1
    # a ceiling: the hidden truth ranks better than popularity, and every method's gap share follows
    assert overall["oracle"]["ndcg@10"] > overall["popularity"]["ndcg@10"]
    for method, row in overall.items():
        expected = (row["ndcg@10"] - overall["popularity"]["ndcg@10"]) / (
            overall["oracle"]["ndcg@10"] - overall["popularity"]["ndcg@10"]
        )
        assert row[GAP_CLOSED] == pytest.approx(expected), method
    # the gate never compares with it
    assert "oracle" not in first["gate"]


def test_cold_users_with_searches_are_reported_on_their_own(trained: dict[str, Any]) -> None:
    """The subset the cold-start path serves from searches: a reported segment inside cold."""
    from placerec.model.train import COLD_SEARCHED

    rows = {(r["method"], r["segment"]): r for r in trained["first"]["table"]}
    cold, searched = rows[("hybrid", "cold")]["users"], rows[("hybrid", COLD_SEARCHED)]["users"]
    assert 0 < searched <= cold
    assert {m for m, seg in rows if seg == COLD_SEARCHED} == {m for m, seg in rows if seg == "cold"}
