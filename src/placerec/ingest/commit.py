"""How an ingest run makes its interval visible all at once, though it writes five tables.

Iceberg commits one table at a time, so a run killed between its writes would leave half an interval
(new events, old reviews). Readers therefore never read ``raw.events``, ``raw.reviews``,
``raw.places`` and ``raw.place_versions`` (:data:`GOVERNED`) at their current snapshot, but at the
snapshots named by the last **ingest commit**: a property (:data:`COMMIT_PROPERTY`) on a snapshot
of ``raw.quarantine``, recording the governed tables' snapshot ids. A run, holding :func:`ingest_lock`:

1. if the lock's file says the previous run wrote and never committed (killed, or failed), puts back
   each governed table whose current snapshot is not the committed one (that run's writes, never seen
   by a reader), so the run starts from the last complete state; then records itself there;
2. overwrites its interval of ``raw.events`` and ``raw.place_versions`` and MERGEs ``raw.reviews`` and
   ``raw.places``;
3. replaces its quarantine rows for the interval in one ``raw.quarantine`` commit that carries the new
   snapshot ids: that single Iceberg commit is the moment the whole interval becomes visible; then
   clears its record in the lock's file.

A kill before step 3 leaves the previous state visible (and repaired by the next run); after it, the
complete new one. The rerun gives the same rows either way. Other jobs' quarantine commits carry no
property and are passed over when the last commit is looked up.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pyiceberg.catalog import Catalog
    from pyiceberg.table.snapshots import Snapshot
    from pyspark.sql import SparkSession

log = logging.getLogger(__name__)

GOVERNED = ("raw.events", "raw.reviews", "raw.places", "raw.place_versions")
COMMIT_TABLE = "raw.quarantine"
COMMIT_PROPERTY = "placerec.ingest-commit"
LOCK_WAIT_SECONDS = 3600.0


@dataclass(frozen=True)
class IngestCommit:
    """One ingest commit: the governed tables' snapshot ids and the run that made them visible."""

    snapshots: dict[str, str]
    interval_start: str
    interval_end: str
    run_id: str

    @classmethod
    def parse(cls, value: str) -> IngestCommit | None:
        """The commit a snapshot property holds, or None when it is not one (malformed, or another shape)."""
        try:
            raw = json.loads(value)
        except ValueError:
            return None
        if not isinstance(raw, dict) or not isinstance(raw.get("snapshots"), dict):
            return None
        snapshots = {str(k): str(v) for k, v in raw["snapshots"].items()}
        fields = (str(raw.get(k, "")) for k in ("interval_start", "interval_end", "run_id"))
        return cls(snapshots, *fields)


class IngestLockTimeout(RuntimeError):
    """Another ingest run held the lock for longer than the wait allowed."""


class IngestLock:
    """The held lock of :func:`ingest_lock`; its file also says whether the last holder finished."""

    def __init__(self, handle: Any) -> None:
        self._handle = handle
        handle.seek(0)
        text = handle.read().strip()
        self.unfinished: dict[str, Any] | None = json.loads(text) if text else None
        """The run that held the lock last and never finished (killed, or failed after writing), if any."""

    def _write(self, text: str) -> None:
        self._handle.seek(0)
        self._handle.truncate()
        self._handle.write(text)
        self._handle.flush()
        os.fsync(self._handle.fileno())

    def begin(self, run_id: str, start: datetime, end: datetime) -> None:
        """Record that a run is about to write (kept until :meth:`finish`)."""
        info = {"run_id": run_id, "interval_start": start.isoformat(), "interval_end": end.isoformat()}
        self._write(json.dumps({**info, "pid": os.getpid()}))

    def finish(self) -> None:
        """The run committed: nothing of it is left to put back."""
        self._write("")


@contextlib.contextmanager
def ingest_lock(home: Path, wait_seconds: float = LOCK_WAIT_SECONDS) -> Iterator[IngestLock]:
    """One ingest run at a time for a state folder (an OS file lock: a killed holder releases it)."""
    path = home / "locks" / "ingest_events.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a+") as handle:
        deadline = time.monotonic() + wait_seconds
        waited = False
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise IngestLockTimeout(f"another ingest run holds {path} after {wait_seconds:.0f}s") from None
                if not waited:
                    log.info("waiting for another ingest run (%s)", path)
                    waited = True
                time.sleep(0.5)
        try:
            yield IngestLock(handle)
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def last_commit(catalog: Catalog | None = None) -> IngestCommit | None:
    """The newest ingest commit, or None before the first one."""
    found = last_commit_snapshot(catalog)
    return found[1] if found else None


