"""pyiceberg access to the project's Iceberg catalog (the same catalog Spark's JdbcCatalog uses)."""

from __future__ import annotations

import sqlite3
from functools import lru_cache
from pathlib import Path

from pyiceberg.catalog import Catalog
from pyiceberg.catalog.sql import SqlCatalog

from placerec.settings import Settings, get_settings

# SQLite is shared by Spark (JDBC) and pyiceberg (SQLAlchemy): WAL plus a busy timeout lets a
# reader and a committer meet without "database is locked".
SQLITE_BUSY_TIMEOUT_S = 30


def _prepare_sqlite(settings: Settings) -> str:
    uri = settings.catalog_sqlalchemy_uri
    if uri.startswith("sqlite:///"):
        db = Path(uri.removeprefix("sqlite:///").split("?", 1)[0])
        db.parent.mkdir(parents=True, exist_ok=True)
        with sqlite3.connect(db, timeout=SQLITE_BUSY_TIMEOUT_S) as conn:
            conn.execute("PRAGMA journal_mode=WAL")  # persistent: set once per file
        sep = "&" if "?" in uri else "?"
        uri = f"{uri}{sep}timeout={SQLITE_BUSY_TIMEOUT_S}"
    return uri


def catalog_properties(settings: Settings | None = None) -> dict[str, str]:
    """Properties for pyiceberg's SqlCatalog (schema v1, so Spark's JdbcCatalog reads the same rows)."""
    settings = settings or get_settings()
    return {
        "uri": _prepare_sqlite(settings),
        "warehouse": settings.warehouse_uri,
        "schema_version": "v1",
    }


@lru_cache(maxsize=4)
def _catalog(name: str, props: tuple[tuple[str, str], ...]) -> Catalog:
    return SqlCatalog(name, **dict(props))


def get_catalog(settings: Settings | None = None) -> Catalog:
    """The shared Iceberg catalog as a pyiceberg ``Catalog``."""
    settings = settings or get_settings()
    if not settings.warehouse and settings.warehouse_uri.startswith("file:"):
        (settings.home / "warehouse").mkdir(parents=True, exist_ok=True)
    return _catalog(settings.catalog_name, tuple(sorted(catalog_properties(settings).items())))
