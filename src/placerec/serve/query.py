"""What serving asks the live indices (through their aliases): a user's recommendations, and search.

``recommend``: the precomputed list of a known user (filtered by district/category when asked);
for a user without one, k-NN from their search-interest vector over the places (filters applied
inside the k-NN search); for a user unknown to both, the most popular places. ``search``: keyword
match (Korean analyzer) and k-NN on the query's embedding, fused by reciprocal rank.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from placerec.serve import indices
from placerec.settings import Settings

if TYPE_CHECKING:
    from opensearchpy import OpenSearch

RRF_K = 60
PLACE_FIELDS = ["place_id", "name", "category", "district", "keywords", "praised", "popularity"]


@dataclass
class Hit:
    place_id: str
    name: str
    category: str
    district: str
    score: float
    reasons: list[str] = field(default_factory=list)


@dataclass
class Answer:
    source: str
    """``precomputed`` (the model's list), ``interests`` (k-NN from search interests), ``popular``,
    or ``search`` (keyword + k-NN)."""
    hits: list[Hit]
    model_version: str = ""


def _filters(district: str = "", category: str = "") -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    if district:
        out.append({"term": {"district": district}})
    if category:
        out.append({"term": {"category": category}})
    return out


def _get(client: OpenSearch, index: str, doc_id: str) -> dict[str, Any] | None:
    """The document ``doc_id`` of ``index`` (an alias), or None: a miss is an answer here, not an error."""
    found = client.mget(index=index, body={"ids": [doc_id]})["docs"][0]
    return dict(found["_source"]) if found.get("found") else None


def _hit(source: dict[str, Any], score: float, reasons: list[str]) -> Hit:
    return Hit(
        str(source.get("place_id", "")),
        str(source.get("name") or ""),
        str(source.get("category") or ""),
        str(source.get("district") or ""),
        float(score),
        reasons,
    )


def _index(s: Settings, family: str, version: str) -> str:
    """The live alias of ``family``, or the indices of publish ``version`` when one is named."""
    return indices.index_name(s, family, version) if version else indices.alias_name(s, family)


def knn_places(
    client: OpenSearch,
    s: Settings,
    vector: list[float],
    k: int,
    district: str = "",
    category: str = "",
    version: str = "",
) -> list[dict[str, Any]]:
    """The ``k`` places nearest ``vector``, filtered inside the HNSW search (lucene efficient filtering)."""
    body = {"size": k, "_source": PLACE_FIELDS, "query": indices.knn_clause(vector, k, s, _filters(district, category))}
    return list(client.search(index=_index(s, "places", version), body=body)["hits"]["hits"])


def recommend(
    client: OpenSearch,
    s: Settings,
    user: str,
    k: int = 10,
    district: str = "",
    category: str = "",
    *,
    version: str = "",
    popular_only: bool = False,
) -> Answer:
    """``k`` places for ``user`` from the live indices (or publish ``version``'s), each with its reasons;
    ``popular_only`` answers every user with the popular fallback (a baseline variant)."""
    doc = None if popular_only else _get(client, _index(s, "recommendations", version), user)
    if doc is not None:
        items = [
            i
            for i in doc.get("items", [])
            if (not district or i.get("district") == district) and (not category or i.get("category") == category)
        ]
        hits = [_hit(i, i.get("score", 0.0), list(i.get("reason") or [])) for i in items[:k]]
        return Answer("precomputed", hits, str(doc.get("model_version", "")))
    interests = None if popular_only else _get(client, _index(s, "users", version), user)
    if interests is not None and interests.get("embedding"):
        wanted = set(interests.get("keywords") or [])
        found = knn_places(client, s, interests["embedding"], k, district, category, version)
        hits = [
            # a reason is praise the user searched for, never a complaint; else what the answer rests on
            _hit(
                h["_source"],
                h["_score"],
                [w for w in h["_source"].get("praised", []) if w in wanted][:3] or ["close to your searches"],
            )
            for h in found
        ]
        return Answer("interests", hits)
    body = {
        "size": k,
        "_source": PLACE_FIELDS,
        "query": {"bool": {"filter": _filters(district, category)}},
        "sort": [{"popularity": "desc"}, {"place_id": "asc"}],
    }
    found = client.search(index=_index(s, "places", version), body=body)["hits"]["hits"]
    return Answer("popular", [_hit(h["_source"], h["_source"].get("popularity", 0.0), ["popular"]) for h in found])


def rrf(rankings: list[list[str]], k: int = RRF_K) -> list[tuple[str, float]]:
    """Reciprocal rank fusion: sum of 1 / (k + rank) over the rankings an id appears in, best first."""
    scores: dict[str, float] = {}
    for ranking in rankings:
        for rank, doc_id in enumerate(ranking, start=1):
            scores[doc_id] = scores.get(doc_id, 0.0) + 1.0 / (k + rank)
    return sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))


def search(
    client: OpenSearch,
    s: Settings,
    text: str,
    vector: list[float] | None,
    k: int = 10,
    district: str = "",
    category: str = "",
) -> Answer:
    """Keyword match on names and keywords, plus k-NN on ``vector`` (the text's embedding), fused by RRF."""
    filters = _filters(district, category)
    pool = max(k * 5, 50)
    lexical = {
        "size": pool,
        "_source": PLACE_FIELDS,
        "query": {
            "bool": {
                "must": {"multi_match": {"query": text, "fields": ["name^2", "keywords", "address"]}},
                "filter": filters,
            }
        },
        # whole keyword values that matched the query (through the Korean analyzer) are the reasons
        "highlight": {"fields": {"keywords": {"number_of_fragments": 0}}, "pre_tags": [""], "post_tags": [""]},
    }
    found = client.search(index=indices.alias_name(s, "places"), body=lexical)["hits"]["hits"]
    sources = {h["_id"]: h["_source"] for h in found}
    matched = {h["_id"]: list(h.get("highlight", {}).get("keywords", [])) for h in found}
    rankings = [[h["_id"] for h in found]]
    if vector is not None:
        near = knn_places(client, s, vector, pool, district, category)
        sources.update({h["_id"]: h["_source"] for h in near})
        rankings.append([h["_id"] for h in near])
    # a matched keyword is a reason only when reviews praise it ("주차" matches 주차 불편 too)
    hits = [
        _hit(
            sources[doc_id], score, [w for w in matched.get(doc_id, []) if w in sources[doc_id].get("praised", [])][:3]
        )
        for doc_id, score in rrf(rankings)[:k]
    ]
    return Answer("search", hits)
