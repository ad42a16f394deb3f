"""The Airflow connections placerec reads, in the types their providers define.

========================  =================  ======================================================
connection (setting)      type (provider)    fields
========================  =================  ======================================================
``opensearch_default``    ``opensearch``     host, port, login, password; extra ``use_ssl``,
(``opensearch_conn_id``)  (OpenSearch)       ``verify_certs``, ``url_prefix``, ``timeout``, and
                                             placerec's ``ca_certs`` (a PEM file)
``llm_default``           ``openai``         host = base URL, password = API key (or the provider's
(``llm_conn_id``)         (OpenAI)           ``extra.openai_client_kwargs``); extra ``model``,
                                             ``rpm``, ``tpm``
``embeddings_default``    ``openai``         the same, for the OpenAI-compatible embeddings endpoint
(``embeddings_conn_id``)  (OpenAI)           (extra ``model``)
``spark_connect_default`` ``spark_connect``  host, port, login = user, password = token, ``use_ssl``
(``spark_conn_id``)       (Apache Spark)
========================  =================  ======================================================

Each is read as Airflow reads it (JSON or URI form, as ``AIRFLOW_CONN_<ID>`` holds it, or as
Admin → Connections keeps it), so a value means here what it means to the provider's hook.
Where a connection comes from:

* :func:`from_env` (every process: the CLI, a job, spark-submit's driver): ``AIRFLOW_CONN_<ID>`` only,
  parsed here by :meth:`Conn.parse` without importing Airflow: a process a task starts inherits an
  environment in which ``import airflow`` fails (Airflow 3 points a task's database URL at nothing),
  and env-only configuration should cost no Airflow import. ``tests/unit/test_connections.py`` holds
  the parse to Airflow's own ``Connection.from_json`` / ``from_uri``. A task puts the connections it
  was given into its own process environment first (``PlacerecSparkOperator``), so connections kept
  in Airflow's database reach the job that way;
* :func:`from_airflow` (the API server, a task): Airflow's lookup (secrets backends, the metadata
  database, the environment), used by the placerec page.

Explicit ``PLACEREC_*`` settings win over a connection's values; no value here is ever logged, and an
error names the connection, never its contents.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlsplit

_TRUE = ("1", "true", "yes", "on", "y", "t")
EXTRA_KEY = "__extra__"
"""A URI's query parameter holding the whole extra as JSON (Airflow's)."""


@dataclass(frozen=True)
class Conn:
    """The fields of an Airflow connection placerec reads (``extra`` decoded)."""

    conn_id: str
    conn_type: str = ""
    host: str = ""
    port: int | None = None
    schema: str = ""
    login: str = ""
    password: str = field(default="", repr=False)
    extra: dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def parse(cls, conn_id: str, raw: str) -> Conn:
        """``raw`` in the JSON or URI form of ``AIRFLOW_CONN_<ID>``, read by Airflow's rules: a JSON
        ``extra`` may be an object or its text; a URI is ``type://login:password@host:port/schema?extra``,
        with ``type://protocol://…`` for a host with its scheme and ``__extra__`` for extra as JSON."""
        raw = raw.strip()
        try:
            return cls._json(conn_id, raw) if raw.startswith("{") else cls._uri(conn_id, raw)
        except (ValueError, TypeError) as exc:  # a parser's message may quote the value: name the variable
            form = "JSON" if raw.startswith("{") else "a connection URI"
            raise ValueError(f"{env_key(conn_id)} is not valid {form} ({type(exc).__name__})") from None

    @classmethod
    def _json(cls, conn_id: str, raw: str) -> Conn:
        value = json.loads(raw)
        if not isinstance(value, dict):
            raise ValueError("not an object")
        port = value.get("port")
        return cls(
            conn_id,
            _conn_type(str(value.get("conn_type") or "")),
            str(value.get("host") or ""),
            int(port) if port not in (None, "") else None,
            str(value.get("schema") or ""),
            str(value.get("login") or ""),
            str(value.get("password") or ""),
            _extra(conn_id, value.get("extra")),
        )

    @classmethod
    def _uri(cls, conn_id: str, raw: str) -> Conn:
        schemes = raw.count("://")
        if schemes not in (1, 2):
            raise ValueError("not type://…")
        kind = urlsplit(raw).scheme
        rest = raw.replace(f"{kind}://", "" if schemes == 2 else "//", 1)
        if schemes == 2 and any(c in rest.split("://", 1)[0] for c in "@:"):
            raise ValueError("a host protocol holds no credentials")
        parts = urlsplit(rest)
        host = unquote(parts.hostname or "")
        if "/" in host:  # an encoded path in the host: keep its case and its slashes
            host = parts.netloc.rsplit("@", 1)[-1].split(":", 1)[0]
            host = unquote(host)
        if host and schemes == 2:
            host = f"{parts.scheme}://{host}"
        query = dict(parse_qsl(parts.query, keep_blank_values=True)) if parts.query else {}
        extra = query[EXTRA_KEY] if EXTRA_KEY in query else query
        return cls(
            conn_id,
            _conn_type(kind),
            host,
            parts.port,
            unquote(parts.path[1:]),
            unquote(parts.username or ""),
            unquote(parts.password or ""),
            _extra(conn_id, extra),
        )

    @classmethod
    def of(cls, conn: Any) -> Conn:
        """An Airflow ``Connection`` (as :func:`from_airflow` finds it) in these fields."""
        return cls(
            str(conn.conn_id),
            str(conn.conn_type or ""),
            str(conn.host or ""),
            conn.port,
            str(conn.schema or ""),
            str(conn.login or ""),
            str(conn.password or ""),
            _extra(str(conn.conn_id), conn.extra),
        )


