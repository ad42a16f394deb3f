"""
### stream_events

The streaming path beside the daily batch: every 5 minutes, the landing files of the current UTC day
(and of the day before, when the 5 minutes cross midnight) into `raw.events`, so what the serving API
(`placerec serve`) logged (impressions) and heard (`POST /feedback`: clicks and the rest of the
funnel) is in `raw.events` within minutes of happening: the API seals its log files at most
`PLACEREC_SERVE_ROTATE_S` (30 s) after writing them; a run then takes them.

Each run is the very `ingest_events` job for the whole day (one micro-batch = re-ingesting the day
from every file landed so far; in its first 10 minutes after midnight UTC, the day before as well;
a manual run: the day it runs): it overwrites the day's rows of `raw.events` from the files, with rows
de-duplicated by `event_id`, in the commit protocol that makes an interval visible all at once. So:

* exactly once across restarts: a killed run leaves the previous complete state visible, and the next
  run (or its retry) rebuilds the day from the files;
* the stream and the daily batch never count an event twice: `ingest_events` for the same day is the
  same function of the same files, and the two take turns on the ingest lock.

Then `record_online_ctr` replaces those days' rows of `ops.online_ctr` (CTR per serving variant, as
`placerec ab-report --record` computes it). It neither runs the data-quality checks (a day half over
is short of its trailing median by design: the daily `ingest_events` run checks the whole day) nor
announces the `raw.*` Assets (a model is not retrained every 5 minutes). Paused when created:
unpause it while the serving API runs. Same code as `placerec ingest-events --start <day>` at a shell.
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import DAG

from placerec.orchestration import (
    DEFAULT_ARGS,
    EVERY_5_MINUTES,
    INTERVAL_ARGS,
    ingest_params,
    optional_arg,
    record_online_ctr,
    resolve_days,
    spark_job,
)

with DAG(
    dag_id="stream_events",
    description="Every 5 minutes: today's landing files (served impressions, feedback) → raw.events",
    doc_md=__doc__,
    schedule=EVERY_5_MINUTES,
    start_date=pendulum.datetime(2026, 12, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    is_paused_upon_creation=True,
    default_args={**DEFAULT_ARGS, "retries": 1, "retry_delay": timedelta(seconds=30)},
    dagrun_timeout=timedelta(minutes=30),
    tags=["placerec", "ingest"],
    params=ingest_params(),
):
    ingest = spark_job(
        task_id="ingest_today",
        job="ingest_events",
        args=[*INTERVAL_ARGS, "--landing", optional_arg("landing")],
    )
    resolve_days() >> ingest >> record_online_ctr()
