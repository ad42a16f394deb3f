"""The ``placerec`` command: every job and every operation a person runs by hand."""

from __future__ import annotations

import json
import logging
import sys
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

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
    for noisy in ("httpx", "httpx2", "httpcore", "openai", "opensearch"):  # one line per HTTP request otherwise
        logging.getLogger(noisy).setLevel(logging.DEBUG if verbose else logging.WARNING)


@main.group()
def dev() -> None:
    """Local platform: OpenSearch, embeddings endpoint, Spark Connect, PostgreSQL and Airflow on 127.0.0.1."""


@dev.command("up")
@click.option(
    "--only", multiple=True, help="Start only these services (opensearch, embeddings, spark, postgres, airflow)."
)
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
    begin, finish = _interval(start, end)
    spark = get_spark(JOB, settings)
    try:
        result = run_ingest(spark, Path(landing) if landing else settings.landing_path, begin, finish, run_id=run_id)
    finally:
        spark.stop()
    click.echo(json.dumps(result.as_dict(), ensure_ascii=False, sort_keys=True))


def _interval(start: str, end: str | None) -> tuple[datetime, datetime]:
    begin = _utc(start)
    return begin, (_utc(end) if end else begin + timedelta(days=1))


def _interval_options(f):  # type: ignore[no-untyped-def]
    f = click.option("--run-id", default="manual", help="Recorded in ops.task_metrics (the Airflow run id in DAGs).")(f)
    f = click.option("--end", "end", default=None, help="Interval end, exclusive (default: start + 1 day).")(f)
    return click.option(
        "--start", "start", required=True, help="Interval start (date or ISO timestamp; UTC if naive)."
    )(f)


def _extractor_options(f):  # type: ignore[no-untyped-def]
    f = click.option("--prompt-version", default=None, help="Prompt (llm) or rule-set (local) version.")(f)
    f = click.option("--model", default=None, help="Model name (default: PLACEREC_LLM_MODEL for llm).")(f)
    return click.option(
        "--extractor",
        type=click.Choice(["", "local", "llm"]),
        default=None,
        help="local (offline, Kiwi + e5) or llm (PLACEREC_LLM_BASE_URL); default PLACEREC_KEYWORD_EXTRACTOR.",
    )(f)


def _blank(value: str | None) -> str | None:
    """Airflow renders an unset Param as an empty string: treat it as not given."""
    return value if value not in (None, "", "None") else None


@main.command("extract-review-keywords")
@_interval_options
@_extractor_options
@click.option("--budget-tokens", default="", help="Stop before this run spends more tokens (prompt + completion).")
@click.option("--budget-cost", default="", help="Stop before this run spends more USD (price table in settings).")
@click.option(
    "--dry-run",
    type=click.BOOL,
    is_flag=False,
    flag_value=True,
    default=False,
    help="Only estimate calls, tokens and cost of the cache misses (also --dry-run true|false).",
)
@click.option(
    "--max-per-place",
    type=int,
    default=None,
    help="Sample a history backfill: only each place's newest N reviews of the interval (rest left for later).",
)
def extract_review_keywords(
    start: str,
    end: str | None,
    run_id: str,
    extractor: str | None,
    model: str | None,
    prompt_version: str | None,
    budget_tokens: str,
    budget_cost: str,
    dry_run: bool,
    max_per_place: int | None,
) -> None:
    """Keywords of the interval's reviews (only texts not in ops.llm_cache are sent) into features.review_keywords."""
    from placerec.enrich.keywords import JOB, resolve_extractor, run_extract_review_keywords
    from placerec.settings import get_settings
    from placerec.spark import get_spark

    settings = get_settings()
    begin, finish = _interval(start, end)
    spec = resolve_extractor(_blank(extractor), _blank(model), _blank(prompt_version), settings)
    tokens = int(budget_tokens) if _blank(budget_tokens) else None
    cost = float(budget_cost) if _blank(budget_cost) else None
    spark = get_spark(JOB, settings)
    try:
        run = run_extract_review_keywords(
            spark,
            begin,
            finish,
            run_id=run_id,
            spec=spec,
            budget_tokens=tokens,
            budget_cost=cost,
            dry_run=dry_run,
            max_per_place=max_per_place,
        )
    finally:
        spark.stop()
    if dry_run:
        est = run.estimate or {}
        click.echo(
            f"dry run {begin:%Y-%m-%d}..{finish:%Y-%m-%d} [{spec.kind} {spec.model} {spec.prompt_version}]: "
            f"{run.reviews} reviews, {run.distinct_texts} distinct texts, {run.cache_hits} cached, "
            f"{est.get('calls', 0)} calls to make; tokens in ~{est.get('tokens_in', 0)}, "
            f"out <= {est.get('tokens_out_max', 0)}; cost <= ${est.get('cost_max', 0):.4f}"
            + ("" if est.get("priced", True) else " (model not in the price table: cost unknown)")
        )
        return
    if run.budget_exhausted:
        click.echo(
            f"WARNING: budget reached: {run.quarantined.get('budget_exhausted', 0)} reviews ({run.deferred} "
            "distinct texts) left for a later run, quarantined as budget_exhausted until then",
            err=True,
        )
    click.echo(json.dumps(run.as_dict(), ensure_ascii=False, sort_keys=True, default=str))


