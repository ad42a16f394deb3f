"""Pure logic of ``placerec dev``: pid files, process-tree stopping, config rendering, Airflow env."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

from placerec.dev import airflow, opensearch, postgres, process, services
from placerec.settings import PROJECT_ROOT, Settings


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(home=tmp_path / "home")


# --- pid files and processes -------------------------------------------------------------------


def test_parse_stat_handles_parentheses_in_command_name() -> None:
    fields = " ".join(str(n) for n in range(4, 53))  # fields 4.. after state; field 22 is start time
    state, ppid, pgrp, start = process.parse_stat(f"123 (a) (b c)) S {fields}")
    assert (state, ppid, pgrp, start) == ("S", 4, 5, 22)


def test_pid_record_roundtrip(tmp_path: Path) -> None:
    rec = process.PidRecord(pid=42, start_time=1234, argv=("x", "--y"), log_path="/tmp/x.log")
    path = tmp_path / "run" / "x.pid"
    process.write_pid_file(path, rec)
    assert process.read_pid_file(path) == rec
    assert json.loads(path.read_text())["argv"] == ["x", "--y"]


def test_read_pid_file_missing_or_garbage(tmp_path: Path) -> None:
    assert process.read_pid_file(tmp_path / "none.pid") is None
    bad = tmp_path / "bad.pid"
    bad.write_text("not json")
    assert process.read_pid_file(bad) is None


def test_is_alive_checks_start_time_not_just_pid() -> None:
    me = os.getpid()
    started = process.start_time(me)
    assert started is not None
    assert process.is_alive(process.PidRecord(me, started, (), ""))
    # same pid, different start time: a reused pid must not count as ours
    assert not process.is_alive(process.PidRecord(me, started + 1, (), ""))


def test_spawn_and_stop_kill_whole_tree_but_nothing_else(tmp_path: Path) -> None:
    bystander = subprocess.Popen(["sleep", "60"])
    # a parent with one child in its group and one that escaped into its own session
    script = "sleep 60 & setsid sleep 61 & wait"
    rec = process.spawn(["sh", "-c", script], env=dict(os.environ), log_path=tmp_path / "t.log", cwd=tmp_path)
    try:
        deadline = time.monotonic() + 5
        while len(process.descendants(rec.pid)) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        tree = process.descendants(rec.pid)
        assert len(tree) >= 2
        assert process.rss_bytes(rec) > 0
        assert process.stop(rec, timeout=5)
        assert not process.is_alive(rec)
        assert all(process.start_time(p) != s for p, s in tree.items())
        assert bystander.poll() is None  # untouched
        assert not process.stop(rec)  # second stop is a no-op
    finally:
        bystander.kill()
        bystander.wait()
    assert "starting: sh -c" in (tmp_path / "t.log").read_text()


def test_stop_escalates_to_sigkill(tmp_path: Path) -> None:
    code = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('ok', flush=True); time.sleep(60)"
    rec = process.spawn([sys.executable, "-c", code], env=dict(os.environ), log_path=tmp_path / "k.log", cwd=tmp_path)
    deadline = time.monotonic() + 10
    while "ok" not in (tmp_path / "k.log").read_text() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert process.stop(rec, timeout=0.5, first_signal=signal.SIGTERM)
    assert not process.is_alive(rec)


def test_tail_returns_last_lines(tmp_path: Path) -> None:
    f = tmp_path / "x.log"
    f.write_text("".join(f"line {i}\n" for i in range(100)))
    assert process.tail(f, 2) == "line 98\nline 99"
    assert process.tail(tmp_path / "missing.log") == ""


# --- services -----------------------------------------------------------------------------------


def test_select_keeps_start_order_and_rejects_unknown() -> None:
    assert [s.name for s in services.select(None)] == ["opensearch", "embeddings", "spark", "postgres", "airflow"]
    # airflow needs its metadata DB: `up --only airflow` brings postgres up first
    assert [s.name for s in services.select(["airflow", "opensearch"])] == ["opensearch", "postgres", "airflow"]
    assert [s.name for s in services.select(["embeddings"])] == ["embeddings"]
    with pytest.raises(services.ServiceError, match="nope"):
        services.select(["nope"])


def test_up_restarts_a_service_whose_code_or_command_changed(settings: Settings) -> None:
    """The Connect server's Python workers keep the code they imported: a changed fingerprint restarts it."""
    stamp = {"value": "v1"}
    svc = services.Service(
        "sleeper",
        lambda s: "http://127.0.0.1:1",
        lambda s: None,
        lambda s: process.LaunchSpec(argv=("sleep", "60"), env=dict(os.environ), cwd=s.home),
        lambda s: (False, "never healthy"),
        5,
        stop_timeout=5,
        fingerprint=lambda s: stamp["value"],
    )
    for sub in ("run", "logs"):
        (settings.home / sub).mkdir(parents=True, exist_ok=True)
    first = services._start(settings, svc)
    assert first is not None and process.is_alive(first)
    try:
        assert services.stale_reason(settings, svc) == ""
        assert services._start(settings, svc) == first  # same code: the running one is waited for, not replaced
        stamp["value"] = "v2"
        assert "changed" in services.stale_reason(settings, svc)
        second = services._start(settings, svc)
        assert second is not None and second.pid != first.pid
        assert not process.is_alive(first) and process.is_alive(second)
        assert services.stale_reason(settings, svc) == ""
    finally:
        for rec in (first, second if "second" in locals() else None):
            if rec is not None:
                process.stop(rec, timeout=5)