def _conn_type(kind: str) -> str:
    return "postgres" if kind == "postgresql" else kind.replace("-", "_")


def _extra(conn_id: str, value: object) -> dict[str, Any]:
    if value in (None, ""):
        return {}
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            raise ValueError(f"connection {conn_id}: extra is not JSON") from None
    if not isinstance(value, dict):
        raise ValueError(f"connection {conn_id}: extra is not a JSON object")
    return value


Lookup = Callable[[str], "Conn | None"]


def env_key(conn_id: str) -> str:
    return f"AIRFLOW_CONN_{conn_id.upper()}"


def from_env(conn_id: str) -> Conn | None:
    """The connection ``AIRFLOW_CONN_<ID>`` holds (JSON or URI); None when unset."""
    raw = os.environ.get(env_key(conn_id), "").strip()
    return Conn.parse(conn_id, raw) if raw else None


def from_airflow(conn_id: str) -> Conn | None:
    """The connection as Airflow finds it (secrets backends, metadata database, environment); None when
    it is not defined anywhere. Only in a process that runs Airflow (the API server, a task)."""
    from airflow.sdk import BaseHook
    from airflow.sdk.exceptions import AirflowNotFoundException

    try:
        return Conn.of(BaseHook.get_connection(conn_id))
    except AirflowNotFoundException:
        return None


def _true(value: object) -> bool:
    return str(value).strip().lower() in _TRUE


def _whole(conn: Conn, name: str, value: object) -> int:
    try:
        return int(str(value))
    except ValueError:
        raise ValueError(f"connection {conn.conn_id}: {name} must be a whole number, not {value!r}") from None


def _number(conn: Conn, name: str, value: object) -> float:
    try:
        return float(str(value))
    except ValueError:
        raise ValueError(f"connection {conn.conn_id}: {name} must be a number, not {value!r}") from None


def _base_url(conn: Conn, default_scheme: str = "https") -> str:
    """host (with its scheme, or ``default_scheme``) + port + schema as a path: ``https://host:port/v1``."""
    host = str(conn.host or "").strip()
    if not host:
        return ""
    if "://" not in host:
        local = host.split("/")[0].split(":")[0] in ("127.0.0.1", "localhost")
        host = f"{'http' if local else default_scheme}://{host}"
    if conn.port:
        parsed = urlsplit(host)
        host = f"{parsed.scheme}://{parsed.hostname}:{conn.port}{parsed.path}"
    if conn.schema:
        host = f"{host.rstrip('/')}/{str(conn.schema).lstrip('/')}"
    return host


def opensearch_settings(conn: Conn | None) -> dict[str, object]:
    """``opensearch_*`` settings from an ``opensearch`` connection, read as the OpenSearch provider's
    ``OpenSearchHook`` reads it (host and port, ``extra.use_ssl`` for https, ``extra.verify_certs``),
    except that certificates are verified unless ``verify_certs`` says not to (the hook's default is off)."""
    if conn is None:
        return {}
    extra = conn.extra
    host, port = str(conn.host or "").strip(), conn.port
    scheme = str(extra.get("scheme") or conn.schema or "")
    if "://" in host:  # a URL in the host field: its scheme and port count
        parsed = urlsplit(host)
        scheme, host, port = scheme or parsed.scheme, parsed.hostname or "", port or parsed.port
    tls = _true(extra.get("use_ssl", False)) or scheme == "https"
    found: dict[str, object] = {}
    if host:
        prefix = str(extra.get("url_prefix") or "").strip("/")
        found["opensearch_url"] = f"{'https' if tls else 'http'}://{host}:{port or 9200}" + (
            f"/{prefix}" if prefix else ""
        )
    if conn.login:
        found["opensearch_user"] = str(conn.login)
    if conn.password:
        found["opensearch_password"] = str(conn.password)
    if "verify_certs" in extra:
        found["opensearch_verify_certs"] = _true(extra["verify_certs"])
    if extra.get("ca_certs"):
        found["opensearch_ca_certs"] = str(extra["ca_certs"])
    if extra.get("timeout") not in (None, ""):
        found["opensearch_timeout_s"] = _number(conn, "timeout", extra["timeout"])
    return found