@main.command("build-place-profiles")
@_interval_options
def build_place_profiles(start: str, end: str | None, run_id: str) -> None:
    """Place keyword profiles as of the interval end, embedded (cached) into features.place_profiles."""
    from placerec.enrich.profiles import PROFILES_JOB, run_build_place_profiles
    from placerec.settings import get_settings
    from placerec.spark import get_spark

    settings = get_settings()
    begin, finish = _interval(start, end)
    spark = get_spark(PROFILES_JOB, settings)
    try:
        details = run_build_place_profiles(spark, begin, finish, run_id=run_id)
    finally:
        spark.stop()
    click.echo(json.dumps(details, ensure_ascii=False, sort_keys=True, default=str))


@main.command("extract-search-interests")
@_interval_options
@_extractor_options
def extract_search_interests(
    start: str,
    end: str | None,
    run_id: str,
    extractor: str | None,
    model: str | None,
    prompt_version: str | None,
) -> None:
    """Cold start: users' search queries → interest keywords and a vector in features.user_interests."""
    from placerec.enrich.keywords import resolve_extractor
    from placerec.enrich.profiles import INTERESTS_JOB, run_extract_search_interests
    from placerec.settings import get_settings
    from placerec.spark import get_spark

    settings = get_settings()
    begin, finish = _interval(start, end)
    spec = resolve_extractor(_blank(extractor), _blank(model), _blank(prompt_version), settings)
    spark = get_spark(INTERESTS_JOB, settings)
    try:
        details = run_extract_search_interests(spark, begin, finish, run_id=run_id, spec=spec)
    finally:
        spark.stop()
    click.echo(json.dumps(details, ensure_ascii=False, sort_keys=True, default=str))


