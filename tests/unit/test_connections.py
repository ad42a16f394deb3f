"""Connections in the types their providers define, read as the providers' own hooks read them."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from placerec.connections import embeddings_settings, from_env, llm_settings, opensearch_settings
from placerec.settings import Settings, get_settings, load_settings

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    "conn",
    [
        {"conn_type": "opensearch", "host": "search.example", "port": 9443, "login": "reader", "password": "pw-1",
         "extra": {"use_ssl": "true", "verify_certs": "true"}},
        {"conn_type": "opensearch", "host": "10.0.0.5", "port": 9200, "login": "u", "password": "pw-2"},
        "opensearch://u:p%40ss@10.0.0.6:9201?use_ssl=True&verify_certs=false",
    ],
)  # fmt: skip
def test_opensearch_connections_mean_what_the_providers_hook_reads(conn, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    from airflow.providers.opensearch.hooks.opensearch import OpenSearchHook

    monkeypatch.setenv("AIRFLOW_CONN_OS_CASE", conn if isinstance(conn, str) else json.dumps(conn))
    hook = OpenSearchHook(open_search_conn_id="os_case", log_query=False)
    ours = opensearch_settings(from_env("os_case"))
    scheme = "https" if hook.use_ssl else "http"
    assert ours["opensearch_url"] == f"{scheme}://{hook.conn.host}:{hook.conn.port}"
    assert (ours["opensearch_user"], ours["opensearch_password"]) == (hook.conn.login, hook.conn.password)
    # certificates: verified unless the connection says not to (the hook's default is not to)
    assert ours.get("opensearch_verify_certs", True) == (
        hook.verify_certs or "verify_certs" not in hook.conn.extra_dejson
    )


def test_opensearch_extras_placerec_reads_beyond_the_hook(monkeypatch: pytest.MonkeyPatch) -> None:
    extra = {"use_ssl": True, "ca_certs": "/etc/ca.pem", "url_prefix": "/os/", "timeout": "15"}
    monkeypatch.setenv("AIRFLOW_CONN_OS_CASE", json.dumps({"conn_type": "opensearch", "host": "h", "extra": extra}))
    assert opensearch_settings(from_env("os_case")) == {
        "opensearch_url": "https://h:9200/os",
        "opensearch_ca_certs": "/etc/ca.pem",
        "opensearch_timeout_s": 15.0,
    }
    monkeypatch.setenv(
        "AIRFLOW_CONN_OS_CASE", json.dumps({"conn_type": "opensearch", "host": "h", "extra": {"timeout": "soon"}})
    )
    with pytest.raises(ValueError, match="connection os_case: timeout must be a number"):
        opensearch_settings(from_env("os_case"))


@pytest.mark.parametrize(
    "conn",
    [
        {"conn_type": "openai", "host": "https://llm.example/v1", "password": "sk-a", "extra": {"model": "m"}},
        {"conn_type": "openai", "host": "https://ignored.example", "password": "sk-ignored",
         "extra": {"openai_client_kwargs": {"base_url": "https://llm.example/v2", "api_key": "sk-b"}}},
        "openai://http://:sk-c@127.0.0.1%3A8089%2Fv1?model=m",  # Connection.get_uri()'s form of the host URL
    ],
)  # fmt: skip
def test_openai_connections_give_the_client_the_providers_hook_builds(conn, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    from airflow.providers.openai.hooks.openai import OpenAIHook

    monkeypatch.setenv("AIRFLOW_CONN_LLM_CASE", conn if isinstance(conn, str) else json.dumps(conn))
    client = OpenAIHook(conn_id="llm_case").get_conn()
    ours = llm_settings(from_env("llm_case"))
    assert ours["llm_base_url"].rstrip("/") == str(client.base_url).rstrip("/")
    assert ours["llm_api_key"] == client.api_key
    embeddings = embeddings_settings(from_env("llm_case"))
    # host, port and schema apart (the form hides them; a URI may split them): one base URL still
    monkeypatch.setenv("AIRFLOW_CONN_LLM_SPLIT", "openai://:k@http%3A%2F%2F127.0.0.1:8089/v1")
    assert llm_settings(from_env("llm_split"))["llm_base_url"] == "http://127.0.0.1:8089/v1"
    assert (embeddings["embeddings_base_url"], embeddings["embeddings_api_key"]) == (
        ours["llm_base_url"],
        ours["llm_api_key"],
    )


def test_the_embeddings_endpoint_through_its_connection(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in ("PLACEREC_EMBEDDINGS_BASE_URL", "PLACEREC_EMBEDDINGS_API_KEY", "PLACEREC_EMBEDDINGS_MODEL"):
        monkeypatch.delenv(key, raising=False)
    assert load_settings().embeddings_base_url == Settings.embeddings_base_url  # not defined: the dev server
    conn = {"conn_type": "openai", "host": "http://10.0.0.9:8000/v1", "password": "emb-key", "extra": {"model": "e5"}}
    monkeypatch.setenv("AIRFLOW_CONN_EMBEDDINGS_DEFAULT", json.dumps(conn))
    s = load_settings()
    assert (s.embeddings_base_url, s.embeddings_api_key, s.embeddings_model) == (
        "http://10.0.0.9:8000/v1",
        "emb-key",
        "e5",
    )
    assert "emb-key" not in repr(s)
    monkeypatch.setenv("PLACEREC_EMBEDDINGS_MODEL", "explicit")
    assert load_settings().embeddings_model == "explicit"  # an explicit setting wins
    monkeypatch.setenv("PLACEREC_EMBEDDINGS_CONN_ID", "elsewhere")
    assert load_settings().embeddings_base_url == Settings.embeddings_base_url  # another id: that connection


@pytest.mark.parametrize(
    "raw", ['{"conn_type": "openai", "password": "sk-secret-1"', '{"extra": 3, "password": "sk-secret-1"}']
)
def test_a_broken_connection_is_refused_without_its_contents(raw: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_LLM_DEFAULT", raw)
    get_settings.cache_clear()
    try:
        with pytest.raises(ValueError, match=r"AIRFLOW_CONN_LLM_DEFAULT|connection llm_default") as refused:
            get_settings()
        assert "sk-secret-1" not in str(refused.value) and "sk-secret-1" not in repr(refused.value)
    finally:
        get_settings.cache_clear()


def test_a_job_reads_its_connections_without_importing_airflow() -> None:
    """A process a task starts (spark-submit's driver) inherits an environment in which ``import airflow``
    fails: Airflow 3 gives tasks a database URL that is no URL. Its settings still read the connection."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW_CONN_", "PLACEREC_OPENSEARCH"))}
    env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = "not a url"  # what broke the spark-submit road once
    env["AIRFLOW_CONN_OPENSEARCH_DEFAULT"] = "opensearch://u:pw@search.internal:9201?use_ssl=true"
    code = (
        "import sys; from placerec.settings import load_settings; s = load_settings(); "
        "print(s.opensearch_url, 'airflow' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["https://search.internal:9201", "False"]


def test_a_task_is_given_connections_by_role() -> None:
    from placerec.orchestration import ROLES, PlacerecSparkOperator

    assert set(ROLES) == {"llm", "embeddings", "opensearch"}
    with pytest.raises(ValueError, match="connections are roles"):
        PlacerecSparkOperator(task_id="t", job="publish_index", args=[], connections=("opensearch_default",))


PARITY = [
    '{"conn_type": "opensearch", "host": "h", "port": "9200", "login": "u", "password": "p", "extra": {"a": 1}}',
    '{"conn_type": "openai", "host": "https://x/v1", "extra": "{\\"model\\": \\"m\\"}"}',
    '{"conn_type": "spark-connect", "host": "sc://10.0.0.5", "port": 15002}',
    "opensearch://reader:s%40cret@10.0.0.5:9200?use_ssl=true",
    "openai://:sk-c@llm.example/v1?model=m&rpm=90",
    "openai://http://:k@127.0.0.1%3A8089%2Fv1?model=m",
    "openai://:k@http%3A%2F%2F127.0.0.1:8089/v1",
    "spark-connect://u:tok@Host.Example:15002/?use_ssl=true",
    "opensearch://h?__extra__=%7B%22verify_certs%22%3A+false%7D",
    "postgresql://user:pw@db:5432/airflow",
    "opensearch://%2Fpath%2Fhost/schema",
]


@pytest.mark.parametrize("raw", PARITY)
def test_the_parse_is_airflows(raw: str) -> None:
    """What a job reads from ``AIRFLOW_CONN_<ID>`` without importing Airflow is what Airflow reads."""
    from airflow.sdk import Connection

    from placerec.connections import Conn

    theirs = Connection.from_json(raw, conn_id="x") if raw.startswith("{") else Connection.from_uri(raw, conn_id="x")
    assert Conn.parse("x", raw) == Conn.of(theirs)


@given(
    login=st.text(max_size=8),
    password=st.text(max_size=12),
    host=st.from_regex(r"[a-z0-9][a-z0-9.-]{0,15}", fullmatch=True),
    port=st.one_of(st.none(), st.integers(1, 65535)),
    schema=st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=8),
    extra=st.dictionaries(st.text(min_size=1, max_size=5), st.text(max_size=5), max_size=3),
    protocol=st.sampled_from(["", "http", "https"]),
)
@settings(max_examples=200, deadline=None)
def test_every_uri_airflow_writes_reads_back_the_same(login, password, host, port, schema, extra, protocol) -> None:  # type: ignore[no-untyped-def]
    from airflow.sdk import Connection

    from placerec.connections import Conn

    conn = Connection(
        conn_id="x",
        conn_type="opensearch",
        host=f"{protocol}://{host}" if protocol else host,
        port=port,
        schema=schema,
        login=login,
        password=password,
        extra=json.dumps(extra),
    )
    uri = conn.get_uri()
    assert Conn.parse("x", uri) == Conn.of(Connection.from_uri(uri, conn_id="x"))
