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

    The test span is the last PLACEREC_TRAIN_TEST_DAYS of the interval's history up to --end, or
    PLACEREC_TRAIN_EVAL_CUTS (3) such spans back to back, each with its own fit, pooled.
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


def _maintain_options(f):  # type: ignore[no-untyped-def]
    f = click.option(
        "--dry-run",
        type=click.BOOL,
        is_flag=False,
        flag_value=True,
        default=False,
        help="Only count what would change (also --dry-run true|false).",
    )(f)
    f = click.option("--run-id", default="manual", help="Recorded in ops.task_metrics (the Airflow run id in DAGs).")(f)
    f = click.option(
        "--end", "end", default=None, help="Interval end, exclusive: cut-offs count back from it (default: today, UTC)."
    )(f)
    return click.option("--start", "start", default=None, help="Interval start (default: 7 days before the end).")(f)


def _maintain_interval(start: str | None, end: str | None) -> tuple[datetime, datetime]:
    """The given interval; by default the week that ended at today's midnight (UTC)."""
    start, end = _blank(start), _blank(end)
    finish = _utc(end) if end else datetime.now(timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0)
    return (_utc(start) if start else finish - timedelta(days=7)), finish


@main.command("maintain")
@_maintain_options
@click.option("--table", "tables", multiple=True, help="Only these tables (ns.name; repeat or comma-separate).")
@click.option("--json", "as_json", is_flag=True, help="Print the run's full record as JSON.")
def maintain_command(
    start: str | None, end: str | None, run_id: str, dry_run: bool, tables: tuple[str, ...], as_json: bool
) -> None:
    """Iceberg upkeep per table: compact small files, expire old snapshots, remove orphan files."""
    from placerec.maintain import JOB, MaintainRun, MaintenanceFailed, format_maintenance, run_maintain
    from placerec.settings import get_settings
    from placerec.spark import get_spark

    settings = get_settings()
    begin, finish = _maintain_interval(start, end)
    chosen = [t.strip() for value in tables for t in value.split(",") if t.strip()]
    spark = get_spark(JOB, settings)
    failed: MaintenanceFailed | None = None
    try:
        run: MaintainRun = run_maintain(spark, begin, finish, run_id=run_id, tables=chosen or None, dry_run=dry_run)
    except MaintenanceFailed as exc:
        failed, run = exc, exc.run
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    finally:
        spark.stop()
    click.echo(json.dumps(run.as_dict(), sort_keys=True, default=str) if as_json else format_maintenance(run))
    if failed is not None:
        raise click.ClickException(str(failed))


@main.command("prune-index-versions")
@_maintain_options
def prune_index_versions_command(start: str | None, end: str | None, run_id: str, dry_run: bool) -> None:
    """Delete OpenSearch index versions beyond PLACEREC_INDEX_KEEP_VERSIONS that no alias points at."""
    from placerec.maintain import run_prune_index_versions
    from placerec.serve.publish import PublishError

    begin, finish = _maintain_interval(start, end)
    try:
        result = run_prune_index_versions(begin, finish, run_id=run_id, dry_run=dry_run)
    except PublishError as exc:
        raise click.ClickException(str(exc)) from None
    if result.skipped:
        click.echo(f"skipped: {result.skipped}")
        return
    verb = "would delete" if result.dry_run else "deleted"
    click.echo(f"live {result.live}; kept {', '.join(result.kept)}; {verb} {', '.join(result.deleted) or 'nothing'}")
    if result.aliased:
        click.echo(f"kept beyond the limit, an alias points at them: {', '.join(result.aliased)}")


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


@main.command("serve")
@click.option("--host", default=None, help="Bind address (default: PLACEREC_SERVE_HOST, 127.0.0.1).")
@click.option("--port", default=None, type=int, help="Port (default: PLACEREC_SERVE_PORT, 8095).")
def serve_command(host: str | None, port: int | None) -> None:
    """The serving API: GET /recommendations, POST /feedback, GET /health; logs impressions for ingest."""
    import uvicorn

    from placerec.serve.api import create_app
    from placerec.settings import get_settings

    settings = get_settings()
    uvicorn.run(
        create_app(settings),
        host=host or settings.serve_host,
        port=port or settings.serve_port,
        log_level="warning",
        access_log=False,
    )


@main.command("simulate-traffic")
@click.option("--url", default=None, help="The serving API (default: http://PLACEREC_SERVE_HOST:PORT).")
@click.option("--requests", "n_requests", default=1000, show_default=True, help="Requests to send.")
@click.option("--rate", default=50.0, show_default=True, help="Requests per second (open loop).")
@click.option("--seed", default=7, show_default=True)
@click.option("-k", "k", default=10, show_default=True, help="Places per request.")
@click.option("--concurrency", default=16, show_default=True, help="Requests in flight at most.")
def simulate_traffic_command(
    url: str | None, n_requests: int, rate: float, seed: int, k: int, concurrency: int
) -> None:
    """The demo world's users against the serving API, viewing and clicking by their hidden tastes."""
    from placerec.demo.traffic import simulate
    from placerec.settings import get_settings

    settings = get_settings()
    result = simulate(
        url or f"http://{settings.serve_host}:{settings.serve_port}",
        settings.truth_path,
        n_requests,
        rate,
        seed,
        k,
        concurrency,
    )
    out = result.summary()
    click.echo(
        f"{out['requests']} requests in {out['seconds']}s ({out['achieved_rps']}/s), {out['errors']} errors, "
        f"p50 {out['p50_ms']} ms, p99 {out['p99_ms']} ms; {out['impressions']} impressions, "
        f"{out['views']} views, {out['clicks']} clicks"
    )
    for variant, counts in sorted(out["by_variant"].items()):
        ctr = counts["clicks"] / counts["impressions"] if counts["impressions"] else 0.0
        click.echo(f"  {variant}: {counts['requests']} requests, {counts['impressions']} impressions, CTR {ctr:.4f}")
    if result.errors or result.feedback_errors:
        click.echo(f"errors: {out['error_kinds']}, feedback errors: {out['feedback_errors']}", err=True)
        sys.exit(1)


