"""Detached background processes tracked by pid files, so ``dev down`` stops exactly what ``dev up`` started.

A pid file records the pid *and* the kernel's start time of that process: a pid alone can be reused by an
unrelated process after ours exits, and we must never signal anything we did not start.
"""

from __future__ import annotations

import json
import logging
import os
import pwd
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

log = logging.getLogger(__name__)

_PROC = Path("/proc")


@dataclass(frozen=True)
class PidRecord:
    """What we know about a process we started: enough to recognise it later and to find its log."""

    pid: int
    start_time: int
    """Field 22 of ``/proc/<pid>/stat`` (clock ticks after boot); distinguishes a reused pid."""
    argv: tuple[str, ...]
    log_path: str

    def to_json(self) -> str:
        return json.dumps({**asdict(self), "argv": list(self.argv)}, indent=1) + "\n"

    @classmethod
    def from_json(cls, text: str) -> PidRecord:
        raw = json.loads(text)
        return cls(
            pid=int(raw["pid"]),
            start_time=int(raw["start_time"]),
            argv=tuple(raw.get("argv", ())),
            log_path=str(raw.get("log_path", "")),
        )


def parse_stat(stat: str) -> tuple[str, int, int, int]:
    """``(state, ppid, pgrp, start_time)`` from the text of ``/proc/<pid>/stat``.

    The command name (field 2) is in parentheses and may itself contain spaces or parentheses,
    so split after the *last* closing parenthesis.
    """
    rest = stat[stat.rindex(")") + 2 :].split()
    # rest[0] is field 3 (state); field n is rest[n - 3]
    return rest[0], int(rest[1]), int(rest[2]), int(rest[19])


def _stat(pid: int) -> tuple[str, int, int, int] | None:
    try:
        return parse_stat((_PROC / str(pid) / "stat").read_text())
    except (OSError, ValueError, IndexError):
        return None


def start_time(pid: int) -> int | None:
    """Kernel start time of ``pid``, or None when no such (live) process exists."""
    st = _stat(pid)
    if st is None or st[0] in ("Z", "X"):  # a zombie is dead: PID 1 here may not reap orphans
        return None
    return st[3]


def is_alive(rec: PidRecord) -> bool:
    """True when the process in ``rec`` still runs (same pid *and* same start time)."""
    return start_time(rec.pid) == rec.start_time


def read_pid_file(path: Path) -> PidRecord | None:
    """The record in ``path``, or None if it is missing or unreadable."""
    try:
        return PidRecord.from_json(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError):
        log.warning("ignoring unreadable pid file %s", path)
        return None


def write_pid_file(path: Path, rec: PidRecord) -> None:
    """Write ``rec`` atomically (a half-written pid file would orphan the process)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(rec.to_json())
    tmp.replace(path)


def spawn(
    argv: Sequence[str],
    *,
    env: Mapping[str, str],
    log_path: Path,
    cwd: Path,
    user: str | None = None,
) -> PidRecord:
    """Start ``argv`` detached in its own session (so it outlives us and has its own process group).

    Output goes to ``log_path`` (appended). With ``user`` the child drops to that user (and its
    primary group, no supplementary groups) before exec: no runuser/su wrapper process in between.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as out:
        out.write(f"\n===== {time.strftime('%Y-%m-%d %H:%M:%S')} starting: {' '.join(argv)}\n".encode())
        out.flush()
        proc = subprocess.Popen(
            list(argv),
            env=dict(env),
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            close_fds=True,
            user=user,
            group=user,  # the user's own group (useradd --user-group) ...
            extra_groups=[] if user is not None else None,  # ... and none of root's
        )
    st = start_time(proc.pid)
    if st is None:  # exited immediately; record anyway so the caller can report the log
        st = -1
    # We never wait() on it: the service must outlive this CLI invocation. Drop the Popen's
    # bookkeeping so Python does not warn about a still-running child at exit.
    proc.returncode = 0
    return PidRecord(pid=proc.pid, start_time=st, argv=tuple(argv), log_path=str(log_path))


