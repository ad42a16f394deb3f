"""Failure alerts: an Airflow ``on_failure_callback`` that logs one line and, when a webhook is
configured (``PLACEREC_ALERT_WEBHOOK_URL``), POSTs the same facts to it as JSON.

A callback must never fail the callback machinery: a webhook that is down, slow or answers 5xx is
retried a couple of times, then logged. Secrets never leave: every configured secret (the settings
fields kept out of ``repr``, the parts of a URL that carry a token) is masked in the log line and the
body, and the webhook itself is only ever named by its scheme and host.

Cheap to import (DAG files get it through ``placerec.orchestration``): the standard library only,
the HTTP client and settings are resolved when a task fails.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, unquote, urlsplit

if TYPE_CHECKING:
    from placerec.settings import Settings

log = logging.getLogger(__name__)

MASK = "***"
MESSAGE_CHARS = 4000
"""The exception message is cut to this many characters in the body (a data-quality failure lists every check)."""
LOG_MESSAGE_CHARS = 1000
_MIN_SECRET_CHARS = 4  # shorter "secrets" (a port, "on") would mask ordinary words
_NOT_SECRET = frozenset({"true", "false", "yes", "no", "on", "off"})
_PARAM = re.compile(r"[?&;]([^=&;#]+)=([^&;#]+)")


@dataclass(frozen=True)
class Alert:
    """What failed: the facts the log line and the webhook body carry."""

    dag_id: str
    task_id: str
    run_id: str
    try_number: int | None
    exception: str
    exception_type: str

    def line(self, limit: int = LOG_MESSAGE_CHARS) -> str:
        """One log line (the message's line breaks folded)."""
        message = " | ".join(part.strip() for part in self.exception.splitlines() if part.strip())
        if len(message) > limit:
            message = message[:limit] + " …"
        what = f"{self.exception_type}: {message}" if self.exception_type else "no exception in the context"
        return (
            f"task failed: dag_id={self.dag_id} task_id={self.task_id} run_id={self.run_id} "
            f"try={self.try_number}: {what}"
        )

    def body(self) -> dict[str, Any]:
        """The JSON body: the fields, and ``text`` (the log line) for chat webhooks that show only that."""
        return {
            "event": "task_failed",
            "dag_id": self.dag_id,
            "task_id": self.task_id,
            "run_id": self.run_id,
            "try_number": self.try_number,
            "exception_type": self.exception_type,
            "exception": self.exception[:MESSAGE_CHARS],
            "text": self.line(),
        }


def secret_parts(value: str) -> list[str]:
    """``value`` and the parts of it that are secrets on their own when it is a URL: the password of
    its userinfo and the values of its query or ``;key=value`` parameters (flags and numbers aside:
    masking every "true" would garble messages)."""
    parts = [value]
    try:
        url = urlsplit(value)
        parts.append(unquote(url.password or ""))
        parts += [v for _, v in parse_qsl(url.query)]
    except ValueError:  # not a URL (an invalid port, say): the whole value is masked all the same
        pass
    parts += [unquote(v) for _, v in _PARAM.findall(value)]
    return [p for p in parts if len(p) >= _MIN_SECRET_CHARS and p.lower() not in _NOT_SECRET and not p.isdigit()]


def configured_secrets(settings: Settings) -> list[str]:
    """Every secret of ``settings``: the string fields kept out of ``repr``, with their URL parts."""
    found: set[str] = set()
    for f in fields(settings):
        value = getattr(settings, f.name)
        if not f.repr and isinstance(value, str) and value:
            found.update(secret_parts(value))
    return sorted(found, key=len, reverse=True)  # longest first: a URL before the token inside it


def redact(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every occurrence of each secret replaced by ``***``."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, MASK)
    return text


def safe_url(url: str) -> str:
    """A webhook URL as it may be logged: scheme and host only (path, query and userinfo may hold tokens)."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or "?"
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "<unparseable URL>"
    return f"{parts.scheme or '?'}://{host}{port}"


def alert_from_context(context: Mapping[str, Any], secrets: Iterable[str] = ()) -> Alert:
    """The facts of a failed task from its Airflow context (any of them may be missing), secrets masked."""
    secrets = list(secrets)
    ti = context.get("ti") or context.get("task_instance")
    dag = context.get("dag")
    exc = context.get("exception")
    try_number = getattr(ti, "try_number", None)

    def text(value: Any) -> str:
        return redact("" if value is None else str(value), secrets)

    return Alert(
        dag_id=text(getattr(ti, "dag_id", None) or getattr(dag, "dag_id", None)),
        task_id=text(getattr(ti, "task_id", None)),
        run_id=text(getattr(ti, "run_id", None) or context.get("run_id")),
        try_number=try_number if isinstance(try_number, int) else None,
        exception=text(exc) if exc is not None else "",
        exception_type=type(exc).__name__ if exc is not None else "",
    )


def _target(url: str) -> tuple[str, dict[str, str]]:
    """The URL to open and the request headers: userinfo, which urllib cannot send, becomes basic auth."""
    import base64

    headers = {"Content-Type": "application/json", "User-Agent": "placerec"}
    try:
        parts = urlsplit(url)
        netloc = parts.netloc.rpartition("@")[2]
    except ValueError:
        return url, headers
    if parts.username is not None or parts.password is not None:
        pair = f"{unquote(parts.username or '')}:{unquote(parts.password or '')}".encode()
        headers["Authorization"] = "Basic " + base64.b64encode(pair).decode("ascii")
    return parts._replace(netloc=netloc).geturl(), headers


class _Retryable(Exception):
    """An attempt worth repeating: no connection, a timeout, a 5xx or 429 answer."""


def post_alert(
    url: str,
    body: Mapping[str, Any],
    *,
    timeout: float,
    retries: int,
    secrets: Iterable[str] = (),
    sleep: Callable[[float], None] = time.sleep,
) -> bool:
    """POST ``body`` as JSON to ``url``, retrying ``retries`` times (exponential back-off from 0.5 s,
    ``sleep`` waiting); True when it was accepted (2xx). Never raises: a failure is logged, naming the
    URL by its scheme and host only."""
    import http.client
    import urllib.error
    import urllib.request

    from tenacity import RetryError, Retrying, retry_if_exception_type, stop_after_attempt, wait_exponential

    data = json.dumps(body, sort_keys=True, default=str).encode("utf-8")
    secrets = list(secrets)
    where = safe_url(url)
    target, headers = _target(url)

    def attempt() -> int:
        request = urllib.request.Request(  # noqa: S310 (the configured webhook; http(s) only, checked below)
            target, data=data, method="POST", headers=headers
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout) as answer:  # noqa: S310
                return int(answer.status)
        except urllib.error.HTTPError as exc:
            if exc.code >= 500 or exc.code == 429:
                raise _Retryable(f"HTTP {exc.code}") from None
            return int(exc.code)
        except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:  # refused, timed out, cut off
            reason = getattr(exc, "reason", exc)
            raise _Retryable(f"{type(exc).__name__}: {reason}") from None

    if urlsplit(target).scheme not in ("http", "https"):
        log.warning("alert webhook %s is not an http(s) URL: alert not sent", where)
        return False
    retrying = Retrying(
        stop=stop_after_attempt(max(retries, 0) + 1),
        wait=wait_exponential(multiplier=0.5, max=5),
        retry=retry_if_exception_type(_Retryable),
        sleep=sleep,
    )
    try:
        status = retrying(attempt)
    except RetryError as exc:
        last = exc.last_attempt.exception()
        log.warning(
            "alert webhook %s failed after %d attempt(s): %s",
            where,
            exc.last_attempt.attempt_number,
            redact(str(last), secrets),
        )
        return False
    except Exception as exc:  # anything else the client raised: its text may hold the URL, so the kind only
        log.warning("alert webhook %s failed: %s", where, type(exc).__name__)
        return False
    if not 200 <= status < 300:
        log.warning("alert webhook %s refused the alert: HTTP %d", where, status)
        return False
    log.info("alert posted to %s (HTTP %d)", where, status)
    return True


def on_failure(context: Mapping[str, Any]) -> None:
    """Airflow ``on_failure_callback``: log one line saying what failed; POST it to the webhook if one
    is configured. Returns normally whatever happens (a broken alert path is logged, never raised)."""
    try:
        from placerec.settings import get_settings

        settings: Settings | None = get_settings()
    except Exception as exc:  # the failure is still logged; only the webhook needs settings
        log.warning("failure callback could not read the settings (%s): no webhook, nothing masked", type(exc).__name__)
        settings = None
    try:
        secrets = configured_secrets(settings) if settings is not None else []
        alert = alert_from_context(context, secrets)
        log.error("%s", alert.line())
        if settings is not None and settings.alert_webhook_url:
            post_alert(
                settings.alert_webhook_url,
                alert.body(),
                timeout=settings.alert_timeout_s,
                retries=settings.alert_retries,
                secrets=secrets,
            )
    except Exception as exc:  # the callback's own failure must not hide the task's
        log.warning("failure callback could not alert: %s", type(exc).__name__)
