"""pyiceberg access to the project's Iceberg catalog (the same catalog Spark's JdbcCatalog uses)."""

from __future__ import annotations

import sqlite3
from functools import lru_cache
from pathlib import Path
from urllib.parse import unquote, urlparse

from pyiceberg.catalog import Catalog
from pyiceberg.catalog.sql import SqlCatalog

from placerec.settings import Settings, get_settings

# SQLite is shared by Spark (JDBC) and pyiceberg (SQLAlchemy): WAL plus a busy timeout lets a
# reader and a committer meet without "database is locked".
SQLITE_BUSY_TIMEOUT_S = 30


def _prepare_sqlite(uri: str) -> str:
    """Create the SQLite file's folder, switch it to WAL once, and add the busy timeout to the URI."""
    if not uri.startswith("sqlite:///"):
        return uri
    db = Path(uri.removeprefix("sqlite:///").split("?", 1)[0])
    db.parent.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(db, timeout=SQLITE_BUSY_TIMEOUT_S) as conn:
        conn.execute("PRAGMA journal_mode=WAL")  # persistent: set once per file
    sep = "&" if "?" in uri else "?"
    return f"{uri}{sep}timeout={SQLITE_BUSY_TIMEOUT_S}"


@lru_cache(maxsize=4)
def _catalog(name: str, uri: str, warehouse: str) -> Catalog:
    # Preparing the file and the warehouse folder is start-up work: once per catalog, not per call.
    if warehouse.startswith("file:"):
        Path(unquote(urlparse(warehouse).path)).mkdir(parents=True, exist_ok=True)
    # schema v1, so Spark's JdbcCatalog reads the same rows
    return SqlCatalog(name, uri=_prepare_sqlite(uri), warehouse=warehouse, schema_version="v1")


def get_catalog(settings: Settings | None = None) -> Catalog:
    """The shared Iceberg catalog as a pyiceberg ``Catalog``."""
    settings = settings or get_settings()
    return _catalog(settings.catalog_name, settings.catalog_sqlalchemy_uri, settings.warehouse_uri)
