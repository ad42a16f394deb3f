"""Spark's JdbcCatalog and pyiceberg's SqlCatalog are one catalog: each reads what the other wrote."""

from __future__ import annotations

from datetime import datetime, timezone

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
