"""The long-lived Spark Connect server of `placerec dev up`: fresh reads, isolated sessions, UDFs in its workers."""

from __future__ import annotations

import dataclasses
import os
import sys
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from placerec.catalog import ensure_tables_once, get_catalog
from placerec.settings import PROJECT_ROOT, Settings, get_settings
from placerec.spark import get_spark, interrupt_sessions

pytestmark = pytest.mark.integration


@pytest.fixture()
def private(tmp_path: Path) -> Settings:
    """A catalog of its own in a temporary state folder, served by the shared server through session settings."""
    settings = dataclasses.replace(get_settings(), home=tmp_path)
    ensure_tables_once(settings)
    return settings


def place(place_id: str, name: str) -> dict[str, Any]:
    return {
        "place_id": place_id,
        "name": name,
        "category": "카페",
        "district": "망원동",
        "lat": 37.55,
        "lon": 126.9,
        "address": None,
        "updated_ts": datetime(2026, 11, 1, tzinfo=timezone.utc),
        "source": "test",
        "source_file": None,
        "source_line": None,
    }


def test_a_session_sees_commits_by_pyiceberg_and_by_other_sessions_at_once(private: Settings) -> None:
    reader = get_spark("test-reader", private)
    writer = get_spark("test-writer", private)
    try:
        assert reader.table("raw.places").count() == 0  # the reader has loaded the table once
        table = get_catalog(private).load_table("raw.places")
        table.append(pa.Table.from_pylist([place("py-1", "망원 커피")], schema=table.schema().as_arrow()))
        assert [r.name for r in reader.table("raw.places").collect()] == ["망원 커피"]  # no stale snapshot
        writer.sql(
            "INSERT INTO raw.places VALUES ('sp-1', '연남 빵집', '베이커리', '연남동', 37.56, 126.92, NULL, "
            "TIMESTAMP '2026-11-02 00:00:00', 'test', NULL, NULL)"
        )
        assert sorted(r.place_id for r in reader.table("raw.places").collect()) == ["py-1", "sp-1"]
        seen = get_catalog(private).load_table("raw.places").scan().to_arrow().column("place_id").to_pylist()
        assert sorted(seen) == ["py-1", "sp-1"]
    finally:
        reader.stop()
        writer.stop()


def test_sessions_are_isolated_and_the_catalog_is_the_sessions_own(private: Settings) -> None:
    mine = get_spark("test-a", private)
    other = get_spark("test-b", dataclasses.replace(get_settings(), home=private.home.parent / "elsewhere"))
    try:
        mine.range(3).createOrReplaceTempView("only_here")
        assert mine.table("only_here").count() == 3
        with pytest.raises(Exception, match="TABLE_OR_VIEW_NOT_FOUND"):
            other.table("only_here").count()
        uri = "spark.sql.catalog.placerec.uri"
        assert mine.conf.get(uri) == f"jdbc:sqlite:{private.home / 'iceberg' / 'catalog.db'}"
        assert other.conf.get(uri) != mine.conf.get(uri)
    finally:
        mine.stop()
        other.stop()


def test_udfs_run_in_the_servers_workers_with_the_project_installed(private: Settings) -> None:
    def whoami(batches: Iterator[Any]) -> Iterator[Any]:  # nested: pickled by value (tests/ is not installed)
        import placerec

        for _ in batches:
            pass
        yield pa.RecordBatch.from_pylist(
            [{"pid": os.getpid(), "python": sys.executable, "placerec": placerec.__file__}]
        )

    spark = get_spark("test-udf", private)
    try:
        rows = spark.range(10).repartition(2).mapInArrow(whoami, "pid long, python string, placerec string").collect()
    finally:
        spark.stop()
    assert rows and all(r.pid != os.getpid() for r in rows)
    assert {r.python for r in rows} == {sys.executable}  # the project's venv interpreter
    assert {Path(r.placerec).resolve().is_relative_to(PROJECT_ROOT / "src") for r in rows} == {True}


def test_a_killed_task_leaves_no_query_running(private: Settings) -> None:
    """What the Spark task's on_kill does: interrupt its sessions' operations on the server."""

    def sleepy(batches: Iterator[Any]) -> Iterator[Any]:
        for batch in batches:
            time.sleep(120)
            yield batch

    spark = get_spark("test-kill", private)
    failure: list[BaseException] = []

    def run() -> None:
        try:
            spark.range(4).mapInArrow(sleepy, "id long").collect()
        except BaseException as exc:
            failure.append(exc)

    worker = threading.Thread(target=run, daemon=True)
    began = time.monotonic()
    worker.start()
    time.sleep(5)  # the query is on the server, its UDF asleep
    assert worker.is_alive()
    interrupt_sessions()
    worker.join(timeout=60)
    try:
        assert not worker.is_alive() and failure, "the query was not interrupted"
        assert "interrupt" in str(failure[0]).lower() or "cancel" in str(failure[0]).lower(), failure[0]
        assert time.monotonic() - began < 100  # well before the UDF would have finished sleeping
        assert spark.range(2).count() == 2  # the session itself still works
    finally:
        spark.stop()
