"""Pruning old index versions (``placerec.maintain.prune_index_versions``) on the real OpenSearch node,
under an index prefix of its own (the demo's aliases are never touched)."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from placerec.catalog import ensure_tables_once, get_catalog
from placerec.maintain import prune_index_versions
from placerec.serve.client import opensearch_client
from placerec.settings import get_settings

pytestmark = pytest.mark.integration

FAMILIES = ("places", "recommendations", "users")
VERSIONS = ("v1", "v2", "v3", "v4", "v5")


@pytest.fixture
def node(unit_home: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[object, str]]:
    """Five versions of every family as real (empty) indices; v4 live (rolled back from v5), v1 also
    pinned by an alias of its own. The catalog is the private one; the node is the shared one."""
    monkeypatch.setenv("PLACEREC_HOME", str(unit_home))
    get_settings.cache_clear()
    ensure_tables_once(get_settings())
    prefix = f"mt{uuid.uuid4().hex[:8]}"
    client = opensearch_client(get_settings())
    for f in FAMILIES:
        for v in VERSIONS:
            client.indices.create(index=f"{prefix}-{f}-{v}", body={"settings": {"number_of_replicas": 0}})
        client.indices.put_alias(index=f"{prefix}-{f}-v4", name=f"{prefix}-{f}")
    client.indices.put_alias(index=f"{prefix}-places-v1", name=f"{prefix}-pinned-by-hand")
    yield client, prefix
    client.indices.delete(index=f"{prefix}-*")
    get_settings.cache_clear()


def _present(client: object, prefix: str) -> set[str]:
    return {row["index"] for row in client.cat.indices(index=f"{prefix}-*", format="json")}  # type: ignore[attr-defined]


def test_old_index_versions_beyond_the_kept_ones_go_unless_an_alias_points_at_them(node) -> None:  # type: ignore[no-untyped-def]
    client, prefix = node
    s = dataclasses.replace(get_settings(), index_prefix=prefix, index_keep_versions=3)
    every = {f"{prefix}-{f}-{v}" for f in FAMILIES for v in VERSIONS}
    assert _present(client, prefix) == every
    # kept: v4 (live) and the two newest others, v5 and v3; v2 and v1 are beyond, v1 has an alias
    dry = prune_index_versions(client, s, dry_run=True)  # type: ignore[arg-type]
    assert (dry.live, dry.deleted, dry.aliased) == ("v4", ("v2",), ("v1",))
    assert _present(client, prefix) == every  # a dry run deletes nothing

    done = prune_index_versions(client, s)  # type: ignore[arg-type]
    assert (done.deleted, done.aliased, done.kept) == (("v2",), ("v1",), ("v5", "v4", "v3", "v1"))
    assert _present(client, prefix) == every - {f"{prefix}-{f}-v2" for f in FAMILIES}
    rows = get_catalog().load_table("ops.index_versions").scan(row_filter="version = 'v2'").to_arrow().to_pylist()
    assert {r["index_name"]: r["status"] for r in rows if r["index_name"].startswith(prefix)} == {
        f"{prefix}-{f}-v2": "deleted" for f in FAMILIES
    }
    assert prune_index_versions(client, s).deleted == ()  # type: ignore[arg-type]
    # the serving aliases did not move
    for f in FAMILIES:
        assert set(client.indices.get_alias(name=f"{prefix}-{f}")) == {f"{prefix}-{f}-v4"}