def last_commit_snapshot(catalog: Catalog | None = None) -> tuple[Snapshot, IngestCommit] | None:
    """The newest ingest commit and the ``raw.quarantine`` snapshot carrying it (which table
    maintenance must keep), or None before the first one."""
    from pyiceberg.table.snapshots import ancestors_of

    from placerec.catalog import get_catalog

    table = (catalog or get_catalog()).load_table(COMMIT_TABLE)
    current = table.current_snapshot()
    if current is None:
        return None
    for snap in ancestors_of(current, table.metadata):
        value = snap.summary.additional_properties.get(COMMIT_PROPERTY) if snap.summary else None
        if value is None:
            continue
        if (commit := IngestCommit.parse(value)) is not None:
            return snap, commit
        log.warning("snapshot %s of %s has a malformed ingest commit: passed over", snap.snapshot_id, COMMIT_TABLE)
    return None


def committed_snapshot_ids(tables: list[str], catalog: Catalog | None = None) -> dict[str, str]:
    """Snapshot id to read each of ``tables`` at: the last ingest commit's for :data:`GOVERNED` tables,
    the current one for the rest (``""``: a table without snapshots)."""
    from placerec.catalog import get_catalog

    catalog = catalog or get_catalog()
    commit = last_commit(catalog) if any(t in GOVERNED for t in tables) else None
    out = {}
    for identifier in tables:
        if commit is not None and identifier in commit.snapshots:
            out[identifier] = commit.snapshots[identifier]
            continue
        snap = catalog.load_table(identifier).current_snapshot()
        out[identifier] = "" if snap is None else str(snap.snapshot_id)
    return out


def commit_option(start: datetime, end: datetime, run_id: str, catalog: Catalog | None = None) -> dict[str, str]:
    """The write option that makes a ``raw.quarantine`` write the ingest commit of the governed tables'
    current snapshots (each has one: :func:`prepare` sees to it)."""
    from placerec.catalog import get_catalog

    catalog = catalog or get_catalog()
    snapshots = {}
    for identifier in GOVERNED:
        snap = catalog.load_table(identifier).current_snapshot()
        assert snap is not None, f"{identifier} has no snapshot: mark_committed() gives it one"
        snapshots[identifier] = str(snap.snapshot_id)
    value = {
        "snapshots": snapshots,
        "interval_start": start.isoformat(),
        "interval_end": end.isoformat(),
        "run_id": run_id,
    }
    return {f"snapshot-property.{COMMIT_PROPERTY}": json.dumps(value, sort_keys=True)}


def mark_committed(
    spark: SparkSession, start: datetime, end: datetime, run_id: str, catalog: Catalog | None = None
) -> None:
    """Commit the governed tables' current state as they are (an empty ``raw.quarantine`` append carrying
    the commit): for a table written outside ingest on purpose (a fix by hand, a test's fixture rows).
    An empty table first gets an empty snapshot, so every commit names one."""
    from placerec.catalog import get_catalog

    catalog = catalog or get_catalog()
    for identifier in GOVERNED:
        if catalog.load_table(identifier).current_snapshot() is None:
            spark.createDataFrame([], spark.table(identifier).schema).writeTo(identifier).append()
    empty = spark.createDataFrame([], spark.table(COMMIT_TABLE).schema)
    writer = empty.writeTo(COMMIT_TABLE)
    for key, value in commit_option(start, end, run_id, catalog).items():
        writer = writer.option(key, value)
    writer.append()


def prepare(spark: SparkSession, unfinished: dict[str, Any] | None, catalog: Catalog | None = None) -> list[str]:
    """Bring the governed tables to the last ingest commit if ``unfinished`` (the lock's record of a run
    that wrote and never committed); returns what was put back, for the log.

    Without an unfinished run, a table that moved since the last commit was changed outside ingest (a
    fix by hand): it is kept, and this run's commit makes it visible. Before the first commit (new
    tables, or tables written before commits existed) the current state is committed as it is.
    """
    from placerec.catalog import get_catalog

    catalog = catalog or get_catalog()
    commit = last_commit(catalog)
    if commit is None:
        epoch = datetime(1970, 1, 1, tzinfo=timezone.utc)
        mark_committed(spark, epoch, epoch, "base", catalog)
        log.info("first ingest commit: the governed tables' current state")
        return []
    moved = []
    for identifier, sid in commit.snapshots.items():
        current = catalog.load_table(identifier).current_snapshot()
        if current is None or str(current.snapshot_id) != sid:
            moved.append(identifier)
    if moved and unfinished is None:
        log.warning("%s changed outside ingest since the last commit: kept, committed by this run", ", ".join(moved))
        return []
    for identifier in moved:
        back = int(commit.snapshots[identifier])
        spark.sql(f"CALL system.set_current_snapshot(table => '{identifier}', snapshot_id => {back})").collect()
    if moved:
        log.warning(
            "run %s of [%s, %s) wrote %s and never committed: put back to the last commit (run %s)",
            unfinished and unfinished.get("run_id"),
            unfinished and unfinished.get("interval_start"),
            unfinished and unfinished.get("interval_end"),
            ", ".join(moved),
            commit.run_id,
        )
    return moved
