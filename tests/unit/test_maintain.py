"""Table maintenance on real Iceberg tables in the private catalog (local Spark); index pruning on the real
node: ``tests/integration/test_maintain_indices.py``."""

from __future__ import annotations

import dataclasses
import json
import os
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import pytest

from placerec.catalog import ensure_tables_once, get_catalog
from placerec.ingest.commit import committed_snapshot_ids, last_commit, mark_committed
from placerec.maintain import make_plan, run_maintain
from placerec.ops import TaskMetrics, record_metrics
from placerec.settings import Settings, get_settings

pytestmark = pytest.mark.unit

START = datetime(2026, 11, 1, tzinfo=timezone.utc)
TEN_DAYS = 10 * 24 * 3600


def settings(**changes: Any) -> Settings:
    return dataclasses.replace(get_settings(), **changes)


def snapshot_ids(spark, table: str) -> list[int]:  # type: ignore[no-untyped-def]
    return [r[0] for r in spark.sql(f"SELECT snapshot_id FROM {table}.snapshots ORDER BY committed_at").collect()]


def data_files(spark, table: str) -> int:  # type: ignore[no-untyped-def]
    return int(spark.sql(f"SELECT count(*) FROM {table}.data_files").collect()[0][0])


def rows(spark, table: str, version: int | None = None) -> list[tuple]:  # type: ignore[no-untyped-def,type-arg]
    at = f" VERSION AS OF {version}" if version is not None else ""
    return sorted(tuple(r) for r in spark.sql(f"SELECT * FROM {table}{at}").collect())


def table_dir(identifier: str) -> Path:
    return Path(unquote(urlparse(get_catalog().load_table(identifier).location()).path))


def age_every_file(folder: Path, seconds: int) -> int:
    """Back-date every file under ``folder`` (referenced ones too: they must survive orphan removal)."""
    old = time.time() - seconds
    files = [p for p in folder.rglob("*") if p.is_file()]
    for p in files:
        os.utime(p, (old, old))
    return len(files)


@pytest.fixture(scope="module")
def visits(spark):  # type: ignore[no-untyped-def]
    """``maint.visits``, partitioned by day: 8 one-row inserts over 2 days, so 8 data files and 8 snapshots."""
    spark.sql("CREATE NAMESPACE IF NOT EXISTS maint")
    spark.sql("DROP TABLE IF EXISTS maint.visits")
    spark.sql(
        "CREATE TABLE maint.visits (id INT, place STRING, day DATE) USING iceberg PARTITIONED BY (day) "
        "TBLPROPERTIES ('format-version' = '2')"
    )
    after: list[int] = []
    for i in range(8):
        spark.sql(f"INSERT INTO maint.visits VALUES ({i}, 'p{i}', DATE '2026-11-0{1 + i % 2}')")
        after.append(snapshot_ids(spark, "maint.visits")[-1])
    return after


def test_plan_counts_back_from_the_interval_end_and_refuses_unsafe_ages() -> None:
    s = settings(maintain_snapshot_max_age_days=7.0, maintain_orphan_min_age_days=3.0, maintain_snapshot_retain_last=4)
    plan = make_plan(datetime(2026, 11, 8, tzinfo=timezone.utc), s, now=datetime(2026, 12, 1, tzinfo=timezone.utc))
    assert plan.expire_before == datetime(2026, 11, 1, tzinfo=timezone.utc)
    assert plan.orphans_before == datetime(2026, 11, 5, tzinfo=timezone.utc)
    assert plan.retain_last == 4
    # an interval ending in the future counts back from now, never later
    future = make_plan(datetime(2027, 1, 1, tzinfo=timezone.utc), s, now=datetime(2026, 12, 1, tzinfo=timezone.utc))
    assert future.orphans_before == datetime(2026, 11, 28, tzinfo=timezone.utc)
    with pytest.raises(ValueError, match="at least 1"):
        make_plan(START, settings(maintain_orphan_min_age_days=0.5))
    with pytest.raises(ValueError, match="at least 1"):
        make_plan(START, settings(maintain_snapshot_retain_last=0))
    with pytest.raises(ValueError, match="at least 2"):
        make_plan(START, settings(maintain_min_input_files=1))