@main.command("eval-keywords")
@_extractor_options
@click.option("--goldset", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None)
@click.option(
    "--promote", is_flag=True, help="Make this prompt version the promoted one if it scores at least as well."
)
@click.option("--force", is_flag=True, help="With --promote: promote even if it scores worse (recorded as forced).")
def eval_keywords(
    extractor: str | None,
    model: str | None,
    prompt_version: str | None,
    goldset: Path | None,
    promote: bool,
    force: bool,
) -> None:
    """Precision, recall and F1 of the extractor on tests/goldset; recorded in prompts/registry.json."""
    from placerec.enrich import evaluate as ev
    from placerec.enrich import registry
    from placerec.enrich.keywords import build_extractor, resolve_extractor

    path = goldset or ev.GOLDSET
    gold = ev.load_goldset(path)
    digest = ev.goldset_digest(path)

    def run(version: str | None) -> dict[str, Any]:
        spec = resolve_extractor(_blank(extractor), _blank(model), version)
        with build_extractor(spec) as ex:
            summary = ev.evaluate(ex, gold).summary()
        ev.record(spec.kind, spec.model, spec.prompt_version, digest, summary)
        click.echo(
            f"{spec.kind} {spec.model} {spec.prompt_version}: precision {summary['precision']:.3f}  "
            f"recall {summary['recall']:.3f}  F1 {summary['f1']:.3f}  "
            f"(aspect {summary['aspect_accuracy']:.2f}, sentiment {summary['sentiment_accuracy']:.2f} on "
            f"{summary['matched']} matches; {summary['reviews']} reviews, {summary['rejected']} rejected)"
        )
        for source, figures in summary["by_source"].items():
            click.echo(f"  {source:<6} P {figures['precision']:.3f}  R {figures['recall']:.3f}  F1 {figures['f1']:.3f}")
        return {"spec": spec, **summary}

    candidate = run(_blank(prompt_version))
    if not promote:
        return
    spec = candidate["spec"]
    if spec.kind != "llm":
        raise click.UsageError("--promote applies to LLM prompt versions (--extractor llm)")
    current = registry.promoted_prompt()
    if current == spec.prompt_version:
        click.echo(f"{current} is already the promoted prompt")
        return
    known = registry.load()["scores"].get(ev.score_key(spec.kind, spec.model, current, digest))
    baseline = known["f1"] if known else run(current)["f1"]
    try:
        replaced = ev.promote(spec.model, spec.prompt_version, candidate["f1"], baseline, force=force, digest=digest)
    except ev.PromotionRefused as exc:
        click.echo(f"REFUSED: {exc}", err=True)
        sys.exit(2)
    click.echo(f"promoted {spec.prompt_version} (was {replaced})" + (" [forced]" if candidate["f1"] < baseline else ""))


@main.command("build-interactions")
@_interval_options
def build_interactions(start: str, end: str | None, run_id: str) -> None:
    """Weighted, time-decayed user-place signal as of the interval end into features.interactions."""
    from placerec.model.interactions import JOB, run_build_interactions
    from placerec.settings import get_settings
    from placerec.spark import get_spark

    settings = get_settings()
    begin, finish = _interval(start, end)
    spark = get_spark(JOB, settings)
    try:
        details = run_build_interactions(spark, begin, finish, run_id=run_id)
    finally:
        spark.stop()
    click.echo(json.dumps(details, ensure_ascii=False, sort_keys=True, default=str))


@main.command("train-hybrid")
@_interval_options
@click.option(
    "--force",
    type=click.BOOL,
    default=False,
    show_default=True,
    help="Promote even if the gate refuses (recorded as forced in model.runs).",
)
@click.option(
    "--methods",
    default="",
    help="Methods to evaluate, comma-separated (default all: hybrid,popularity,cf,content,ease,implicit_als).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the run's full record as JSON.")
def train_hybrid(start: str, end: str | None, run_id: str, force: bool, methods: str, as_json: bool) -> None:
    """Fit the hybrid (ALS + content + prior), evaluate on a time split, gate, write top-K lists.

    The test span is the last PLACEREC_TRAIN_TEST_DAYS of the interval's history up to --end.
    """
    from placerec.model.train import JOB, METHODS, run_train_hybrid
    from placerec.report import format_training
    from placerec.settings import get_settings
    from placerec.spark import get_spark

    settings = get_settings()
    begin, finish = _interval(start, end)
    spark = get_spark(JOB, settings)
    try:
        chosen = tuple(m.strip() for m in methods.split(",") if m.strip()) or METHODS
        details = run_train_hybrid(spark, begin, finish, run_id=run_id, force=force, methods=chosen)
    finally:
        spark.stop()
    if as_json:
        click.echo(json.dumps(details, ensure_ascii=False, sort_keys=True, default=str))
    else:
        click.echo(format_training(details))


