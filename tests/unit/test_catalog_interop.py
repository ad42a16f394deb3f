"""Spark's JdbcCatalog and pyiceberg's SqlCatalog are one catalog: each reads what the other wrote."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import pyarrow as pa
import pytest

from placerec.catalog import get_catalog
from placerec.tables import TABLES, ensure_tables

pytestmark = pytest.mark.unit


def test_every_design_table_exists_once(spark) -> None:  # type: ignore[no-untyped-def]
    catalog = get_catalog()
    ensure_tables(catalog)
    assert ensure_tables(catalog) == []  # idempotent: nothing left to create
    spark_tables = {
        f"{r.namespace}.{r.tableName}"
        for ns in ("raw", "features", "model", "ops")
        for r in spark.sql(f"SHOW TABLES IN {ns}").collect()
    }
    assert spark_tables >= {t.identifier for t in TABLES}
    assert "event_ts_day" in str(catalog.load_table("raw.events").spec())


def test_spark_writes_pyiceberg_reads(spark) -> None:  # type: ignore[no-untyped-def]
    ensure_tables(get_catalog())
    spark.sql(
        "INSERT INTO ops.index_versions VALUES ('places-v1', 'places', 'm1', map('raw.events', '42'), 7, 'live', "
        "TIMESTAMP '2026-11-01 00:00:00', 'v1', 'places', 'k1', '{}', TIMESTAMP '2026-11-01 00:00:00')"
    )
    rows = get_catalog().load_table("ops.index_versions").scan(row_filter="index_name = 'places-v1'").to_arrow()
    assert rows.num_rows == 1
    row = rows.to_pylist()[0]
    assert row["docs"] == 7 and row["alias"] == "places" and dict(row["source_snapshots"]) == {"raw.events": "42"}


def test_pyiceberg_writes_spark_reads(spark) -> None:  # type: ignore[no-untyped-def]
    ensure_tables(get_catalog())
    table = get_catalog().load_table("raw.places")
    arrow_schema = table.schema().as_arrow()
    batch = pa.Table.from_pylist(
        [
            {
                "place_id": "py-1",
                "name": "망원 베이커리",
                "category": "베이커리",
                "district": "망원동",
                "lat": 37.556,
                "lon": 126.91,
                "address": None,
                "updated_ts": datetime(2026, 11, 1, 3, tzinfo=timezone.utc),
                "source": "test",
                "source_file": None,
                "source_line": None,
            }
        ],
        schema=arrow_schema,
    )
    table.append(batch)
    got = spark.sql("SELECT name, district, updated_ts FROM raw.places WHERE place_id = 'py-1'").collect()
    assert [(r.name, r.district) for r in got] == [("망원 베이커리", "망원동")]
    assert got[0].updated_ts.replace(tzinfo=None) == datetime(2026, 11, 1, 3)  # session time zone is UTC


def _november(day: int) -> datetime:
    return datetime(2026, 11, day, tzinfo=timezone.utc)


def _rerun_days(job: str, days: list[int], ready: Any) -> None:
    """One writer process: rerun ``days`` of November, all writers starting at once."""
    from placerec.catalog import get_catalog
    from placerec.ops import TaskMetrics, record_metrics

    get_catalog().load_table("ops.task_metrics")  # imports done: the race is in the commits
    ready.wait()
    for day in days:
        record_metrics(TaskMetrics(job, _november(day), _november(day + 1), "rerun", rows_read=100 + day))


def test_concurrent_reruns_of_one_job_keep_every_interval_row(spark) -> None:  # type: ignore[no-untyped-def]
    """A backfill's reruns of one job record their rows at once, into one (compacted) data file:
    each rewrites it, the later commits are refused and made again; no row is lost or doubled."""
    import multiprocessing

    from placerec.ops import TaskMetrics, record_metrics

    ensure_tables(get_catalog())
    job = "metrics_race_test"
    table = get_catalog().load_table("ops.task_metrics")
    first = [TaskMetrics(job, _november(d), _november(d + 1), "1st") for d in range(1, 19)]
    cols = [f.name for f in table.schema().fields]
    seed = [{c: getattr(m, c, None) for c in cols} | {"details": "{}", "recorded_at": m.interval_start} for m in first]
    table.append(pa.Table.from_pylist(seed, schema=table.schema().as_arrow()))  # 18 rows, one file
    ctx = multiprocessing.get_context("spawn")  # fresh interpreters: nothing shared but the catalog
    ready = ctx.Barrier(3)
    writers = [ctx.Process(target=_rerun_days, args=(job, list(range(1 + 6 * i, 7 + 6 * i)), ready)) for i in range(3)]
    for w in writers:
        w.start()
    for w in writers:
        w.join(timeout=300)
        assert w.exitcode == 0
    record_metrics(TaskMetrics(job, first[3].interval_start, first[3].interval_end, "again", rows_read=4))
    rows = spark.table("ops.task_metrics").where(f"job = '{job}'").orderBy("interval_start").collect()
    assert [r.interval_start.day for r in rows] == list(range(1, 19))
    assert [(r.run_id, r.rows_read) for r in rows if r.interval_start.day != 4] == [
        ("rerun", 100 + d) for d in range(1, 19) if d != 4
    ]
    assert [(r.run_id, r.rows_read) for r in rows if r.interval_start.day == 4] == [("again", 4)]


@pytest.mark.reliability
def test_two_spark_writers_committing_to_one_table_at_once_lose_nothing(spark, record_property) -> None:  # type: ignore[no-untyped-def]
    """Two jobs' sessions replace their own quarantine rows in ``raw.quarantine`` at the same moments:
    Iceberg refuses the later commit of each race and Spark makes it again; every row of both is there."""
    import threading

    from placerec.ops import write_quarantine
    from placerec.spark import get_spark

    ensure_tables(get_catalog())
    schema = spark.table("raw.quarantine").schema
    rounds, barrier, errors = 4, threading.Barrier(2), []

    # a session per writer: the test's own and a second one (not stopped here: in a Connect client, stopping
    # a session also ends the process's active one, which the rest of the test session uses)
    sessions = {"race_a": spark, "race_b": get_spark("writer-race_b")}

    def writer(job: str) -> None:
        session = sessions[job]
        try:
            for r in range(rounds):
                day = _november(20)
                rows = [(job, day, _november(21), "events", f"f{r}", n, "invalid_json", "x", "{", 1) for n in range(50)]
                df = session.createDataFrame(rows, schema)
                barrier.wait(timeout=120)
                write_quarantine(df, job, day)
        except Exception as exc:  # reported below: a thread's exception would otherwise vanish
            errors.append(f"{job}: {exc}")
            barrier.abort()

    threads = [threading.Thread(target=writer, args=(job,)) for job in sessions]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=600)
    assert errors == []
    got = spark.table("raw.quarantine").where("job IN ('race_a', 'race_b')").groupBy("job", "source_file").count()
    # each job's last round replaced its earlier ones: 50 rows of file f3 each, nothing else
    assert sorted(tuple(r) for r in got.collect()) == [("race_a", "f3", 50), ("race_b", "f3", 50)]
    record_property("faults_injected", rounds)  # commit races
    record_property("faults_survived", rounds)
    record_property("rows_lost", 0)


def _ensure_tables_at_once(uri: str, warehouse: str, barrier: Any) -> list[str]:
    from pyiceberg.catalog.sql import SqlCatalog

    catalog = SqlCatalog("race", uri=uri, warehouse=warehouse)
    barrier.wait()  # every process past its own set-up: they ask "does it exist?" together
    return ensure_tables(catalog)


def test_jobs_starting_at_once_on_a_new_catalog_all_get_the_tables(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A backfill's days start their ingest tasks together on a new catalog: each finds a namespace or
    table missing, all but one lose the race to create it, and every one of them must still go on."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    from pyiceberg.catalog.sql import SqlCatalog

    uri, warehouse = f"sqlite:///{tmp_path / 'catalog.db'}", (tmp_path / "warehouse").as_uri()
    SqlCatalog("race", uri=uri, warehouse=warehouse)  # the catalog's own tables, as `dev up` leaves them
    ctx = multiprocessing.get_context("fork")
    workers = 4
    with ctx.Manager() as manager, ProcessPoolExecutor(workers, mp_context=ctx) as pool:
        barrier = manager.Barrier(workers)
        created = [
            f.result(timeout=120)
            for f in [pool.submit(_ensure_tables_at_once, uri, warehouse, barrier) for _ in range(workers)]
        ]
    assert sorted(i for c in created for i in c) == sorted(t.identifier for t in TABLES), created
    catalog = SqlCatalog("race", uri=uri, warehouse=warehouse)
    assert {".".join(i) for ns in catalog.list_namespaces() for i in catalog.list_tables(ns)} == {
        t.identifier for t in TABLES
    }


def test_a_process_with_older_definitions_does_not_mark_newer_ones_applied(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """A task that imported tables.py before a deploy brings the tables up to the definitions it holds,
    and records their digest, not the newer file's: the next process still adds the new columns."""
    import dataclasses

    from placerec import catalog as catalog_module
    from placerec import tables
    from placerec.settings import get_settings

    settings = dataclasses.replace(get_settings(), home=tmp_path)
    applied: list[str] = []
    real = tables.ensure_tables

    def ensure(catalog: Any) -> list[str]:
        applied.append(tables.IMPORTED_DIGEST)
        return real(catalog)

    monkeypatch.setattr(tables, "ensure_tables", ensure)
    monkeypatch.setattr(tables, "IMPORTED_DIGEST", "0ld0ld0ld0ld0ld0")  # imported before the file changed
    catalog_module.ensure_tables_once(settings)
    assert catalog_module._recorded_digest(settings) == "0ld0ld0ld0ld0ld0"
    monkeypatch.setattr(tables, "IMPORTED_DIGEST", catalog_module.tables_digest())  # a fresh process
    catalog_module.ensure_tables_once(settings)
    catalog_module.ensure_tables_once(settings)  # now up to date: skipped
    assert applied == ["0ld0ld0ld0ld0ld0", catalog_module.tables_digest()]
