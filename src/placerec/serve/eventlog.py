"""What the serving API shows and hears, appended to the landing area as ``events`` lines, crash-safe.

Lines go to a *part file*, ``<landing>/events/dt=<UTC day>/.serve-<id>.jsonl.part``: its leading dot
makes ingest pass it over (``temp_file``). Every line is written whole and handed to the OS before the
request that produced it is answered, so a killed server loses none. A part file is *sealed* (flushed,
fsynced, renamed to ``serve-<id>.jsonl``: from then on ingest reads it) when it is older than
``rotate_s``, when the UTC day turns, and when the log closes. A part file whose writer died is sealed
by the next log that opens on the same landing root (:func:`recover`): a last line cut short by the
kill is dropped there, and only there, so ingest never sees half a record.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import threading
import time
from collections.abc import Iterable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

PREFIX, PART = ".serve-", ".jsonl.part"


def _day_folder(landing: Path, ts: datetime) -> Path:
    return landing / "events" / f"dt={ts.astimezone(timezone.utc).date().isoformat()}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _seal(part: Path) -> Path:
    """Drop a cut-short last line, fsync, rename to the final name; returns it."""
    with part.open("rb+") as f:
        data = f.read()
        whole = data.rfind(b"\n") + 1
        if whole < len(data):
            log.warning("%s: dropped a last line cut short (%d bytes)", part.name, len(data) - whole)
            f.truncate(whole)
        f.flush()
        os.fsync(f.fileno())
    final = part.with_name(part.name[1:].removesuffix(PART) + ".jsonl")
    if whole == 0:
        part.unlink()
        return final
    os.rename(part, final)
    return final


def recover(landing: Path) -> list[Path]:
    """Seal the part files of writers that no longer run (their pid is in the name); returns them."""
    sealed = []
    for part in sorted((landing / "events").glob(f"dt=*/{PREFIX}*{PART}")):
        try:
            pid = int(part.name.removeprefix(PREFIX).split("-", 1)[0])
        except ValueError:
            continue
        if pid != os.getpid() and not _alive(pid):
            sealed.append(_seal(part))
    return sealed


class EventLog:
    """Thread-safe appender of event records (dicts) as JSON lines; see the module docstring."""

    def __init__(self, landing: Path, rotate_s: float = 30.0) -> None:
        self.landing, self.rotate_s = landing, rotate_s
        self._lock = threading.Lock()
        self._file: Any = None
        self._part: Path | None = None
        self._opened = 0.0
        self._seq = 0
        self._token = secrets.token_hex(4)
        self.written = 0
        for path in recover(landing):
            log.info("sealed %s, left by a server that stopped", path)

    def write(self, records: Iterable[dict[str, Any]], now: datetime | None = None) -> None:
        """Append ``records`` (each with an aware ``ts`` in ISO form or a datetime) before returning."""
        now = now or datetime.now(timezone.utc)
        lines = [json.dumps(r, ensure_ascii=False, default=_iso, separators=(",", ":")) + "\n" for r in records]
        with self._lock:
            folder = _day_folder(self.landing, now)
            if self._part is not None and (
                self._part.parent != folder or time.monotonic() - self._opened >= self.rotate_s
            ):
                self._close_part()
            if self._part is None:
                folder.mkdir(parents=True, exist_ok=True)
                self._seq += 1
                self._part = folder / f"{PREFIX}{os.getpid()}-{self._token}-{self._seq:06d}{PART}"
                self._file = self._part.open("a", encoding="utf-8")
                self._opened = time.monotonic()
            self._file.write("".join(lines))
            self._file.flush()  # in the OS's hands: a killed process loses nothing
            self.written += len(lines)

    def rotate(self) -> None:
        """Seal the open part file now (a background timer calls this so quiet servers seal too)."""
        with self._lock:
            if self._part is not None and time.monotonic() - self._opened >= self.rotate_s:
                self._close_part()

    def close(self) -> None:
        with self._lock:
            self._close_part()

    def _close_part(self) -> None:
        if self._part is None:
            return
        self._file.close()
        _seal(self._part)
        self._part, self._file = None, None


def _iso(value: Any) -> str:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
