"""One typed settings object, read from ``PLACEREC_*`` environment variables with embedded defaults.

Every path, URL and version the project uses comes from here; nothing else hard-codes them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from functools import lru_cache
from pathlib import Path

from placerec.connections import READERS, Lookup, connection_settings, from_env


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
    """Airflow connection of type ``opensearch`` (the OpenSearch provider's): host, port, login, password,
    ``extra.use_ssl`` / ``verify_certs`` / ``ca_certs`` / ``url_prefix`` / ``timeout``."""
    opensearch_user: str = ""
    opensearch_password: str = field(default="", repr=False)
    """Secret: basic-auth password, kept out of ``repr``."""
    opensearch_verify_certs: bool = True
    opensearch_ca_certs: str = ""
    """PEM file of the CA that signed the cluster's certificate (empty: the system's trust store)."""
    opensearch_timeout_s: float = 60.0

    serve_host: str = "127.0.0.1"
    serve_port: int = 8095
    """``placerec serve``: where the serving API listens."""
    serve_variants: str = "model=live:100"
    """A/B variants, ``name=source:share`` comma-separated; source ``live``, ``popular`` or a kept publish
    version (:mod:`placerec.serve.variants`), e.g. ``model=live:50,control=popular:50``."""
    serve_salt: str = "placerec-ab-1"
    """Salt of the users' variant hash: a new salt reshuffles who gets which variant."""
    serve_rotate_s: float = 30.0
    """Seconds before the impression log's open file is sealed for ingest (:mod:`placerec.serve.eventlog`)."""
    serve_cache_entries: int = 20_000
    """Answers the serving API keeps per process (a published version's indices never change)."""
    serve_refresh_s: float = 15.0
    """Seconds between lookups of the versions the variants serve (alias swaps show within this)."""

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
    embeddings_conn_id: str = "embeddings_default"
    """Airflow connection of type ``openai`` to the embeddings endpoint: host = base URL, password = key,
    ``extra.model``; not defined: the settings below (the ``dev up`` server)."""
    embeddings_base_url: str = ""
    """An OpenAI-compatible ``/v1`` base URL; empty means the local server at host:port."""
    embeddings_api_key: str = field(default="", repr=False)
    embeddings_batch_size: int = 64
    embeddings_concurrency: int = 2
    embeddings_input_type_field: str = "input_type"
    """Request field that tells e5 models query from passage; empty for endpoints that reject it."""

    llm_conn_id: str = "llm_default"
    """Airflow connection of type ``openai`` (the OpenAI provider's): host = base URL, password = API key,
    ``extra.model``, ``extra.rpm`` / ``tpm`` (the account's limits)."""
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
    train_cf_engine: str = "implicit"
    """The collaborative part's ALS: ``implicit`` (the ``implicit`` library in the training process,
    the embedded default) or ``spark`` (Spark ML ALS on the job's Spark session, the road for a cluster)."""
    train_als_iterations: int = 12
    train_als_reg_grid: str = "16,64,256"
    """``implicit`` engine: the L2 weights tried on the validation span (comma-separated); the one whose
    hybrid scores best there is used for the test and full fits. One value: no choice."""
    train_spark_als_reg: float = 0.05
    """``spark`` engine: Spark's ``regParam`` (ALS-WR: scaled by each user's and item's rating count)."""
    train_als_alpha: float = 10.0
    train_seed: int = 42
    train_truth_dir: str = ""
    """The generated world's hidden truth for the ``oracle`` reference row; empty: ``<landing>/_truth``
    when it exists (the demo's). Real data has none: no oracle row."""
    train_test_days: int = 1
    """Evaluation: train before T, test on [T, T + test_days); validation is the same span before T."""
    train_eval_cuts: int = 3
    """Rolling-origin evaluation: this many consecutive test spans ending at the end, each with its own
    fit; figures pooled over the (user, span) pairs (fewer spans when the data is too short)."""
    train_cold_max: int = 2
    """Users with at most this many training places are "cold" (0: only search interests, if any)."""
    train_light_max: int = 10
    """Users with cold_max+1..light_max training places are "light", more are "heavy"."""
    train_content_mass: float = 1.0
    """Content weight ``m / (m + this)`` for a user with decayed interaction weight ``m`` (+1 with a
    search interest): a faded history (one review a year ago) falls back to the popularity prior.
    1.0 = one fresh view under the default weights; 0 gives all content full weight."""
    train_protocol: str = ""
    """``nsmc``: also score the run on the NSMC data README's protocol (its users and positives, its
    reference rows reproduced beside their published figures; :mod:`placerec.model.protocol`)."""
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
    def truth_path(self) -> Path:
        """The generated world's hidden truth: ``train_truth_dir``, else ``<landing>/_truth``."""
        return Path(self.train_truth_dir) if self.train_truth_dir else self.landing_path / "_truth"

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


def load_settings(lookup: Lookup = from_env) -> Settings:
    """Settings from the environment, and from the connections the ``*_conn_id`` settings name as
    ``lookup`` finds them (by default ``AIRFLOW_CONN_<ID>`` only; see :mod:`placerec.connections`).
    An explicit ``PLACEREC_*`` setting wins over a connection's value."""
    values: dict[str, object] = {}
    for f in fields(Settings):
        raw = os.environ.get(f"PLACEREC_{f.name.upper()}")
        if raw is not None and raw != "":
            values[f.name] = _coerce(f.type, raw)
    conn_ids = {name: str(values.get(name, getattr(Settings, name))) for name in READERS}
    for key, found in connection_settings(conn_ids, lookup).items():
        values.setdefault(key, found)
    return Settings(**values)  # type: ignore[arg-type]


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Settings from the environment (cached; call ``get_settings.cache_clear()`` after changing env)."""
    return load_settings()
