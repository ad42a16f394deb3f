"""Backfill of the chain, **one day at a time, in day order**: the day's ``ingest_events`` run through
Airflow's backfill API, then the downstream DAGs, each run with that day's interval, before the next
day is ingested: exactly the runs (and so the tables) the daily schedule gives, where
``enrich_reviews`` is triggered by each day's ingest Assets, ``train_hybrid`` by that day's features
and ``publish_index`` by a promoted model. The next day waits as it does on the schedule: jobs read the
place catalogue as of their day (``raw.place_versions``), but ``raw.reviews`` keeps each review's
newest text only, so a day's jobs run before a later day can edit what they read. A backfill
``--through ingest`` is one Airflow backfill over the range.

Left to Airflow, an ingest backfill with the downstream DAGs unpaused fans out unpredictably: an
asset-triggered run takes every event queued since the DAG's previous run, so one enrich run may
cover two days and the next none. Here only the DAG being run is unpaused while the chain runs
(a paused DAG queues no Asset events), and every downstream run is triggered with its day's
``start``/``end`` Params; the DAGs' pause states are restored at the end, whatever happens.

``plan_backfill`` says what will run and what the LLM would cost (the landing files' valid review
texts for the range that ``ops.llm_cache`` does not hold yet, priced by the enrich job's own
estimate) before anything starts; ``run_backfill`` runs a plan.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import date, datetime, time, timedelta, timezone
from typing import Any

from placerec.settings import Settings, get_settings

log = logging.getLogger(__name__)

STAGES = ("ingest", "enrich", "train", "publish")
DAG_OF = {"ingest": "ingest_events", "enrich": "enrich_reviews", "train": "train_hybrid", "publish": "publish_index"}
MAX_DAYS = 366


class BackfillError(RuntimeError):
    """A step of the chain did not succeed; the message names the run to look at."""


@dataclass(frozen=True)
class Step:
    stage: str
    dag_id: str
    first: date
    last: date
    how: str  # "backfill" (Airflow's backfill API, one run per day) or "trigger" (one run, this day)


@dataclass
class CostEstimate:
    """The keyword extraction the range would need, before anything is ingested or sent."""

    extractor: dict[str, str]
    review_lines: int = 0
    valid_reviews: int = 0
    distinct_texts: int = 0
    cached: int = 0
    to_send: int = 0
    tokens_in: int = 0
    tokens_out_max: int = 0
    cost_max: float = 0.0
    priced: bool = True


@dataclass
class Plan:
    first: date
    last: date
    through: str
    landing: str
    steps: list[Step] = field(default_factory=list)
    cost: CostEstimate | None = None

    @property
    def days(self) -> list[date]:
        return [self.first + timedelta(days=i) for i in range((self.last - self.first).days + 1)]


@dataclass
class StepResult:
    step: Step
    run_id: str
    state: str
    note: str = ""


def _utc(d: date) -> datetime:
    return datetime.combine(d, time(0), tzinfo=timezone.utc)


def plan_backfill(
    first: date,
    last: date,
    through: str = "publish",
    *,
    landing: str = "",
    settings: Settings | None = None,
    extractor: str | None = None,
) -> Plan:
    """The runs a backfill of ``[first, last]`` (inclusive days) through ``through`` makes, and their LLM cost."""
    if through not in STAGES:
        raise ValueError(f"--through must be one of {', '.join(STAGES)}, not {through!r}")
    if last < first:
        raise ValueError(f"the range is empty: {first} .. {last}")
    if (last - first).days + 1 > MAX_DAYS:
        raise ValueError(f"{(last - first).days + 1} days: at most {MAX_DAYS} in one backfill")
    s = settings or get_settings()
    root = landing or str(s.landing_path)
    plan = Plan(first, last, through, root)
    downstream = STAGES[1 : STAGES.index(through) + 1]
    if not downstream:
        plan.steps.append(Step("ingest", DAG_OF["ingest"], first, last, "backfill"))
    for day in plan.days if downstream else []:
        # day D's ingest, then D's enrich/train/publish, then D+1's ingest: what the schedule runs
        # (raw.reviews keeps each review's newest text only, so D's jobs must run before D+1 lands)
        plan.steps.append(Step("ingest", DAG_OF["ingest"], day, day, "backfill"))
        plan.steps += [Step(stage, DAG_OF[stage], day, day, "trigger") for stage in downstream]
    if "enrich" in downstream:
        plan.cost = estimate_cost(first, last, root, s, extractor)
    return plan


def _review_texts(root: str, first: date, last: date) -> tuple[int, list[tuple[str, str]]]:
    """The landing files' review lines for the range, and the (content hash, text) of the valid ones,
    exactly as ingest would judge them (same listing rules, same validator)."""
    from pathlib import Path

    from placerec.ingest.files import list_landing
    from placerec.ingest.records import validate_line

    lines, valid = 0, []
    for day in (first + timedelta(days=i) for i in range((last - first).days + 1)):
        start, end = _utc(day), _utc(day + timedelta(days=1))
        for f in list_landing(Path(root), "reviews", start, end).read:
            with open(f.path, "rb") as fh:
                for raw in fh:
                    lines += 1
                    verdict = validate_line("reviews", raw.rstrip(b"\r\n"), start, end)
                    if verdict.values is not None:  # (review_id, place_id, user_id, rating, text, ts, hash, …)
                        valid.append((str(verdict.values[6]), str(verdict.values[4])))
    return lines, valid


def _cached_hashes(settings: Settings, model: str, version: str) -> set[str]:
    from pyiceberg.expressions import And

    from placerec.catalog import get_catalog
    from placerec.enrich import cache
    from placerec.tables import equals, load_table

    table = load_table(get_catalog(settings), cache.TABLE)
    where = And(equals("kind", cache.KEYWORDS), And(equals("model", model), equals("prompt_version", version)))
    rows = table.scan(row_filter=where, selected_fields=("content_hash",)).to_arrow()
    return set(rows.column("content_hash").to_pylist())


def estimate_cost(
    first: date, last: date, landing: str, settings: Settings, extractor: str | None = None
) -> CostEstimate:
    """Worst-case tokens and cost of the keyword requests the range would send (cache misses only)."""
    from placerec.enrich.budget import PriceTable
    from placerec.enrich.keywords import estimate, resolve_extractor

    spec = resolve_extractor(extractor or None, settings=settings)
    lines, valid = _review_texts(landing, first, last)
    texts = dict(valid)
    cached = _cached_hashes(settings, spec.model, spec.prompt_version) & set(texts)
    misses = [t for h, t in sorted(texts.items()) if h not in cached]
    est = estimate(spec, misses, PriceTable.from_spec(settings.llm_prices))
    return CostEstimate(
        spec.identity,
        review_lines=lines,
        valid_reviews=len(valid),
        distinct_texts=len(texts),
        cached=len(cached),
        to_send=len(misses) if spec.kind == "llm" else 0,
        tokens_in=est.tokens_in,
        tokens_out_max=est.tokens_out_max,
        cost_max=round(est.cost_max, 6),
        priced=est.priced,
    )


def format_plan(plan: Plan) -> str:
    n = len(plan.days)
    lines = [
        f"backfill {plan.first} .. {plan.last} ({n} day{'s' * (n != 1)}) through {plan.through}, "
        f"landing {plan.landing}",
    ]
    downstream = STAGES[1 : STAGES.index(plan.through) + 1]
    if not downstream:
        lines.append(f"  {DAG_OF['ingest']}: one Airflow backfill, one run per day ({n} runs, the scheduler runs them)")
    else:
        dags = " -> ".join(DAG_OF[s] for s in ("ingest", *downstream))
        lines.append(
            f"  per day, in day order, each run with that day's interval: {dags} "
            f"({n * (1 + len(downstream))} runs; {DAG_OF['ingest']} as a one-day Airflow backfill)"
        )
        lines.append("     a day's chain ends before the next day is ingested, as the schedule runs them")
        if "publish" in downstream:
            lines.append(
                "     publish_index runs only for a day whose model the gate promoted (as the daily Assets do)"
            )
        lines.append("     the DAGs are paused except the one running; their pause states are restored at the end")
    if plan.cost is not None:
        c = plan.cost
        who = f"{c.extractor['extractor']} {c.extractor['model']} {c.extractor['prompt_version']}"
        lines.append(
            f"LLM estimate [{who}]: {c.valid_reviews} valid reviews of {c.review_lines} lines, "
            f"{c.distinct_texts} distinct texts, {c.cached} in ops.llm_cache"
        )
        if c.extractor["extractor"] == "llm":
            price = f"${c.cost_max:.4f} at most" if c.priced else "cost unknown (model not in the price table)"
            lines.append(
                f"  {c.to_send} requests, {c.tokens_in} input tokens, {c.tokens_out_max} output tokens at most: {price}"
            )
        else:
            lines.append("  offline extractor: no LLM requests, $0")
    return "\n".join(lines)


@contextmanager
def _paused_except(api: Any, dags: list[str]) -> Iterator[Callable[[str], None]]:
    """Pause ``dags`` and hand out ``run_only(dag)`` (unpause it, pause the others); restore every
    DAG's pause state at the end."""
    before = {dag: api.is_paused(dag) for dag in dags}

    def run_only(dag: str) -> None:
        for other in dags:
            if other != dag:
                api.set_paused(other, True)
        api.set_paused(dag, False)

    try:
        yield run_only
    finally:
        for dag, paused in before.items():
            try:
                api.set_paused(dag, paused)
            except Exception:  # restore the rest; the log names the one left
                log.exception("could not restore %s to paused=%s", dag, paused)


