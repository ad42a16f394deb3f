"""Spark job ``maintain``: Iceberg table upkeep, table by table; and the clean-up of old index versions.

Every write adds a snapshot and at least one file: a daily job's partition overwrite, every
pyiceberg metrics row. For each table of :data:`placerec.tables.TABLES` (or those asked for), in order:

1. **compaction**: ``rewrite_data_files`` (bin-pack, ``min-input-files``) merges the small data files of
   each partition into few; a partition already down to one file is left alone, so a rerun does nothing;
2. **snapshot expiry**: ``expire_snapshots(older_than, retain_last)`` drops snapshots older than
   ``maintain_snapshot_max_age_days`` beyond the newest ``maintain_snapshot_retain_last``, and the files
   only they referenced; time travel reaches every kept snapshot. The last ingest commit is never
   expired: readers read the ingest-governed ``raw.*`` tables at the snapshots it names and find
   it on a ``raw.quarantine`` snapshot (:mod:`placerec.ingest.commit`), so those tables' cut-off is
   moved back to the commit;
3. **orphan removal**: ``remove_orphan_files(older_than)`` deletes the files under the table's folder
   that no snapshot or metadata references, once older than ``maintain_orphan_min_age_days`` (a write in
   flight has files its commit does not name yet; Iceberg refuses less than a day).

Cut-offs count back from the run's interval end (never from later than now), so a rerun for the same
interval uses the same ones. A table without snapshots is skipped with that reason; a table whose
maintenance fails does not stop the others (:class:`MaintenanceFailed` names them at the end). The
ingest tables are maintained holding the ingest lock; compacted at the committed state, their new
snapshots are committed for readers (:func:`placerec.ingest.commit.mark_committed`).

:func:`prune_index_versions` deletes the OpenSearch index versions beyond ``index_keep_versions``
that no alias points at, recording them ``deleted`` in ``ops.index_versions``.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

from placerec.settings import Settings, get_settings

if TYPE_CHECKING:
    from opensearchpy import OpenSearch
    from pyspark.sql import SparkSession

log = logging.getLogger(__name__)

JOB = "maintain"
INDEX_JOB = "prune_index_versions"
MIN_ORPHAN_AGE_DAYS = 1.0
"""Iceberg's ``remove_orphan_files`` refuses a younger cut-off: files of writes in flight would go."""
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*\.[A-Za-z_][A-Za-z0-9_]*$")
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


class MaintenanceFailed(RuntimeError):
    """Some tables could not be maintained (the others were); ``run`` holds every table's result."""

    def __init__(self, run: MaintainRun) -> None:
        failed = [f"{t.table}: {t.error}" for t in run.tables if t.error]
        super().__init__(f"maintenance failed for {len(failed)} table(s): " + "; ".join(failed))
        self.run = run


@dataclass(frozen=True)
class Plan:
    """The cut-offs and limits one run applies (the same for every table but the protected ones)."""

    expire_before: datetime
    orphans_before: datetime
    retain_last: int
    min_input_files: int


@dataclass(frozen=True)
class TableMaintenance:
    """What maintenance did to one table (a dry run: what it would do; before and after are the same)."""

    table: str
    data_files_before: int = 0
    data_files_after: int = 0
    snapshots_before: int = 0
    snapshots_after: int = 0
    files_rewritten: int = 0
    """Data files compaction replaced (a dry run: files in partitions with enough of them, an estimate)."""
    files_added: int = 0
    snapshots_expired: int = 0
    files_deleted: int = 0
    """Data, delete and manifest files expiry deleted (referenced by expired snapshots only)."""
    orphans_removed: int = 0
    """A dry run: the orphans found."""
    expire_before: str = ""
    seconds: float = 0.0
    skipped: str = ""
    error: str = ""


