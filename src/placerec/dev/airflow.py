"""Airflow 3 ``standalone`` (API server, scheduler, DAG processor, triggerer) with LocalExecutor.

The metadata DB is the local PostgreSQL of :mod:`placerec.dev.postgres` (unix socket, peer auth, no password):
on SQLite the scheduler crashes under concurrent writes and the API refuses to create backfills.
``airflow standalone`` creates/migrates the schema itself on start (``db.initdb()``).

:func:`airflow_env` is the single source of Airflow's configuration: the service, the tests and
``make demo`` all run ``airflow`` with exactly this environment (see :func:`airflow_cli`).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from placerec.dev import postgres
from placerec.dev.httpjson import ProbeError, request_json
from placerec.dev.process import LaunchSpec
from placerec.settings import PROJECT_ROOT, Settings, get_settings

PARALLELISM = 4
"""Task slots for LocalExecutor: a laptop/CI box also runs OpenSearch and Spark."""

DAG_REFRESH_SECONDS = 20
"""How often the DAG processor lists the dags folder, so a new DAG file shows up within ~30 s."""

SCHEDULER_IDLE_SLEEP_SECONDS = 0.5
"""Pause of an idle scheduler loop (Airflow's default is 1 s); see ``airflow_env``."""

ORPHANED_TASKS_CHECK_SECONDS = 30
"""How often the scheduler looks for task instances a dead scheduler left running (Airflow's default: 300 s).
After a crash, the first look of the new scheduler comes too early (the dead one's last heartbeat is under
30 s old); the next one resets the killed try, which then runs again. One small query each time."""

EXECUTION_API_RETRIES = 12
"""Attempts a task's supervisor makes at each Execution API call (Airflow's default: 5); see ``airflow_env``."""

COMPONENTS = ("metadatabase", "scheduler", "dag_processor", "triggerer")


def venv_bin() -> Path:
    """The ``bin`` folder of the environment we run in (``sys.prefix``: a venv's own, not its base)."""
    return Path(sys.prefix) / "bin"


def airflow_home(settings: Settings) -> Path:
    """AIRFLOW_HOME: airflow.cfg (with generated secrets) and task logs (an old SQLite ``airflow.db`` is unused)."""
    return settings.home / "airflow"


def airflow_env(settings: Settings | None = None, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """Complete environment for any ``airflow`` process of this project.

    Starts from ``base`` (default: our environment, so PATH/HOME/JAVA_HOME/PLACEREC_* pass through)
    and overrides the Airflow settings; environment variables beat airflow.cfg in Airflow.
    """
    settings = settings or get_settings()
    env = dict(os.environ if base is None else base)
    home = airflow_home(settings)
    api = settings.airflow_url
    env.update(
        {
            "AIRFLOW_HOME": str(home),
            # venv first: standalone starts its components as plain `airflow`, and tasks run spark-submit
            "PATH": os.pathsep.join([str(venv_bin()), env.get("PATH", "/usr/local/bin:/usr/bin:/bin")]),
            "AIRFLOW__CORE__DAGS_FOLDER": str(PROJECT_ROOT / "dags"),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(PROJECT_ROOT / "plugins"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__CORE__PARALLELISM": str(PARALLELISM),
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
            # dev mode: no login on a loopback-only instance, and no generated admin password to leak
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": str(settings.dev_mode),
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{settings.airflow_username}:admin",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords_file(settings)),
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{api}/execution/",
            # unix socket of the local PostgreSQL, peer auth: no password in the URL or anywhere else
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": postgres.sqlalchemy_url(settings, "psycopg2"),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_ASYNC": postgres.sqlalchemy_url(settings, "asyncpg"),
            "AIRFLOW__API__HOST": settings.airflow_host,
            "AIRFLOW__API__PORT": str(settings.airflow_port),
            "AIRFLOW__API__BASE_URL": api,
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": str(DAG_REFRESH_SECONDS),
            "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "30",
            # An idle scheduler loop waits this long before looking again; every task hand-over (a task
            # ends, the next is queued; a run ends, the next backfill run starts) waits for a loop.
            # Default 1 s; at 0.5 s a demo's ~60 hand-overs wait half as long (idle: ~5 % of a core, not ~3 %).
            "AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME": str(SCHEDULER_IDLE_SLEEP_SECONDS),
            # a crashed instance's running tries are retried within ~a minute of `dev up`, not five
            "AIRFLOW__SCHEDULER__ORPHANED_TASKS_CHECK_INTERVAL": str(ORPHANED_TASKS_CHECK_SECONDS),
            # A task's supervisor registers the try with the API server before anything runs. After a
            # restart the scheduler can queue a try while the API server is still starting (~30 s on a
            # busy box): with Airflow's 5 attempts (random waits under 1, 2, 4, 8 s; 5 s timeouts) the try
            # failed unrun and went up for retry, minutes of back-off later. 12 attempts with waits of up
            # to 15 s span one to three minutes.
            "AIRFLOW__WORKERS__EXECUTION_API_RETRIES": str(EXECUTION_API_RETRIES),
            "AIRFLOW__WORKERS__EXECUTION_API_RETRY_WAIT_MAX": "15",
            # the Spark tasks' default road: the long-lived Spark Connect server of `dev up`
            "AIRFLOW_CONN_SPARK_CONNECT_DEFAULT": json.dumps(
                {"conn_type": "spark_connect", "host": "sc://127.0.0.1", "port": settings.spark_connect_port}
            ),
            # the spark-submit road (spark_conn_id=spark_default); SparkSubmitHook: conn_type "spark" + host
            # without "://" and no port -> --master <host> verbatim
            "AIRFLOW_CONN_SPARK_DEFAULT": json.dumps({"conn_type": "spark", "host": settings.spark_master}),
            "PLACEREC_HOME": str(settings.home),
        }
    )
    return env


def airflow_cli(
    args: Sequence[str],
    *,
    settings: Settings | None = None,
    check: bool = True,
    capture_output: bool = True,
    timeout: float | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run the venv's ``airflow`` with :func:`airflow_env`, e.g. ``airflow_cli(["dags", "unpause", "x"])``."""
    settings = settings or get_settings()
    airflow_home(settings).mkdir(parents=True, exist_ok=True)
    return subprocess.run(
        [str(venv_bin() / "airflow"), *args],
        env=airflow_env(settings),
        check=check,
        capture_output=capture_output,
        text=True,
        timeout=timeout,
    )


def passwords_file(settings: Settings) -> Path:
    """Airflow's users' passwords (outside dev mode): written from ``airflow_password``, else generated by Airflow."""
    return airflow_home(settings) / "passwords.json"


def install(settings: Settings) -> None:
    """Airflow comes with the venv; only its home folder is needed (standalone migrates the PostgreSQL DB)."""
    if not (venv_bin() / "airflow").is_file():
        raise RuntimeError(f"airflow not found in {venv_bin()}: run `uv sync`")
    home = airflow_home(settings)
    home.mkdir(parents=True, exist_ok=True)
    home.chmod(0o700)  # airflow.cfg holds the generated fernet key and JWT secret
    if settings.airflow_password:
        write_password(settings)


def write_password(settings: Settings) -> None:
    """Put ``airflow_password`` into :func:`passwords_file` (owner-only), where Airflow's login reads it."""
    path = passwords_file(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600)
    path.chmod(0o600)
    path.write_text(json.dumps({settings.airflow_username: settings.airflow_password}))


def launch_spec(settings: Settings) -> LaunchSpec:
    """``airflow standalone`` in the foreground, logging to our log file."""
    env = airflow_env(settings)
    env["NO_COLOR"] = "1"  # plain log file without ANSI colour codes
    return LaunchSpec(argv=(str(venv_bin() / "airflow"), "standalone"), env=env, cwd=airflow_home(settings))


def summarize_health(health: Mapping[str, object]) -> tuple[bool, str]:
    """Healthy when every component in :data:`COMPONENTS` reports ``healthy``; detail lists each status."""
    parts = []
    ok = True
    for name in COMPONENTS:
        info = health.get(name)
        status = info.get("status") if isinstance(info, Mapping) else None
        ok = ok and status == "healthy"
        parts.append(f"{name}={status or 'missing'}")
    return ok, ", ".join(parts)


def probe(settings: Settings) -> tuple[bool, str]:
    """Ask the API server's public health endpoint about every component."""
    try:
        # generous: on a loaded 2-core machine a healthy API server can take seconds to answer
        health = request_json(f"{settings.airflow_url}/api/v2/monitor/health", timeout=20)
    except ProbeError as exc:
        return False, str(exc)
    if not isinstance(health, Mapping):
        return False, f"unexpected health answer: {health!r}"[:200]
    return summarize_health(health)
