"""Tiny JSON-over-HTTP helpers for health probes (stdlib only, so probes work before anything is installed)."""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request
from typing import Any
from urllib.parse import urlsplit


class ProbeError(RuntimeError):
    """The endpoint did not answer, or answered something unusable."""


def request_json(
    url: str, *, method: str = "GET", body: Any = None, timeout: float = 5.0, headers: dict[str, str] | None = None
) -> Any:
    """Send a request (JSON ``body`` if given) and return the decoded JSON response.

    Raises ProbeError on connection errors, HTTP errors and non-JSON answers.
    """
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method)  # noqa: S310 - loopback service URLs
    if data is not None:
        req.add_header("Content-Type", "application/json")
    for key, value in (headers or {}).items():
        req.add_header(key, value)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310
            return json.loads(resp.read().decode() or "null")
    except urllib.error.HTTPError as exc:
        raise ProbeError(f"HTTP {exc.code} from {url}: {exc.read()[:300].decode(errors='replace')}") from exc
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        reason = getattr(exc, "reason", exc)
        raise ProbeError(f"{url}: {reason}") from exc
    except ValueError as exc:
        raise ProbeError(f"{url}: not JSON") from exc


def port_in_use(url: str) -> bool:
    """True when something accepts TCP connections at the host:port of ``url``."""
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False
