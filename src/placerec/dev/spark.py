"""The long-lived Spark Connect server: one warm JVM for every job, so a task pays no Spark start.

``spark-submit --class SparkConnectServer`` from the venv's pyspark (its jars include
``spark-connect_2.13``) with the Iceberg runtime, the SQLite JDBC driver, the Iceberg SQL extensions
and the catalog set on the command line (static settings cannot come from a client), bound to
127.0.0.1. Python UDFs run in the server's own Python workers, on this venv's interpreter, and they
keep what they imported: :func:`fingerprint` covers the library's code and the command line, and
``dev up`` restarts the server when either changed since it started.
"""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path

from placerec.dev.process import LaunchSpec
from placerec.maven import spark_jars
from placerec.settings import PROJECT_ROOT, Settings
from placerec.spark import SparkUnavailable, check_reachable, connect_server_argv, set_patience

LOG4J = """\
# placerec's Spark Connect server: warnings, plus the server's own start/stop lines
rootLogger.level = warn
rootLogger.appenderRef.stderr.ref = console
appender.console.type = Console
appender.console.name = console
appender.console.target = SYSTEM_ERR
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = %d{yy/MM/dd HH:mm:ss} %p %c{1}: %m%n%ex
logger.connect.name = org.apache.spark.sql.connect.service.SparkConnectServer
logger.connect.level = info
"""


def spark_submit() -> Path:
    """``spark-submit`` of the venv's pyspark."""
    found = Path(sys.executable).parent / "spark-submit"
    if not found.is_file():
        raise RuntimeError(f"spark-submit not found next to {sys.executable}: is pyspark installed? run `uv sync`")
    return found


def conf_dir(settings: Settings) -> Path:
    return settings.home / "spark" / "conf"


def install(settings: Settings) -> None:
    """Download the jars once (Maven Central, SHA-1 checked); write the server's log configuration."""
    spark_jars(settings)
    folder = conf_dir(settings)
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / "log4j2.properties"
    if not target.is_file() or target.read_text() != LOG4J:
        target.write_text(LOG4J)


def argv(settings: Settings) -> list[str]:
    return connect_server_argv(settings, spark_jars(settings), spark_submit())


def launch_spec(settings: Settings) -> LaunchSpec:
    env = dict(os.environ)
    env.update(
        {
            # the server's Python workers run UDFs that import placerec: this venv's interpreter
            "PYSPARK_PYTHON": sys.executable,
            "PYSPARK_DRIVER_PYTHON": sys.executable,
            "SPARK_CONF_DIR": str(conf_dir(settings)),
            "SPARK_LOCAL_IP": "127.0.0.1",
        }
    )
    for key in ("PYSPARK_GATEWAY_PORT", "PYSPARK_GATEWAY_SECRET", "SPARK_REMOTE", "SPARK_CONNECT_MODE_ENABLED"):
        env.pop(key, None)
    work = settings.home / "spark" / "work"
    work.mkdir(parents=True, exist_ok=True)
    return LaunchSpec(argv=tuple(argv(settings)), env=env, cwd=work)


def fingerprint(settings: Settings) -> str:
    """What the running server must match: its command line and the library code its workers import."""
    h = hashlib.sha256("\0".join(argv(settings)).encode())
    for path in sorted((PROJECT_ROOT / "src" / "placerec").rglob("*")):
        if path.suffix in (".py", ".json", ".md") and path.is_file():
            stat = path.stat()
            h.update(f"{path.relative_to(PROJECT_ROOT)}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    lock = PROJECT_ROOT / "uv.lock"
    if lock.is_file():
        h.update(hashlib.sha256(lock.read_bytes()).digest())
    return h.hexdigest()


def url(settings: Settings) -> str:
    return f"sc://127.0.0.1:{settings.spark_connect_port}"


def probe(settings: Settings) -> tuple[bool, str]:
    """Healthy when a session opens and runs a query (a closed port is answered at once, not retried)."""
    target = url(settings)
    try:
        check_reachable(target, timeout=1.0)
    except SparkUnavailable:
        return False, f"nothing listens at {target}"
    try:
        from pyspark.sql import SparkSession

        session = SparkSession.builder.remote(f"{target}/;user_agent=placerec-probe").create()
        set_patience(session, 0)  # a server shutting down answers "unavailable": no retries here
        try:
            version = session.version
            rows = session.range(3).count()
        finally:
            session.stop()
    except Exception as exc:
        return False, f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"
    return rows == 3, f"Spark {version} (Spark Connect), Iceberg {settings.iceberg_version}, {settings.spark_master}"