@main.command("publish-index")
@_interval_options
@click.option("--model-version", default="", help="Model version to publish (default: the newest promoted one).")
@click.option(
    "--force",
    type=click.BOOL,
    default=False,
    show_default=True,
    help="Rebuild even if the live version has these inputs.",
)
@click.option(
    "--dry-run", type=click.BOOL, default=False, show_default=True, help="Build and validate, then drop: aliases stay."
)
@click.option("--json", "as_json", is_flag=True, help="Print the job's full record as JSON.")
def publish_index(
    start: str, end: str | None, run_id: str, model_version: str, force: bool, dry_run: bool, as_json: bool
) -> None:
    """Build versioned OpenSearch indices (places, recommendations, users), validate, swap the aliases."""
    from placerec.report import format_publish
    from placerec.serve.publish import JOB, run_publish_index
    from placerec.settings import get_settings
    from placerec.spark import get_spark

    settings = get_settings()
    begin, finish = _interval(start, end)
    spark = get_spark(JOB, settings)
    try:
        details = run_publish_index(
            spark, begin, finish, run_id=run_id, model_version=_blank(model_version) or "", force=force, dry_run=dry_run
        )
    finally:
        spark.stop()
    click.echo(
        json.dumps(details, ensure_ascii=False, sort_keys=True, default=str) if as_json else format_publish(details)
    )


@main.command("rollback")
@click.option("--to", "to", default="", help="Version to go back to (default: the newest one before the live one).")
def rollback_command(to: str) -> None:
    """Point every serving alias back at an earlier published version (one atomic request)."""
    from placerec.serve.publish import PublishError, rollback

    try:
        result = rollback(to)
    except PublishError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"{result['status']}: {result['from'] or '(none)'} -> {result['to']}")


@main.command("index-versions")
def index_versions() -> None:
    """Published index versions (ops.index_versions) and what the aliases point at now."""
    from placerec.report import format_index_versions
    from placerec.serve.client import opensearch_client
    from placerec.serve.publish import live_version, recorded
    from placerec.settings import get_settings

    settings = get_settings()
    click.echo(format_index_versions(recorded(settings), live_version(opensearch_client(settings), settings)))


def _place_filters(f):  # type: ignore[no-untyped-def]
    f = click.option("--category", default="", help="Only places of this category.")(f)
    f = click.option("--district", default="", help="Only places in this district.")(f)
    return click.option("-k", "k", default=10, show_default=True, help="How many places.")(f)


@main.command("recommend")
@click.option("--user", required=True, help="User id.")
@_place_filters
def recommend_command(user: str, k: int, district: str, category: str) -> None:
    """A user's recommendations from the live OpenSearch indices, with reasons."""
    from placerec.report import format_answer
    from placerec.serve.client import opensearch_client
    from placerec.serve.query import recommend
    from placerec.settings import get_settings

    settings = get_settings()
    answer = recommend(opensearch_client(settings), settings, user, k, district, category)
    click.echo(format_answer(answer, f"user {user}"))


@main.command("search")
@click.argument("text")
@_place_filters
def search_command(text: str, k: int, district: str, category: str) -> None:
    """Places for a free-text query: keyword match and k-NN on its embedding, fused by rank."""
    from placerec.enrich.embeddings import EmbeddingClient
    from placerec.report import format_answer
    from placerec.serve.client import opensearch_client
    from placerec.serve.query import search
    from placerec.settings import get_settings

    settings = get_settings()
    with EmbeddingClient(settings=settings) as embedder:
        vector = embedder.embed([text], input_type="query")[0]
    answer = search(opensearch_client(settings), settings, text, vector, k, district, category)
    click.echo(format_answer(answer, repr(text)))


