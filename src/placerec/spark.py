"""Spark sessions for every road: Iceberg runtime, the JDBC catalog shared with pyiceberg, UTC.

Which Spark a job runs on is one setting, ``PLACEREC_SPARK_REMOTE`` (or the Airflow connection
``PLACEREC_SPARK_CONN_ID`` names):

* empty (the embedded default): the long-lived Spark Connect server of ``placerec dev up``; a job's
  session is opened and closed in well under a second, the JVM and its warm code stay;
* ``sc://host:port``: any other Spark Connect endpoint (a cluster's);
* ``local``: an in-process Spark Connect server on ``PLACEREC_SPARK_MASTER`` (tests, no service);
* ``classic``: a classic in-process SparkSession (benchmarks that read the JVM's own counters).

Under ``spark-submit`` (a cluster road: standalone, YARN, Kubernetes) the session is always classic,
its master and jars taken from the command line. Every road gets the same configuration: what a
Connect server must be started with (:func:`server_conf`: static settings) plus what each session
sets for itself (:func:`session_conf`: the catalog, time zone, shuffle width), so one long-lived
server can serve several state folders (a test's private catalog beside the demo's).
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import sqlite3
import sys
import warnings
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import urlsplit

from placerec.settings import Settings, get_settings

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

log = logging.getLogger(__name__)

SQLITE_BUSY_TIMEOUT_MS = 30_000
CONNECT_SERVER_CLASS = "org.apache.spark.sql.connect.service.SparkConnectServer"
CONNECT_PROBE_TIMEOUT_S = 3.0
JOB_RETRIES = 6
"""Retries of an unavailable Connect server within a job: back-off from 50 ms x4, about a minute in all."""


class SparkUnavailable(RuntimeError):
    """The configured Spark Connect endpoint does not answer."""


def session_conf(settings: Settings | None = None) -> dict[str, str]:
    """Runtime SQL settings a session may set for itself, even on a shared Connect server.

    The catalog is one of them: Spark creates a session's catalogs lazily from its own conf.
    """
    settings = settings or get_settings()
    cat = f"spark.sql.catalog.{settings.catalog_name}"
    # Spark and pyiceberg must name the catalog alike: JdbcCatalog rows are keyed by catalog name.
    conf = {
        cat: "org.apache.iceberg.spark.SparkCatalog",
        f"{cat}.catalog-impl": "org.apache.iceberg.jdbc.JdbcCatalog",
        f"{cat}.uri": settings.catalog_jdbc_uri,
        f"{cat}.warehouse": settings.warehouse_uri,
        f"{cat}.jdbc.schema-version": "V1",
        # pyiceberg and other sessions commit to the same tables: never serve a stale cached snapshot.
        f"{cat}.cache-enabled": "false",
        # pyiceberg creates the catalog tables (schema v1). Iceberg's own check reads JDBC metadata
        # and leaves that result set open, which on SQLite pins the pooled connection to an old
        # snapshot: the session would never see later commits by other processes.
        f"{cat}.jdbc.init-catalog-tables": "false",
        "spark.sql.defaultCatalog": settings.catalog_name,
        "spark.sql.session.timeZone": "UTC",
        "spark.sql.shuffle.partitions": str(settings.spark_shuffle_partitions),
    }
    if settings.catalog_jdbc_uri.startswith("jdbc:sqlite:"):
        conf[f"{cat}.jdbc.busy_timeout"] = str(SQLITE_BUSY_TIMEOUT_MS)
        conf[f"{cat}.jdbc.journal_mode"] = "WAL"
    return conf


def server_conf(settings: Settings | None = None) -> dict[str, str]:
    """Static settings: fixed when the JVM starts (a Connect server's command line, or spark-submit's).

    The session settings are included as the server's defaults, so a plain Connect client sees the
    state folder's catalog too; placerec's own sessions set theirs anyway.
    """
    settings = settings or get_settings()
    return {
        "spark.sql.extensions": "org.apache.iceberg.spark.extensions.IcebergSparkSessionExtensions",
        "spark.ui.enabled": "false",
        "spark.ui.showConsoleProgress": "false",
        "spark.driver.extraJavaOptions": "-Duser.timezone=UTC",
        "spark.executor.extraJavaOptions": "-Duser.timezone=UTC",
        **session_conf(settings),
    }


def spark_conf(settings: Settings | None = None) -> dict[str, str]:
    """Every property a placerec Spark needs, whichever road it runs on (classic sessions set them all)."""
    return server_conf(settings)


SMALL_MACHINE_CONF = {
    # One JVM on a couple of cores runs many short queries over small data: whole-stage code
    # generation costs more CPU to compile than it saves, and adaptive re-planning after every
    # shuffle adds a round per stage. Measured on the unit Spark tests (2 cores): ~7% less wall
    # time. Runtime SQL settings, so a session may turn them back on for a large job.
    "spark.sql.adaptive.enabled": "false",
    "spark.sql.codegen.wholeStage": "false",
}
SMALL_MACHINE_JAVA_OPTIONS = "-Xss16m"
"""16 MB thread stacks (reserved, committed only as used): a task of an iterative job (ALS: every
iteration deepens the lineage it deserialises) overflowed the default 1 MB with C1-compiled frames,
which in a local-mode server ends the whole JVM. The optimising JIT (C2) stays on: C1 alone made
the first short jobs of a fresh JVM cheaper, but on the long-lived server it made the train job's
ALS fits and solves twice as slow (the three splits 10.5 / 8.4 / 4.8 s with C2, 19.9 / 16.3 / 9.8 s
without) and ingest no faster."""


def embedded_conf(settings: Settings | None = None) -> dict[str, str]:
    """:func:`spark_conf` for a Spark that placerec starts itself on ``spark_master``.

    A ``local`` master (one machine) also gets :data:`SMALL_MACHINE_CONF`; spark-submit's cluster
    roads never do (their master and JVM options come from the command line).
    """
    settings = settings or get_settings()
    conf = spark_conf(settings)
    if settings.spark_master.startswith("local"):
        conf |= SMALL_MACHINE_CONF
        key = "spark.driver.extraJavaOptions"
        conf[key] = f"{conf[key]} {SMALL_MACHINE_JAVA_OPTIONS}"
    return conf


def connect_server_argv(settings: Settings, jars: list[Path], spark_submit: Path) -> list[str]:
    """``spark-submit`` command line of the long-lived Spark Connect server, bound to 127.0.0.1 only."""
    conf = {
        **embedded_conf(settings),
        "spark.connect.grpc.binding.address": "127.0.0.1",
        "spark.connect.grpc.binding.port": str(settings.spark_connect_port),
        "spark.driver.host": "127.0.0.1",
        "spark.driver.bindAddress": "127.0.0.1",
        # one Python daemon per session that ran a UDF, never stopped by Spark: ours ends when idle
        "spark.python.daemon.module": "placerec.spark_daemon",
    }
    argv = [
        str(spark_submit),
        "--class",
        CONNECT_SERVER_CLASS,
        "--name",
        "placerec-spark-connect",
        "--master",
        settings.spark_master,
        "--driver-memory",
        settings.spark_driver_memory,
        "--jars",
        ",".join(str(p) for p in jars),
    ]
    for key, value in conf.items():
        argv += ["--conf", f"{key}={value}"]
    return argv


def ensure_catalog_store(settings: Settings) -> None:
    """The SQL catalog's own tables exist (pyiceberg creates them; Spark is told not to, see above).

    On the default SQLite catalog a glance at the file answers it without importing pyiceberg.
    """
    if settings.catalog_sqlalchemy_uri.startswith("sqlite:///") and settings.catalog_db.is_file():
        with sqlite3.connect(settings.catalog_db, timeout=SQLITE_BUSY_TIMEOUT_MS / 1000) as conn:
            found = conn.execute(
                "SELECT count(*) FROM sqlite_master WHERE type = 'table' "
                "AND name IN ('iceberg_tables', 'iceberg_namespace_properties')"
            ).fetchone()[0]
        if found == 2:
            return
    from placerec.catalog import get_catalog

    get_catalog(settings)


def check_reachable(url: str, timeout: float = CONNECT_PROBE_TIMEOUT_S) -> None:
    """Raise :class:`SparkUnavailable` unless something listens at the Connect URL's host and port.

    The Connect client itself retries an absent server for minutes before it gives up.
    """
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 15002
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return
    except OSError as exc:
        raise SparkUnavailable(
            f"Spark Connect at sc://{host}:{port} does not answer ({exc.strerror or exc}): start it with "
            "`placerec dev up`, or set PLACEREC_SPARK_REMOTE=local to run Spark inside this process"
        ) from None


def get_spark(app_name: str, settings: Settings | None = None, jars: list[Path] | None = None) -> SparkSession:
    """A new SparkSession for ``app_name`` on the configured road (see the module docstring)."""
    settings = settings or get_settings()
    ensure_catalog_store(settings)
    # Python workers of an in-process Spark must import placerec: run them on this interpreter.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    remote = settings.spark_remote.strip()
    if "PYSPARK_GATEWAY_PORT" in os.environ or remote == "classic":
        return _classic(app_name, settings, jars)
    if remote == "local":
        return _local_connect(app_name, settings, jars)
    return _connect(app_name, settings)


def _classic(app_name: str, settings: Settings, jars: list[Path] | None) -> SparkSession:
    from pyspark.sql import SparkSession

    # spark-submit starts the JVM first and hands its gateway to Python through this variable.
    submitted = "PYSPARK_GATEWAY_PORT" in os.environ
    builder = SparkSession.builder.appName(app_name)
    for key, value in (spark_conf(settings) if submitted else embedded_conf(settings)).items():
        builder = builder.config(key, value)
    if not submitted:
        builder = (
            builder.master(settings.spark_master)
            .config("spark.jars", _jar_list(settings, jars))
            .config("spark.driver.memory", settings.spark_driver_memory)
        )
    return builder.getOrCreate()


def _local_connect(app_name: str, settings: Settings, jars: list[Path] | None) -> SparkSession:
    """pyspark's own in-process Connect server: the Connect protocol and semantics, no service needed."""
    from pyspark.sql import SparkSession

    builder = SparkSession.builder.remote(settings.spark_master).appName(app_name)
    conf = {
        **embedded_conf(settings),
        "spark.jars": _jar_list(settings, jars),
        "spark.driver.memory": settings.spark_driver_memory,
        "spark.driver.host": "127.0.0.1",
        "spark.driver.bindAddress": "127.0.0.1",
        # loopback and an ephemeral port: beside the `dev up` server and other test processes
        # (the client asks the JVM which port it got)
        "spark.connect.grpc.binding.address": "127.0.0.1",
        "spark.connect.grpc.binding.port": "0",
    }
    for key, value in conf.items():
        builder = builder.config(key, value)
    with warnings.catch_warnings():
        # pyspark starts the server with every setting, then offers them to the session too, where
        # the static ones are refused with a warning each: expected, they are in force already
        warnings.filterwarnings("ignore", message="Failed to set spark", category=UserWarning)
        return builder.getOrCreate()


