"""The fault-injecting proxy of tests/opensearch_proxy.py, proven against the real node of ``placerec dev up``.

Every index is a throwaway ``proxytest-<uuid>``, deleted whatever the outcome. What the node stored is
always read from the node directly, never through the proxy under test.
"""

from __future__ import annotations

import gzip
import http.client
import json
import socket
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest
from opensearchpy import OpenSearch, helpers
from opensearchpy.exceptions import AuthenticationException, ConnectionError, SSLError, TransportError

from placerec.dev import opensearch
from placerec.serve.client import opensearch_client
from placerec.settings import get_settings

from ..opensearch_proxy import OpenSearchProxy

pytestmark = pytest.mark.integration

ONE_SHARD = {"settings": {"index": {"number_of_shards": 1, "number_of_replicas": 0}}}


@pytest.fixture
def node_url() -> str:
    """The real node's URL; the test fails (never skips) when the node does not answer."""
    settings = get_settings()
    healthy, detail = opensearch.probe(settings)
    if not healthy:
        pytest.fail(
            f"OpenSearch at {settings.opensearch_url} is not usable ({detail}); start it with `placerec dev up`",
            pytrace=False,
        )
    return settings.opensearch_url


@pytest.fixture
def node(node_url: str) -> Iterator[OpenSearch]:
    """A client of the node itself, bypassing the proxy."""
    client = opensearch_client(get_settings())
    yield client
    client.close()


@pytest.fixture
def index_name(node: OpenSearch) -> Iterator[str]:
    name = f"proxytest-{uuid.uuid4().hex}"
    yield name
    node.indices.delete(index=name, ignore_unavailable=True)


def through(proxy: OpenSearchProxy, **options: Any) -> OpenSearch:
    return OpenSearch(hosts=[proxy.url], timeout=30, **options)


def docs(index: str, ids: range) -> Iterator[dict[str, Any]]:
    for i in ids:
        yield {"_index": index, "_id": f"doc-{i}", "_source": {"name": f"place {i}", "rank": i}}


def stored_count(node: OpenSearch, index: str) -> int:
    node.indices.refresh(index=index)
    return int(node.count(index=index)["count"])


def test_forwards_requests_and_stops_on_exit(node: OpenSearch, node_url: str, index_name: str) -> None:
    with OpenSearchProxy(node_url) as proxy:
        assert urlsplit(proxy.url).hostname == "127.0.0.1"
        client = through(proxy)
        created = client.indices.create(index=index_name, body=ONE_SHARD)
        assert created["acknowledged"] and created["index"] == index_name
        indexed, errors = helpers.bulk(client, docs(index_name, range(50)), chunk_size=20)
        assert (indexed, errors) == (50, [])
        assert client.get(index=index_name, id="doc-7")["_source"] == {"name": "place 7", "rank": 7}
    assert stored_count(node, index_name) == 50
    assert (proxy.bulk_requests, proxy.bulk_docs, proxy.throttled) == (3, 50, 0)
    assert proxy.requests == [
        f"PUT /{index_name}",
        "POST /_bulk",
        "POST /_bulk",
        "POST /_bulk",
        f"GET /{index_name}/_doc/doc-7",
    ]
    # Stopped: no new connection is accepted and the client's pooled keep-alive connection is gone.
    port = urlsplit(proxy.url).port
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
    with pytest.raises(ConnectionError):
        client.info()


def test_decodes_chunked_gzip_bulk_bodies(node: OpenSearch, node_url: str, index_name: str) -> None:
    node.indices.create(index=index_name, body=ONE_SHARD)
    lines = [
        {"index": {"_index": index_name, "_id": "a"}},
        {"name": "a", "v": [1.0, 0.0, 0.0]},
        {"create": {"_index": index_name, "_id": "b"}},
        {"name": "b", "v": [0.0, 1.0, 0.0]},
        {"delete": {"_index": index_name, "_id": "missing"}},
    ]
    payload = gzip.compress("".join(json.dumps(line) + "\n" for line in lines).encode())
    with OpenSearchProxy(node_url) as proxy:
        proxy.corrupt_vectors = "v"
        port = urlsplit(proxy.url).port
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        try:
            headers = {"Content-Type": "application/x-ndjson", "Content-Encoding": "gzip"}
            chunks = [payload[i : i + 16] for i in range(0, len(payload), 16)]
            conn.request("POST", "/_bulk?refresh=true", body=iter(chunks), headers=headers, encode_chunked=True)
            response = conn.getresponse()
            answer = json.loads(response.read())
            # The same keep-alive connection still carries a well-framed request after the chunked one.
            conn.request("GET", f"/{index_name}/_count")
            counted = json.loads(conn.getresponse().read())
        finally:
            conn.close()
    assert response.status == 200 and not answer["errors"], answer
    assert [next(iter(item.values()))["status"] for item in answer["items"]] == [201, 201, 404]
    assert counted["count"] == 2
    assert (proxy.bulk_requests, proxy.bulk_docs) == (1, 2)
    stored = {doc_id: node.get(index=index_name, id=doc_id)["_source"] for doc_id in ("a", "b")}
    assert stored["a"]["v"] != [1.0, 0.0, 0.0] and stored["b"]["v"] != [0.0, 1.0, 0.0]


