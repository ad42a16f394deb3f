"""Index families, their names and their definitions (settings + mappings).

Readers always go through an alias (``<prefix>-places`` …); each publish builds new indices named
``<alias>-<version>`` and moves the aliases to them in one request.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from placerec.settings import Settings

if TYPE_CHECKING:
    from opensearchpy import OpenSearch

FAMILIES = ("places", "recommendations", "users")


def alias_name(settings: Settings, family: str) -> str:
    if family not in FAMILIES:
        raise ValueError(f"unknown index family {family!r}; known: {', '.join(FAMILIES)}")
    return f"{settings.index_prefix}-{family}"


def index_name(settings: Settings, family: str, version: str) -> str:
    return f"{alias_name(settings, family)}-{version}"


def korean_analyzer(client: OpenSearch) -> dict[str, Any]:
    """The ``korean`` analyzer: Nori when the cluster has the ``analysis-nori`` plugin, else CJK bigrams.

    (Nori is not published on Maven Central, so the embedded dev node uses ``cjk``; a real cluster
    with Nori gets morpheme-aware matching without a code change.)
    """
    plugins = {p.get("component") for p in client.cat.plugins(format="json")}
    if "analysis-nori" in plugins:
        return {"type": "custom", "tokenizer": "nori_tokenizer", "filter": ["lowercase", "nori_readingform"]}
    return {"type": "cjk"}


def _knn_vector(dim: int, s: Settings) -> dict[str, Any]:
    return {
        "type": "knn_vector",
        "dimension": dim,
        "method": {
            "name": "hnsw",
            "engine": "lucene",
            "space_type": "cosinesimil",
            "parameters": {"m": s.knn_m, "ef_construction": s.knn_ef_construction},
        },
    }


def build_settings(s: Settings, analyzer: dict[str, Any]) -> dict[str, Any]:
    """Index settings while bulk-loading: no refresh, no replicas (restored by ``live_settings``)."""
    return {
        "index": {
            "number_of_shards": s.index_shards,
            "number_of_replicas": 0,
            "refresh_interval": "-1",
            "knn": True,
            "knn.algo_param.ef_search": s.knn_ef_search,
        },
        "analysis": {"analyzer": {"korean": analyzer}},
    }


def knn_clause(vector: list[float], k: int, s: Settings, filters: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """The ``knn`` query on ``embedding``: ``ef_search`` travels with the query, since the lucene engine
    ignores the index setting ``knn.algo_param.ef_search`` (k-NN plugin issue #2940) and would search
    with ef = k (recall@10 0.81–0.86 at 100k places in ``bench/publish_index.py``; 0.99 with it)."""
    clause: dict[str, Any] = {"vector": vector, "k": k, "method_parameters": {"ef_search": max(k, s.knn_ef_search)}}
    if filters:
        clause["filter"] = {"bool": {"filter": filters}}
    return {"knn": {"embedding": clause}}


def live_settings(s: Settings) -> dict[str, Any]:
    return {"index": {"number_of_replicas": s.index_replicas, "refresh_interval": s.index_refresh_interval}}


def mappings(family: str, dim: int, s: Settings) -> dict[str, Any]:
    """Field mappings of one family; ``dim`` is the embedding dimension."""
    korean = {"type": "text", "analyzer": "korean"}
    if family == "places":
        props: dict[str, Any] = {
            "place_id": {"type": "keyword"},
            "name": {**korean, "fields": {"raw": {"type": "keyword"}}},
            "category": {"type": "keyword"},
            "district": {"type": "keyword"},
            "address": {"type": "text", "analyzer": "korean"},
            "location": {"type": "geo_point"},
            "keywords": {**korean, "fields": {"raw": {"type": "keyword"}}},
            # the keywords reviews praise: the only ones an answer gives as its reason
            "praised": {"type": "keyword"},
            "popularity": {"type": "float"},
            "embedding": _knn_vector(dim, s),
        }
    elif family == "recommendations":
        props = {
            "user_id": {"type": "keyword"},
            "model_version": {"type": "keyword"},
            "place_ids": {"type": "keyword"},
            # the ranked list is read whole, never searched inside: stored, not indexed
            "items": {"type": "object", "enabled": False},
        }
    elif family == "users":
        props = {
            "user_id": {"type": "keyword"},
            "keywords": {**korean, "fields": {"raw": {"type": "keyword"}}},
            "embedding": _knn_vector(dim, s),
        }
    else:
        raise ValueError(f"unknown index family {family!r}")
    return {"dynamic": "strict", "properties": props}
