"""Shared fixtures: an isolated state folder for library tests and one local SparkSession (UTC)."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest

from placerec.settings import PROJECT_ROOT, get_settings

NSMC_DIR = PROJECT_ROOT.parent / "shared" / "data" / "nsmc"
# The real services (`placerec dev up`) keep their state here; library tests use their own.
SERVICE_HOME = Path(os.environ.get("PLACEREC_HOME", PROJECT_ROOT / ".local")).resolve()


def after_demo(offset: int) -> date:
    """A day for tests that write generated data into the services' state: after the demo's week and
    its training cut (every model input is read as of the cut), so ``make test`` before ``make demo``
    leaves the demo's history and figures as they are. Each such test takes days no other one uses."""
    from placerec.demo.run import DEMO_DAYS, DEMO_START

    return DEMO_START + timedelta(days=DEMO_DAYS + 7 + offset)


def library_spark() -> str:
    """Where library tests run Spark, unless PLACEREC_SPARK_REMOTE says: the `dev up` Spark Connect
    server when it runs this very code (the jobs' own road: UDFs in the server's workers, with the
    server's environment), else pyspark's in-process Connect server (``local``: no service needed,
    ``make test-unit``)."""
    from placerec.dev import services
    from placerec.spark import SparkUnavailable, check_reachable

    if "PLACEREC_SPARK_REMOTE" in os.environ:  # chosen explicitly: honoured
        return os.environ["PLACEREC_SPARK_REMOTE"]
    settings = get_settings()
    spark_service = next(s for s in services.SERVICES if s.name == "spark")
    try:
        check_reachable(settings.spark_connect_url, timeout=1)
    except SparkUnavailable:
        return "local"
    dev = dataclasses.replace(settings, home=SERVICE_HOME)
    if why := services.stale_reason(dev, spark_service):
        print(f"\nlibrary tests run an in-process Spark: the Spark Connect server's {why} (`placerec dev up`)")
        return "local"
    return ""


@pytest.fixture(scope="session")
def unit_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A private PLACEREC_HOME (catalog, warehouse) sharing the real download cache; Spark in-process."""
    home = tmp_path_factory.mktemp("placerec-home")
    (SERVICE_HOME / "cache").mkdir(parents=True, exist_ok=True)
    (home / "cache").symlink_to(SERVICE_HOME / "cache", target_is_directory=True)
    saved = {key: os.environ.get(key) for key in ("PLACEREC_HOME", "PLACEREC_SPARK_REMOTE")}
    os.environ["PLACEREC_HOME"] = str(home)
    os.environ["PLACEREC_SPARK_REMOTE"] = library_spark()
    get_settings.cache_clear()
    yield home
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    get_settings.cache_clear()


@pytest.fixture(scope="session")
def spark(unit_home: Path):  # type: ignore[no-untyped-def]
    """One Spark Connect session for the whole test session on the private catalog: pyspark's
    in-process Connect server (``PLACEREC_SPARK_REMOTE=local``), so library tests see the protocol
    the jobs run on (no RDD API, UDFs in Python workers) without the ``dev up`` server."""
    from placerec.spark import get_spark

    session = get_spark("placerec-tests")
    yield session
    session.stop()


# Modules that drive the one Airflow instance (they pause and unpause its DAGs): one worker runs them,
# in this order, while the other workers take the rest, a module at a time (scripts/pytest.sh runs
# xdist with --no-loadscope-reorder). They are the longest stretch, so they are handed out first.
AIRFLOW_MODULES = (
    "tests/integration/test_ingest_airflow.py",
    "tests/integration/test_enrich_airflow.py",
    "tests/e2e/test_airflow_ui.py",
    "tests/integration/test_backfill_chain.py",
    "tests/integration/test_connections_airflow.py",  # changes opensearch_default, which publish runs use
)


def _module(nodeid: str) -> str:
    return nodeid.split("::", 1)[0]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    items.sort(key=lambda item: _module(item.nodeid) not in AIRFLOW_MODULES)  # stable: the rest keep their order


def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """Work units for the xdist workers: the Airflow modules together, every other module whole (its
    module-scoped fixtures, some of them minutes of Spark, then run once)."""
    from xdist.scheduler import LoadScopeScheduling

    class ByModule(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            module = _module(nodeid)
            return "airflow" if module in AIRFLOW_MODULES else module

    return ByModule(config, log)
