"""Airflow-side helpers shared by the DAG files: one Spark task factory, Assets, default args.

DAG files stay thin: they import from here and wire tasks. Nothing here does I/O at import time;
paths and settings are resolved when a task renders its templates, inside the worker.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator
from airflow.sdk import Asset, task
from airflow.timetables.interval import CronDataIntervalTimetable

from placerec.settings import PROJECT_ROOT

OWNER = "placerec"
KNOWN_TAGS = frozenset({"placerec", "ingest", "enrich", "train", "publish", "maintain", "demo"})

DEFAULT_ARGS: dict[str, Any] = {
    "owner": OWNER,
    "retries": 2,
    "retry_delay": timedelta(minutes=1),
    "retry_exponential_backoff": True,
    "execution_timeout": timedelta(hours=2),
}

# Airflow 3's "@daily" is a trigger timetable whose runs have empty data intervals; our tasks own
# a day each, so schedules are interval timetables: the run for day D covers [D, D+1) UTC.
DAILY = CronDataIntervalTimetable("0 0 * * *", timezone="UTC")

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


def table_asset(identifier: str) -> Asset:
    """The Airflow Asset for an Iceberg table ``namespace.name`` of the placerec catalog."""
    namespace, name = identifier.split(".", 1)
    return Asset(name=identifier, uri=f"iceberg://placerec/{namespace}/{name}", group="iceberg")


def _spark_jars() -> str:
    from placerec.dev.artifacts import spark_jars

    return ",".join(str(p) for p in spark_jars())


def _settings() -> Any:
    from placerec.settings import get_settings

    return get_settings()


# Jinja helpers, evaluated when the task renders (in the worker), never at parse time.
USER_DEFINED_MACROS = {"placerec_spark_jars": _spark_jars, "placerec_settings": _settings}


class PlacerecSparkSubmitOperator(SparkSubmitOperator):
    """spark-submit that hands the job the Airflow connections it names, resolved when the task runs.

    A connection defined in the UI or a secrets backend reaches the job as ``AIRFLOW_CONN_<ID>`` in
    the spark-submit process environment (never in a templated field, so the password is not
    rendered in the UI nor logged); one already given as an environment variable is left as it is.
    """

    def __init__(self, *, connections: tuple[str, ...] = (), **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.connections = connections

    def execute(self, context: Any) -> None:
        import os

        from airflow.sdk import BaseHook

        for conn_id in self.connections:
            key = f"AIRFLOW_CONN_{conn_id.upper()}"
            if key in os.environ:
                continue
            try:
                conn = BaseHook.get_connection(conn_id)
            except Exception:  # not defined: the job falls back to its PLACEREC_* settings
                self.log.info("no Airflow connection %s: the job uses its PLACEREC_* settings", conn_id)
                continue
            # this task's own process: spark-submit inherits it, nothing renders or logs it
            os.environ[key] = conn.as_json()
        super().execute(context)


def spark_job(
    task_id: str,
    job: str,
    args: list[str],
    outlets: list[Asset] | None = None,
    connections: tuple[str, ...] = (),
    **kwargs: Any,
) -> SparkSubmitOperator:
    """A spark-submit task running ``jobs/<job>.py`` with ``args`` through the ``spark_default`` connection."""
    return PlacerecSparkSubmitOperator(
        connections=connections,
        task_id=task_id,
        application=str(JOBS_DIR / f"{job}.py"),
        name=f"placerec-{job}",
        conn_id="spark_default",
        jars="{{ placerec_spark_jars() }}",
        conf={"spark.driver.memory": "{{ placerec_settings().spark_driver_memory }}"},
        application_args=args,
        outlets=outlets or [],
        **kwargs,
    )


def interval_from_context(
    params: dict[str, Any],
    data_interval_start: Any,
    data_interval_end: Any,
    triggering_asset_events: Any,
) -> dict[str, str]:
    """The data interval an asset-triggered (or manual) run works on, as ISO strings.

    Order: the ``start``/``end`` Params when given; else the run's own non-empty data interval
    (scheduled or backfill runs); else the span of the data intervals of the runs that produced the
    triggering asset events (Airflow 3 gives asset-triggered runs no interval of their own), or the
    interval an asset-triggered producer announced in the events' ``extra`` (see ``announce``).
    """
    if params.get("start"):
        start = _aware(params["start"])
        end = _aware(params["end"]) if params.get("end") else start + timedelta(days=1)
        return _checked(start, end)
    if data_interval_start is not None and data_interval_end is not None and data_interval_start < data_interval_end:
        return _checked(_aware(data_interval_start), _aware(data_interval_end))
    starts, ends = [], []
    for events in (triggering_asset_events or {}).values():
        for event in events:
            extra = getattr(event, "extra", None) or {}
            run = event.source_dag_run
            if extra.get("start") and extra.get("end"):  # announced by the producing DAG (``announce``)
                starts.append(_aware(extra["start"]))
                ends.append(_aware(extra["end"]))
            elif run is not None and run.data_interval_start is not None and run.data_interval_end is not None:
                starts.append(_aware(run.data_interval_start))
                ends.append(_aware(run.data_interval_end))
    if not starts:
        raise ValueError("no data interval: give the start (and end) Params, or let an ingest run trigger this DAG")
    return _checked(min(starts), max(ends))


def _aware(value: Any) -> datetime:
    from datetime import timezone

    parsed = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def _checked(start: datetime, end: datetime) -> dict[str, str]:
    if not start < end:
        raise ValueError(f"empty data interval [{start}, {end})")
    return {"start": start.isoformat(), "end": end.isoformat()}


def _run_interval(context: Any) -> dict[str, str]:
    return interval_from_context(
        dict(context.get("params") or {}),
        context.get("data_interval_start"),
        context.get("data_interval_end"),
        context.get("triggering_asset_events"),
    )


@task(task_id="resolve_interval")
def resolve_interval(**context: Any) -> dict[str, str]:
    """Task: the interval the DAG's Spark tasks template in (``ti.xcom_pull('resolve_interval')``)."""
    return _run_interval(context)


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
        interval = _run_interval(context)
        for asset in assets:
            context["outlet_events"][asset].extra = dict(interval)
        return dict(interval)

    return _announce()


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
