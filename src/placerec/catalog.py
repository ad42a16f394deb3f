"""pyiceberg access to the project's Iceberg catalog (the same catalog Spark's JdbcCatalog uses).

pyiceberg (with SQLAlchemy) takes a second or two to import; this module imports it only when a
catalog is asked for, so a job whose tables are in place never pays for it (``ensure_tables_once``).
"""

from __future__ import annotations

import hashlib
import importlib.util
import sqlite3
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlparse

from placerec.settings import Settings, get_settings

if TYPE_CHECKING:
    from pyiceberg.catalog import Catalog

# SQLite is shared by Spark (JDBC) and pyiceberg (SQLAlchemy): WAL plus a busy timeout lets a
# reader and a committer meet without "database is locked".
SQLITE_BUSY_TIMEOUT_S = 30
TABLES_DIGEST_KEY = "placerec.tables-digest"
"""Property of the ``ops`` namespace: the digest of ``tables.py`` the tables were last brought up to."""


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
    from pyiceberg.catalog.sql import SqlCatalog

    # Preparing the file and the warehouse folder is start-up work: once per catalog, not per call.
    if warehouse.startswith("file:"):
        Path(unquote(urlparse(warehouse).path)).mkdir(parents=True, exist_ok=True)
    # schema v1, so Spark's JdbcCatalog reads the same rows
    return SqlCatalog(name, uri=_prepare_sqlite(uri), warehouse=warehouse, schema_version="v1")


def get_catalog(settings: Settings | None = None) -> Catalog:
    """The shared Iceberg catalog as a pyiceberg ``Catalog``."""
    settings = settings or get_settings()
    return _catalog(settings.catalog_name, settings.catalog_sqlalchemy_uri, settings.warehouse_uri)


def tables_digest() -> str:
    """Digest of the table definitions' source (``placerec/tables.py``), read without importing it."""
    spec = importlib.util.find_spec("placerec.tables")
    assert spec is not None and spec.origin is not None
    return hashlib.sha256(Path(spec.origin).read_bytes()).hexdigest()[:16]


def _recorded_digest(settings: Settings) -> str:
    """The digest recorded in a SQLite catalog ("" when there is none, or the catalog is another kind)."""
    if not settings.catalog_sqlalchemy_uri.startswith("sqlite:///") or not settings.catalog_db.is_file():
        return ""
    try:
        with sqlite3.connect(settings.catalog_db, timeout=SQLITE_BUSY_TIMEOUT_S) as conn:
            found = conn.execute(
                "SELECT property_value FROM iceberg_namespace_properties "
                "WHERE catalog_name = ? AND namespace = 'ops' AND property_key = ?",
                (settings.catalog_name, TABLES_DIGEST_KEY),
            ).fetchone()
    except sqlite3.OperationalError:  # no catalog tables yet
        return ""
    return str(found[0]) if found else ""


def ensure_tables_once(settings: Settings | None = None, *, check_all: bool = False) -> list[str]:
    """Every design table exists as ``tables.py`` defines it; returns the identifiers created.

    Each job calls this first. When the catalog records that its tables were brought up to this
    very ``tables.py``, nothing is loaded; otherwise ``ensure_tables`` runs and the digest is recorded.
    A table dropped by hand is not noticed then: ``check_all`` (``placerec create-tables``) checks each.
    """
    settings = settings or get_settings()
    if not check_all and _recorded_digest(settings) == tables_digest():
        return []
    from placerec import tables

    catalog = get_catalog(settings)
    created = tables.ensure_tables(catalog)
    # the digest of the definitions just applied, as this process imported them: a process that
    # imported an older tables.py (a task started before a deploy) must not record the newer file's
    # digest over tables it brought only up to the old one (the next process would then skip them)
    catalog.update_namespace_properties("ops", updates={TABLES_DIGEST_KEY: tables.IMPORTED_DIGEST})
    return created