@dataclass(frozen=True)
class MaintainRun:
    """One maintenance run over its tables."""

    start: datetime
    end: datetime
    run_id: str
    dry_run: bool
    plan: Plan
    tables: tuple[TableMaintenance, ...] = ()
    committed: bool = False
    """The compacted ingest tables were committed for readers (a new ingest commit)."""
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        for key in ("start", "end"):
            out[key] = out[key].isoformat()
        out["plan"] = {k: v.isoformat() if isinstance(v, datetime) else v for k, v in out["plan"].items()}
        return out


def make_plan(end: datetime, settings: Settings, now: datetime | None = None) -> Plan:
    """Cut-offs counted back from ``end``, or from ``now`` if that is earlier (an interval in the future)."""
    if settings.maintain_snapshot_retain_last < 1:
        raise ValueError("maintain_snapshot_retain_last must be at least 1 (the current snapshot)")
    if settings.maintain_snapshot_max_age_days < 0:
        raise ValueError("maintain_snapshot_max_age_days may not be negative")
    if settings.maintain_orphan_min_age_days < MIN_ORPHAN_AGE_DAYS:
        raise ValueError(
            f"maintain_orphan_min_age_days must be at least {MIN_ORPHAN_AGE_DAYS:g}: younger unreferenced "
            "files may belong to a write that has not committed yet"
        )
    if settings.maintain_min_input_files < 2:
        raise ValueError("maintain_min_input_files must be at least 2 (one file alone would be rewritten every run)")
    reference = min(end, now or datetime.now(timezone.utc))
    return Plan(
        expire_before=reference - timedelta(days=settings.maintain_snapshot_max_age_days),
        orphans_before=reference - timedelta(days=settings.maintain_orphan_min_age_days),
        retain_last=settings.maintain_snapshot_retain_last,
        min_input_files=settings.maintain_min_input_files,
    )


def selected_tables(tables: Sequence[str] | None) -> list[str]:
    """``tables`` checked to be ``namespace.name`` identifiers (they go into SQL); default every design table."""
    from placerec.tables import TABLES

    chosen = list(tables) if tables else [t.identifier for t in TABLES]
    bad = [t for t in chosen if not _IDENTIFIER.match(t)]
    if bad:
        raise ValueError(f"not a namespace.name table identifier: {', '.join(bad)}")
    return chosen


def run_maintain(
    spark: SparkSession,
    start: datetime,
    end: datetime,
    *,
    run_id: str = "manual",
    tables: Sequence[str] | None = None,
    dry_run: bool = False,
    settings: Settings | None = None,
    now: datetime | None = None,
) -> MaintainRun:
    """Compact, expire and clean every table of ``tables`` (default all); record the run in ``ops.task_metrics``."""
    from placerec.catalog import ensure_tables_once
    from placerec.ingest import commit
    from placerec.ops import TaskMetrics, record_metrics

    s = settings or get_settings()
    began = time.monotonic()
    plan = make_plan(end, s, now)
    chosen = selected_tables(tables)
    ensure_tables_once(s)
    ingest_tables = [t for t in chosen if t in (*commit.GOVERNED, commit.COMMIT_TABLE)]
    results = [
        maintain_table(spark, t, plan, dry_run=dry_run, catalog_name=s.catalog_name)
        for t in chosen
        if t not in ingest_tables
    ]
    committed = False
    if ingest_tables:
        # under the lock, which ingest runs wait for: their commits never race a compaction
        with commit.ingest_lock(s.home) as lock:
            done = _maintain_ingest_tables(spark, ingest_tables, plan, lock.unfinished, dry_run, s)
            if not dry_run and done.guard.should_commit(done.results):
                commit.mark_committed(spark, start, end, f"{JOB}:{run_id}")
                committed = True
        results += done.results
    run = MaintainRun(start, end, run_id, dry_run, plan, tuple(results), committed, time.monotonic() - began)
    record_metrics(TaskMetrics(JOB, start, end, run_id, seconds=run.seconds, details=run.as_dict()))
    if any(t.error for t in results):
        raise MaintenanceFailed(run)
    return run


