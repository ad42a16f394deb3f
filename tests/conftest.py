"""Shared fixtures: an isolated state folder for library tests and one local SparkSession (UTC)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from placerec.settings import PROJECT_ROOT, get_settings

NSMC_DIR = PROJECT_ROOT.parent / "shared" / "data" / "nsmc"
# The real services (`placerec dev up`) keep their state here; library tests use their own.
SERVICE_HOME = Path(os.environ.get("PLACEREC_HOME", PROJECT_ROOT / ".local")).resolve()


@pytest.fixture(scope="session")
def unit_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A private PLACEREC_HOME (catalog, warehouse) sharing the real download cache."""
    home = tmp_path_factory.mktemp("placerec-home")
    (SERVICE_HOME / "cache").mkdir(parents=True, exist_ok=True)
    (home / "cache").symlink_to(SERVICE_HOME / "cache", target_is_directory=True)
    old = os.environ.get("PLACEREC_HOME")
    os.environ["PLACEREC_HOME"] = str(home)
    get_settings.cache_clear()
    yield home
    if old is None:
        os.environ.pop("PLACEREC_HOME", None)
    else:
        os.environ["PLACEREC_HOME"] = old
    get_settings.cache_clear()


@pytest.fixture(scope="session")
def spark(unit_home: Path):  # type: ignore[no-untyped-def]
    """One local SparkSession for the whole test session, on the private catalog."""
    from placerec.spark import get_spark

    session = get_spark("placerec-tests")
    yield session
    session.stop()
