"""The ``placerec`` command: every job and every operation a person runs by hand."""

from __future__ import annotations

import json
import logging
import sys
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import click


@click.group()
@click.option("-v", "--verbose", is_flag=True, help="Log debug output.")
def main(verbose: bool) -> None:
    """placerec: batch data engineering for a hybrid place recommender."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


@main.group()
def dev() -> None:
    """Local platform: OpenSearch, embeddings endpoint and Airflow on 127.0.0.1."""


@dev.command("up")
@click.option("--only", multiple=True, help="Start only these services (opensearch, embeddings, postgres, airflow).")
def dev_up(only: tuple[str, ...]) -> None:
    """Install (once) and start the local services; idempotent, waits until healthy."""
    from placerec.dev import services

    services.up(list(only) or None)
    _print_status(services.status())


@dev.command("down")
@click.option("--only", multiple=True, help="Stop only these services.")
def dev_down(only: tuple[str, ...]) -> None:
    """Stop the services that ``dev up`` started (and nothing else)."""
    from placerec.dev import services

    services.down(list(only) or None)
    _print_status(services.status())


@dev.command("status")
def dev_status() -> None:
    """Print each service, its URL and its health; exit 1 if any is unhealthy."""
    from placerec.dev import services

    rows = services.status()
    _print_status(rows)
    if not all(r.healthy for r in rows):
        sys.exit(1)


@main.command(
    "airflow", context_settings={"ignore_unknown_options": True, "allow_extra_args": True, "help_option_names": []}
)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def airflow_command(args: tuple[str, ...]) -> None:
    """Run the `airflow` CLI against the local instance (same AIRFLOW_HOME, database and connections).

    Example: placerec airflow backfill create --dag-id ingest_events --from-date 2026-11-01 --to-date 2026-11-07
    """
    from placerec.dev.airflow import airflow_cli

    done = airflow_cli(list(args), check=False, capture_output=False)
    sys.exit(done.returncode)


def _print_status(rows: list) -> None:  # type: ignore[type-arg]
    for r in rows:
        state = "healthy" if r.healthy else "DOWN"
        click.echo(f"{r.name:<11} {state:<8} {r.url:<32} {r.detail}")


def _utc(value: str) -> datetime:
    """A date or an ISO timestamp; naive values are taken as UTC."""
    parsed = datetime.fromisoformat(value)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


@main.command("ingest-events")
@click.option("--start", "start", required=True, help="Interval start (date or ISO timestamp; UTC if naive).")
@click.option("--end", "end", default=None, help="Interval end, exclusive (default: start + 1 day).")
@click.option("--landing", default="", help="Landing root (empty: PLACEREC_LANDING_DIR or the state folder's).")
@click.option("--run-id", default="manual", help="Recorded in ops.task_metrics (the Airflow run id in DAGs).")
def ingest_events(start: str, end: str | None, landing: str, run_id: str) -> None:
    """Ingest one data interval of landing files into raw.* (idempotent for the interval)."""
    from placerec.ingest.job import JOB, run_ingest
    from placerec.settings import get_settings
    from placerec.spark import get_spark

    settings = get_settings()
    begin = _utc(start)
    finish = _utc(end) if end else begin + timedelta(days=1)
    spark = get_spark(JOB, settings)
    try:
        result = run_ingest(spark, Path(landing) if landing else settings.landing_path, begin, finish, run_id=run_id)
    finally:
        spark.stop()
    click.echo(json.dumps(result.as_dict(), ensure_ascii=False, sort_keys=True))


@main.command("create-tables")
def create_tables() -> None:
    """Create every Iceberg namespace and table that does not exist yet."""
    from placerec.catalog import get_catalog
    from placerec.tables import TABLES, ensure_tables

    created = ensure_tables(get_catalog())
    for t in TABLES:
        click.echo(f"{t.identifier:<28} {'created' if t.identifier in created else 'exists'}")


@main.command("demo-data")
@click.option("--days", default=7, show_default=True, help="Number of days to generate.")
@click.option("--seed", default=42, show_default=True, help="Random seed; same seed, same files.")
@click.option("--start", default="2026-11-01", show_default=True, help="First day (YYYY-MM-DD).")
@click.option("--places", default=1000, show_default=True)
@click.option("--users", default=5000, show_default=True)
@click.option("--events", default=200_000, show_default=True, help="Total events over all days.")
@click.option("--malformed-rate", default=0.01, show_default=True)
@click.option("--out", default="", help="Landing root (default: the configured landing folder).")
def demo_data(
    days: int, seed: int, start: str, places: int, users: int, events: int, malformed_rate: float, out: str
) -> None:
    """Write seeded, realistic Korean place data as landing files, one folder per day and feed."""
    from placerec.demo import generate
    from placerec.settings import get_settings

    root = Path(out) if out else get_settings().landing_path
    manifest = generate(
        root,
        date.fromisoformat(start),
        days,
        seed,
        places=places,
        users=users,
        events=events,
        malformed_rate=malformed_rate,
    )
    click.echo(f"wrote {root}")
    for feed, per_day in manifest["counts"].items():
        valid = sum(d["valid"] for d in per_day.values())
        bad = sum(d["malformed"] for d in per_day.values())
        click.echo(f"  {feed:<8} {valid:>8} valid {bad:>6} malformed")


NSMC_FIRST, NSMC_END = "2003-11-01", "2015-05-01"


@main.command("import-nsmc")
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--limit", type=int, default=None, help="Only the first N reviews (by date), for quick tries.")
@click.option("--out", default="", help="Landing root for the mapped files (default: <home>/landing-nsmc).")
def import_nsmc(path: Path, limit: int | None, out: str) -> None:
    """Map NSMC reviews.tsv.gz (movies as places) to landing files and ingest them into raw.*.

    One ingest run covers the whole NSMC period; reruns give the same rows.
    """
    from placerec.demo.nsmc import import_nsmc_landing
    from placerec.ingest.job import run_ingest
    from placerec.settings import get_settings
    from placerec.spark import get_spark

    settings = get_settings()
    root = Path(out) if out else settings.home / "landing-nsmc"
    synopses = path.with_name("synopses.json")
    counts = import_nsmc_landing(path, root, synopses if synopses.is_file() else None, limit=limit)
    click.echo(f"mapped {path} -> {root}: {json.dumps({k: v for k, v in counts.items() if k != 'seconds'})}")
    spark = get_spark("import_nsmc", settings)
    try:
        result = run_ingest(
            spark, root, _utc(NSMC_FIRST), _utc(NSMC_END), run_id=f"import-nsmc:{path.name}", job="import_nsmc"
        )
    finally:
        spark.stop()
    click.echo(json.dumps(result.as_dict(), ensure_ascii=False, sort_keys=True))


@main.command("demo")
@click.option("--days", default=7, show_default=True)
@click.option("--seed", default=42, show_default=True)
@click.option("--start", default="2026-11-01", show_default=True, help="First day (YYYY-MM-DD).")
@click.option("--timeout", default=3600, show_default=True, help="Seconds to wait for the backfill.")
def demo(days: int, seed: int, start: str, timeout: int) -> None:
    """Demo data for N days, ingested by an Airflow backfill run by the scheduler; then per-day counts."""
    from placerec.airflow_api import AirflowApi
    from placerec.catalog import get_catalog
    from placerec.demo import generate
    from placerec.report import format_ingestion, ingestion_by_day
    from placerec.settings import get_settings
    from placerec.tables import ensure_tables

    settings = get_settings()
    first = date.fromisoformat(start)
    last = first + timedelta(days=days - 1)
    began = datetime.now(timezone.utc)
    generate(settings.landing_path, first, days, seed)
    click.echo(f"demo data: {days} days from {first} (seed {seed}) in {settings.landing_path}")
    ensure_tables(get_catalog(settings))
    api = AirflowApi(settings)
    api.wait_for_dag("ingest_events")
    api.set_paused("ingest_events", False)
    for stale in api.active_backfills("ingest_events"):
        click.echo(f"waiting for backfill {stale['id']} started earlier")
        api.wait_backfill(stale["id"], "ingest_events", first, last, timeout=timeout)
    backfill_id = api.create_backfill("ingest_events", first, last, reprocess="completed")
    click.echo(f"backfill {backfill_id}: ingest_events {first} .. {last}, run by the scheduler")
    api.wait_backfill(
        backfill_id, "ingest_events", first, last, timeout=timeout, progress=lambda s: click.echo(f"  {s}")
    )
    click.echo(format_ingestion(ingestion_by_day(first, last)))
    seconds = (datetime.now(timezone.utc) - began).total_seconds()
    click.echo(f"done in {seconds:.0f}s; Airflow UI: {settings.airflow_url}/dags/ingest_events")


if __name__ == "__main__":
    main()