def test_throttled_bulk_is_retried_by_streaming_bulk(node: OpenSearch, node_url: str, index_name: str) -> None:
    with OpenSearchProxy(node_url) as proxy:
        client = through(proxy)
        client.indices.create(index=index_name, body=ONE_SHARD)
        proxy.throttle_bulk = 2
        results = list(
            helpers.streaming_bulk(
                client, docs(index_name, range(30)), chunk_size=30, max_retries=3, initial_backoff=0.1
            )
        )
    assert len(results) == 30 and all(ok for ok, _ in results)
    assert (proxy.throttled, proxy.throttle_bulk) == (2, 0)
    assert (proxy.bulk_requests, proxy.bulk_docs) == (3, 30)  # two refused, the third forwarded
    assert stored_count(node, index_name) == 30


def test_corrupt_vectors_changes_stored_vectors(node: OpenSearch, node_url: str, index_name: str) -> None:
    vectors = {"east": [1.0, 0.0, 0.0, 0.0], "north": [0.0, 1.0, 0.0, 0.0], "mixed": [0.5, 0.5, 0.5, 0.5]}
    mapping = {
        "properties": {
            "v": {
                "type": "knn_vector",
                "dimension": 4,
                "method": {"name": "hnsw", "space_type": "cosinesimil", "engine": "lucene"},
            }
        }
    }
    node.indices.create(index=index_name, body={"settings": {"index": {"knn": True}}, "mappings": mapping})
    # The same vector under two ids: a seeded corruption turns both into the same wrong vector.
    actions = [
        {"_index": index_name, "_id": f"{name}-{copy}", "_source": {"name": name, "v": vector}}
        for name, vector in vectors.items()
        for copy in (1, 2)
    ]
    with OpenSearchProxy(node_url) as proxy:
        proxy.corrupt_vectors = "v"
        client = through(proxy, http_compress=True)  # gzip request bodies: decoded before inspection
        assert helpers.bulk(client, actions) == (6, [])
    for name, vector in vectors.items():
        first, second = (node.get(index=index_name, id=f"{name}-{copy}")["_source"] for copy in (1, 2))
        assert first["name"] == name
        assert len(first["v"]) == 4 and first["v"] != vector
        assert second["v"] == first["v"]
    assert proxy.bulk_docs == 6


def test_fail_bulk_after_docs_answers_500(node: OpenSearch, node_url: str, index_name: str) -> None:
    with OpenSearchProxy(node_url) as proxy:
        proxy.fail_bulk_after_docs = 10
        client = through(proxy)
        client.indices.create(index=index_name, body=ONE_SHARD)
        assert helpers.bulk(client, docs(index_name, range(10))) == (10, [])
        with pytest.raises(TransportError) as failure:
            helpers.bulk(client, docs(index_name, range(10, 20)))
        client.indices.refresh(index=index_name)  # other requests still pass
        assert client.count(index=index_name)["count"] == 10
    assert failure.value.status_code == 500
    assert failure.value.error == "opensearch_exception"
    assert (proxy.bulk_requests, proxy.bulk_docs) == (2, 10)
    assert stored_count(node, index_name) == 10


def test_tls_and_basic_auth(node: OpenSearch, node_url: str) -> None:
    user, password = "publisher", "s3cret-for-tests"
    with OpenSearchProxy(node_url, tls=True, basic_auth=(user, password)) as proxy:
        assert proxy.url.startswith("https://127.0.0.1:")
        assert proxy.ca_cert is not None
        tls = {"use_ssl": True, "verify_certs": True}
        trusting = through(proxy, http_auth=(user, password), ca_certs=proxy.ca_cert, **tls)
        assert trusting.info()["cluster_uuid"] == node.info()["cluster_uuid"]

        wrong_password = through(proxy, http_auth=(user, "wrong"), ca_certs=proxy.ca_cert, **tls)
        with pytest.raises(AuthenticationException):
            wrong_password.info()
        assert proxy.auth_failures == 1

        untrusting = through(proxy, http_auth=(user, password), max_retries=0, **tls)
        with pytest.raises(SSLError):
            untrusting.info()
        # The refused handshake never became a request.
        assert proxy.requests == ["GET /", "GET /"]
