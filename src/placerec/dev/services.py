"""``placerec dev up|down|status``: install once, start, health-check and stop the local services.

Each service is a detached process in its own session; its pid file under ``<home>/run`` records
pid + kernel start time, so ``down`` stops exactly the process tree ``up`` started and nothing else.
Stdout/stderr of each service go to ``<home>/logs/<name>.log``.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import logging
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import click

from placerec.dev import airflow, embeddings, opensearch, postgres, spark
from placerec.dev.httpjson import port_in_use
from placerec.dev.process import (
    LaunchSpec,
    PidRecord,
    is_alive,
    read_pid_file,
    rss_bytes,
    spawn,
    stop,
    tail,
    write_pid_file,
)
from placerec.settings import Settings, get_settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServiceStatus:
    """One row of ``placerec dev status``."""

    name: str
    url: str
    healthy: bool
    detail: str


@dataclass(frozen=True)
class Service:
    """How to install, start and probe one service."""

    name: str
    url: Callable[[Settings], str]
    install: Callable[[Settings], None]
    launch: Callable[[Settings], LaunchSpec]
    probe: Callable[[Settings], tuple[bool, str]]
    start_timeout: float
    """Seconds to wait for the first healthy probe after starting."""
    stop_timeout: float = 30.0
    stop_signal: signal.Signals = signal.SIGTERM
    """First signal ``down`` sends (SIGKILL follows after ``stop_timeout``)."""
    requires: tuple[str, ...] = ()
    """Services that must be healthy before this one starts (``up`` brings them up too)."""
    bootstrap: Callable[[Settings], tuple[bool, str]] | None = None
    """Idempotent setup that needs the started process (e.g. roles); polled until it returns True."""
    fingerprint: Callable[[Settings], str] | None = None
    """What a running instance must match (command line, code it loaded); ``up`` restarts it otherwise."""


SERVICES: tuple[Service, ...] = (
    Service(
        "opensearch", lambda s: s.opensearch_url, opensearch.install, opensearch.launch_spec, opensearch.probe, 180
    ),
    Service("embeddings", lambda s: s.embeddings_url, embeddings.install, embeddings.launch_spec, embeddings.probe, 60),
    Service(
        "spark",
        spark.url,
        spark.install,
        spark.launch_spec,
        spark.probe,
        120,
        fingerprint=spark.fingerprint,
    ),
    Service(
        "postgres",
        postgres.url,
        postgres.install,
        postgres.launch_spec,
        postgres.probe,
        60,
        stop_signal=signal.SIGINT,  # "fast" shutdown: SIGTERM would wait for every client to disconnect
        bootstrap=postgres.bootstrap,
    ),
    Service(
        "airflow",
        lambda s: s.airflow_url,
        airflow.install,
        airflow.launch_spec,
        airflow.probe,
        240,
        45,
        requires=("postgres",),
    ),
)


class ServiceError(click.ClickException):
    """A service could not be installed, started or made healthy (click prints it without a traceback)."""


def select(only: list[str] | None, *, closure: str = "requires") -> list[Service]:
    """The services named in ``only`` (all when None/empty), in start order; unknown names are an error.

    ``closure="requires"`` adds what they need (for ``up``: airflow needs postgres); ``"dependents"`` adds
    what needs them (for ``down``: stopping postgres takes airflow's database away).
    """
    if not only:
        return list(SERVICES)
    known = {s.name for s in SERVICES}
    unknown = sorted(set(only) - known)
    if unknown:
        raise ServiceError(f"unknown service(s) {', '.join(unknown)}; choose from {', '.join(sorted(known))}")
    names = set(only)
    while True:
        if closure == "requires":
            more = {r for s in SERVICES if s.name in names for r in s.requires}
        else:
            more = {s.name for s in SERVICES if names & set(s.requires)}
        if more <= names:
            break
        names |= more
    return [s for s in SERVICES if s.name in names]


def pid_file(settings: Settings, name: str) -> Path:
    """Where the pid record of service ``name`` lives."""
    return settings.home / "run" / f"{name}.pid"


def fingerprint_file(settings: Settings, name: str) -> Path:
    """What the running instance of ``name`` was started with (see ``Service.fingerprint``)."""
    return settings.home / "run" / f"{name}.fingerprint"


def stale_reason(settings: Settings, svc: Service) -> str:
    """Why a running instance of ``svc`` no longer matches what ``up`` would start ("" when it does)."""
    if svc.fingerprint is None:
        return ""
    path = fingerprint_file(settings, svc.name)
    started = path.read_text().strip() if path.is_file() else ""
    return "" if started == svc.fingerprint(settings) else "code or settings changed since it started"


def log_file(settings: Settings, name: str) -> Path:
    """Where the stdout/stderr of service ``name`` go."""
    return settings.home / "logs" / f"{name}.log"


@contextlib.contextmanager
def _lock(settings: Settings) -> Iterator[None]:
    """Serialise concurrent ``up``/``down`` calls (e.g. parallel test sessions) so nothing starts twice."""
    path = settings.home / "run" / ".lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        yield


def _running(settings: Settings, svc: Service) -> PidRecord | None:
    """Our live process for ``svc``; a stale pid file (process gone or pid reused) is removed."""
    path = pid_file(settings, svc.name)
    rec = read_pid_file(path)
    if rec is None:
        return None
    if is_alive(rec):
        return rec
    log.debug("removing stale pid file %s (pid %d is gone)", path, rec.pid)
    path.unlink(missing_ok=True)
    return None


def _start(settings: Settings, svc: Service) -> PidRecord | None:
    """Start ``svc`` unless it already runs; returns the record of a process to wait for, or None."""
    rec = _running(settings, svc)
    if rec is not None and (why := stale_reason(settings, svc)):
        log.info("restarting %s (pid %d): %s", svc.name, rec.pid, why)
        stop(rec, timeout=svc.stop_timeout, first_signal=svc.stop_signal)
        pid_file(settings, svc.name).unlink(missing_ok=True)
        rec = None
    healthy, _ = svc.probe(settings)
    if rec is not None:
        if healthy:
            log.info("%s already running and healthy (pid %d)", svc.name, rec.pid)
            return None
        log.info("%s already running (pid %d) but not healthy yet; waiting for it", svc.name, rec.pid)
        return rec
    url = svc.url(settings)
    if healthy:
        # someone else's instance (not in our pid file): use it, but never manage it
        log.warning("%s: a healthy instance not started by placerec answers at %s; leaving it alone", svc.name, url)
        return None
    if url.startswith("http") and port_in_use(url):
        raise ServiceError(f"{svc.name}: {url} is taken by a process placerec did not start; stop it first")
    spec = svc.launch(settings)
    logf = log_file(settings, svc.name)
    rec = spawn(spec.argv, env=spec.env, log_path=logf, cwd=spec.cwd, user=spec.user)
    write_pid_file(pid_file(settings, svc.name), rec)
    if svc.fingerprint is not None:
        fingerprint_file(settings, svc.name).write_text(svc.fingerprint(settings) + "\n")
    log.info("started %s (pid %d), log %s", svc.name, rec.pid, logf)
    return rec


def _wait_healthy(settings: Settings, svc: Service, rec: PidRecord) -> None:
    """Poll until ``svc`` is healthy; on death or timeout stop it and raise, pointing at its log."""
    deadline = time.monotonic() + svc.start_timeout
    detail = ""
    bootstrapped = svc.bootstrap is None
    while time.monotonic() < deadline:
        if not bootstrapped and svc.bootstrap is not None:
            try:
                bootstrapped, detail = svc.bootstrap(settings)
            except Exception as exc:
                stop(rec, timeout=svc.stop_timeout, first_signal=svc.stop_signal)
                pid_file(settings, svc.name).unlink(missing_ok=True)
                raise ServiceError(f"{svc.name}: {exc}; stopped it. See {rec.log_path}") from exc
        if bootstrapped:
            healthy, detail = svc.probe(settings)
            if healthy:
                return
        if not is_alive(rec):
            pid_file(settings, svc.name).unlink(missing_ok=True)
            raise ServiceError(
                f"{svc.name} exited during startup; see {rec.log_path}\n--- last lines ---\n{tail(rec.log_path)}"
            )
        time.sleep(0.5 if not bootstrapped else 1)
    stop(rec, timeout=svc.stop_timeout, first_signal=svc.stop_signal)
    pid_file(settings, svc.name).unlink(missing_ok=True)
    raise ServiceError(
        f"{svc.name} not healthy after {svc.start_timeout:.0f}s (last probe: {detail}); stopped it. "
        f"See {rec.log_path}\n--- last lines ---\n{tail(rec.log_path)}"
    )


def up(only: list[str] | None = None) -> None:
    """Install (once) and start the selected services, then wait until each is healthy.

    Idempotent: a service that already runs from an earlier ``up`` is only health-checked.
    """
    settings = get_settings()
    chosen = select(only)
    with _lock(settings):
        _up(settings, chosen)


def _is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:  # a name: it may resolve anywhere
        return False


def exposure_problems(settings: Settings, chosen: list[Service]) -> list[str]:
    """Why ``dev up`` must not start ``chosen`` as configured: a service on a non-loopback address with
    no authentication in front of it. Only Airflow has a login, and only outside dev mode."""
    hosts = {
        "airflow": settings.airflow_host,
        "embeddings": settings.embeddings_host,
        # the dev node binds 127.0.0.1 whatever the URL says; another host here is a node of someone else's
        "opensearch": urlsplit(settings.opensearch_url).hostname or "",
    }
    problems = []
    for svc in chosen:
        host = hosts.get(svc.name)
        if host is None or _is_loopback(host):
            continue
        if svc.name == "airflow" and not settings.dev_mode:
            continue  # Airflow asks for a login outside dev mode
        fix = "use 127.0.0.1"
        if svc.name == "airflow":
            fix = "set PLACEREC_DEV_MODE=false (Airflow then asks for a login)"
        problems.append(f"{svc.name} would listen on {host}, beyond loopback, with no authentication: {fix}")
    return problems


def _up(settings: Settings, chosen: list[Service]) -> None:
    if problems := exposure_problems(settings, chosen):
        raise ServiceError("refusing to start: " + "; ".join(problems))
    for sub in ("cache", "logs", "run"):
        (settings.home / sub).mkdir(parents=True, exist_ok=True)
    for svc in chosen:
        try:
            svc.install(settings)
        except Exception as exc:
            raise ServiceError(f"installing {svc.name} failed: {exc}") from exc
    # start everything first, then wait: startups overlap (OpenSearch and Airflow each take ~20-60 s);
    # only a service's requirements are waited for before it starts (Airflow migrates its DB on start)
    pending: dict[str, tuple[Service, PidRecord]] = {}

    def settle(svc: Service, rec: PidRecord) -> None:
        t0 = time.monotonic()
        _wait_healthy(settings, svc, rec)
        log.info("%s healthy (waited %.1fs)", svc.name, time.monotonic() - t0)

    for svc in chosen:
        for dep in svc.requires:
            if dep in pending:
                settle(*pending.pop(dep))
            else:
                dep_svc = next(s for s in SERVICES if s.name == dep)
                ok, detail = dep_svc.probe(settings)
                if not ok:
                    raise ServiceError(f"{svc.name} needs {dep}, which is not healthy: {detail}")
        rec = _start(settings, svc)
        if rec is not None:
            pending[svc.name] = (svc, rec)
    for svc, rec in pending.values():
        settle(svc, rec)


def down(only: list[str] | None = None) -> None:
    """Stop the selected services that ``up`` started (reverse start order); anything else is untouched.

    Services that need a selected one are stopped with it (``--only postgres`` also stops airflow).
    """
    settings = get_settings()
    chosen = select(only, closure="dependents")
    with _lock(settings):
        for svc in reversed(chosen):
            rec = _running(settings, svc)
            if rec is None:
                log.info("%s is not running (from placerec)", svc.name)
                continue
            log.info("stopping %s (pid %d)", svc.name, rec.pid)
            stop(rec, timeout=svc.stop_timeout, first_signal=svc.stop_signal)
            pid_file(settings, svc.name).unlink(missing_ok=True)


def status() -> list[ServiceStatus]:
    """Health of every service, with what it reports about itself and the memory of our process tree."""
    settings = get_settings()
    rows = []
    for svc in SERVICES:
        healthy, detail = svc.probe(settings)
        rec = _running(settings, svc)
        if rec is not None:
            detail += f" [pid {rec.pid}, rss {rss_bytes(rec) / 2**20:.0f} MiB]"
            if why := stale_reason(settings, svc):
                detail += f" ({why}: `placerec dev up` restarts it)"
        elif healthy:
            detail += " [not started by placerec]"
        rows.append(ServiceStatus(svc.name, svc.url(settings), healthy, detail))
    return rows
