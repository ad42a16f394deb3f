"""Serving parts without a cluster: connection parsing, documents, exact neighbours, recall, rank fusion."""

from __future__ import annotations

import json

import numpy as np
import pytest

from placerec.connections import from_env, opensearch_settings
from placerec.dev import opensearch
from placerec.serve import indices, publish, query
from placerec.settings import Settings, get_settings

pytestmark = pytest.mark.unit


def test_connection_json_with_tls_auth_and_ca(monkeypatch: pytest.MonkeyPatch) -> None:
    conn = {
        "conn_type": "opensearch",
        "host": "search.example.com",
        "port": 9443,
        "schema": "https",
        "login": "placerec",
        "password": "p@ss/word",
        "extra": json.dumps({"verify_certs": False, "ca_certs": "/etc/ca.pem"}),
    }
    monkeypatch.setenv("AIRFLOW_CONN_OS_TEST", json.dumps(conn))
    assert opensearch_settings(from_env("os_test")) == {
        "opensearch_url": "https://search.example.com:9443",
        "opensearch_user": "placerec",
        "opensearch_password": "p@ss/word",
        "opensearch_verify_certs": False,
        "opensearch_ca_certs": "/etc/ca.pem",
    }


def test_connection_uri_form_and_plain_http(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_OS_TEST", "opensearch://reader:s%40cret@10.0.0.5:9200?use_ssl=true")
    assert opensearch_settings(from_env("os_test")) == {
        "opensearch_url": "https://10.0.0.5:9200",
        "opensearch_user": "reader",
        "opensearch_password": "s@cret",
    }
    monkeypatch.setenv("AIRFLOW_CONN_OS_TEST", json.dumps({"conn_type": "opensearch", "host": "http://127.0.0.1:9201"}))
    assert opensearch_settings(from_env("os_test")) == {"opensearch_url": "http://127.0.0.1:9201"}
    assert opensearch_settings(from_env("os_missing")) == {}


def test_settings_take_the_connection_but_explicit_env_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_OPENSEARCH_DEFAULT", "opensearch://u:secret-pw@os.internal:9200?use_ssl=true")
    monkeypatch.delenv("PLACEREC_OPENSEARCH_URL", raising=False)
    monkeypatch.setenv("PLACEREC_OPENSEARCH_VERIFY_CERTS", "false")
    get_settings.cache_clear()
    try:
        s = get_settings()
        assert (s.opensearch_url, s.opensearch_user, s.opensearch_password) == (
            "https://os.internal:9200",
            "u",
            "secret-pw",
        )
        assert s.opensearch_verify_certs is False
        assert "secret-pw" not in repr(s)
        monkeypatch.setenv("PLACEREC_OPENSEARCH_URL", "http://127.0.0.1:9999")
        get_settings.cache_clear()
        assert get_settings().opensearch_url == "http://127.0.0.1:9999"
    finally:
        get_settings.cache_clear()


def test_documents_are_json_without_nulls_zero_vectors_or_empty_keywords(spark) -> None:  # type: ignore[no-untyped-def]
    frame = spark.createDataFrame(
        [
            ("a", "A", [0.0, 0.0], ["조용한", ""], None),
            ("b", None, [0.6, 0.8], [], (1.0, 2.0)),
            ("c", "C", None, None, None),
        ],
        "place_id string, name string, embedding array<float>, keywords array<string>, "
        "location struct<lat: double, lon: double>",
    )
    docs = {r["_id"]: json.loads(r["_source"]) for r in publish.documents(frame, "places").collect()}
    assert docs["a"] == {"place_id": "a", "name": "A", "keywords": ["조용한"]}
    assert docs["b"] == {
        "place_id": "b",
        "embedding": pytest.approx([0.6, 0.8]),
        "keywords": [],
        "location": {"lat": 1.0, "lon": 2.0},
    }
    assert docs["c"] == {"place_id": "c", "name": "C"}
    recs = spark.createDataFrame(
        [("u", [(1, "x", None), (2, "y", ["조용한"])])],
        "user_id string, items array<struct<rank: int, place_id: string, reason: array<string>>>",
    )
    ((doc_id, source),) = [
        (r["_id"], json.loads(r["_source"])) for r in publish.documents(recs, "recommendations").collect()
    ]
    assert doc_id == "u"
    assert source["items"] == [{"rank": 1, "place_id": "x"}, {"rank": 2, "place_id": "y", "reason": ["조용한"]}]


def test_exact_top_and_recall_against_hand_computed_neighbours() -> None:
    vectors = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [-1.0, 0.0], [0.7, 0.7]], dtype=np.float32)
    top = publish.exact_top(vectors[:1], vectors, 3)
    assert top.tolist() == [[0, 1, 4]]  # cosine 1.0, 0.994, 0.707
    assert publish.recall_at_k([["a", "b", "x"]], [["a", "b", "c"]], k=3) == pytest.approx(2 / 3)
    assert publish.recall_at_k([["a"], ["q"]], [["a"], ["b"]], k=1) == 0.5
    assert publish.recall_at_k([], []) == 1.0


def test_reciprocal_rank_fusion() -> None:
    fused = query.rrf([["a", "b", "c"], ["c", "a"]], k=60)
    assert [d for d, _ in fused] == ["a", "c", "b"]
    assert fused[0][1] == pytest.approx(1 / 61 + 1 / 62)
    assert fused[1][1] == pytest.approx(1 / 61 + 1 / 63) and fused[2][1] == pytest.approx(1 / 62)


def test_index_names_and_definitions() -> None:
    s = Settings(index_prefix="pr", knn_m=24, knn_ef_construction=200, index_replicas=1)
    assert indices.index_name(s, "places", "v1") == "pr-places-v1"
    with pytest.raises(ValueError, match="unknown index family"):
        indices.alias_name(s, "menus")
    vector = indices.mappings("places", 384, s)["properties"]["embedding"]
    assert vector["dimension"] == 384
    assert vector["method"] == {
        "name": "hnsw",
        "engine": "lucene",
        "space_type": "cosinesimil",
        "parameters": {"m": 24, "ef_construction": 200},
    }
    build = indices.build_settings(s, {"type": "cjk"})["index"]
    assert (build["number_of_replicas"], build["refresh_interval"], build["knn"]) == (0, "-1", True)
    assert indices.live_settings(s)["index"]["number_of_replicas"] == 1
    assert indices.mappings("recommendations", 384, s)["properties"]["items"] == {"type": "object", "enabled": False}


def test_publish_key_changes_with_inputs_not_with_time() -> None:
    s = Settings()
    a = publish.Sources("m1", "2026-11-07", {"raw.places": "1"}, {}, 384)
    b = publish.Sources("m1", "2026-11-07", {"raw.places": "2"}, {}, 384)
    assert publish.publish_key(a, s) == publish.publish_key(a, s) != publish.publish_key(b, s)


def test_analysis_common_module_descriptor() -> None:
    props = dict(line.split("=", 1) for line in opensearch.analysis_common_descriptor("2.19.1").splitlines())
    assert props["classname"] == "org.opensearch.analysis.common.CommonAnalysisPlugin"
    assert props["extended.plugins"] == "lang-painless" and props["opensearch.version"] == "2.19.1"
