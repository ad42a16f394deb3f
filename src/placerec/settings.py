"""One typed settings object, read from ``PLACEREC_*`` environment variables with embedded defaults.

Every path, URL and version the project uses comes from here; nothing else hard-codes them.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, fields
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlsplit


def _project_root() -> Path:
    """The checkout this package runs from (editable install), else the working directory."""
    here = Path(__file__).resolve()
    for parent in here.parents:
        if (parent / "pyproject.toml").is_file() and (parent / "dags").is_dir():
            return parent
    return Path.cwd()


PROJECT_ROOT = _project_root()


@dataclass(frozen=True)
class Settings:
    """Runtime configuration. Field ``x_y`` is read from env var ``PLACEREC_X_Y``."""

    home: Path = PROJECT_ROOT / ".local"
    """State folder: caches, services' data and logs, the Iceberg warehouse, landing files."""

    catalog_name: str = "placerec"
    catalog_uri: str = ""
    """SQLAlchemy URI of the Iceberg SQL catalog; empty means the SQLite file under ``home``."""
    warehouse: str = ""
    """Warehouse location; empty means the folder under ``home``."""
    landing_dir: str = ""
    """Where log shippers drop files: ``<landing>/<feed>/dt=YYYY-MM-DD/*.jsonl``; empty means under ``home``."""

    spark_remote: str = field(default="", repr=False)
    """Where jobs run Spark: empty = the Spark Connect server of ``placerec dev up``; ``sc://host:port`` =
    another Connect endpoint (secret when it carries a token); ``local`` = an in-process Connect server
    on ``spark_master``; ``classic`` = a classic in-process SparkSession. spark-submit is always classic."""
    spark_conn_id: str = "spark_connect_default"
    """Airflow connection a DAG's Spark task runs through: type ``spark_connect`` (a Connect endpoint;
    env form ``AIRFLOW_CONN_<ID>`` is read by the CLI too) or ``spark`` (spark-submit to its master)."""
    spark_connect_port: int = 15002
    """Port of the ``dev up`` Spark Connect server on 127.0.0.1."""
    spark_master: str = "local[*]"
    spark_driver_memory: str = "3g"
    """Driver heap: of the long-lived Connect server (shared by every job at once), or of one classic job."""
    spark_shuffle_partitions: int = 4

    opensearch_url: str = "http://127.0.0.1:9200"
    opensearch_version: str = "2.19.1"
    opensearch_knn_version: str = "2.19.1.0"
    opensearch_heap: str = "1g"
    opensearch_conn_id: str = "opensearch_default"
    """Airflow connection (env form ``AIRFLOW_CONN_OPENSEARCH_DEFAULT``): URL, login, password, TLS options."""
    opensearch_user: str = ""
    opensearch_password: str = field(default="", repr=False)
    """Secret: basic-auth password, kept out of ``repr``."""
    opensearch_verify_certs: bool = True
    opensearch_ca_certs: str = ""
    """PEM file of the CA that signed the cluster's certificate (empty: the system's trust store)."""
    opensearch_timeout_s: float = 60.0

    index_prefix: str = "placerec"
    """Aliases are ``<prefix>-places``, ``<prefix>-recommendations``, ``<prefix>-users``; indices add a version."""
    index_keep_versions: int = 3
    """Published versions kept (the live one included) for ``placerec rollback``; older indices are deleted."""
    index_replicas: int = 0
    """Replicas once live (a build runs with 0); 0 on the single dev node, 1+ on a real cluster."""
    index_refresh_interval: str = "1s"
    index_shards: int = 1
    knn_m: int = 16
    knn_ef_construction: int = 128
    knn_ef_search: int = 100
    publish_partitions: int = 2
    """Spark partitions bulk-loading at once (each with its own client)."""
    publish_threads: int = 2
    """Bulk requests each loading partition keeps in flight."""
    publish_chunk_bytes: int = 5 * 1024 * 1024
    publish_chunk_docs: int = 1000
    publish_max_retries: int = 8
    """Retries of a rejected (HTTP 429) bulk chunk, with exponential back-off from 1 s (capped at 30 s)."""
    publish_min_recall: float = 0.95
    """Validation: k-NN recall@10 against exact cosine on a sample of place vectors must reach this."""
    publish_recall_sample: int = 200

    maintain_snapshot_retain_last: int = 10
    """Maintenance keeps each table's newest this many snapshots (the current one counted), however old."""
    maintain_snapshot_max_age_days: float = 7.0
    """Snapshots older than this (counted back from the maintain run's interval end) are expired beyond the
    retained newest ones: time travel, and rebuilding from recorded snapshot ids, reaches back this far."""
    maintain_orphan_min_age_days: float = 3.0
    """Unreferenced files under a table's folder are deleted once this old (at least 1: a write in flight
    has files its commit does not name yet)."""
    maintain_min_input_files: int = 2
    """Compaction rewrites a partition's small data files once it has at least this many."""

    embeddings_host: str = "127.0.0.1"
    embeddings_port: int = 8089
    embeddings_model: str = "multilingual-e5-small"
    embeddings_base_url: str = ""
    """An OpenAI-compatible ``/v1`` base URL; empty means the local server at host:port."""
    embeddings_api_key: str = field(default="", repr=False)
    embeddings_batch_size: int = 64
    embeddings_concurrency: int = 2
    embeddings_input_type_field: str = "input_type"
    """Request field that tells e5 models query from passage; empty for endpoints that reject it."""

    llm_conn_id: str = "llm_default"
    """Airflow connection (env form ``AIRFLOW_CONN_LLM_DEFAULT``) giving base URL, key and model."""
    llm_base_url: str = "https://api.openai.com/v1"
    """Any OpenAI-compatible endpoint (OpenAI, HyperCLOVA X, vLLM, Ollama): the ``/v1`` base URL."""
    llm_api_key: str = field(default="", repr=False)
    """Secret: kept out of ``repr`` so logging the settings never shows it. Empty means no key."""
    llm_model: str = "gpt-4o-mini"
    llm_rpm: int = 500
    """Requests per minute this process may send to the LLM endpoint."""
    llm_tpm: int = 200_000
    """Tokens per minute (prompt plus completion) this process may spend at the LLM endpoint."""
    llm_timeout_s: float = 60.0
    llm_max_retries: int = 5
    llm_concurrency: int = 8
    """Requests in flight at once for a whole job: split evenly over its Spark partitions."""
    llm_max_output_tokens: int = 600
    llm_prices: str = ""
    """Extra or changed prices, USD per 1M tokens: ``model=prompt/completion,...`` (see enrich.budget)."""
    keyword_extractor: str = "local"
    """``local`` (offline: Kiwi morphology + e5 ranking) or ``llm`` (the OpenAI-compatible endpoint)."""
    prompts_dir: str = ""
    """Folder of prompt files and their registry.json; empty means the one shipped in the package."""
    keyword_prompt_version: str = ""
    """Prompt version for the ``llm`` extractor; empty means the promoted one in prompts/registry.json."""
    enrich_partitions: int = 2
    """Spark partitions that call the endpoint at once; rate limits are divided among them."""
    profile_half_life_days: float = 30.0
    """Half-life of a review's (or search's) weight in place profiles and user interests."""
    profile_top_keywords: int = 10
    interest_window_days: int = 30
    """Search history a user's interest profile looks back on."""
    enrich_chunk_size: int = 2000
    """Reviews sent per Spark stage; results are cached after each, so a crash loses at most one chunk."""

    interaction_weights: str = "view=1,click=2,save=4,navigate=5,review=6,visit=8"
    """Weight of each event type in ``features.interactions`` (types not listed count 0: impression, search)."""
    interaction_half_life_days: float = 14.0
    """Half-life of an event's weight, counted back from the as-of day."""
    interaction_user_cap: float = 50.0
    """A user's total weight is scaled down to this, so heavy (or merged) ids do not dominate."""
    interaction_max_places: int = 300
    """Places kept per user (the strongest); the rest of a heavy id's tail is dropped, counted in metrics."""
    train_top_k: int = 100
    train_factors: int = 64
    train_als_iterations: int = 12
    train_als_reg: float = 0.05
    train_als_alpha: float = 10.0
    train_seed: int = 42
    train_test_days: int = 1
    """Evaluation: train before T, test on [T, T + test_days); validation is the same span before T."""
    train_cold_max: int = 2
    """Users with at most this many training places are "cold" (0: only search interests, if any)."""
    train_light_max: int = 10
    """Users with cold_max+1..light_max training places are "light", more are "heavy"."""
    train_content_mass: float = 1.0
    """Content weight ``m / (m + this)`` for a user with decayed interaction weight ``m`` (+1 with a
    search interest): a faded history (one review a year ago) falls back to the popularity prior.
    1.0 = one fresh view under the default weights; 0 gives all content full weight."""
    train_gate_tolerance: float = 0.02
    """Promotion: NDCG@10 may trail the promoted model's by at most this share (0.02 = 2 %)."""

    check_history_intervals: int = 7
    """Row-count check: the trailing median is taken over this many previous (non-skipped) intervals of the job."""
    check_min_history: int = 3
    """Row-count check: with fewer previous intervals than this it passes, saying there is not enough history."""
    check_min_row_ratio: float = 0.5
    """Row-count check: rows written a day below this share of the trailing median fail the interval."""
    check_max_row_ratio: float = 2.0
    """Row-count check: rows written a day above this multiple of the trailing median fail the interval."""
    check_max_quarantine_rate: float = 0.2
    """Quarantine check: rows quarantined / rows read above this fail the interval."""
    check_max_null_rate: float = 0.0
    """Null check: share of an interval's rows without a value in a column validation requires (where it
    applies). Validation lets none through, so any null means a writer went around it: 0 fails on the first."""
    alert_webhook_url: str = field(default="", repr=False)
    """Secret (it may carry a token): failure callbacks POST a JSON alert here; empty = log only."""
    alert_timeout_s: float = 5.0
    alert_retries: int = 2
    """Retries of an alert POST that failed to connect, timed out or got a 5xx/429 answer."""

    airflow_host: str = "127.0.0.1"
    airflow_port: int = 8080
    dev_mode: bool = True
    """Development mode: Airflow asks no login (every visitor is an admin), so ``dev up`` keeps every
    service on loopback. Off: Airflow's UI and API need a login (``airflow_username`` with
    ``airflow_password``, or the password Airflow generates into its home), the API client signs in, and
    Airflow alone may listen beyond loopback."""
    airflow_username: str = "admin"
    airflow_password: str = field(default="", repr=False)
    """Secret: the Airflow user's password outside dev mode; empty means the one Airflow generates."""

    iceberg_version: str = "1.10.0"
    spark_scala: str = "4.0_2.13"
    sqlite_jdbc_version: str = "3.50.3.0"
    maven_repo: str = "https://repo1.maven.org/maven2"

    @property
    def cache_dir(self) -> Path:
        return self.home / "cache"

    @property
    def catalog_db(self) -> Path:
        return self.home / "iceberg" / "catalog.db"

    @property
    def catalog_sqlalchemy_uri(self) -> str:
        return self.catalog_uri or f"sqlite:///{self.catalog_db}"

    @property
    def catalog_jdbc_uri(self) -> str:
        if self.catalog_uri.startswith("sqlite:///"):
            return "jdbc:sqlite:" + self.catalog_uri.removeprefix("sqlite:///")
        if self.catalog_uri:
            return self.catalog_uri
        return f"jdbc:sqlite:{self.catalog_db}"

    @property
    def warehouse_uri(self) -> str:
        return self.warehouse or (self.home / "warehouse").as_uri()

    @property
    def landing_path(self) -> Path:
        return Path(self.landing_dir) if self.landing_dir else self.home / "landing"

    @property
    def spark_connect_url(self) -> str:
        """The Connect endpoint jobs use (``spark_remote``, else the ``dev up`` server)."""
        remote = self.spark_remote.strip()
        return remote if remote.startswith("sc://") else f"sc://127.0.0.1:{self.spark_connect_port}"

    @property
    def embeddings_url(self) -> str:
        return f"http://{self.embeddings_host}:{self.embeddings_port}/v1"

    @property
    def airflow_url(self) -> str:
        return f"http://{self.airflow_host}:{self.airflow_port}"