def test_compaction_expiry_and_orphans_keep_contents_and_kept_snapshots(spark, visits: list[int]) -> None:  # type: ignore[no-untyped-def]
    table = "maint.visits"
    s = settings(maintain_snapshot_retain_last=3, maintain_snapshot_max_age_days=0.0, maintain_orphan_min_age_days=3.0)
    contents = rows(spark, table)
    assert [r[0] for r in contents] == list(range(8))
    assert data_files(spark, table) == 8 and snapshot_ids(spark, table) == visits
    at_seventh = rows(spark, table, visits[6])
    assert [r[0] for r in at_seventh] == list(range(7))

    folder = table_dir(table)
    assert age_every_file(folder, TEN_DAYS) > 8
    old_orphan, fresh_orphan = folder / "data" / "orphan-old.parquet", folder / "data" / "orphan-fresh.parquet"
    old_orphan.write_bytes(b"left by a killed writer")
    fresh_orphan.write_bytes(b"a write in flight")
    os.utime(old_orphan, (time.time() - TEN_DAYS, time.time() - TEN_DAYS))
    now = datetime.now(timezone.utc)
    end = now + timedelta(days=1)

    dry = run_maintain(spark, START, end, run_id="t-dry", tables=[table], dry_run=True, settings=s, now=now).tables[0]
    assert (dry.files_rewritten, dry.snapshots_expired, dry.orphans_removed) == (8, 6, 1)
    assert data_files(spark, table) == 8 and snapshot_ids(spark, table) == visits and old_orphan.exists()

    done = run_maintain(spark, START, end, run_id="t-1", tables=[table], settings=s, now=now).tables[0]
    assert not done.skipped and not done.error
    # one file per day partition is left; the 8 inserts' files were replaced by 2
    assert (done.data_files_before, done.data_files_after) == (8, 2) == (8, data_files(spark, table))
    assert (done.files_rewritten, done.files_added) == (8, 2)
    assert rows(spark, table) == contents
    # kept: the compaction's snapshot and the last two inserts; the first six are gone
    kept = snapshot_ids(spark, table)
    assert len(kept) == 3 and kept[:2] == visits[6:] and done.snapshots_expired == 6
    assert (done.snapshots_before, done.snapshots_after) == (8, 3)
    assert rows(spark, table, visits[6]) == at_seventh
    assert rows(spark, table, visits[7]) == contents
    with pytest.raises(Exception, match=str(visits[0])):
        spark.sql(f"SELECT * FROM {table} VERSION AS OF {visits[0]}").collect()
    assert not old_orphan.exists() and fresh_orphan.exists()
    assert done.orphans_removed == 1

    again = run_maintain(spark, START, end, run_id="t-2", tables=[table], settings=s, now=now).tables[0]
    assert (again.files_rewritten, again.snapshots_expired, again.files_deleted, again.orphans_removed) == (0, 0, 0, 0)
    assert (again.data_files_before, again.data_files_after, again.snapshots_after) == (2, 2, 3)
    assert snapshot_ids(spark, table) == kept and rows(spark, table) == contents and fresh_orphan.exists()

    metrics = get_catalog().load_table("ops.task_metrics").scan(row_filter="job = 'maintain'").to_arrow().to_pylist()
    recorded = json.loads(next(m for m in metrics if m["run_id"] == "t-2")["details"])
    assert recorded["tables"][0]["table"] == table and recorded["tables"][0]["data_files_after"] == 2


def test_a_table_without_snapshots_is_skipped_and_names_are_checked(spark) -> None:  # type: ignore[no-untyped-def]
    spark.sql("CREATE NAMESPACE IF NOT EXISTS maint")
    spark.sql("CREATE TABLE IF NOT EXISTS maint.untouched (id INT) USING iceberg")
    run = run_maintain(spark, START, START + timedelta(days=7), tables=["maint.untouched"])
    assert run.tables[0].skipped == "no snapshots: nothing written yet"
    with pytest.raises(ValueError, match=r"not a namespace\.name"):
        run_maintain(spark, START, START + timedelta(days=7), tables=["maint.untouched; DROP TABLE x"])


def _append_places(spark, ids: list[str]) -> None:  # type: ignore[no-untyped-def]
    schema = spark.table("raw.places").schema
    data = [{f.name: None for f in schema.fields} | {"place_id": i, "name": f"name {i}"} for i in ids]
    spark.createDataFrame(data, schema).writeTo("raw.places").append()


def _mine(spark, version: int | str | None = None) -> list[str]:  # type: ignore[no-untyped-def]
    reader = spark.read if version is None else spark.read.option("snapshot-id", str(version))
    return sorted(r[0] for r in reader.table("raw.places").where("place_id LIKE 'mt-%'").select("place_id").collect())