@dataclass(frozen=True)
class _IngestTablesDone:
    results: list[TableMaintenance]
    guard: _IngestGuard


def _maintain_ingest_tables(
    spark: SparkSession,
    tables: list[str],
    plan: Plan,
    unfinished: dict[str, Any] | None,
    dry_run: bool,
    s: Settings,
) -> _IngestTablesDone:
    """The ingest tables (the lock held), expiry floored at the last ingest commit; all skipped while an
    ingest run's writes wait for its retry (they are not the committed state to compact)."""
    if unfinished is not None:
        reason = f"ingest run {unfinished.get('run_id')} wrote and never committed: left for its retry"
        return _IngestTablesDone([TableMaintenance(t, skipped=reason) for t in tables], _IngestGuard())
    guard = _IngestGuard.read()
    results = [
        maintain_table(
            spark,
            t,
            replace(plan, expire_before=min(plan.expire_before, guard.floor(t))),
            dry_run=dry_run,
            catalog_name=s.catalog_name,
        )
        for t in tables
    ]
    return _IngestTablesDone(results, guard)


@dataclass
class _IngestGuard:
    """The last ingest commit: the snapshots expiry must keep, and whether compaction may be committed."""

    floors: dict[str, datetime] = field(default_factory=dict)
    at_commit: bool = False

    @classmethod
    def read(cls) -> _IngestGuard:
        from placerec.catalog import get_catalog
        from placerec.ingest.commit import COMMIT_TABLE, last_commit_snapshot

        catalog = get_catalog()
        found = last_commit_snapshot(catalog)
        if found is None:
            return cls()
        snap, last = found
        floors = {COMMIT_TABLE: _at_ms(snap.timestamp_ms)}
        at_commit = True
        for table, sid in last.snapshots.items():
            loaded = catalog.load_table(table)
            named = loaded.snapshot_by_id(int(sid))
            if named is None:
                log.warning("%s: snapshot %s of the last ingest commit is gone already", table, sid)
            else:
                floors[table] = _at_ms(named.timestamp_ms)
            current = loaded.current_snapshot()
            at_commit = at_commit and current is not None and str(current.snapshot_id) == sid
        return cls(floors, at_commit)

    def floor(self, table: str) -> datetime:
        """Snapshots of ``table`` from this time on are kept (the far future: no floor)."""
        return self.floors.get(table, datetime.max.replace(tzinfo=timezone.utc))

    def should_commit(self, results: list[TableMaintenance]) -> bool:
        """Compaction rewrote an ingest table that readers saw at its current snapshot: commit the new one."""
        from placerec.ingest.commit import GOVERNED

        return self.at_commit and any(r.table in GOVERNED and r.files_rewritten and not r.error for r in results)


def _at_ms(ms: int) -> datetime:
    return _EPOCH + timedelta(milliseconds=ms)


def _sql_ts(at: datetime) -> str:
    """A Spark timestamp literal (the sessions run in UTC) with millisecond precision, as Iceberg compares."""
    utc = at.astimezone(timezone.utc)
    return f"TIMESTAMP '{utc:%Y-%m-%d %H:%M:%S}.{utc.microsecond // 1000:03d}'"


def maintain_table(
    spark: SparkSession, table: str, plan: Plan, *, dry_run: bool = False, catalog_name: str = ""
) -> TableMaintenance:
    """Compaction, snapshot expiry and orphan removal on one table (a dry run only counts)."""
    began = time.monotonic()
    catalog = catalog_name or get_settings().catalog_name
    result = TableMaintenance(table, expire_before=plan.expire_before.isoformat())
    try:
        snapshots = _count(spark, f"{table}.snapshots")
        if snapshots == 0:
            return replace(result, skipped="no snapshots: nothing written yet", seconds=time.monotonic() - began)
        files = _count(spark, f"{table}.data_files")
        result = replace(result, data_files_before=files, snapshots_before=snapshots)
        result = (_dry_run if dry_run else _maintain)(spark, catalog, table, plan, result)
    except Exception as exc:  # one table's failure (a concurrent commit, a bad file) must not stop the others
        log.exception("maintenance of %s failed", table)
        result = replace(result, error=f"{type(exc).__name__}: {str(exc)[:500]}")
    return replace(result, seconds=round(time.monotonic() - began, 3))


