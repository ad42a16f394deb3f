"""The failure callback against a local test receiver: what it posts, how it retries, that a dead or
failing webhook never raises out of it, and that no secret reaches the log or the body."""

from __future__ import annotations

import json
import logging
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace
from typing import Any

import pytest

from placerec.alerts import configured_secrets, on_failure, post_alert, redact, safe_url
from placerec.settings import Settings, get_settings

pytestmark = pytest.mark.unit

TOKEN = "s3cret-token-42"  # a test's fakes
PASSWORD = "hunter2-pw"


class TestReceiver:
    """A local webhook (127.0.0.1, a free port) that records every POST and answers the scripted
    statuses in turn (200 once they run out)."""

    __test__ = False  # not a test class, though its name says test

    def __init__(self, statuses: list[int] | None = None) -> None:
        self.statuses = list(statuses or [])
        self.requests: list[dict[str, Any]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                receiver.requests.append(
                    {
                        "path": self.path,
                        "content_type": self.headers.get("Content-Type"),
                        "authorization": self.headers.get("Authorization"),
                        "body": json.loads(raw),
                    }
                )
                status = receiver.statuses.pop(0) if receiver.statuses else 200
                self.send_response(status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, format: str, *args: Any) -> None:  # quiet
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, name="test-receiver", daemon=True)

    def url(self, path: str = "/T/abc") -> str:
        return f"http://bot:{PASSWORD}@127.0.0.1:{self.port}{path}?token={TOKEN}"

    def __enter__(self) -> TestReceiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


@pytest.fixture
def alert_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    """Settings re-read from the environment the test sets, and again after it."""
    monkeypatch.setenv("PLACEREC_ALERT_TIMEOUT_S", "2")
    monkeypatch.setenv("PLACEREC_ALERT_RETRIES", "2")
    monkeypatch.delenv("PLACEREC_ALERT_WEBHOOK_URL", raising=False)
    get_settings.cache_clear()
    yield monkeypatch
    monkeypatch.undo()
    get_settings.cache_clear()


def configure(env: pytest.MonkeyPatch, webhook: str) -> None:
    env.setenv("PLACEREC_ALERT_WEBHOOK_URL", webhook)
    get_settings.cache_clear()


def context(message: str = "row_count: 40 rows written\nquarantine_rate: 30 of 100") -> dict[str, Any]:
    ti = SimpleNamespace(
        dag_id="ingest_events",
        task_id="check_data_quality",
        run_id="scheduled__2033-01-01T00:00:00+00:00",
        try_number=1,
    )
    return {"ti": ti, "exception": ValueError(message), "run_id": ti.run_id}


EXPECTED_LINE = (
    "task failed: dag_id=ingest_events task_id=check_data_quality run_id=scheduled__2033-01-01T00:00:00+00:00 "
    "try=1: ValueError: row_count: 40 rows written | quarantine_rate: 30 of 100"
)


def test_the_callback_posts_the_failure_as_json(alert_env, caplog: pytest.LogCaptureFixture) -> None:  # type: ignore[no-untyped-def]
    caplog.set_level(logging.INFO, logger="placerec.alerts")
    with TestReceiver() as receiver:
        configure(alert_env, receiver.url())
        assert on_failure(context()) is None
    assert len(receiver.requests) == 1
    request = receiver.requests[0]
    assert request["path"] == f"/T/abc?token={TOKEN}"  # the receiver gets its URL; nobody else sees it
    assert request["content_type"] == "application/json"
    assert request["authorization"] == "Basic Ym90Omh1bnRlcjItcHc="  # base64 of bot:hunter2-pw
    assert request["body"] == {
        "event": "task_failed",
        "dag_id": "ingest_events",
        "task_id": "check_data_quality",
        "run_id": "scheduled__2033-01-01T00:00:00+00:00",
        "try_number": 1,
        "exception_type": "ValueError",
        "exception": "row_count: 40 rows written\nquarantine_rate: 30 of 100",
        "text": EXPECTED_LINE,
    }
    assert [r.getMessage() for r in caplog.records] == [
        EXPECTED_LINE,
        f"alert posted to http://127.0.0.1:{receiver.port} (HTTP 200)",
    ]
    assert caplog.records[0].levelno == logging.ERROR


def test_a_500_is_retried_until_the_receiver_accepts(alert_env, caplog: pytest.LogCaptureFixture) -> None:  # type: ignore[no-untyped-def]
    caplog.set_level(logging.INFO, logger="placerec.alerts")
    with TestReceiver(statuses=[500]) as receiver:
        configure(alert_env, receiver.url())
        on_failure(context())
    assert len(receiver.requests) == 2
    assert receiver.requests[0]["body"] == receiver.requests[1]["body"]
    assert caplog.records[-1].getMessage() == f"alert posted to http://127.0.0.1:{receiver.port} (HTTP 200)"