def test_the_last_ingest_commit_survives_expiry_and_a_compaction_at_it_is_committed(spark) -> None:  # type: ignore[no-untyped-def]
    ensure_tables_once()
    s = settings(maintain_snapshot_retain_last=1, maintain_snapshot_max_age_days=0.0)
    _append_places(spark, ["mt-a"])
    first = snapshot_ids(spark, "raw.places")[-1]
    _append_places(spark, ["mt-b"])
    mark_committed(spark, START, START, "test-commit")  # readers see raw.places with mt-a, mt-b
    committed = int(committed_snapshot_ids(["raw.places"])["raw.places"])
    _append_places(spark, ["mt-c"])  # by hand, after the commit: not visible to readers yet
    end = datetime.now(timezone.utc) + timedelta(days=1)

    run = run_maintain(spark, START, end, run_id="t-ingest", tables=["raw.places", "raw.quarantine"], settings=s)
    assert [t.skipped or t.error for t in run.tables] == ["", ""]
    assert run.tables[0].files_rewritten >= 3
    ids = snapshot_ids(spark, "raw.places")
    assert committed in ids and first not in ids
    assert int(committed_snapshot_ids(["raw.places"])["raw.places"]) == committed
    assert _mine(spark, committed) == ["mt-a", "mt-b"] and _mine(spark) == ["mt-a", "mt-b", "mt-c"]
    assert not run.committed  # raw.places had moved past the commit: the next ingest run commits it

    mark_committed(spark, START, START, "test-commit-2")
    _append_places(spark, ["mt-d"])
    mark_committed(spark, START, START, "test-commit-3")  # two files again, at the commit
    run = run_maintain(spark, START, end, run_id="t-ingest-2", tables=["raw.places"], settings=s)
    assert run.committed and run.tables[0].files_rewritten == 2
    current = snapshot_ids(spark, "raw.places")[-1]
    commit = last_commit()
    assert commit is not None and commit.run_id == "maintain:t-ingest-2"
    assert int(committed_snapshot_ids(["raw.places"])["raw.places"]) == current
    assert _mine(spark, current) == ["mt-a", "mt-b", "mt-c", "mt-d"]


def test_files_pyiceberg_wrote_are_not_orphans_however_old(spark) -> None:  # type: ignore[no-untyped-def]
    """``ops.task_metrics`` is written by pyiceberg (other path spelling, other writer): every file its
    snapshots name survives orphan removal even when older than the cut-off."""
    table = "ops.task_metrics"
    s = settings(maintain_snapshot_retain_last=1, maintain_snapshot_max_age_days=0.0)

    def others() -> list[tuple]:  # type: ignore[type-arg]
        found = get_catalog().load_table(table).scan(row_filter="job != 'maintain'").to_arrow().to_pylist()
        return sorted((r["job"], r["run_id"], r["details"]) for r in found)

    ensure_tables_once()
    for day in range(3):  # three pyiceberg commits, a data file each
        record_metrics(TaskMetrics("mt-writer", START + timedelta(days=day), START + timedelta(days=day + 1), "w"))
    before = others()
    assert len([r for r in before if r[0] == "mt-writer"]) == 3
    assert age_every_file(table_dir(table), TEN_DAYS) > 2
    run = run_maintain(spark, START, datetime.now(timezone.utc), run_id="t-pyiceberg", tables=[table], settings=s)
    done = run.tables[0]
    # files other tests' failed concurrent commits left are real orphans and may go; every file a
    # snapshot names stays: the rows read back the same, through pyiceberg and through Spark
    assert not done.error and done.files_rewritten >= 3
    assert others() == before
    assert sorted((r[0], r[3], r[12]) for r in spark.table(table).where("job != 'maintain'").collect()) == before


def test_the_command_prints_one_line_per_table(spark, visits: list[int], monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    from click.testing import CliRunner

    import placerec.spark
    from placerec.cli import main

    class Shared:  # the test session's Spark: the command must not stop it
        def __getattr__(self, name: str) -> Any:
            return getattr(spark, name)

        def stop(self) -> None:
            pass

    monkeypatch.setattr(placerec.spark, "get_spark", lambda *a, **k: Shared())
    spark.sql("CREATE TABLE IF NOT EXISTS maint.untouched (id INT) USING iceberg")
    files, snapshots = data_files(spark, "maint.visits"), len(snapshot_ids(spark, "maint.visits"))
    args = ["maintain", "--table", "maint.visits,maint.untouched", "--dry-run", "--end", "2026-11-08"]
    done = CliRunner().invoke(main, args)
    assert done.exit_code == 0, done.output
    lines = {line.split()[0]: line.split()[1:] for line in done.output.splitlines()[2:]}
    assert lines["maint.visits"][:2] == [f"{files}→{files}", f"{snapshots}→{snapshots}"]
    assert lines["maint.untouched"] == ["skipped:", "no", "snapshots:", "nothing", "written", "yet"]
    assert data_files(spark, "maint.visits") == files  # a dry run
    bad = CliRunner().invoke(main, ["maintain", "--table", "maint.x;y", "--dry-run"])
    assert bad.exit_code == 2 and "not a namespace.name" in bad.output
