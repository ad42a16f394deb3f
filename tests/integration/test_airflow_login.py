"""Outside dev mode Airflow asks for a login: a real API server refuses anonymous calls, and placerec's
client signs in. The server is a second one on its own port and home, on the services' metadata DB."""

from __future__ import annotations

import dataclasses
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest

from placerec.airflow_api import AirflowApi, AirflowError
from placerec.dev.airflow import airflow_env, venv_bin
from placerec.settings import get_settings

pytestmark = [pytest.mark.integration, pytest.mark.reliability]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _status(url: str, headers: dict[str, str] | None = None) -> int:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=60) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except (urllib.error.URLError, OSError):  # not listening yet
        return 0


def test_outside_dev_mode_airflow_refuses_anonymous_calls_and_the_client_signs_in(
    tmp_path: Path, record_property: pytest.RecordProperty
) -> None:
    password = f"pw-{uuid.uuid4().hex}"
    closed = dataclasses.replace(get_settings(), dev_mode=False, airflow_port=_free_port(), airflow_password=password)
    env = airflow_env(closed)
    env["AIRFLOW_HOME"] = str(tmp_path / "airflow")  # its own config and secrets; the dev instance's DB
    passwords = tmp_path / "passwords.json"
    passwords.write_text(f'{{"admin": "{password}"}}')
    env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"] = str(passwords)
    log = tmp_path / "api-server.log"
    with log.open("wb") as out:
        server = subprocess.Popen(
            [str(venv_bin() / "airflow"), "api-server", "--port", str(closed.airflow_port)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 120
        while _status(f"{closed.airflow_url}/api/v2/monitor/health") != 200:
            assert server.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, "the API server did not come up"
            time.sleep(1)
        assert _status(f"{closed.airflow_url}/api/v2/dags?limit=1") == 401  # anonymous: refused
        assert "dags" in AirflowApi(closed)._call("/dags?limit=1")  # signed in
        # the placerec page (a plugin's FastAPI app) is behind the same login
        for page in ("/placerec/", "/placerec/api/figures", "/placerec/runs/train_hybrid/x"):
            assert _status(closed.airflow_url + page) == 401, page
            assert _status(closed.airflow_url + page, AirflowApi(closed)._headers()) == 200, page
        wrong = dataclasses.replace(closed, airflow_password="not-the-password")
        with pytest.raises(AirflowError, match="signing in"):
            AirflowApi(wrong)._call("/dags?limit=1")
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
    found = int(password in log.read_text(errors="replace"))
    record_property("secrets_searched", 1)
    record_property("secrets_found", found)
    assert not found