@main.command("ab-report")
@click.option("--start", "start", required=True, help="Interval start (date or ISO timestamp; UTC if naive).")
@click.option("--end", "end", default=None, help="Interval end, exclusive (default: start + 1 day).")
@click.option("--record", is_flag=True, help="Also replace the interval's rows of ops.online_ctr.")
def ab_report_command(start: str, end: str | None, record: bool) -> None:
    """Online CTR per serving variant with 95 % intervals, from the ingested impressions and clicks."""
    from placerec.serve.online import (
        ctr_by_variant,
        format_ctr,
        offline_runs,
        record_ctr,
        served_events,
        with_offline,
    )
    from placerec.serve.variants import parse_variants
    from placerec.settings import get_settings

    settings = get_settings()
    lo, hi = _interval(start, end)
    order = [v.name for v in parse_variants(settings.serve_variants)]
    click.echo(f"online CTR by variant, {lo.isoformat()} .. {hi.isoformat()}")
    rows = with_offline(ctr_by_variant(served_events(lo, hi, settings), order), offline_runs(settings))
    click.echo(format_ctr(rows))
    if record:
        click.echo(f"ops.online_ctr: {record_ctr(rows, lo, hi, settings)} rows for the interval")


@main.command("check")
@click.option("--job", default="ingest_events", show_default=True, help="Job whose interval is checked.")
@click.option("--start", "start", required=True, help="Interval start (date or ISO timestamp; UTC if naive).")
@click.option("--end", "end", default=None, help="Interval end, exclusive (default: start + 1 day).")
def check_command(job: str, start: str, end: str | None) -> None:
    """Data-quality checks of a job's interval (as the DAG's check_data_quality task runs them)."""
    from placerec.checks import DataQualityError, format_result, run_checks

    begin, finish = _interval(start, end)
    try:
        results = run_checks(job, begin, finish)
    except DataQualityError as exc:
        for result in exc.results:
            if result.ok:
                click.echo(format_result(result))
        raise click.ClickException(str(exc)) from None
    for result in results:
        click.echo(format_result(result))


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


@main.command("backfill")
@click.option("--from", "first", required=True, help="First day (YYYY-MM-DD), inclusive.")
@click.option("--to", "last", required=True, help="Last day (YYYY-MM-DD), inclusive.")
@click.option(
    "--through",
    type=click.Choice(["ingest", "enrich", "train", "publish"]),
    default="publish",
    show_default=True,
    help="The last DAG of the chain to run for each day.",
)
@click.option("--landing", default="", help="Landing root to ingest (default: PLACEREC_LANDING_DIR).")
@click.option("--extractor", type=click.Choice(["local", "llm"]), default=None, help="Extractor to price.")
@click.option("--dry-run", is_flag=True, help="Print the plan and the LLM estimate; start nothing.")
@click.option("--timeout", default=3600, show_default=True, help="Seconds to wait for each run.")
def backfill_command(
    first: str, last: str, through: str, landing: str, extractor: str | None, dry_run: bool, timeout: int
) -> None:
    """Backfill the chain: ingest_events over the range through Airflow's backfill API, then each
    later DAG once per day, in day order, with that day's interval (what the daily runs give)."""
    from placerec.backfill import BackfillError, format_plan, plan_backfill, run_backfill

    try:
        plan = plan_backfill(
            date.fromisoformat(first), date.fromisoformat(last), through, landing=landing, extractor=extractor
        )
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from exc
    click.echo(format_plan(plan))
    if dry_run:
        return
    try:
        results = run_backfill(plan, timeout=timeout, progress=click.echo)
    except BackfillError as exc:
        raise click.ClickException(str(exc)) from exc
    ran = sum(r.state == "success" for r in results)
    click.echo(f"done: {ran} runs succeeded, {sum(r.state == 'skipped' for r in results)} skipped")


@main.command("demo")
@click.option("--days", default=7, show_default=True)
@click.option("--seed", default=42, show_default=True)
@click.option("--start", default="2026-11-01", show_default=True, help="First day (YYYY-MM-DD).")
@click.option("--timeout", default=3600, show_default=True, help="Seconds to wait for each step.")
def demo(days: int, seed: int, start: str, timeout: int) -> None:
    """Demo data for N days: ingested by an Airflow backfill, enriched by one enrich_reviews run, then
    trained and published by the asset-triggered DAGs (``placerec.demo.run.run_demo``)."""
    from placerec.demo.run import DemoError, format_demo, run_demo

    try:
        result = run_demo(days, seed, date.fromisoformat(start), timeout=timeout, progress=click.echo)
    except DemoError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo("\n" + format_demo(result))


if __name__ == "__main__":
    main()