_OPEN: weakref.WeakSet[SparkSession] = weakref.WeakSet()


def interrupt_sessions() -> None:
    """Stop what this process's Connect sessions run on the server (a killed task leaves no query behind)."""
    for session in list(_OPEN):
        try:
            session.interruptAll()
        except Exception as exc:  # the session may be closing already
            log.warning("could not interrupt a Spark Connect session: %s", exc)


def _connect(app_name: str, settings: Settings) -> SparkSession:
    from pyspark.sql import SparkSession

    url = settings.spark_connect_url
    check_reachable(url)
    base = url.rstrip("/")
    agent = f"user_agent=placerec-{app_name}"  # names the job in the server's log
    builder = SparkSession.builder.remote(f"{base};{agent}" if ";" in base else f"{base}/;{agent}")
    for key, value in session_conf(settings).items():
        builder = builder.config(key, value)
    with _token_from_url_only(url):
        session = builder.create()  # a session of its own: temp views and settings never leak between jobs
    set_patience(session, JOB_RETRIES)
    _OPEN.add(session)
    return session


@contextlib.contextmanager
def _token_from_url_only(url: str) -> Iterator[None]:
    """Hide pyspark's ``SPARK_CONNECT_AUTHENTICATE_TOKEN`` while a session to ``url`` is built.

    pyspark's in-process server exports it (a test process that ran one, and every process it
    spawns, has it); the client would then send it to any endpoint, over TLS, which the plain
    ``dev up`` server refuses. A remote endpoint's token belongs in its URL (``;token=``).
    """
    key = "SPARK_CONNECT_AUTHENTICATE_TOKEN"
    saved = os.environ.pop(key, None) if "token=" not in url else None
    try:
        yield
    finally:
        if saved is not None:
            os.environ[key] = saved


def set_patience(session: SparkSession, retries: int) -> None:
    """How often a Connect session retries an unavailable server (pyspark's default waits ~10 minutes)."""
    from pyspark.sql.connect.client.retries import DefaultPolicy

    client: Any = cast(Any, session).client  # a Connect session's client (typed as classic: no such attribute)
    client.set_retry_policies([DefaultPolicy(max_retries=retries)])


def _jar_list(settings: Settings, jars: list[Path] | None) -> str:
    if jars is None:
        from placerec.maven import spark_jars

        jars = spark_jars(settings)
    return ",".join(str(p) for p in jars)
