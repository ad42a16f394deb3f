"""The one SparkSession builder: Iceberg runtime, JDBC catalog shared with pyiceberg, UTC."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from placerec.settings import Settings, get_settings

SQLITE_BUSY_TIMEOUT_MS = 30_000


def spark_conf(settings: Settings | None = None) -> dict[str, str]:
    """Spark properties for the placerec catalog; the same for spark-submit and in-process sessions."""
    settings = settings or get_settings()
    cat = f"spark.sql.catalog.{settings.catalog_name}"
    # Spark and pyiceberg must name the catalog alike: JdbcCatalog rows are keyed by catalog name.
    conf = {
        "spark.sql.extensions": "org.apache.iceberg.spark.extensions.IcebergSparkSessionExtensions",
        cat: "org.apache.iceberg.spark.SparkCatalog",
        f"{cat}.catalog-impl": "org.apache.iceberg.jdbc.JdbcCatalog",
        f"{cat}.uri": settings.catalog_jdbc_uri,
        f"{cat}.warehouse": settings.warehouse_uri,
        f"{cat}.jdbc.schema-version": "V1",
        # pyiceberg and other jobs commit to the same tables: never serve a stale cached snapshot.
        f"{cat}.cache-enabled": "false",
        # pyiceberg creates the catalog tables (schema v1). Iceberg's own check reads JDBC metadata
        # and leaves that result set open, which on SQLite pins the pooled connection to an old
        # snapshot: the session would never see later commits by other processes.
        f"{cat}.jdbc.init-catalog-tables": "false",
        "spark.sql.defaultCatalog": settings.catalog_name,
        "spark.sql.session.timeZone": "UTC",
        "spark.sql.shuffle.partitions": str(settings.spark_shuffle_partitions),
        "spark.ui.enabled": "false",
        "spark.ui.showConsoleProgress": "false",
        "spark.driver.extraJavaOptions": "-Duser.timezone=UTC",
        "spark.executor.extraJavaOptions": "-Duser.timezone=UTC",
    }
    if settings.catalog_jdbc_uri.startswith("jdbc:sqlite:"):
        conf[f"{cat}.jdbc.busy_timeout"] = str(SQLITE_BUSY_TIMEOUT_MS)
        conf[f"{cat}.jdbc.journal_mode"] = "WAL"
    return conf


def get_spark(app_name: str, settings: Settings | None = None, jars: list[Path] | None = None):  # type: ignore[no-untyped-def]
    """A SparkSession for ``app_name``.

    Under spark-submit the master and jars come from the command line; in-process (CLI, tests)
    the builder sets them, downloading the jars once into the cache.
    """
    from pyspark.sql import SparkSession

    from placerec.catalog import get_catalog
    from placerec.dev.artifacts import spark_jars

    settings = settings or get_settings()
    get_catalog(settings)  # creates the catalog's own tables if this is a new catalog
    # Python workers must import placerec: run them on this interpreter (the project's venv).
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    builder = SparkSession.builder.appName(app_name)
    for key, value in spark_conf(settings).items():
        builder = builder.config(key, value)
    # spark-submit starts the JVM first and hands its gateway to Python through this variable.
    if "PYSPARK_GATEWAY_PORT" not in os.environ:
        jar_paths = jars if jars is not None else spark_jars(settings)
        builder = (
            builder.master(settings.spark_master)
            .config("spark.jars", ",".join(str(p) for p in jar_paths))
            .config("spark.driver.memory", settings.spark_driver_memory)
        )
    return builder.getOrCreate()