def test_spark_fingerprint_follows_the_code_and_the_command_line(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from placerec.dev import spark

    root = tmp_path / "checkout"
    library = root / "src" / "placerec" / "ops.py"
    library.parent.mkdir(parents=True)
    library.write_text("x = 1\n")
    (root / "uv.lock").write_text("lock 1\n")
    monkeypatch.setattr(spark, "PROJECT_ROOT", root)
    monkeypatch.setattr(spark, "spark_jars", lambda s: [Path("/cache/a.jar")])
    base = spark.fingerprint(settings)
    assert spark.fingerprint(settings) == base
    assert spark.fingerprint(dataclasses.replace(settings, spark_driver_memory="7g")) != base
    library.write_text("x = 22\n")  # the workers would still run x = 1
    edited = spark.fingerprint(settings)
    assert edited != base
    (root / "uv.lock").write_text("lock 2\n")  # other dependencies
    assert spark.fingerprint(settings) != edited


def test_select_for_down_adds_dependents() -> None:
    # stopping postgres takes airflow's database away, so airflow goes first
    assert [s.name for s in services.select(["postgres"], closure="dependents")] == ["postgres", "airflow"]
    assert [s.name for s in services.select(["airflow"], closure="dependents")] == ["airflow"]


def test_postgres_stops_fast() -> None:
    (pg,) = (s for s in services.SERVICES if s.name == "postgres")
    assert pg.stop_signal == signal.SIGINT  # fast shutdown; SIGTERM waits for clients
    assert pg.bootstrap is not None


def test_state_paths_live_under_home(settings: Settings) -> None:
    assert services.pid_file(settings, "airflow") == settings.home / "run" / "airflow.pid"
    assert services.log_file(settings, "airflow") == settings.home / "logs" / "airflow.log"


# --- OpenSearch ---------------------------------------------------------------------------------


def test_opensearch_yml(settings: Settings) -> None:
    yml = opensearch.render_opensearch_yml(settings, allow_mmap=True)
    assert "network.host: 127.0.0.1\n" in yml
    assert "http.port: 9200\n" in yml
    assert "discovery.type: single-node\n" in yml
    assert f"path.data: {settings.home / 'opensearch' / 'data'}\n" in yml
    assert "allow_mmap" not in yml
    assert "node.store.allow_mmap: false" in opensearch.render_opensearch_yml(settings, allow_mmap=False)


def test_opensearch_port_follows_url(tmp_path: Path) -> None:
    s = Settings(home=tmp_path, opensearch_url="http://127.0.0.1:9201")
    assert "http.port: 9201\n" in opensearch.render_opensearch_yml(s, allow_mmap=True)


def test_jvm_options_paths_become_absolute(settings: Settings) -> None:
    template = (
        "-XX:HeapDumpPath=data\n-XX:ErrorFile=logs/hs_err_pid%p.log\n"
        "9-:-Xlog:gc*,gc+age=trace,safepoint:file=logs/gc.log:utctime,pid,tags:filecount=32,filesize=64m\n"
    )
    out = opensearch.render_jvm_options(template, settings)
    base = settings.home / "opensearch"
    assert f"-XX:HeapDumpPath={base / 'data'}\n" in out
    assert f"-XX:ErrorFile={base / 'logs'}/hs_err_pid%p.log" in out
    assert f"file={base / 'logs' / 'gc.log'}:" in out


def test_painless_descriptor_and_class_detection(tmp_path: Path) -> None:
    jar = tmp_path / "lang-painless.jar"
    with zipfile.ZipFile(jar, "w") as zf:
        zf.writestr("org/opensearch/painless/PainlessPlugin.class", b"")
    cls = opensearch.painless_plugin_class(jar)
    assert cls == "org.opensearch.painless.PainlessPlugin"
    props = dict(line.split("=", 1) for line in opensearch.painless_descriptor("2.19.1", cls).splitlines())
    assert props["name"] == "lang-painless"
    assert props["classname"] == cls
    assert props["version"] == props["opensearch.version"] == "2.19.1"


def test_painless_artifacts_follow_the_pom(settings: Settings) -> None:
    coords = {(a.group, a.artifact, a.version) for a in opensearch.painless_artifacts(settings)}
    assert ("org.opensearch.plugin", "opensearch-scripting-painless-spi", "2.19.1") in coords
    assert ("org.antlr", "antlr4-runtime", "4.13.1") in coords
    assert {a for g, a, _ in coords if g == "org.ow2.asm"} == set(opensearch.ASM_ARTIFACTS)


def test_extract_zip_keeps_exec_bits(tmp_path: Path) -> None:
    archive = tmp_path / "a.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        info = zipfile.ZipInfo("pkg/bin/run")
        info.external_attr = 0o100755 << 16
        zf.writestr(info, "#!/bin/sh\n")
        zf.writestr("pkg/README", "x")
    opensearch.extract_zip(archive, tmp_path / "out")
    assert os.access(tmp_path / "out" / "pkg" / "bin" / "run", os.X_OK)
    assert (tmp_path / "out" / "pkg" / "README").read_text() == "x"


def test_install_marker_changes_with_versions(tmp_path: Path) -> None:
    a = opensearch.install_marker(Settings(home=tmp_path))
    b = opensearch.install_marker(Settings(home=tmp_path, opensearch_knn_version="9.9.9.9"))
    assert a != b


# --- Airflow ------------------------------------------------------------------------------------


def test_airflow_env(settings: Settings) -> None:
    env = airflow.airflow_env(settings, base={"PATH": "/usr/bin", "PLACEREC_FOO": "bar", "HOME": "/root"})
    assert env["AIRFLOW_HOME"] == str(settings.home / "airflow")
    assert env["PATH"].split(os.pathsep)[0] == str(airflow.venv_bin())
    assert env["PATH"].endswith("/usr/bin")
    assert env["AIRFLOW__CORE__DAGS_FOLDER"] == str(PROJECT_ROOT / "dags")
    assert env["AIRFLOW__CORE__LOAD_EXAMPLES"] == "False"
    assert env["AIRFLOW__API__HOST"] == "127.0.0.1"
    assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://127.0.0.1:8080/execution/"
    assert json.loads(env["AIRFLOW_CONN_SPARK_DEFAULT"]) == {"conn_type": "spark", "host": "local[*]"}
    connect = json.loads(env["AIRFLOW_CONN_SPARK_CONNECT_DEFAULT"])
    assert connect == {"conn_type": "spark_connect", "host": "sc://127.0.0.1", "port": 15002}
    assert env["PLACEREC_FOO"] == "bar"  # callers' PLACEREC_* pass through
    assert env["PLACEREC_HOME"] == str(settings.home)
    assert env["HOME"] == "/root"
    run = settings.home / "postgres" / "run"
    user = postgres.db_user()
    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] == f"postgresql+psycopg2://{user}@/airflow?host={run}"
    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_ASYNC"] == f"postgresql+asyncpg://{user}@/airflow?host={run}"
    assert "sqlite" not in json.dumps(env).lower()


