"""Every Spark road gets the same configuration; the Connect endpoint comes from one setting or connection."""

from __future__ import annotations

import dataclasses
import json
import socket
import time
from pathlib import Path

import pytest

from placerec.settings import Settings, get_settings
from placerec.spark import (
    SMALL_MACHINE_CONF,
    SparkUnavailable,
    check_reachable,
    connect_server_argv,
    embedded_conf,
    server_conf,
    session_conf,
    spark_conf,
)

pytestmark = pytest.mark.unit

SERVER_ONLY = {  # the long-lived server's own: where it listens, and its Python daemon that ends when idle
    "spark.connect.grpc.binding.address",
    "spark.connect.grpc.binding.port",
    "spark.driver.host",
    "spark.driver.bindAddress",
    "spark.python.daemon.module",
}


def argv_conf(argv: list[str]) -> dict[str, str]:
    pairs = [argv[i + 1] for i, arg in enumerate(argv) if arg == "--conf"]
    return dict(pair.split("=", 1) for pair in pairs)


def test_connect_server_and_its_sessions_add_up_to_the_classic_configuration(tmp_path: Path) -> None:
    s = Settings(home=tmp_path / "home", spark_driver_memory="5g", spark_shuffle_partitions=7)
    jars = [Path("/cache/iceberg-spark-runtime.jar"), Path("/cache/sqlite-jdbc.jar")]
    argv = connect_server_argv(s, jars, Path("/venv/bin/spark-submit"))
    server = argv_conf(argv)
    # what a classic session (spark-submit, in-process) sets == what the server is started with plus
    # what each Connect session sets for itself
    effective = {k: v for k, v in server.items() if k not in SERVER_ONLY} | session_conf(s)
    assert effective == embedded_conf(s)
    # on one machine it runs with large thread stacks, without code generation and adaptive re-planning;
    # a spark-submit (cluster) session gets none of that, nor does a Spark on a cluster master
    assert server["spark.driver.extraJavaOptions"] == "-Duser.timezone=UTC -Xss16m"
    assert server["spark.sql.adaptive.enabled"] == "false"
    assert embedded_conf(s) == spark_conf(s) | SMALL_MACHINE_CONF | {
        "spark.driver.extraJavaOptions": "-Duser.timezone=UTC -Xss16m"
    }
    assert "spark.sql.adaptive.enabled" not in spark_conf(s)
    cluster = Settings(home=tmp_path / "home", spark_master="spark://10.0.0.5:7077")
    assert embedded_conf(cluster) == spark_conf(cluster)
    assert server["spark.connect.grpc.binding.address"] == "127.0.0.1"
    assert server["spark.python.daemon.module"] == "placerec.spark_daemon"
    assert server["spark.sql.extensions"] == "org.apache.iceberg.spark.extensions.IcebergSparkSessionExtensions"
    assert argv[argv.index("--jars") + 1] == "/cache/iceberg-spark-runtime.jar,/cache/sqlite-jdbc.jar"
    assert argv[argv.index("--driver-memory") + 1] == "5g"
    assert argv[argv.index("--class") + 1] == "org.apache.spark.sql.connect.service.SparkConnectServer"
    assert session_conf(s)["spark.sql.shuffle.partitions"] == "7"


def test_a_session_brings_its_own_catalog_to_a_shared_server(tmp_path: Path) -> None:
    dev = Settings(home=tmp_path / "dev")
    test = Settings(home=tmp_path / "test")
    uri = "spark.sql.catalog.placerec.uri"
    assert server_conf(dev)[uri] == f"jdbc:sqlite:{tmp_path / 'dev' / 'iceberg' / 'catalog.db'}"
    assert session_conf(test)[uri] == f"jdbc:sqlite:{tmp_path / 'test' / 'iceberg' / 'catalog.db'}"
    # static settings (fixed when the JVM starts) are the server's alone
    assert "spark.sql.extensions" not in session_conf(test)
    assert session_conf(test)["spark.sql.catalog.placerec.cache-enabled"] == "false"


def test_connect_url_from_setting_connection_or_default(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in ("PLACEREC_SPARK_REMOTE", "PLACEREC_SPARK_CONN_ID", "AIRFLOW_CONN_SPARK_CONNECT_DEFAULT"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("PLACEREC_SPARK_CONNECT_PORT", "15999")
    get_settings.cache_clear()
    assert get_settings().spark_connect_url == "sc://127.0.0.1:15999"

    token = "tok-3f1c9a"
    conn = {"conn_type": "spark_connect", "host": "sc://10.1.2.3", "port": 15002, "password": token}
    monkeypatch.setenv("AIRFLOW_CONN_SPARK_CONNECT_DEFAULT", json.dumps(conn))
    get_settings.cache_clear()
    s = get_settings()
    assert s.spark_connect_url == f"sc://10.1.2.3:15002/;token={token}"
    assert token not in repr(s)  # the URL carries a secret: kept out of repr

    # the Spark provider's hook builds the same URL from the same connection
    from airflow.providers.apache.spark.hooks.spark_connect import SparkConnectHook

    assert SparkConnectHook("spark_connect_default").get_connection_url() == s.spark_connect_url

    monkeypatch.setenv("PLACEREC_SPARK_REMOTE", "sc://127.0.0.1:16000")  # the explicit setting wins
    get_settings.cache_clear()
    assert get_settings().spark_connect_url == "sc://127.0.0.1:16000"

    # a spark-submit connection names no Connect endpoint
    monkeypatch.delenv("PLACEREC_SPARK_REMOTE")
    monkeypatch.setenv("AIRFLOW_CONN_SPARK_CONNECT_DEFAULT", json.dumps({"conn_type": "spark", "host": "yarn"}))
    get_settings.cache_clear()
    assert get_settings().spark_connect_url == "sc://127.0.0.1:15999"
    get_settings.cache_clear()


def test_an_absent_server_is_reported_at_once_with_the_way_out() -> None:
    with socket.socket() as sock:  # a port nothing listens on (bound, then released)
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    began = time.monotonic()
    with pytest.raises(SparkUnavailable, match=r"placerec dev up.*PLACEREC_SPARK_REMOTE=local"):
        check_reachable(f"sc://127.0.0.1:{port}")
    assert time.monotonic() - began < 5  # refused at once, not retried for minutes


def test_get_spark_on_an_absent_server_fails_before_any_retry(tmp_path: Path) -> None:
    from placerec.spark import get_spark

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    s = dataclasses.replace(get_settings(), home=tmp_path, spark_remote=f"sc://127.0.0.1:{port}")
    with pytest.raises(SparkUnavailable):
        get_spark("test", s)
