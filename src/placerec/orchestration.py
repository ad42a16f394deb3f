"""Airflow-side helpers shared by the DAG files: one Spark task factory, Assets, default args.

DAG files stay thin: they import from here and wire tasks. Nothing here does I/O at import time;
paths and settings are resolved when a task renders its templates, inside the worker.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta, timezone
from typing import Any

from airflow.sdk import Asset, BaseOperator, Param, task
from airflow.timetables.interval import CronDataIntervalTimetable, DeltaDataIntervalTimetable

from placerec.alerts import on_failure
from placerec.settings import PROJECT_ROOT

log = logging.getLogger(__name__)

OWNER = "placerec"
KNOWN_TAGS = frozenset({"placerec", "ingest", "enrich", "train", "publish", "maintain", "demo"})

DEFAULT_ARGS: dict[str, Any] = {
    "owner": OWNER,
    "retries": 2,
    "retry_delay": timedelta(minutes=1),
    "retry_exponential_backoff": True,
    # try numbers keep counting across reruns of an interval (a backfill with reprocess, a cleared
    # task), and the back-off doubles with each: uncapped, a day's fifth try waited 8-16 minutes
    "max_retry_delay": timedelta(minutes=3),
    "execution_timeout": timedelta(hours=2),
    # logs the failure in one line and posts it to PLACEREC_ALERT_WEBHOOK_URL when set (stdlib-only import)
    "on_failure_callback": on_failure,
}

# Airflow 3's "@daily" is a trigger timetable whose runs have empty data intervals; our tasks own
# a day each, so schedules are interval timetables: the run for day D covers [D, D+1) UTC.
DAILY = CronDataIntervalTimetable("0 0 * * *", timezone="UTC")
# the streaming micro-batches: runs with a 5-minute data interval of their own (not zero-length triggers)
EVERY_5_MINUTES = DeltaDataIntervalTimetable(timedelta(minutes=5))

# The resolved interval and run id, templated into a Spark task's arguments (after ``resolve_interval``).
INTERVAL_ARGS = [
    "--start",
    "{{ ti.xcom_pull(task_ids='resolve_interval')['start'] }}",
    "--end",
    "{{ ti.xcom_pull(task_ids='resolve_interval')['end'] }}",
    "--run-id",
    "{{ run_id }}",
]

# Where a spark-submit task picks up the library's job scripts.
JOBS_DIR = PROJECT_ROOT / "jobs"


# What a manual run of each asset-triggered DAG works on when its form's interval is left empty: the
# newest interval its upstream job completed (``ops.task_metrics``), i.e. the latest complete interval.
UPSTREAM_JOB = {
    "enrich_reviews": "ingest_events",
    "train_hybrid": "build_place_profiles",
    "publish_index": "train_hybrid",
}


def _day_param(title: str, description: str) -> Param:
    return Param(None, type=["null", "string"], format="date", title=title, section="Interval", description=description)


def interval_params(upstream: str) -> dict[str, Param]:
    """The ``start``/``end`` Params of a DAG whose manual runs default to the latest complete interval."""
    return {
        "start": _day_param(
            "First day",
            f"First day (UTC) of the interval to work on. Empty: the latest complete interval, the newest "
            f"one {upstream} finished (for a run triggered by Assets: the triggering runs' interval).",
        ),
        "end": _day_param("End day (exclusive)", "The day after the last one. Empty: one day after the first day."),
    }


def flag_param(description: str, title: str, section: str = "Run") -> Param:
    return Param(False, type="boolean", title=title, description=description, section=section)


def optional_text_param(description: str, title: str, section: str) -> Param:
    return Param(None, type=["null", "string"], title=title, description=description, section=section)


def optional_arg(param: str) -> str:
    """A Spark task argument from an optional Param: its value, or the empty string (the CLI's "not given")."""
    return f"{{{{ params.{param} if params.{param} is not none else '' }}}}"


def spark_conn_param() -> Param:
    """The Param every DAG with Spark tasks offers: which Spark they run on, for this run."""
    return Param(
        None,
        type=["null", "string"],
        title="Spark connection",
        section="Spark",
        description=(
            "Airflow connection the Spark tasks run through (empty: PLACEREC_SPARK_CONN_ID, by default "
            "spark_connect_default, the long-lived Spark Connect server): type spark_connect runs the job "
            "in the task through Spark Connect, type spark runs it with spark-submit on that master."
        ),
    )


def ingest_params() -> dict[str, Param]:
    """The Params of a DAG that runs ``ingest_events``: which landing root, which Spark."""
    return {
        "landing": optional_text_param(
            "Landing root to read (empty: the configured one, PLACEREC_LANDING_DIR).", "Landing root", "Input"
        ),
        "spark_conn_id": spark_conn_param(),
    }


def table_asset(identifier: str) -> Asset:
    """The Airflow Asset for an Iceberg table ``namespace.name`` of the placerec catalog."""
    namespace, name = identifier.split(".", 1)
    return Asset(name=identifier, uri=f"iceberg://placerec/{namespace}/{name}", group="iceberg")


# a task's connection roles -> the setting naming that connection's id
ROLES = {"llm": "llm_conn_id", "embeddings": "embeddings_conn_id", "opensearch": "opensearch_conn_id"}


class PlacerecSparkOperator(BaseOperator):
    """A placerec Spark job (the CLI command ``job`` with ``args``) on the Spark a connection names.

    Decided when the task runs, from the connection's type:

    * ``spark_connect`` (the default ``spark_connect_default``; also when that connection is not
      defined at all: the ``dev up`` server): the job runs in this task's process as a Spark Connect
      client, so the task pays for no JVM; Python UDFs run in the server's workers;
    * ``spark``: ``spark-submit jobs/<job>.py`` to the connection's master (standalone, YARN,
      Kubernetes), the cluster road.

    The Airflow connections of the roles in ``connections`` (:data:`ROLES`: ``llm``, ``embeddings``,
    ``opensearch``; each the connection its ``<role>_conn_id`` setting names) reach the job as
    ``AIRFLOW_CONN_<ID>`` in the process environment, resolved here through Airflow (its metadata
    database, secrets backends) and never in a templated field, so a password is not rendered in the
    UI nor logged; one already given as an environment variable is left as it is, one defined nowhere
    leaves the job on its settings.
    """

    template_fields: Sequence[str] = ("args", "conn_id")

    def __init__(
        self, *, job: str, args: list[str], conn_id: str = "", connections: tuple[str, ...] = (), **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        unknown = set(connections) - set(ROLES)
        if unknown:
            raise ValueError(f"connections are roles ({', '.join(ROLES)}), not {sorted(unknown)}")
        self.job = job
        self.args = args
        self.conn_id = conn_id
        self.connections = connections
        self._submit_hook: Any = None

    def execute(self, context: Any) -> None:
        from placerec.settings import get_settings

        settings = get_settings()
        for role in self.connections:
            self._export_connection(str(getattr(settings, ROLES[role])))
        conn_id = self.conn_id or str((context.get("params") or {}).get("spark_conn_id") or "")
        conn_id = conn_id or settings.spark_conn_id
        conn = self._connection(conn_id)
        kind = conn.conn_type if conn is not None else "spark_connect"
        if kind == "spark_connect":
            self._run_connect(conn_id if conn is not None else None)
        elif kind == "spark":
            self._spark_submit(conn_id)
        else:
            raise ValueError(f"Spark connection {conn_id!r} has type {kind!r}: expected spark_connect or spark")

    def _connection(self, conn_id: str) -> Any:
        from airflow.sdk import BaseHook

        try:
            return BaseHook.get_connection(conn_id)
        except Exception:  # not defined: the embedded default (the `dev up` Spark Connect server)
            self.log.info("no Airflow connection %s: using PLACEREC_SPARK_REMOTE or the dev server", conn_id)
            return None

    def _export_connection(self, conn_id: str) -> None:
        import os

        key = f"AIRFLOW_CONN_{conn_id.upper()}"
        if key in os.environ:
            return
        conn = self._connection(conn_id)
        if conn is not None:  # this task's own process (and spark-submit's): nothing renders or logs it
            os.environ[key] = conn.as_json()

    def _run_connect(self, conn_id: str | None) -> None:
        import os

        from placerec.cli import main
        from placerec.settings import get_settings

        if conn_id is not None:
            from airflow.providers.apache.spark.hooks.spark_connect import SparkConnectHook

            # the task's own process only; a token in the URL is never logged
            os.environ["PLACEREC_SPARK_REMOTE"] = SparkConnectHook(conn_id).get_connection_url()
        get_settings.cache_clear()
        self.log.info("running placerec %s through Spark Connect", self.job.replace("_", "-"))
        main([self.job.replace("_", "-"), *self.args], prog_name="placerec", standalone_mode=False)

    def _spark_submit(self, conn_id: str) -> None:
        from airflow.providers.apache.spark.hooks.spark_submit import SparkSubmitHook

        from placerec.maven import spark_jars
        from placerec.settings import get_settings

        settings = get_settings()
        self._submit_hook = SparkSubmitHook(
            conn_id=conn_id,
            name=f"placerec-{self.job}",
            jars=",".join(str(p) for p in spark_jars(settings)),
            conf={"spark.driver.memory": settings.spark_driver_memory},
            application_args=self.args,
        )
        self._submit_hook.submit(str(JOBS_DIR / f"{self.job}.py"))

    def on_kill(self) -> None:
        if self._submit_hook is not None:
            self._submit_hook.on_kill()
            return
        from placerec.spark import interrupt_sessions

        interrupt_sessions()


def spark_job(
    task_id: str,
    job: str,
    args: list[str],
    outlets: list[Asset] | None = None,
    connections: tuple[str, ...] = (),
    **kwargs: Any,
) -> PlacerecSparkOperator:
    """A task running the placerec job ``job`` (``placerec <job>`` / ``jobs/<job>.py``) with ``args``."""
    return PlacerecSparkOperator(
        task_id=task_id, job=job, args=args, connections=connections, outlets=outlets or [], **kwargs
    )


def interval_from_context(
    params: dict[str, Any],
    data_interval_start: Any,
    data_interval_end: Any,
    triggering_asset_events: Any,
    latest: Callable[[], tuple[datetime, datetime]] | None = None,
    done: Callable[[datetime, datetime, datetime | None], bool] | None = None,
) -> dict[str, str]:
    """The data interval an asset-triggered (or manual) run works on, as ISO strings.

    Order: the ``start``/``end`` Params when given; else the run's own non-empty data interval
    (scheduled or backfill runs); else the span of the data intervals of the runs that produced the
    triggering asset events (Airflow 3 gives asset-triggered runs no interval of their own), or the
    interval an asset-triggered producer announced in the events' ``extra`` (see ``announce``); else
    (a manual run with an empty form) ``latest()``, the latest complete interval.

    Airflow hands an asset-triggered run every event since the DAG's previous asset-triggered run,
    paused time included; ``done(start, end, emitted_at)`` tells the events whose interval this DAG
    already completed after they were emitted (a backfill's, a manual run's): those are left out, so
    the run after a backfill covers only what is new. If every event is done, the newest one counts.
    """
    if params.get("start"):
        start = _aware(params["start"])
        end = _aware(params["end"]) if params.get("end") else start + timedelta(days=1)
        return _checked(start, end)
    if data_interval_start is not None and data_interval_end is not None and data_interval_start < data_interval_end:
        return _checked(_aware(data_interval_start), _aware(data_interval_end))
    spans: list[tuple[datetime, datetime, datetime | None]] = []
    for events in (triggering_asset_events or {}).values():
        for event in events:
            extra = getattr(event, "extra", None) or {}
            run = event.source_dag_run
            emitted = getattr(event, "timestamp", None)
            emitted = _aware(emitted) if emitted is not None else None
            if extra.get("start") and extra.get("end"):  # announced by the producing DAG (``announce``)
                spans.append((_aware(extra["start"]), _aware(extra["end"]), emitted))
            elif run is not None and run.data_interval_start is not None and run.data_interval_end is not None:
                spans.append((_aware(run.data_interval_start), _aware(run.data_interval_end), emitted))
    if spans:
        new = [span for span in spans if done is None or not done(*span)]
        if not new:
            newest = max(spans, key=lambda span: (span[2] is not None, span[2] or span[1], span[1]))
            new = [newest]
        return _checked(min(span[0] for span in new), max(span[1] for span in new))
    if latest is None:
        raise ValueError("no data interval: give the start (and end) Params, or let an ingest run trigger this DAG")
    return _checked(*latest())


def _aware(value: Any) -> datetime:
    from datetime import timezone

    parsed = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def _checked(start: datetime, end: datetime) -> dict[str, str]:
    if not start < end:
        raise ValueError(f"empty data interval [{start}, {end})")
    return {"start": start.isoformat(), "end": end.isoformat()}


def latest_complete_interval(upstream: str) -> tuple[datetime, datetime]:
    """The newest interval ``upstream`` completed, from its rows in ``ops.task_metrics``.

    ``ingest_events`` counts only intervals it found landing files for; ``train_hybrid`` only those
    whose model was promoted (what ``publish_index`` serves).
    """
    from placerec.catalog import get_catalog

    if "'" in upstream:
        raise ValueError(f"job name {upstream!r} may not contain a quote")
    table = get_catalog().load_table("ops.task_metrics")
    rows = table.scan(
        row_filter=f"job = '{upstream}'", selected_fields=("interval_start", "interval_end", "details")
    ).to_arrow()
    done = []
    for start, end, details in zip(*(rows.column(c).to_pylist() for c in rows.column_names), strict=True):
        found = json.loads(details or "{}")
        if start is None or end is None or found.get("skipped") or found.get("dry_run"):
            continue
        if upstream == "train_hybrid" and not found.get("promoted"):
            continue
        done.append((_aware(start), _aware(end)))
    if not done:
        raise ValueError(
            f"no data interval: {upstream} has not completed one yet (ops.task_metrics); "
            "give the start (and end) Params, or run the upstream DAG first"
        )
    return max(done, key=lambda interval: (interval[1], interval[0]))


def completed_after(job: str) -> Callable[[datetime, datetime, datetime | None], bool]:
    """``done(start, end, emitted_at)`` for :func:`interval_from_context`: ``job`` recorded a run whose
    interval covers ``[start, end)`` after ``emitted_at`` (``ops.task_metrics``)."""
    from placerec.catalog import get_catalog
    from placerec.tables import equals

    rows = (
        get_catalog()
        .load_table("ops.task_metrics")
        .scan(
            row_filter=equals("job", job), selected_fields=("interval_start", "interval_end", "recorded_at", "details")
        )
        .to_arrow()
        .to_pylist()
    )
    runs = [
        (_aware(r["interval_start"]), _aware(r["interval_end"]), _aware(r["recorded_at"]))
        for r in rows
        if r["interval_start"]
        and r["interval_end"]
        and r["recorded_at"]
        and '"dry_run": true' not in (r["details"] or "")
    ]

    def done(start: datetime, end: datetime, emitted_at: datetime | None) -> bool:
        if emitted_at is None:
            return False
        return any(s <= start and end <= e and at > emitted_at for s, e, at in runs)

    return done


def _run_interval(context: Any, upstream: str | None = None, own: str | None = None) -> dict[str, str]:
    return interval_from_context(
        dict(context.get("params") or {}),
        context.get("data_interval_start"),
        context.get("data_interval_end"),
        context.get("triggering_asset_events"),
        latest=(lambda: latest_complete_interval(upstream)) if upstream else None,
        done=completed_after(own) if own and context.get("triggering_asset_events") else None,
    )


def resolve_interval(upstream: str, own: str | None = None) -> Any:
    """Task: the interval the DAG's Spark tasks template in (``ti.xcom_pull('resolve_interval')``).

    A manual run with an empty form works on the newest interval ``upstream`` completed. An
    asset-triggered run leaves out the events whose interval ``own`` (the DAG's job that completes an
    interval) already completed after they were emitted.
    """

    @task(task_id="resolve_interval")
    def _resolve(**context: Any) -> dict[str, str]:
        interval = _run_interval(context, upstream, own)
        log.info("data interval %s .. %s", interval["start"], interval["end"])
        return interval

    return _resolve()


STREAM_GRACE = timedelta(minutes=10)
"""A micro-batch this soon after midnight UTC takes the day before too (the serving API seals the
files of a day up to ``serve_rotate_s`` after it ended)."""


def stream_days(start: datetime | None, end: datetime | None, now: datetime) -> dict[str, str]:
    """The whole UTC days a micro-batch re-ingests: from the day ``STREAM_GRACE`` before its interval
    starts to the end of the day its interval ends in (a manual run without an interval: ``now``)."""
    # plain datetimes: Airflow passes pendulum's, whose replace(...) below drops the UTC offset from
    # isoformat() ("2026-12-04T00:00:00"), which pyiceberg then refuses for a timestamptz column
    start = _plain_utc(start or now) - STREAM_GRACE
    end = _plain_utc(end or now) - timedelta(microseconds=1)
    first = start.replace(hour=0, minute=0, second=0, microsecond=0)
    last = end.replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(days=1)
    return {"start": first.isoformat(), "end": max(last, first + timedelta(days=1)).isoformat()}


def _plain_utc(value: datetime) -> datetime:
    """``value`` as a standard-library UTC datetime (not a subclass such as pendulum's)."""
    return datetime.fromtimestamp(value.timestamp(), tz=timezone.utc)


def resolve_days() -> Any:
    """Task ``resolve_interval`` of a micro-batch DAG: :func:`stream_days` of its run."""

    @task(task_id="resolve_interval")
    def _days(**context: Any) -> dict[str, str]:
        days = stream_days(
            context.get("data_interval_start"), context.get("data_interval_end"), datetime.now(timezone.utc)
        )
        log.info("micro-batch days %s .. %s", days["start"], days["end"])
        return days

    return _days()


def record_online_ctr() -> Any:
    """Task: online CTR per serving variant over the micro-batch's days into ``ops.online_ctr``
    (``placerec ab-report --record``; pyiceberg only, no Spark)."""

    @task(task_id="record_online_ctr")
    def _record(**context: Any) -> dict[str, Any]:
        from placerec.serve.online import ctr_by_variant, offline_runs, record_ctr, served_events, with_offline
        from placerec.serve.variants import parse_variants
        from placerec.settings import get_settings

        days = context["ti"].xcom_pull(task_ids="resolve_interval")
        start, end = datetime.fromisoformat(days["start"]), datetime.fromisoformat(days["end"])
        s = get_settings()
        order = [v.name for v in parse_variants(s.serve_variants)]
        rows = with_offline(ctr_by_variant(served_events(start, end, s), order), offline_runs(s))
        record_ctr(rows, start, end, s)
        return {r.variant: {"impressions": r.impressions, "clicks": r.clicks, "ctr": round(r.ctr, 4)} for r in rows}

    return _record()


@task.short_circuit(task_id="unless_dry_run")
def unless_dry_run(**context: Any) -> bool:
    """Task: stop the downstream tasks of a dry run (they would build from data the dry run did not write)."""
    return not (context.get("params") or {}).get("dry_run", False)


def announce(task_id: str, assets: list[Asset]) -> Any:
    """Task: emit ``assets`` with the run's interval in the events' ``extra``.

    A DAG that is itself asset-triggered has no data interval for its consumers to inherit; this
    hands the resolved one on (``interval_from_context`` reads it). The interval is worked out as
    ``resolve_interval`` does, so DAGs without that task (scheduled ones) announce theirs too.
    """

    @task(task_id=task_id, outlets=assets)
    def _announce(**context: Any) -> dict[str, str]:
        # the interval resolve_interval chose (a manual run's may come from ops.task_metrics), else the run's own
        interval = context["ti"].xcom_pull(task_ids="resolve_interval") or _run_interval(context)
        for asset in assets:
            context["outlet_events"][asset].extra = dict(interval)
        return dict(interval)

    return _announce()


def check_data_quality(job: str, task_id: str = "check_data_quality") -> Any:
    """Task: the data-quality checks of ``job`` for the run's interval (:mod:`placerec.checks`).

    A failed check fails the task at once, with the checks' message: a retry would judge the same data.
    Returns every result (pushed as XCom).
    """

    @task(task_id=task_id)
    def _check(**context: Any) -> list[dict[str, Any]]:
        from airflow.sdk.exceptions import AirflowFailException

        from placerec.checks import DataQualityError, run_checks

        interval = context["ti"].xcom_pull(task_ids="resolve_interval") or _run_interval(context)
        try:
            results = run_checks(job, _aware(interval["start"]), _aware(interval["end"]))
        except DataQualityError as exc:
            raise AirflowFailException(str(exc)) from exc
        for result in results:
            log.info("%s: %s", result.name, result.message)
        return [result.as_dict() for result in results]

    return _check()


@task.short_circuit(task_id="if_ingested")
def if_ingested(**context: Any) -> bool:
    """Task: go on only if this run's ``ingest_events`` found landing files (``ops.task_metrics``).

    An interval with nothing delivered is left untouched; announcing it would start enrichment (and
    training behind it) over data that did not change. Airflow creates such a run for the latest day
    whenever the DAG is unpaused.
    """
    from placerec.catalog import get_catalog

    run_id = context["run_id"]  # Airflow run ids are [A-Za-z0-9_.~:+-]: safe inside quotes
    table = get_catalog().load_table("ops.task_metrics")
    where = f"job = 'ingest_events' and run_id = '{run_id}'"
    rows = table.scan(row_filter=where, selected_fields=("details",)).to_arrow()
    if not rows.num_rows:
        raise ValueError(f"no ingest_events metrics for run {run_id}")
    return any(not json.loads(d or "{}").get("skipped") for d in rows.column("details").to_pylist())


@task.short_circuit(task_id="if_promoted")
def if_promoted(**context: Any) -> bool:
    """Task: go on only if this interval's ``train_hybrid`` run promoted its model (``ops.task_metrics``)."""
    from placerec.catalog import get_catalog

    interval = context["ti"].xcom_pull(task_ids="resolve_interval")
    start = _aware(interval["start"])
    table = get_catalog().load_table("ops.task_metrics")
    rows = table.scan(row_filter="job = 'train_hybrid'", selected_fields=("interval_start", "details")).to_arrow()
    for row_start, details in zip(
        rows.column("interval_start").to_pylist(), rows.column("details").to_pylist(), strict=True
    ):
        if row_start is not None and _aware(row_start) == start:
            found = json.loads(details or "{}")
            context["ti"].xcom_push(key="model_version", value=found.get("model_version"))
            return bool(found.get("promoted"))
    raise ValueError(f"no train_hybrid metrics for the interval starting {start.isoformat()}")


def announce_promoted(task_id: str, asset: Asset) -> Any:
    """Task (after ``if_promoted``): emit ``asset`` with the interval and the promoted model version."""

    @task(task_id=task_id, outlets=[asset])
    def _announce(**context: Any) -> dict[str, str]:
        ti = context["ti"]
        extra = {
            **ti.xcom_pull(task_ids="resolve_interval"),
            "model_version": ti.xcom_pull(task_ids="if_promoted", key="model_version"),
        }
        context["outlet_events"][asset].extra = extra
        return extra

    return _announce()