def test_airflow_db_url_reaches_drivers_as_socket_dir(settings: Settings) -> None:
    """SQLAlchemy hands the socket directory to psycopg2 and asyncpg as ``host``, with no password."""
    import sqlalchemy
    from sqlalchemy.engine import make_url
    from sqlalchemy.ext.asyncio import create_async_engine

    run = str(settings.home / "postgres" / "run")
    sync = sqlalchemy.create_engine(postgres.sqlalchemy_url(settings, "psycopg2"))
    _, kwargs = sync.dialect.create_connect_args(sync.url)
    assert kwargs["host"] == run and kwargs["dbname"] == "airflow" and "password" not in kwargs
    aeng = create_async_engine(postgres.sqlalchemy_url(settings, "asyncpg"))
    _, akwargs = aeng.sync_engine.dialect.create_connect_args(make_url(postgres.sqlalchemy_url(settings, "asyncpg")))
    assert akwargs["host"] == run and akwargs["database"] == "airflow" and "password" not in akwargs


def test_airflow_db_url_percent_encodes_odd_paths(tmp_path: Path) -> None:
    from sqlalchemy.engine import make_url

    s = Settings(home=tmp_path / "my home?x")
    url = make_url(postgres.sqlalchemy_url(s))
    assert url.query["host"] == str(s.home / "postgres" / "run")