@main.command("create-tables")
def create_tables() -> None:
    """Create every Iceberg namespace and table that does not exist yet."""
    from placerec.catalog import ensure_tables_once
    from placerec.tables import TABLES

    created = ensure_tables_once(check_all=True)
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
    """Demo data for N days: ingested by an Airflow backfill, enriched by one enrich_reviews run, then trained.

    The enrich run's features Assets trigger train_hybrid (evaluated on the last day, gated).
    """
    from placerec.airflow_api import AirflowApi
    from placerec.catalog import ensure_tables_once
    from placerec.demo import generate
    from placerec.report import (
        enrichment_summary,
        format_enrichment,
        format_ingestion,
        format_publish,
        format_training,
        ingestion_by_day,
        job_run,
    )
    from placerec.settings import get_settings

    settings = get_settings()
    first = date.fromisoformat(start)
    last = first + timedelta(days=days - 1)
    began = datetime.now(timezone.utc)
    generate(settings.landing_path, first, days, seed)
    click.echo(f"demo data: {days} days from {first} (seed {seed}) in {settings.landing_path}")
    ensure_tables_once(settings)
    api = AirflowApi(settings)
    api.wait_for_dag("ingest_events")
    api.wait_for_dag("enrich_reviews")
    api.wait_for_dag("train_hybrid")
    api.wait_for_dag("publish_index")
    # One enrich run over the whole backfill instead of one per day (each would rebuild every
    # profile): paused, the DAG ignores the ingest runs' Asset events; it is unpaused afterwards.
    api.set_paused("enrich_reviews", True)
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
    api.set_paused("enrich_reviews", False)
    api.set_paused("train_hybrid", False)
    api.set_paused("publish_index", False)
    end = last + timedelta(days=1)
    enriched_at = datetime.now(timezone.utc)
    run_id = api.trigger("enrich_reviews", {"start": first.isoformat(), "end": end.isoformat()})
    click.echo(f"enrich_reviews {run_id}: {first} .. {last}; from now on each ingest run triggers it (Assets)")
    state = api.wait_run("enrich_reviews", run_id, timeout=timeout, progress=lambda s: click.echo(f"  {s}"))
    if state != "success":
        raise click.ClickException(f"enrich_reviews run {run_id} ended {state}: see its task logs in the UI")
    click.echo(format_enrichment(enrichment_summary(first, last)))
    click.echo("train_hybrid: triggered by the enrich run's features Assets")
    api.wait_asset_triggered(
        "train_hybrid",
        enriched_at,
        lambda: any(r["state"] in ("success", "failed") for r in api.dag_runs("train_hybrid", since=enriched_at)),
        timeout=timeout,
        progress=lambda s: click.echo(f"  {s}"),
    )
    trained = job_run("train_hybrid", first, settings, since=enriched_at)
    if trained is None:
        # Airflow hands an asset-triggered run every event since the DAG's previous run, so features
        # events left by earlier runs (other days) widen its interval; train the demo's week explicitly.
        click.echo(f"train_hybrid: the asset-triggered run covered other days too; training {first} .. {last}")
        train_id = api.trigger("train_hybrid", {"start": first.isoformat(), "end": end.isoformat()})
        state = api.wait_run("train_hybrid", train_id, timeout=timeout, progress=lambda s: click.echo(f"  {s}"))
        if state != "success":
            raise click.ClickException(f"train_hybrid run {train_id} ended {state}: see its task logs in the UI")
        trained = job_run("train_hybrid", first, settings, since=enriched_at)
    assert trained is not None
    click.echo(format_training(trained))
    if trained.get("promoted"):
        click.echo("publish_index: triggered by the promoted model.recommendations Asset")
        api.wait_asset_triggered(
            "publish_index",
            enriched_at,
            lambda: job_run("publish_index", first, settings, since=enriched_at) is not None,
            timeout=timeout,
            progress=lambda s: click.echo(f"  {s}"),
        )
        published = job_run("publish_index", first, settings, since=enriched_at)
        assert published is not None
        click.echo(format_publish(published))
        _demo_recommendation(settings, str(trained["model_version"]))
    else:
        click.echo("publish_index: not triggered, the gate did not promote this model (serving keeps the last one)")
    seconds = (datetime.now(timezone.utc) - began).total_seconds()
    click.echo(f"done in {seconds:.0f}s; Airflow UI: {settings.airflow_url}/dags/publish_index")


def _demo_recommendation(settings: Any, model_version: str) -> None:
    """What `placerec recommend` prints for the first user whose top place has a reason."""
    from placerec.catalog import get_catalog
    from placerec.report import format_answer
    from placerec.serve.client import opensearch_client
    from placerec.serve.query import recommend
    from placerec.tables import load_table

    rows = (
        load_table(get_catalog(settings), "model.recommendations")
        .scan(row_filter=f"model_version = '{model_version}' and rank = 1", selected_fields=("user_id", "reason"))
        .to_arrow()
        .to_pylist()
    )
    users = sorted(r["user_id"] for r in rows if r["reason"])
    if users:
        click.echo(f"\n$ placerec recommend --user {users[0]} -k 5")
        click.echo(format_answer(recommend(opensearch_client(settings), settings, users[0], k=5), f"user {users[0]}"))


if __name__ == "__main__":
    main()
