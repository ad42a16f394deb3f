"""Airflow-side helpers shared by the DAG files: one Spark task factory, Assets, default args.

DAG files stay thin: they import from here and wire tasks. Nothing here does I/O at import time;
paths and settings are resolved when a task renders its templates, inside the worker.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator
from airflow.sdk import Asset
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


def spark_job(
    task_id: str, job: str, args: list[str], outlets: list[Asset] | None = None, **kwargs: Any
) -> SparkSubmitOperator:
    """A spark-submit task running ``jobs/<job>.py`` with ``args`` through the ``spark_default`` connection."""
    return SparkSubmitOperator(
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
