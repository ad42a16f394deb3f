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
@click.option("--only", multiple=True, help="Start only these services (opensearch, embeddings, airflow).")
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
def demo_data(days: int, seed: int, start: str, places: int, users: int, events: int, malformed_rate: float, out: str) -> None:
    """Write seeded, realistic Korean place data as landing files, one folder per day and feed."""
    from placerec.demo import generate
    from placerec.settings import get_settings

    root = Path(out) if out else get_settings().landing_path
    manifest = generate(
        root, date.fromisoformat(start), days, seed, places=places, users=users, events=events,
        malformed_rate=malformed_rate,
    )
    click.echo(f"wrote {root}")
    for feed, per_day in manifest["counts"].items():
        valid = sum(d["valid"] for d in per_day.values())
        bad = sum(d["malformed"] for d in per_day.values())
        click.echo(f"  {feed:<8} {valid:>8} valid {bad:>6} malformed")


if __name__ == "__main__":
    main()