def test_summarize_health() -> None:
    healthy = {c: {"status": "healthy"} for c in airflow.COMPONENTS}
    assert airflow.summarize_health(healthy)[0]
    sick = {**healthy, "scheduler": {"status": "unhealthy"}}
    ok, detail = airflow.summarize_health(sick)
    assert not ok and "scheduler=unhealthy" in detail
    no_processor = {k: v for k, v in healthy.items() if k != "dag_processor"}
    ok, detail = airflow.summarize_health(no_processor)
    assert not ok and "dag_processor=missing" in detail


def test_summarize_health_any_component_down_is_down() -> None:
    for name in ("scheduler", "dag_processor", "triggerer", "metadatabase"):
        health = {c: {"status": "healthy"} for c in airflow.COMPONENTS}
        health[name] = {"status": "unhealthy"}
        assert airflow.summarize_health(health) == (
            False,
            ", ".join(f"{c}={'unhealthy' if c == name else 'healthy'}" for c in airflow.COMPONENTS),
        )


# --- PostgreSQL ---------------------------------------------------------------------------------


def test_postgres_conf_is_socket_only(settings: Settings) -> None:
    conf = postgres.render_conf(settings)
    assert "listen_addresses = ''\n" in conf
    assert f"unix_socket_directories = '{settings.home / 'postgres' / 'run'}'\n" in conf
    assert "max_connections = 100\n" in conf
    assert "shared_buffers = 128MB\n" in conf
    rules = [line.split() for line in postgres.HBA.splitlines() if line and not line.startswith("#")]
    assert rules == [["local", "all", "all", "peer"]]  # no host lines: no TCP, no passwords


def test_postgres_paths_and_uri(settings: Settings) -> None:
    assert postgres.data_dir(settings) == settings.home / "postgres" / "data"
    assert postgres.socket_path(settings) == settings.home / "postgres" / "run" / ".s.PGSQL.5432"
    assert postgres.url(settings) == f"postgresql:///airflow?host={settings.home / 'postgres' / 'run'}"


def _fake_server(root: Path, major: str) -> None:
    (root / major / "bin").mkdir(parents=True)
    (root / major / "bin" / "postgres").write_text("")