def _coerce(kind: object, raw: str) -> object:
    if kind in (bool, "bool"):
        if raw.strip().lower() in ("1", "true", "yes", "on"):
            return True
        if raw.strip().lower() in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"not a boolean: {raw!r}")
    if kind in (int, "int"):
        return int(raw)
    if kind in (float, "float"):
        return float(raw)
    if kind in (Path, "Path"):
        return Path(raw).expanduser().resolve()
    return raw


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Settings from the environment (cached; call ``get_settings.cache_clear()`` after changing env)."""
    values: dict[str, object] = {}
    for f in fields(Settings):
        raw = os.environ.get(f"PLACEREC_{f.name.upper()}")
        if raw is not None and raw != "":
            values[f.name] = _coerce(f.type, raw)
    conn_id = str(values.get("llm_conn_id", Settings.llm_conn_id))
    for name, value in llm_connection(conn_id).items():
        values.setdefault(name, value)  # explicit PLACEREC_LLM_* settings win over the connection
    spark_conn = str(values.get("spark_conn_id", Settings.spark_conn_id))
    for key, found in spark_connection(spark_conn).items():
        values.setdefault(key, found)  # an explicit PLACEREC_SPARK_REMOTE wins over the connection
    search_conn = str(values.get("opensearch_conn_id", Settings.opensearch_conn_id))
    for key, found in opensearch_connection(search_conn).items():
        values.setdefault(key, found)  # explicit PLACEREC_OPENSEARCH_* settings win over the connection
    return Settings(**values)  # type: ignore[arg-type]


def _airflow_connection(conn_id: str) -> tuple[str, dict[str, Any] | None]:
    """``AIRFLOW_CONN_<ID>``: its raw value, and for the JSON form the decoded object (``extra`` as a dict)."""
    raw = os.environ.get(f"AIRFLOW_CONN_{conn_id.upper()}", "").strip()
    if not raw.startswith("{"):
        return raw, None
    try:
        conn = json.loads(raw)
    except json.JSONDecodeError:
        raise ValueError(f"AIRFLOW_CONN_{conn_id.upper()} is not valid JSON") from None
    extra = conn.get("extra") or {}
    conn["extra"] = json.loads(extra or "{}") if isinstance(extra, str) else extra
    return raw, conn


def opensearch_connection(conn_id: str) -> dict[str, object]:
    """OpenSearch settings from the Airflow connection ``conn_id`` given as ``AIRFLOW_CONN_<ID>`` (JSON or URI).

    JSON: ``{"conn_type": "opensearch", "host": "search.example.com", "port": 9200, "schema": "https",
    "login": "placerec", "password": "…", "extra": {"verify_certs": true, "ca_certs": "/etc/ca.pem"}}``
    (``schema`` or ``extra.use_ssl`` choose https); URI: ``opensearch://user:pass@host:9200?use_ssl=true``.
    """
    raw, conn = _airflow_connection(conn_id)
    if not raw:
        return {}
    if conn is not None:
        extra = conn["extra"]
        host, port = str(conn.get("host") or ""), conn.get("port")
        login, password = conn.get("login"), conn.get("password")
        schema = str(conn.get("schema") or "")
    else:
        url = urlsplit(raw)
        extra = dict(parse_qsl(url.query))
        host, port = url.hostname or "", url.port
        login, password = unquote(url.username or ""), unquote(url.password or "")
        schema = extra.pop("__scheme", "")
    if "://" in host:
        parsed = urlsplit(host)
        schema, host, port = schema or parsed.scheme, parsed.hostname or "", port or parsed.port
    tls = str(extra.get("use_ssl", "")).lower() in ("1", "true", "yes") or schema == "https"
    found: dict[str, object] = {}
    if host:
        found["opensearch_url"] = f"{'https' if tls else 'http'}://{host}:{port or 9200}"
    if login:
        found["opensearch_user"] = str(login)
    if password:
        found["opensearch_password"] = str(password)
    if "verify_certs" in extra:
        found["opensearch_verify_certs"] = _coerce(bool, str(extra["verify_certs"]))
    if extra.get("ca_certs"):
        found["opensearch_ca_certs"] = str(extra["ca_certs"])
    return found


def llm_connection(conn_id: str) -> dict[str, object]:
    """LLM settings from the Airflow connection ``conn_id`` given as ``AIRFLOW_CONN_<ID>`` (JSON or URI form).

    host (+ schema as path) is the base URL, password the API key, ``model`` in extra (or the URI's
    query) the model: ``{"conn_type": "openai", "host": "https://api.openai.com/v1", "password": "sk-…",
    "extra": {"model": "gpt-4o-mini"}}`` or ``openai://:sk-…@api.openai.com/v1?model=gpt-4o-mini``.
    The account's rate limits may ride along as ``rpm`` and ``tpm`` (requests and tokens per minute).
    """
    raw, conn = _airflow_connection(conn_id)
    if not raw:
        return {}
    if conn is not None:
        extra = conn["extra"]
        host = str(conn.get("host") or "")
        if host and "://" not in host:
            host = f"https://{host}"
        if conn.get("port"):
            host = f"{host.rstrip('/')}:{conn['port']}"
        if conn.get("schema"):
            host = f"{host.rstrip('/')}/{str(conn['schema']).lstrip('/')}"
        found = {"llm_base_url": host, "llm_api_key": str(conn.get("password") or ""), "llm_model": extra.get("model")}
        limits = extra
    else:
        url = urlsplit(raw)
        query = dict(parse_qsl(url.query))
        scheme = query.pop("__scheme", None) or ("http" if url.hostname in ("127.0.0.1", "localhost") else "https")
        netloc = url.hostname or ""
        if url.port:
            netloc = f"{netloc}:{url.port}"
        found = {
            "llm_base_url": f"{scheme}://{netloc}{url.path}" if netloc else "",
            "llm_api_key": unquote(url.password or ""),
            "llm_model": query.get("model"),
        }
        limits = query
    settings: dict[str, object] = {k: str(v) for k, v in found.items() if v}
    for name in ("rpm", "tpm"):
        if limits.get(name) not in (None, ""):
            try:
                settings[f"llm_{name}"] = int(limits[name])
            except (TypeError, ValueError):
                raise ValueError(f"connection {conn_id}: {name} must be a whole number, not {limits[name]!r}") from None
    return settings


def spark_connection(conn_id: str) -> dict[str, object]:
    """``spark_remote`` from the Airflow connection ``conn_id`` given as ``AIRFLOW_CONN_<ID>``, when it is
    of type ``spark_connect`` (JSON: ``{"conn_type": "spark_connect", "host": "sc://10.0.0.5", "port": 15002}``,
    ``password`` a token, ``extra.use_ssl``); a ``spark`` connection is spark-submit's business."""
    raw, conn = _airflow_connection(conn_id)
    if conn is None:
        if not raw.startswith("spark-connect://") and not raw.startswith("spark_connect://"):
            return {}
        url = urlsplit(raw)
        conn = {
            "host": url.hostname,
            "port": url.port,
            "password": unquote(url.password or ""),
            "login": unquote(url.username or ""),
            "extra": dict(parse_qsl(url.query)),
        }
    elif conn.get("conn_type") != "spark_connect":
        return {}
    return {"spark_remote": connect_url(conn)}


def connect_url(conn: dict[str, Any]) -> str:
    """The ``sc://`` URL of a Spark Connect connection (as the Spark provider's ``SparkConnectHook`` builds it)."""
    host = str(conn.get("host") or "127.0.0.1")
    netloc = urlsplit(host).netloc if "://" in host else host
    if conn.get("port"):
        netloc = f"{netloc.split(':')[0]}:{conn['port']}"
    params = []
    if conn.get("login"):
        params.append(f"user_id={quote(str(conn['login']))}")
    if conn.get("password"):
        params.append(f"token={quote(str(conn['password']))}")
    use_ssl = (conn.get("extra") or {}).get("use_ssl")
    if use_ssl is not None:
        params.append(f"use_ssl={quote(str(use_ssl))}")
    return f"sc://{netloc}/" + (";" + ";".join(params) if params else "")
