"""Integration tests run against the services of ``placerec dev up`` (select with ``-m integration``)."""

from __future__ import annotations

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "integration: needs the local services from `placerec dev up`")
