"""The placerec page (``placerec.ui``): its figures against the tables they read, its charts, and the
app through HTTP (FastAPI's test client, no Airflow; the Airflow-mounted app and its auth are tested
in ``tests/integration/test_airflow_login.py``, the page in a browser in ``tests/e2e``)."""

from __future__ import annotations

import re
import socket
from collections.abc import Iterator
from datetime import date, datetime, timedelta, timezone
from typing import Any
from urllib.parse import quote

import pytest

# days no other test of the session uses: before 2031-11, the newest ingest days of
# test_enrich_parts' latest_complete_interval test, which must stay the newest
DAY = [datetime(2030, 3, d, tzinfo=timezone.utc) for d in range(1, 9)]
MODEL = "hybrid-ui-test-20300304"


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def recorded(unit_home) -> Iterator[Any]:  # type: ignore[no-untyped-def]
    """Task metrics for two ingest days (one skipped), one extraction run with a budget, one model run;
    OpenSearch pointed at a port nothing listens on."""
    import pyarrow as pa

    from placerec.catalog import ensure_tables_once, get_catalog
    from placerec.ops import TaskMetrics, record_metrics
    from placerec.settings import get_settings
    from placerec.tables import load_table

    monkeypatch = pytest.MonkeyPatch()
    monkeypatch.setenv("PLACEREC_OPENSEARCH_URL", f"http://127.0.0.1:{_closed_port()}")
    get_settings.cache_clear()
    ensure_tables_once(get_settings())
    quarantined = {"events": {"bad_json": 3, "unknown_user": 1}, "reviews": {"bad_json": 2}}
    record_metrics(
        TaskMetrics(
            "ingest_events",
            DAY[0],
            DAY[1],
            "ui-ingest-1",
            rows_read=100,
            rows_written=94,
            rows_quarantined=6,
            details={"quarantined": quarantined},
        )
    )
    record_metrics(TaskMetrics("ingest_events", DAY[1], DAY[2], "ui-ingest-2", details={"skipped": "no landing files"}))
    record_metrics(
        TaskMetrics(
            "extract_review_keywords",
            DAY[0],
            DAY[3],
            "ui-enrich-1",
            calls=40,
            cache_hits=10,
            tokens=12345,
            cost=0.0123,
            details={
                "budget": {"tokens": 20000, "cost": None},
                "extractor": {"extractor": "llm", "model": "gpt-x", "prompt_version": "keywords-v1"},
            },
        )
    )
    runs = load_table(get_catalog(), "model.runs")
    metrics = [
        ("hybrid/all/ndcg@10", "0.21"),
        ("popularity/all/ndcg@10", "0.18"),
        ("hybrid/all/ndcg@10 vs popularity", "0.03"),
        ("hybrid/all/ndcg@10 vs popularity lo", "0.01"),
        ("hybrid/all/ndcg@10 vs popularity hi", "0.05"),
        ("hybrid/heavy/ndcg@10", "not a number"),
        ("n_test_users", "577"),
    ]
    row = {
        "model_version": MODEL,
        "trained_for": date(2030, 3, 4),
        "params": [],
        "input_snapshots": [],
        "metrics": metrics,
        "promoted": True,
        "forced": False,
        "created_at": datetime(2030, 3, 4, 12, tzinfo=timezone.utc),
    }
    runs.append(pa.Table.from_pylist([row], schema=runs.schema().as_arrow()))
    yield get_catalog()
    monkeypatch.undo()
    get_settings.cache_clear()


def test_ingest_panel_figures_are_the_recorded_metrics(recorded) -> None:  # type: ignore[no-untyped-def]
    from placerec.ui import figures

    days = {d.day: d for d in figures.ingest_days(recorded)}
    got = days["2030-03-01"]
    assert (got.rows_read, got.rows_written, got.rows_quarantined) == (100, 94, 6)
    assert got.quarantine_rate == 0.06
    assert got.by_reason == {"bad_json": 5, "unknown_user": 1}  # summed over the feeds
    assert "2030-03-02" not in days  # a skipped day is not a day of volume


def test_llm_panel_carries_the_runs_budget(recorded) -> None:  # type: ignore[no-untyped-def]
    from placerec.ui import figures

    run = next(r for r in figures.llm_runs(recorded) if r.run_id == "ui-enrich-1")
    assert run.interval == "2030-03-01 +3d"
    assert (run.calls, run.cache_hits, run.tokens, run.cost) == (40, 10, 12345, 0.0123)
    assert (run.budget_tokens, run.budget_cost, run.extractor) == (20000, None, "llm (gpt-x, keywords-v1)")


def test_model_runs_read_ndcg_by_segment_and_the_paired_interval(recorded) -> None:  # type: ignore[no-untyped-def]
    from placerec.ui import figures

    run = next(r for r in figures.model_runs(recorded) if r.model_version == MODEL)
    assert run.ndcg == {"hybrid": {"all": 0.21}, "popularity": {"all": 0.18}}  # the unparseable figure is left out
    assert run.versus_popularity == {"all": {"diff": 0.03, "lo": 0.01, "hi": 0.05}}
    assert run.promoted and run.trained_for == "2030-03-04"


