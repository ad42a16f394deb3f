"""The demo as a library function: seeded data for N days, run through the real DAGs.

``run_demo`` writes the landing files, backfills ``ingest_events`` through Airflow's backfill API,
runs ``enrich_reviews`` once over the whole span, waits for the asset-triggered ``train_hybrid``
and (when the gate promotes the model) ``publish_index``, and returns what each step recorded as
a :class:`DemoResult`. ``placerec demo`` only calls it and prints the result.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from placerec.report import DayCounts, EnrichSummary
from placerec.settings import Settings, get_settings

DAGS = ("ingest_events", "enrich_reviews", "train_hybrid", "publish_index")


class DemoError(RuntimeError):
    """A step of the demo did not succeed; the message names the run to look at."""


@dataclass
class DemoResult:
    """What the demo did, step by step, as the tables recorded it."""

    first: date
    last: date
    seed: int
    landing: Path
    backfill_id: int
    ingestion: list[DayCounts]
    enrich_run_id: str
    enrichment: EnrichSummary
    training: dict[str, Any]
    publish: dict[str, Any] | None
    sample_user: str
    sample_answer: Any | None
    """``placerec.serve.query.Answer`` for ``sample_user`` from the live indices (None: not published)."""
    seconds: float
    airflow_url: str
    page_url: str


def _quiet(_: str) -> None:
    pass


DEMO_START, DEMO_DAYS = date(2026, 11, 1), 7
"""The demo's week (``placerec demo`` without options); its model is trained as of the day after."""


def run_demo(
    days: int = DEMO_DAYS,
    seed: int = 42,
    start: date = DEMO_START,
    *,
    timeout: float = 3600,
    settings: Settings | None = None,
    progress: Callable[[str], None] = _quiet,
) -> DemoResult:
    """Run the demo through the Airflow API server of ``settings``; ``progress`` gets a line per step."""
    from placerec.airflow_api import AirflowApi
    from placerec.catalog import ensure_tables_once, get_catalog
    from placerec.demo.generator import generate
    from placerec.report import enrichment_summary, ingestion_by_day, job_run
    from placerec.ui.app import URL_PREFIX
    from placerec.ui.figures import user_with_reasons

    settings = settings or get_settings()
    first, last = start, start + timedelta(days=days - 1)
    end = last + timedelta(days=1)
    began = datetime.now(timezone.utc)
    generate(settings.landing_path, first, days, seed)
    progress(f"demo data: {days} days from {first} (seed {seed}) in {settings.landing_path}")
    ensure_tables_once(settings)
    api = AirflowApi(settings)
    for dag in DAGS:
        api.wait_for_dag(dag)

    def wait_run(dag: str, run_id: str) -> None:
        state = api.wait_run(dag, run_id, timeout=timeout, progress=lambda s: progress(f"  {s}"))
        if state != "success":
            raise DemoError(f"{dag} run {run_id} ended {state}: see its task logs in the UI")

    # One enrich run over the whole backfill instead of one per day (each would rebuild every
    # profile): paused, the DAG ignores the ingest runs' Asset events; it is unpaused afterwards.
    api.set_paused("enrich_reviews", True)
    api.set_paused("ingest_events", False)
    for stale in api.active_backfills("ingest_events"):
        progress(f"waiting for backfill {stale['id']} started earlier")
        api.wait_backfill(stale["id"], "ingest_events", first, last, timeout=timeout)
    backfill_id = api.create_backfill("ingest_events", first, last, reprocess="completed")
    progress(f"backfill {backfill_id}: ingest_events {first} .. {last}, run by the scheduler")
    api.wait_backfill(backfill_id, "ingest_events", first, last, timeout=timeout, progress=lambda s: progress(f"  {s}"))
    ingestion = ingestion_by_day(first, last)
    for dag in DAGS[1:]:
        api.set_paused(dag, False)
    enriched_at = datetime.now(timezone.utc)
    enrich_run_id = api.trigger("enrich_reviews", {"start": first.isoformat(), "end": end.isoformat()})
    progress(f"enrich_reviews {enrich_run_id}: {first} .. {last}; from now on each ingest run triggers it (Assets)")
    wait_run("enrich_reviews", enrich_run_id)
    enrichment = enrichment_summary(first, last)
    progress("train_hybrid: triggered by the enrich run's features Assets")
    api.wait_asset_triggered(
        "train_hybrid",
        enriched_at,
        lambda: any(r["state"] in ("success", "failed") for r in api.dag_runs("train_hybrid", since=enriched_at)),
        timeout=timeout,
        progress=lambda s: progress(f"  {s}"),
    )
    trained = job_run("train_hybrid", first, settings, since=enriched_at)
    if trained is None:
        # Airflow hands an asset-triggered run every event since the DAG's previous run, so features
        # events left by earlier runs (other days) widen its interval; train the demo's week explicitly.
        progress(f"train_hybrid: the asset-triggered run covered other days too; training {first} .. {last}")
        wait_run("train_hybrid", api.trigger("train_hybrid", {"start": first.isoformat(), "end": end.isoformat()}))
        trained = job_run("train_hybrid", first, settings, since=enriched_at)
    if trained is None:
        raise DemoError(f"train_hybrid recorded no run for {first} .. {last}: see its task logs in the UI")
    published, user, answer = None, "", None
    if trained.get("promoted"):
        progress("publish_index: triggered by the promoted model.recommendations Asset")
        api.wait_asset_triggered(
            "publish_index",
            enriched_at,
            lambda: job_run("publish_index", first, settings, since=enriched_at) is not None,
            timeout=timeout,
            progress=lambda s: progress(f"  {s}"),
        )
        published = job_run("publish_index", first, settings, since=enriched_at)
        user = user_with_reasons(get_catalog(settings))
        if user:
            from placerec.serve.client import opensearch_client
            from placerec.serve.query import recommend

            answer = recommend(opensearch_client(settings), settings, user, k=5)
    return DemoResult(
        first=first,
        last=last,
        seed=seed,
        landing=settings.landing_path,
        backfill_id=backfill_id,
        ingestion=ingestion,
        enrich_run_id=enrich_run_id,
        enrichment=enrichment,
        training=trained,
        publish=published,
        sample_user=user,
        sample_answer=answer,
        seconds=(datetime.now(timezone.utc) - began).total_seconds(),
        airflow_url=settings.airflow_url,
        page_url=f"{settings.airflow_url}{URL_PREFIX}/",
    )


def format_demo(result: DemoResult) -> str:
    """The result as ``placerec demo`` prints it: each step's table, then where to look next."""
    from placerec.report import format_answer, format_enrichment, format_ingestion, format_publish, format_training

    parts = [
        format_ingestion(result.ingestion),
        format_enrichment(result.enrichment),
        format_training(result.training),
    ]
    if result.publish is not None:
        parts.append(format_publish(result.publish))
    else:
        parts.append("publish_index: not triggered, the gate did not promote this model (serving keeps the last one)")
    if result.sample_answer is not None:
        who = result.sample_user
        parts.append(f"$ placerec recommend --user {who} -k 5\n" + format_answer(result.sample_answer, f"user {who}"))
    parts.append(
        f"done in {result.seconds:.0f}s; Airflow UI: {result.airflow_url}/dags/publish_index\n"
        f"placerec page (charts of these runs): {result.page_url}"
    )
    return "\n\n".join(parts)
