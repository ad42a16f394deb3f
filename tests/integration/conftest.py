"""Integration tests run against the services of ``placerec dev up`` (select with ``-m integration``)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from placerec.settings import get_settings

from ..conftest import SERVICE_HOME


@pytest.fixture(autouse=True)
def service_home(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Point settings at the running services' state, whatever library tests did to the environment."""
    monkeypatch.setenv("PLACEREC_HOME", str(SERVICE_HOME))
    monkeypatch.delenv("PLACEREC_SPARK_REMOTE", raising=False)  # the `dev up` Spark Connect server
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()