def _maintain(spark: SparkSession, catalog: str, table: str, plan: Plan, result: TableMaintenance) -> TableMaintenance:
    system = f"{catalog}.system"
    rewrite = spark.sql(
        f"CALL {system}.rewrite_data_files(table => '{table}', "
        f"options => map('min-input-files', '{plan.min_input_files}'))"
    ).collect()[0]
    expired = spark.sql(
        f"CALL {system}.expire_snapshots(table => '{table}', older_than => {_sql_ts(plan.expire_before)}, "
        f"retain_last => {plan.retain_last})"
    ).collect()[0]
    orphans = spark.sql(
        f"CALL {system}.remove_orphan_files(table => '{table}', older_than => {_sql_ts(plan.orphans_before)})"
    ).collect()
    snapshots_after = _count(spark, f"{table}.snapshots")
    rewritten = int(rewrite["rewritten_data_files_count"])
    deleted = sum(int(expired[k] or 0) for k in expired.asDict() if k.startswith("deleted_"))
    return replace(
        result,
        data_files_after=_count(spark, f"{table}.data_files"),
        snapshots_after=snapshots_after,
        files_rewritten=rewritten,
        files_added=int(rewrite["added_data_files_count"]),
        snapshots_expired=max(0, result.snapshots_before + (1 if rewritten else 0) - snapshots_after),
        files_deleted=deleted,
        orphans_removed=len(orphans),
    )


def _dry_run(spark: SparkSession, catalog: str, table: str, plan: Plan, result: TableMaintenance) -> TableMaintenance:
    from pyspark.sql import functions as F

    files = spark.table(f"{table}.data_files")
    group = [c for c in ("spec_id", "partition") if c in files.columns]
    per_group = files.groupBy(*group).count() if group else files.groupBy().count()
    candidates = int(per_group.where(F.col("count") >= plan.min_input_files).agg(F.sum("count")).collect()[0][0] or 0)
    # a compaction commits a snapshot of its own first, which then counts among the retained newest
    retained = plan.retain_last - (1 if candidates else 0)
    kept = [
        r.snapshot_id
        for r in spark.table(f"{table}.history")
        .where("is_current_ancestor")
        .orderBy(F.desc("made_current_at"))
        .limit(max(retained, 0))
        .select("snapshot_id")
        .collect()
    ]
    old = spark.table(f"{table}.snapshots").where(f"committed_at < {_sql_ts(plan.expire_before)}")
    expirable = old.where(~F.col("snapshot_id").isin(kept)).count() if kept else old.count()
    orphans = spark.sql(
        f"CALL {catalog}.system.remove_orphan_files(table => '{table}', "
        f"older_than => {_sql_ts(plan.orphans_before)}, dry_run => true)"
    ).collect()
    return replace(
        result,
        data_files_after=result.data_files_before,
        snapshots_after=result.snapshots_before,
        files_rewritten=candidates,
        snapshots_expired=int(expirable),
        orphans_removed=len(orphans),
    )


def _count(spark: SparkSession, metadata_table: str) -> int:
    return int(spark.table(metadata_table).count())