def run_backfill(
    plan: Plan,
    *,
    settings: Settings | None = None,
    timeout: float = 3600,
    progress: Callable[[str], None] = lambda _: None,
) -> list[StepResult]:
    """Run ``plan`` through the Airflow API server; raises :class:`BackfillError` at the first failed run."""
    from placerec.airflow_api import AirflowApi
    from placerec.report import job_run

    s = settings or get_settings()
    api = AirflowApi(s)
    dags = [DAG_OF[stage] for stage in STAGES]
    for dag in dags:
        api.wait_for_dag(dag)
    for dag in dict.fromkeys(step.dag_id for step in plan.steps):  # in the chain's order
        starts = api.get(f"/dags/{dag}/details").get("start_date")
        if starts and plan.first < datetime.fromisoformat(starts.replace("Z", "+00:00")).date():
            # Airflow would "run" such a day with no task at all and call it a success
            raise BackfillError(f"{dag} starts on {starts[:10]}: no run of it can cover {plan.first}")
    results: list[StepResult] = []
    with _paused_except(api, dags) as run_only:
        for step in plan.steps:
            run_only(step.dag_id)
            if step.how == "backfill":
                for stale in api.active_backfills(step.dag_id):
                    progress(f"waiting for backfill {stale['id']} of {step.dag_id} started earlier")
                    api.wait_backfill(stale["id"], step.dag_id, step.first, step.last, timeout=timeout)
                for run in api.misaligned_runs(step.dag_id, step.first, step.last):
                    # Airflow would rerun it, as one of the backfill's days, with its own other interval
                    progress(
                        f"deleting {step.dag_id} run {run['dag_run_id']} (logical date {run['logical_date'][:10]}, "
                        f"interval from {run['data_interval_start'][:10]}): the backfill reruns its day"
                    )
                    api.delete_run(step.dag_id, run["dag_run_id"])
                conf = {"landing": plan.landing} if plan.landing != str(s.landing_path) else {}
                backfill_id = api.create_backfill(step.dag_id, step.first, step.last, reprocess="completed", conf=conf)
                progress(f"backfill {backfill_id}: {step.dag_id} {step.first} .. {step.last}")
                try:
                    api.wait_backfill(
                        backfill_id,
                        step.dag_id,
                        step.first,
                        step.last,
                        timeout=timeout,
                        progress=lambda m: progress(f"  {m}"),
                    )
                except Exception as exc:
                    raise BackfillError(f"{step.dag_id} backfill {backfill_id}: {exc}") from exc
                results.append(StepResult(step, f"backfill {backfill_id}", "success"))
                continue
            if step.stage == "publish":
                trained = job_run("train_hybrid", step.first, s) or {}
                if not trained.get("promoted"):
                    gate = trained.get("gate", "no training run")
                    note = f"not run: the model for {step.first} was not promoted ({gate})"
                    progress(f"{step.dag_id} {step.first}: {note}")
                    results.append(StepResult(step, "", "skipped", note))
                    continue
            conf = {"start": step.first.isoformat(), "end": (step.first + timedelta(days=1)).isoformat()}
            run_id = api.trigger(step.dag_id, conf)
            progress(f"{step.dag_id} {step.first}: {run_id}")
            state = api.wait_run(step.dag_id, run_id, timeout=timeout)
            results.append(StepResult(step, run_id, state))
            if state != "success":
                raise BackfillError(f"{step.dag_id} run {run_id} for {step.first} ended {state}: see its task logs")
    return results


def as_dict(plan: Plan) -> dict[str, Any]:
    return asdict(plan)
