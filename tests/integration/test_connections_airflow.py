"""Connections the ecosystem knows, through the real Airflow of ``placerec dev up``: the OpenSearch and
OpenAI providers' connection types are offered in Admin → Connections (the form's metadata the UI
asks the API server for), the placerec page reads ``opensearch_default`` as Airflow keeps it (its
metadata database), and the embeddings endpoint is reached through its own connection."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from typing import Any

import pytest

from placerec.airflow_api import AirflowApi
from placerec.dev.httpjson import request_json
from placerec.settings import Settings, get_settings

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def api() -> Iterator[AirflowApi]:
    client = AirflowApi(get_settings())
    client.wait_for_dag("publish_index")
    yield client


def _page(api: AirflowApi, path: str) -> Any:
    return request_json(api.settings.airflow_url + path, headers=api._headers(), timeout=60)


def test_admin_connections_offers_the_providers_forms(api: AirflowApi) -> None:
    meta = {m["connection_type"]: m for m in _page(api, "/ui/connections/hook_meta")}
    assert meta["opensearch"]["hook_class_name"] == "airflow.providers.opensearch.hooks.opensearch.OpenSearchHook"
    assert meta["openai"]["hook_class_name"] == "airflow.providers.openai.hooks.openai.OpenAIHook"
    assert meta["openai"]["standard_fields"]["password"]["title"] == "API Key"
    assert "spark_connect" in meta


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_the_placerec_page_reads_the_opensearch_connection_airflow_keeps(api: AirflowApi) -> None:
    settings: Settings = api.settings
    before = _page(api, "/placerec/api/figures")["aliases"]
    assert "error" not in before, before  # the dev node, as the settings name it
    port = _closed_port()
    api.set_connection("opensearch_default", "opensearch", host="127.0.0.1", port=port, login="reader", password="pw-x")
    try:
        figures = _page(api, "/placerec/api/figures")
        assert figures["aliases"] == {"error": "OpenSearch unavailable"}, "the page did not use the connection"
        assert "pw-x" not in json.dumps(figures)
        node = settings.opensearch_url.rsplit(":", 1)
        api.set_connection("opensearch_default", "opensearch", host=node[0].split("//")[1], port=int(node[1]))
        # the aliases themselves may move meanwhile (other tests publish): the same ones answer
        assert _page(api, "/placerec/api/figures")["aliases"].keys() == before.keys()
    finally:
        api.delete_connection("opensearch_default")
    assert _page(api, "/placerec/api/figures")["aliases"].keys() == before.keys()


def test_the_embeddings_endpoint_through_its_connection(monkeypatch: pytest.MonkeyPatch) -> None:
    from placerec.enrich.embeddings import EmbeddingClient
    from placerec.settings import load_settings

    dev = get_settings()
    for key in ("PLACEREC_EMBEDDINGS_BASE_URL", "PLACEREC_EMBEDDINGS_MODEL"):
        monkeypatch.delenv(key, raising=False)
    # the real endpoint under another address (localhost) and with the model named by the connection
    base = dev.embeddings_url.replace("127.0.0.1", "localhost")
    conn = {"conn_type": "openai", "host": base, "extra": {"model": dev.embeddings_model}}
    monkeypatch.setenv("AIRFLOW_CONN_EMBEDDINGS_DEFAULT", json.dumps(conn))
    s = load_settings()
    assert s.embeddings_base_url == base
    with EmbeddingClient(settings=s) as client:
        vectors = client.embed(["성수동 조용한 카페"], "query")
    assert len(vectors) == 1 and len(vectors[0]) == 384
    monkeypatch.setenv(
        "AIRFLOW_CONN_EMBEDDINGS_DEFAULT", json.dumps({**conn, "host": f"http://127.0.0.1:{_closed_port()}/v1"})
    )
    with EmbeddingClient(settings=load_settings(), max_retries=0) as client, pytest.raises(Exception):  # noqa: B017
        client.embed(["x"], "query")