def test_retries_back_off_and_give_up_without_raising(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="placerec.alerts")
    waits: list[float] = []
    with TestReceiver(statuses=[503, 500, 502, 200]) as receiver:
        sent = post_alert(receiver.url(), {"a": 1}, timeout=2, retries=2, sleep=waits.append)
    assert sent is False
    assert len(receiver.requests) == 3  # one try and two retries; the fourth answer is never asked for
    assert waits == [0.5, 1.0]
    assert caplog.records[-1].getMessage() == (
        f"alert webhook http://127.0.0.1:{receiver.port} failed after 3 attempt(s): HTTP 502"
    )


def test_a_refusal_is_not_retried(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="placerec.alerts")
    with TestReceiver(statuses=[404]) as receiver:
        assert post_alert(receiver.url(), {"a": 1}, timeout=2, retries=2, sleep=lambda s: None) is False
    assert len(receiver.requests) == 1
    assert (
        caplog.records[-1].getMessage() == f"alert webhook http://127.0.0.1:{receiver.port} refused the alert: HTTP 404"
    )


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_webhook_that_is_down_is_logged_and_the_callback_returns(alert_env, caplog: pytest.LogCaptureFixture) -> None:  # type: ignore[no-untyped-def]
    caplog.set_level(logging.INFO, logger="placerec.alerts")
    port = _closed_port()
    configure(alert_env, f"http://bot:{PASSWORD}@127.0.0.1:{port}/hook?token={TOKEN}")
    assert on_failure(context()) is None
    messages = [r.getMessage() for r in caplog.records]
    assert messages[0] == EXPECTED_LINE
    assert messages[-1].startswith(f"alert webhook http://127.0.0.1:{port} failed after 3 attempt(s): URLError: ")
    assert "refused" in messages[-1].lower()


def test_no_secret_reaches_the_log_or_the_body(alert_env, caplog: pytest.LogCaptureFixture) -> None:  # type: ignore[no-untyped-def]
    caplog.set_level(logging.DEBUG)
    alert_env.setenv("PLACEREC_LLM_API_KEY", "sk-test-abcdef123")
    with TestReceiver(statuses=[500]) as receiver:
        url = receiver.url()
        configure(alert_env, url)
        leaky = f"POST {url} failed; key sk-test-abcdef123, token {TOKEN}, password {PASSWORD}"
        on_failure(context(leaky))
    masked = "POST *** failed; key ***, token ***, password ***"
    assert [r["body"]["exception"] for r in receiver.requests] == [masked, masked]
    assert caplog.records[0].getMessage().endswith(f"ValueError: {masked}")
    for secret in (TOKEN, PASSWORD, "sk-test-abcdef123", "/T/abc", "token="):
        assert secret not in caplog.text
        assert all(secret not in json.dumps(r["body"]) for r in receiver.requests)


def test_without_a_webhook_the_callback_only_logs(alert_env, caplog: pytest.LogCaptureFixture) -> None:  # type: ignore[no-untyped-def]
    caplog.set_level(logging.INFO, logger="placerec.alerts")
    on_failure(context())
    assert [r.getMessage() for r in caplog.records] == [EXPECTED_LINE]
    caplog.clear()
    on_failure({})  # a context with nothing in it: still one line, no exception
    assert [r.getMessage() for r in caplog.records] == [
        "task failed: dag_id= task_id= run_id= try=None: no exception in the context"
    ]


def test_secrets_and_safe_urls() -> None:
    settings = Settings(
        alert_webhook_url=f"https://bot:{PASSWORD}@hooks.example:8443/T/abc?token={TOKEN}&x=1",
        spark_remote="sc://10.0.0.5:15002/;token=spark-tok-9;use_ssl=true",
        opensearch_user="placerec",  # not a secret: kept
    )
    secrets = configured_secrets(settings)
    for secret in (TOKEN, PASSWORD, "spark-tok-9", settings.alert_webhook_url, settings.spark_remote):
        assert secret in secrets
    # not secrets, or too common to mask: the user name, a flag, a number
    assert {"placerec", "bot", "true", "1", "8443"}.isdisjoint(secrets)
    assert (
        redact(f"using sc://10.0.0.5:15002/;token=spark-tok-9;use_ssl=true and {TOKEN}", secrets) == "using *** and ***"
    )
    assert safe_url(settings.alert_webhook_url) == "https://hooks.example:8443"
    assert safe_url("http://[::1") == "<unparseable URL>"