def _openai(conn: Conn) -> tuple[str, str, dict[str, Any]]:
    """base URL, API key and extra of an ``openai`` connection, as the OpenAI provider's ``OpenAIHook``
    builds its client: ``extra.openai_client_kwargs`` (``base_url``, ``api_key``) over host and password."""
    extra = conn.extra
    kwargs = extra.get("openai_client_kwargs") or {}
    if not isinstance(kwargs, dict):
        raise ValueError(f"connection {conn.conn_id}: extra.openai_client_kwargs is not a JSON object")
    base_url = str(kwargs.get("base_url") or "") or _base_url(conn)
    key = str(kwargs.get("api_key") or conn.password or "")
    return base_url, key, {**extra, **{k: v for k, v in kwargs.items() if k in ("timeout", "max_retries")}}


def llm_settings(conn: Conn | None) -> dict[str, object]:
    """``llm_*`` settings from an ``openai`` connection (any OpenAI-compatible endpoint): base URL, key,
    ``extra.model``, the account's limits as ``extra.rpm`` / ``extra.tpm``, ``timeout`` and ``max_retries``."""
    if conn is None:
        return {}
    base_url, key, extra = _openai(conn)
    found: dict[str, object] = {
        "llm_base_url": base_url,
        "llm_api_key": key,
        "llm_model": str(extra.get("model") or ""),
    }
    found = {k: v for k, v in found.items() if v}
    for name in ("rpm", "tpm", "max_retries"):
        if extra.get(name) not in (None, ""):
            found[f"llm_{name}"] = _whole(conn, name, extra[name])
    if extra.get("timeout") not in (None, ""):
        found["llm_timeout_s"] = _number(conn, "timeout", extra["timeout"])
    return found


def embeddings_settings(conn: Conn | None) -> dict[str, object]:
    """``embeddings_*`` settings from an ``openai`` connection to the embeddings endpoint: base URL, key,
    ``extra.model``."""
    if conn is None:
        return {}
    base_url, key, extra = _openai(conn)
    found = {
        "embeddings_base_url": base_url,
        "embeddings_api_key": key,
        "embeddings_model": str(extra.get("model") or ""),
    }
    return {k: v for k, v in found.items() if v}


def spark_settings(conn: Conn | None) -> dict[str, object]:
    """``spark_remote`` from a ``spark_connect`` connection; a ``spark`` one is spark-submit's business."""
    if conn is None or conn.conn_type != "spark_connect":
        return {}
    return {"spark_remote": connect_url(conn.host, conn.port, conn.login, conn.password, conn.extra.get("use_ssl"))}


def connect_url(host: str | None, port: int | None, login: str | None, password: str | None, use_ssl: object) -> str:
    """The ``sc://`` URL of a Spark Connect connection (as the Spark provider's ``SparkConnectHook`` builds it)."""
    host = str(host or "127.0.0.1")
    netloc = urlsplit(host).netloc if "://" in host else host
    if port:
        netloc = f"{netloc.split(':')[0]}:{port}"
    params = []
    if login:
        params.append(f"user_id={quote(str(login))}")
    if password:
        params.append(f"token={quote(str(password))}")
    if use_ssl is not None:
        params.append(f"use_ssl={quote(str(use_ssl))}")
    return f"sc://{netloc}/" + (";" + ";".join(params) if params else "")


# setting naming the connection id -> what that connection gives
READERS: dict[str, Callable[[Conn | None], dict[str, object]]] = {
    "llm_conn_id": llm_settings,
    "embeddings_conn_id": embeddings_settings,
    "spark_conn_id": spark_settings,
    "opensearch_conn_id": opensearch_settings,
}


def connection_settings(conn_ids: dict[str, str], lookup: Lookup = from_env) -> dict[str, object]:
    """Every setting the connections named in ``conn_ids`` (``{"llm_conn_id": "llm_default", …}``) give."""
    found: dict[str, object] = {}
    for setting, read in READERS.items():
        conn_id = conn_ids.get(setting, "")
        if conn_id:
            found.update(read(lookup(conn_id)))
    return found