def test_find_bin_dir_prefers_cluster_major_else_newest(tmp_path: Path) -> None:
    assert postgres.find_bin_dir(tmp_path) is None
    for major in ("9.6", "15", "17"):
        _fake_server(tmp_path, major)
    (tmp_path / "18" / "bin").mkdir(parents=True)  # client-only: no server binary
    assert postgres.find_bin_dir(tmp_path) == tmp_path / "17" / "bin"
    assert postgres.find_bin_dir(tmp_path, prefer="15") == tmp_path / "15" / "bin"
    assert postgres.find_bin_dir(tmp_path, prefer="16") == tmp_path / "17" / "bin"


def test_ensure_server_installs_only_when_missing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[list[str]] = []

    def fake_run(argv: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
        calls.append(list(argv))
        if argv[:2] == ["apt-get", "install"]:
            _fake_server(tmp_path, "15")
        return subprocess.CompletedProcess(argv, 0, "", "")

    monkeypatch.setattr(postgres.subprocess, "run", fake_run)
    monkeypatch.setattr(postgres.os, "geteuid", lambda: 0)
    monkeypatch.setattr(postgres.shutil, "which", lambda name: f"/usr/bin/{name}")
    monkeypatch.setattr(postgres, "_apt_lists_empty", lambda: True)
    assert postgres.ensure_server(tmp_path) == tmp_path / "15" / "bin"
    assert [c[:2] for c in calls] == [["apt-get", "update"], ["apt-get", "install"]]
    assert calls[1][-1] == "postgresql"
    calls.clear()
    assert postgres.ensure_server(tmp_path) == tmp_path / "15" / "bin"
    assert calls == []  # present: no apt at all


def test_ensure_server_without_root_fails_clearly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(postgres.os, "geteuid", lambda: 1000)
    with pytest.raises(RuntimeError, match="apt-get install postgresql"):
        postgres.ensure_server(tmp_path)


def test_bootstrap_sql_is_idempotent_and_quoted() -> None:
    sql = postgres.bootstrap_sql()
    assert sql.count("\\gexec") == 2
    assert "WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'user')" in sql
    assert "WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = :'db')" in sql
    assert "%I" in sql  # identifiers quoted by format(), never pasted into SQL


def test_postgres_probe_down_when_no_server(settings: Settings) -> None:
    ok, detail = postgres.probe(settings)
    assert not ok
    assert str(postgres.socket_path(settings)) in detail


def test_a_run_at_a_future_logical_date_is_refused_before_airflow_hears_of_it(settings: Settings) -> None:
    """Airflow's API accepts it, then the scheduler never starts the run; the client says so at once
    (pointed at a port nothing listens on: a request would fail with another error)."""
    import socket
    from datetime import datetime, timedelta, timezone

    from placerec.airflow_api import AirflowApi, AirflowError

    with socket.socket() as sock:  # a port bound, then released: nothing listens there
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    api = AirflowApi(dataclasses.replace(settings, airflow_port=port))
    future = datetime.now(timezone.utc) + timedelta(days=1)
    with pytest.raises(ValueError, match="in the future"):
        api.trigger("ingest_events", logical_date=future)
    with pytest.raises(AirflowError):  # a past logical date goes to the (absent) server
        api.trigger("ingest_events", logical_date=future - timedelta(days=30))


class _BackfillApiStandIn:
    """A local stand-in for the two backfill routes of Airflow's REST API (a test server, not Airflow):
    a backfill of ``dag`` whose runs have ended stays active until ``marked_after`` seconds, as between
    the scheduler's 30 s completion marks; meanwhile a new backfill is refused with 409, as Airflow does."""

    def __init__(self, marked_after: float) -> None:
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.began, self.marked_after, self.posts = time.monotonic(), marked_after, 0
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:
                pass

            def _send(self, status: int, payload: object) -> None:
                body = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:  # /api/v2/backfills?dag_id=...
                done = "2026-12-02T00:00:00Z" if stand_in.marked() else None
                self._send(200, {"backfills": [{"id": 1, "dag_id": "dag", "completed_at": done}]})

            def do_POST(self) -> None:  # /api/v2/backfills
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                stand_in.posts += 1
                if stand_in.marked():
                    self._send(200, {"id": 2})
                else:
                    self._send(409, {"detail": "There is already a running backfill for dag dag"})

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def marked(self) -> bool:
        return time.monotonic() - self.began >= self.marked_after

    def __enter__(self) -> _BackfillApiStandIn:
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def test_a_new_backfill_waits_for_airflow_to_mark_the_last_one_complete(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    from datetime import date

    from placerec import airflow_api
    from placerec.airflow_api import AirflowApi, AirflowError

    monkeypatch.setattr(airflow_api, "POLL_SECONDS", 0.1)
    with _BackfillApiStandIn(marked_after=1.0) as server:
        api = AirflowApi(dataclasses.replace(settings, airflow_port=server.port))
        assert api.create_backfill("dag", date(2026, 11, 1), date(2026, 11, 2)) == 2
        assert time.monotonic() - server.began >= 1.0
        assert server.posts == 2  # refused once, then asked again only after the mark
    # a backfill that stays active (really running) is not waited for past the deadline
    monkeypatch.setattr(airflow_api, "BACKFILL_MARK_SECONDS", 0.5)
    with _BackfillApiStandIn(marked_after=60.0) as server:
        api = AirflowApi(dataclasses.replace(settings, airflow_port=server.port))
        with pytest.raises(AirflowError, match="HTTP 409"):
            api.create_backfill("dag", date(2026, 11, 1), date(2026, 11, 2))


# --- the Spark Connect server's Python daemon -------------------------------------------------


def test_the_python_daemon_ends_only_after_it_has_been_without_workers_for_the_idle_time() -> None:
    # a real process standing in for the daemon: a "worker" child for 1.5 s, then none
    script = (
        "import subprocess, sys, threading, time\n"
        "from placerec.spark_daemon import watch\n"
        "worker = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(1.5)'])\n"
        "threading.Thread(target=watch, args=(__import__('os').getpid(), 1.0, 0.1), daemon=True).start()\n"
        "worker.wait()\n"
        "time.sleep(30)\n"
    )
    began = time.monotonic()
    done = subprocess.run([sys.executable, "-c", script], timeout=20, check=False)
    took = time.monotonic() - began
    assert done.returncode == -signal.SIGTERM
    assert took >= 2.5  # 1.5 s with a worker alive, then 1 s idle
    assert took < 15


@pytest.mark.parametrize(
    ("change", "refused"),
    [
        ({}, []),
        ({"airflow_host": "0.0.0.0"}, ["airflow"]),  # what is refused
        ({"airflow_host": "0.0.0.0", "dev_mode": False}, []),  # Airflow asks for a login
        ({"airflow_host": "airflow.example.com", "dev_mode": False}, []),
        ({"embeddings_host": "192.168.1.20", "dev_mode": False}, ["embeddings"]),  # no auth, ever
        ({"opensearch_url": "http://10.0.0.5:9200"}, ["opensearch"]),
        ({"airflow_host": "localhost", "embeddings_host": "::1", "opensearch_url": "http://[::1]:9200"}, []),
    ],
)
def test_dev_up_refuses_a_service_beyond_loopback_without_auth(
    settings: Settings, change: dict[str, object], refused: list[str]
) -> None:
    s = dataclasses.replace(settings, **change)  # type: ignore[arg-type]
    problems = services.exposure_problems(s, list(services.SERVICES))
    assert [p.split(" ", 1)[0] for p in problems] == refused
    if refused:
        with pytest.raises(services.ServiceError, match="beyond loopback"):
            services._up(s, list(services.SERVICES))
        assert not (s.home / "run").exists(), "nothing was started or prepared"


def test_airflow_asks_for_a_login_outside_dev_mode(settings: Settings) -> None:
    assert airflow.airflow_env(settings)["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS"] == "True"
    closed = dataclasses.replace(settings, dev_mode=False, airflow_password="pw-" + "x" * 12)
    env = airflow.airflow_env(closed)
    assert env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS"] == "False"
    assert env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS"] == "admin:admin"
    assert closed.airflow_password not in json.dumps(env)  # the password goes to a file, not the environment
    airflow.write_password(closed)
    path = airflow.passwords_file(closed)
    assert json.loads(path.read_text()) == {"admin": closed.airflow_password}
    assert path.stat().st_mode & 0o777 == 0o600