def format_maintenance(run: MaintainRun) -> str:
    """One line per table: data files and snapshots before → after, orphans, seconds (or why it was skipped)."""
    p = run.plan
    head = (
        f"maintain{' (dry run: what would change)' if run.dry_run else ''}: snapshots before "
        f"{p.expire_before:%Y-%m-%d %H:%M} UTC beyond the newest {p.retain_last} expire; orphans before "
        f"{p.orphans_before:%Y-%m-%d %H:%M} UTC removed; compaction from {p.min_input_files} files"
    )
    lines = [head, f"  {'table':<26} {'data files':>13} {'snapshots':>13} {'rewritten':>9} {'orphans':>7} {'s':>6}"]
    for t in run.tables:
        if t.skipped or t.error:
            lines.append(f"  {t.table:<26} {'FAILED: ' + t.error if t.error else 'skipped: ' + t.skipped}")
            continue
        files = f"{t.data_files_before}→{t.data_files_after}"
        snaps = f"{t.snapshots_before}→{t.snapshots_before - t.snapshots_expired if run.dry_run else t.snapshots_after}"
        lines.append(
            f"  {t.table:<26} {files:>13} {snaps:>13} {t.files_rewritten:>9} {t.orphans_removed:>7} {t.seconds:>6.1f}"
        )
    if run.committed:
        lines.append("  compacted ingest tables committed for readers (a new ingest commit)")
    return "\n".join(lines)


@dataclass(frozen=True)
class IndexPrune:
    """Old OpenSearch index versions: which are kept, which were (a dry run: would be) deleted."""

    live: str | None
    kept: tuple[str, ...] = ()
    deleted: tuple[str, ...] = ()
    aliased: tuple[str, ...] = ()
    """Versions beyond the kept number that an alias still points at: never deleted."""
    dry_run: bool = False
    skipped: str = ""


def prune_index_versions(client: OpenSearch, settings: Settings | None = None, *, dry_run: bool = False) -> IndexPrune:
    """Delete the index versions beyond the newest ``index_keep_versions`` (the live one counts) that no
    alias points at, and mark them ``deleted`` in ``ops.index_versions``. Aliases that disagree on the
    live version raise :class:`placerec.serve.publish.PublishError` before anything is deleted."""
    from placerec.serve.publish import (
        delete_version,
        live_version,
        record_versions,
        surplus_versions,
        versions_present,
    )

    s = settings or get_settings()
    live = live_version(client, s)
    if live is None:
        return IndexPrune(None, dry_run=dry_run, skipped="no version is live (no serving alias): nothing pruned")
    surplus = surplus_versions(client, s, live)
    aliased = aliased_versions(client, s)
    doomed = [v for v in surplus if v not in aliased]
    if not dry_run:
        for version in doomed:
            delete_version(client, version, s)
            record_versions(version, None, "deleted", {"pruned_by": JOB, "kept": s.index_keep_versions}, s)
    kept = tuple(v for v in sorted(versions_present(client, s), reverse=True) if v not in doomed)
    held = tuple(v for v in surplus if v in aliased)
    return IndexPrune(live, kept, tuple(doomed), held, dry_run)


def aliased_versions(client: OpenSearch, s: Settings) -> set[str]:
    """Versions with at least one index that any alias (not only the serving ones) points at."""
    from placerec.serve import indices
    from placerec.serve.publish import version_of

    found: set[str] = set()
    for family in indices.FAMILIES:
        pattern = indices.alias_name(s, family) + "-*"
        for index, info in client.indices.get_alias(index=pattern, ignore_unavailable=True).items():
            if info.get("aliases"):
                found.add(version_of(index, family, s))
    return found


def run_prune_index_versions(
    start: datetime, end: datetime, *, run_id: str = "manual", dry_run: bool = False, settings: Settings | None = None
) -> IndexPrune:
    """:func:`prune_index_versions` on the configured cluster, recorded in ``ops.task_metrics``."""
    from placerec.ops import TaskMetrics, record_metrics
    from placerec.serve.client import opensearch_client

    s = settings or get_settings()
    began = time.monotonic()
    result = prune_index_versions(opensearch_client(s), s, dry_run=dry_run)
    seconds = time.monotonic() - began
    record_metrics(TaskMetrics(INDEX_JOB, start, end, run_id, seconds=seconds, details=asdict(result)))
    return result
