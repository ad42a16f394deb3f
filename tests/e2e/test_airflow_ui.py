"""A user in the Airflow UI, in a real browser (Playwright driving Debian's Chromium, headless):
trigger ingest_events from its form with a changed Param, wait for the run to succeed, then read
the day on the placerec page (the plugin, through the Airflow API server) and check its figures
against the tables. Screenshots of each step are kept in ``$PLACEREC_HOME/test-artifacts/browser``.
"""

from __future__ import annotations

import dataclasses
import shutil
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from placerec.airflow_api import AirflowApi
from placerec.catalog import get_catalog
from placerec.demo import generate
from placerec.settings import Settings, get_settings

from ..conftest import SERVICE_HOME

pytestmark = [pytest.mark.integration, pytest.mark.e2e]

ARTIFACTS = SERVICE_HOME / "test-artifacts" / "browser"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]


@pytest.fixture(scope="module")
def settings() -> Settings:
    return dataclasses.replace(get_settings(), home=SERVICE_HOME)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium")
    assert chromium, "Debian's chromium is not installed: `make browser`"
    with sync_playwright() as p:
        launched = p.chromium.launch(executable_path=chromium, headless=True, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


def _shot(page: Any, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def _count(settings: Settings, table: str, row_filter: str) -> int:
    return (
        get_catalog(settings).load_table(table).scan(row_filter=row_filter, selected_fields=("*",)).to_arrow().num_rows
    )


def test_trigger_from_the_form_then_read_the_day_on_the_placerec_page(browser: Any, settings: Settings) -> None:
    api = AirflowApi(settings)
    api.wait_for_dag("ingest_events")
    api.set_paused("enrich_reviews", True)  # only the ingest run is under test
    api.set_paused("ingest_events", False)
    # a manual ingest run covers the last whole day before its logical date (now): that day's files
    day = (datetime.now(timezone.utc) - timedelta(days=1)).date()
    root = SERVICE_HOME / "test-landing" / "browser"
    shutil.rmtree(root, ignore_errors=True)
    manifest = generate(root, day, 1, seed=5, places=60, users=150, events=1500, malformed_rate=0.05)
    since = datetime.now(timezone.utc)

    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(f"{settings.airflow_url}/dags/ingest_events", wait_until="networkidle")
    page.get_by_role("button", name="Trigger Dag").click()
    form = page.get_by_role("dialog")
    form.get_by_role("button", name="Input").click()
    form.locator("#element_landing").fill(str(root))  # the changed Param: this test's landing root
    _shot(page, "1-trigger-form")
    form.get_by_role("button", name="Trigger", exact=True).click()

    deadline = time.monotonic() + 60
    while not (runs := [r for r in api.dag_runs("ingest_events", since=since) if r["run_type"] == "manual"]):
        assert time.monotonic() < deadline, "the form's Trigger made no run"
        time.sleep(0.5)
    run = runs[-1]
    assert run["conf"]["landing"] == str(root), run["conf"]
    assert run["data_interval_start"][:10] == day.isoformat(), run
    state = api.wait_run("ingest_events", run["dag_run_id"], timeout=900)
    page.goto(f"{settings.airflow_url}/dags/ingest_events/runs/{run['dag_run_id']}", wait_until="networkidle")
    _shot(page, "2-run")
    assert state == "success"

    # the placerec page, from the Airflow navigation (an external view: the page in an iframe)
    page.goto(f"{settings.airflow_url}/plugin/placerec", wait_until="networkidle")
    frame = page.frame_locator("iframe")
    frame.locator("section#ingest table.ingest").wait_for(timeout=60_000)
    _shot(page, "3-placerec-page-in-airflow")
    cells = frame.locator("table.ingest tr", has_text=day.isoformat()).locator("td").all_inner_texts()
    _, lines_read, rows_written, quarantined, rate, run_id = cells

    ts = f"'{day.isoformat()}T00:00:00+00:00'"
    lines = sum(manifest["counts"][feed][day.isoformat()]["lines"] for feed in ("events", "reviews", "places"))
    in_quarantine = _count(settings, "raw.quarantine", f"job = 'ingest_events' and interval_start = {ts}")
    metrics = (
        get_catalog(settings)
        .load_table("ops.task_metrics")
        .scan(row_filter=f"job = 'ingest_events' and interval_start = {ts}")
        .to_arrow()
        .to_pylist()
    )
    assert run_id == run["dag_run_id"]
    assert int(lines_read) == lines  # what the generator wrote
    assert int(quarantined) == in_quarantine > 0  # what raw.quarantine holds for the day
    assert int(rows_written) == metrics[0]["rows_written"] == lines - in_quarantine
    assert rate == f"{in_quarantine / lines:.2%}"
    # the chart shows the same figures as the table
    bar = frame.locator(f'#ingest rect[data-label="{day.isoformat()}"][data-series="quarantined"]')
    assert float(bar.get_attribute("data-value") or "nan") == in_quarantine
    # freshness: the page's row count of raw.events is the table's
    events_row = frame.locator("table.freshness tr", has_text="raw.events").locator("td").all_inner_texts()
    assert int(events_row[1]) == _count(settings, "raw.events", "true")
    assert frame.locator("svg.chart").count() >= 5

    # the run's own report, from its "placerec report" tab
    page.goto(
        f"{settings.airflow_url}/dags/ingest_events/runs/{run['dag_run_id']}/plugin/placerec-run",
        wait_until="networkidle",
    )
    report = page.frame_locator("iframe").locator("pre.report")
    report.first.wait_for(timeout=60_000)
    _shot(page, "4-run-report")
    assert f'"rows_quarantined": {in_quarantine}' in report.first.inner_text()