def test_run_report_matches_the_run_id_exactly_whatever_it_holds(recorded) -> None:  # type: ignore[no-untyped-def]
    from placerec.ui import figures

    assert [r["job"] for r in figures.run_report(recorded, "ui-enrich-1")] == ["extract_review_keywords"]
    for hostile in ("x' or '1'='1", "ui-enrich-%", "", "\u0000", "ui-enrich-1 "):
        assert figures.run_report(recorded, hostile) == []


def test_freshness_counts_what_the_current_snapshot_holds(recorded) -> None:  # type: ignore[no-untyped-def]
    from placerec.tables import load_table
    from placerec.ui import figures

    now = datetime.now(timezone.utc) + timedelta(hours=2)
    fresh = {f.table: f for f in figures.freshness(recorded, now)}
    metrics = load_table(recorded, "ops.task_metrics")
    assert fresh["ops.task_metrics"].rows == len(metrics.scan().to_arrow())
    assert fresh["ops.task_metrics"].snapshot_id == str(metrics.current_snapshot().snapshot_id)  # type: ignore[union-attr]
    assert fresh["ops.task_metrics"].age_hours is not None and 1.9 < fresh["ops.task_metrics"].age_hours < 2.5


def test_the_page_answers_with_charts_and_degrades_a_panel_at_a_time(recorded) -> None:  # type: ignore[no-untyped-def]
    from fastapi.testclient import TestClient

    from placerec.ui.app import create_app

    client = TestClient(create_app())
    page = client.get("/")
    assert page.status_code == 200
    html = page.text
    for section in ("freshness", "ingest", "llm", "models", "indices", "online", "preview"):
        assert f'<section id="{section}">' in html
    # the online panel: a table when something served today was ingested here (the serving loop test), else what to run
    assert '<table class="online">' in html or "No served impressions ingested" in html
    # the ingest chart's bars are the recorded figures
    assert re.search(r'data-label="2030-03-01" data-series="written" data-value="94"', html)
    assert re.search(r'data-label="2030-03-01" data-series="quarantined" data-value="6"', html)
    # the token budget is drawn across the tokens chart
    assert 'class="limit"' in html and 'data-value="20000"' in html
    # OpenSearch is down: its panel says so, the rest of the page still answers
    assert 'id="err-indices"' in html and "unavailable" in html
    figures_json = client.get("/api/figures").json()
    assert figures_json["aliases"] == {"error": "OpenSearch unavailable"}
    assert any(d["day"] == "2030-03-01" for d in figures_json["ingest"])


def test_the_page_escapes_what_it_is_given(recorded) -> None:  # type: ignore[no-untyped-def]
    from fastapi.testclient import TestClient

    from placerec.ui.app import MAX_USER_ID, create_app

    client = TestClient(create_app())
    hostile = '"><script>alert(1)</script>'
    page = client.get("/", params={"user": hostile})
    assert page.status_code == 200 and "<script>" not in page.text
    assert client.get("/", params={"user": "u" * (MAX_USER_ID + 1)}).status_code == 422
    tag = '"><img src=x onerror=alert(1)>'  # a path segment cannot hold a slash
    report = client.get(f"/runs/{quote(tag, safe='')}/{quote(chr(39) + ' or 1=1', safe='')}")
    assert report.status_code == 200 and "<img" not in report.text and "&lt;img" in report.text
    assert "no job recorded figures for this run" in report.text
    ingest = client.get("/runs/ingest_events/ui-ingest-1").text
    assert ingest.count('class="report"') == 1 and "&quot;rows_quarantined&quot;: 6," in ingest
    assert client.get("/api/recommend", params={"user": ""}).status_code == 422


def test_charts_draw_odd_figures_without_breaking() -> None:
    from placerec.ui import svg

    chart = svg.stacked_bars(
        "<b>rows</b>",
        ["<day>", "d2", "d3"],
        {"a": [1.0, float("nan"), -5.0], "b": [float("inf"), 2.0, 0.0]},
        "rows",
        limit=float("nan"),
    )
    assert "<b>" not in chart and "&lt;day&gt;" in chart
    coords = re.findall(r' (?:x|y|width|height|y1|y2)="([^"]+)"', chart)
    assert coords and all(re.fullmatch(r"-?\d+(\.\d+)?", c) for c in coords), coords
    assert re.findall(r'data-value="([^"]+)"', chart)[:3] == ["1", "inf", "nan"]
    assert svg.stacked_bars("nothing", [], {}) == svg.empty("nothing")
    points = [{"group": "g", "series": "s", "value": 0.2, "lo": -0.1, "hi": 0.4}]
    drawn = svg.intervals("ndcg", points)
    ys = [float(v) for v in re.findall(r' (?:y1|y2|cy)="([^"]+)"', drawn)]
    assert ys and all(svg.PAD_T <= y <= svg.HEIGHT - svg.PAD_B for y in ys)  # an interval below 0 is clipped