def descendants(pid: int) -> dict[int, int]:
    """All live descendants of ``pid`` as ``{pid: start_time}`` (children may leave our process group)."""
    children: dict[int, list[int]] = {}
    starts: dict[int, int] = {}
    for entry in _PROC.iterdir():
        if not entry.name.isdigit():
            continue
        st = _stat(int(entry.name))
        if st is None or st[0] in ("Z", "X"):
            continue
        children.setdefault(st[1], []).append(int(entry.name))
        starts[int(entry.name)] = st[3]
    found: dict[int, int] = {}
    todo = list(children.get(pid, []))
    while todo:
        child = todo.pop()
        if child in found:
            continue
        found[child] = starts[child]
        todo.extend(children.get(child, []))
    return found


def rss_bytes(rec: PidRecord) -> int:
    """Resident memory of the process and all its descendants (0 when it is not running)."""
    if not is_alive(rec):
        return 0
    total = 0
    for pid in [rec.pid, *descendants(rec.pid)]:
        try:
            for line in (_PROC / str(pid) / "status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
                    break
        except OSError:
            continue
    return total


def _signal_tree(rec: PidRecord, tree: Mapping[int, int], sig: signal.Signals) -> None:
    """Send ``sig`` to our process group and to every recorded descendant that is still the same process."""
    if is_alive(rec):
        try:
            if os.getpgid(rec.pid) == rec.pid:  # it is the leader of the group spawn() created
                os.killpg(rec.pid, sig)
            else:
                os.kill(rec.pid, sig)
        except ProcessLookupError:
            pass
    for pid, started in tree.items():
        if start_time(pid) == started:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass


def stop(rec: PidRecord, *, timeout: float = 30.0, first_signal: signal.Signals = signal.SIGTERM) -> bool:
    """Stop the process tree of ``rec``: ``first_signal``, then SIGKILL after ``timeout`` seconds.

    Returns True if something was running. Only processes that are provably ours (the recorded
    process, its process group, and its descendants at the time of the call) are signalled.
    """
    if not is_alive(rec):
        return False
    tree = descendants(rec.pid)
    log.debug("stopping pid %d (+%d descendants) with %s", rec.pid, len(tree), first_signal.name)
    _signal_tree(rec, tree, first_signal)

    def remaining() -> list[int]:
        alive = [rec.pid] if is_alive(rec) else []
        return alive + [p for p, s in tree.items() if start_time(p) == s]

    deadline = time.monotonic() + timeout
    while remaining() and time.monotonic() < deadline:
        time.sleep(0.2)
    if left := remaining():
        log.warning("pid(s) %s still running after %.0fs; sending SIGKILL", left, timeout)
        _signal_tree(rec, tree, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while remaining() and time.monotonic() < deadline:
            time.sleep(0.1)
    return True


def tail(path: Path | str, lines: int = 20) -> str:
    """Last ``lines`` lines of a log file, for error messages."""
    try:
        with Path(path).open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - 16384))
            text = fh.read().decode(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


@dataclass(frozen=True)
class LaunchSpec:
    """How to start one service: command, complete environment, working directory, optional user."""

    argv: tuple[str, ...]
    env: Mapping[str, str]
    cwd: Path
    user: str | None = None


def ensure_system_user(name: str) -> str | None:
    """The OS user a service runs as: ``name`` (created as a system user if missing) when we are root.

    Servers such as OpenSearch and PostgreSQL refuse to run as root; as any other user we run them
    as ourselves and return None.
    """
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(name)
    except KeyError:
        log.info("creating system user %s", name)
        subprocess.run(
            [
                "useradd",
                "--system",
                "--user-group",
                "--no-create-home",
                "--home-dir",
                "/nonexistent",
                "--shell",
                "/usr/sbin/nologin",
                name,
            ],
            check=True,
            capture_output=True,
        )
    return name
