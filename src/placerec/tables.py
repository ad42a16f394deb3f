"""Every Iceberg table of the design: namespace, schema, partition spec; created idempotently.

Fields are optional at the Iceberg level (Spark writes nullable columns); required-ness of
records is enforced by validation before anything is written.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

from pyiceberg.catalog import Catalog
from pyiceberg.expressions import EqualTo, Reference
from pyiceberg.expressions.literals import literal
from pyiceberg.partitioning import PartitionField, PartitionSpec
from pyiceberg.schema import Schema
from pyiceberg.table import Table
from pyiceberg.transforms import DayTransform, IdentityTransform, Transform
from pyiceberg.types import (
    BooleanType,
    DateType,
    DoubleType,
    FloatType,
    IcebergType,
    IntegerType,
    ListType,
    LongType,
    MapType,
    NestedField,
    StringType,
    TimestamptzType,
)

IMPORTED_DIGEST = hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:16]
"""``catalog.tables_digest()`` of this file as this process imported it (what ``ensure_tables`` applies)."""

S, INT, L, D, F, B = StringType(), IntegerType(), LongType(), DoubleType(), FloatType(), BooleanType()
TS, DT = TimestamptzType(), DateType()


@dataclass(frozen=True)
class TableDef:
    """One table: ``namespace.name``, its columns in order, and its partition fields."""

    namespace: str
    name: str
    columns: tuple[tuple[str, IcebergType | str], ...]
    partition: tuple[tuple[str, Transform], ...] = ()  # type: ignore[type-arg]
    doc: str = ""
    properties: dict[str, str] = field(default_factory=dict)

    @property
    def identifier(self) -> str:
        return f"{self.namespace}.{self.name}"

    def schema(self) -> Schema:
        """The pyiceberg schema; field ids are assigned in column order (nested ids after)."""
        next_id = len(self.columns) + 1
        fields = []
        for i, (col, typ) in enumerate(self.columns, start=1):
            if typ == "float_list":
                typ = ListType(element_id=next_id, element_type=F, element_required=False)
                next_id += 1
            elif typ == "string_list":
                typ = ListType(element_id=next_id, element_type=S, element_required=False)
                next_id += 1
            elif typ == "string_map":
                typ = MapType(key_id=next_id, key_type=S, value_id=next_id + 1, value_type=S, value_required=False)
                next_id += 2
            assert not isinstance(typ, str)
            fields.append(NestedField(field_id=i, name=col, field_type=typ, required=False))
        return Schema(*fields)

    def spec(self) -> PartitionSpec:
        schema = self.schema()
        parts = []
        for n, (col, transform) in enumerate(self.partition):
            source = schema.find_field(col)
            suffix = "day" if isinstance(transform, DayTransform) else ""
            parts.append(
                PartitionField(
                    source_id=source.field_id,
                    field_id=1000 + n,
                    transform=transform,
                    name=f"{col}_{suffix}" if suffix else col,
                )
            )
        return PartitionSpec(*parts)


_SOURCE = (("source", S), ("source_file", S), ("source_line", L))
# a place record: raw.places' columns, and raw.place_versions' before its seen_at
_PLACE = (
    ("place_id", S),
    ("name", S),
    ("category", S),
    ("district", S),
    ("lat", D),
    ("lon", D),
    ("address", S),
    ("updated_ts", TS),
    *_SOURCE,
)
# Fan-out writers keep a Parquet writer open per partition: a history import spanning
# thousands of days exhausts the heap. Writers here get rows sorted by partition instead.
_WRITE_PROPS = {
    "format-version": "2",
    "write.parquet.compression-codec": "zstd",
    "write.spark.fanout.enabled": "false",
}

TABLES: tuple[TableDef, ...] = (
    TableDef(
        "raw",
        "events",
        (
            ("event_id", S),
            ("event_type", S),
            ("event_ts", TS),
            ("user_id", S),
            ("session_id", S),
            ("place_id", S),
            ("query", S),
            ("review_id", S),
            ("rating", INT),
            ("position", INT),
            ("device", S),
            *_SOURCE,
            ("request_id", S),
            ("model_version", S),
            ("variant", S),
        ),
        (("event_ts", DayTransform()),),
        "Behaviour events (impression, view, click, save, navigate, visit, review, search), one row per event_id;"
        " request_id, model_version and variant tie an event to the served answer it came from.",
    ),
    TableDef(
        "raw",
        "reviews",
        (
            ("review_id", S),
            ("place_id", S),
            ("user_id", S),
            ("rating", INT),
            ("text", S),
            ("review_ts", TS),
            ("content_hash", S),
            *_SOURCE,
        ),
        (),
        "User reviews, upserted by review_id; content_hash (sha256 of text) keys the LLM cache.",
    ),
    TableDef(
        "raw",
        "places",
        _PLACE,
        (),
        "Place catalogue, upserted by place_id (newest updated_ts wins).",
    ),
    TableDef(
        "raw",
        "place_versions",
        (
            *_PLACE,
            ("seen_at", TS),
        ),
        (),
        "Every place record an ingest run delivered (its newest per place), with the start of that run's "
        "interval: the catalogue as it stood on a past day (ops.places_as_of), for jobs built for that day.",
    ),
    TableDef(
        "raw",
        "quarantine",
        (
            ("job", S),
            ("interval_start", TS),
            ("interval_end", TS),
            ("feed", S),
            ("source_file", S),
            ("source_line", L),
            ("reason", S),
            ("detail", S),
            ("record", S),
            ("record_bytes", L),
        ),
        (("job", IdentityTransform()), ("interval_start", DayTransform())),
        "Every rejected record with its reason and where it came from; owned per (job, interval).",
    ),
    TableDef(
        "features",
        "review_keywords",
        (
            ("review_id", S),
            ("place_id", S),
            ("user_id", S),
            ("keyword", S),
            ("aspect", S),
            ("sentiment", S),
            ("weight", D),
            ("evidence", S),
            ("extractor", S),
            ("model", S),
            ("prompt_version", S),
            ("content_hash", S),
            ("review_ts", TS),
        ),
        (("review_ts", DayTransform()),),
        "Keywords the LLM (or the local extractor) found in each review.",
    ),
    TableDef(
        "features",
        "place_profiles",
        (
            ("place_id", S),
            ("top_keywords", "string_list"),
            ("profile_text", S),
            ("embedding", "float_list"),
            ("embedding_model", S),
            ("profile_hash", S),
            ("built_for", DT),
            ("source_snapshots", "string_map"),
            ("positive_keywords", "string_list"),
        ),
        (("built_for", IdentityTransform()),),
        "Per-place keyword profile and its embedding, one full set per as-of day (read the latest built_for); "
        "positive_keywords: the top keywords reviews praise, the only ones a recommendation gives as its reason.",
    ),
    TableDef(
        "features",
        "user_interests",
        (
            ("user_id", S),
            ("origin", S),
            ("keywords", "string_list"),
            ("embedding", "float_list"),
            ("embedding_model", S),
            ("built_for", DT),
            ("source_snapshots", "string_map"),
        ),
        (("built_for", IdentityTransform()),),
        "User interest keywords and vectors (search queries: cold start), one set per as-of day and origin.",
    ),
    TableDef(
        "features",
        "interactions",
        (("user_id", S), ("place_id", S), ("weight", D), ("events", L), ("last_ts", TS), ("built_for", DT)),
        (("built_for", IdentityTransform()),),
        "Weighted, time-decayed user-place signal.",
    ),
    TableDef(
        "model",
        "runs",
        (
            ("model_version", S),
            ("trained_for", DT),
            ("params", "string_map"),
            ("input_snapshots", "string_map"),
            ("metrics", "string_map"),
            ("promoted", B),
            ("forced", B),
            ("created_at", TS),
        ),
        (),
        "One row per training run: parameters, inputs (snapshot ids), metrics, promotion.",
    ),
    TableDef(
        "model",
        "factors",
        (("model_version", S), ("kind", S), ("id", S), ("vector", "float_list")),
        (("model_version", IdentityTransform()),),
        "ALS factors per model version (kind = user | place).",
    ),
    TableDef(
        "model",
        "recommendations",
        (
            ("model_version", S),
            ("user_id", S),
            ("rank", INT),
            ("place_id", S),
            ("score", D),
            ("reason", "string_list"),
        ),
        (("model_version", IdentityTransform()),),
        "Top-K places per user with the keywords that explain them.",
    ),
    TableDef(
        "ops",
        "llm_cache",
        (
            ("cache_key", S),
            ("kind", S),
            ("model", S),
            ("prompt_version", S),
            ("content_hash", S),
            ("result", S),
            ("tokens_in", L),
            ("tokens_out", L),
            ("created_at", TS),
        ),
        (("kind", IdentityTransform()),),
        "Content-hash keyed LLM and embedding results: a replay never pays twice.",
    ),
    TableDef(
        "ops",
        "task_metrics",
        (
            ("job", S),
            ("interval_start", TS),
            ("interval_end", TS),
            ("run_id", S),
            ("rows_read", L),
            ("rows_written", L),
            ("rows_quarantined", L),
            ("calls", L),
            ("cache_hits", L),
            ("tokens", L),
            ("cost", D),
            ("seconds", D),
            ("details", S),
            ("recorded_at", TS),
        ),
        (("job", IdentityTransform()),),
        "What each task did for its interval; one row per (job, interval_start), last run wins.",
    ),
    TableDef(
        "ops",
        "index_versions",
        (
            ("index_name", S),
            ("alias", S),
            ("model_version", S),
            ("source_snapshots", "string_map"),
            ("docs", L),
            ("status", S),
            ("created_at", TS),
            ("version", S),
            ("family", S),
            ("publish_key", S),
            ("details", S),
            ("updated_at", TS),
        ),
        (),
        "Published OpenSearch index versions (one row per index), for tracing and rollback; "
        "status building | live | previous | rolled-back | failed | rejected | dry-run | deleted.",
    ),
    TableDef(
        "ops",
        "online_ctr",
        (
            ("interval_start", TS),
            ("interval_end", TS),
            ("variant", S),
            ("model_versions", S),
            ("offline_ndcg", D),
            ("users", L),
            ("requests", L),
            ("impressions", L),
            ("clicks", L),
            ("ctr", D),
            ("ctr_low", D),
            ("ctr_high", D),
            ("reference", S),
            ("diff", D),
            ("diff_low", D),
            ("diff_high", D),
            ("verdict", S),
            ("computed_at", TS),
        ),
        (),
        "Online CTR per serving variant for an interval, from the ingested impressions and clicks, with "
        "95 % intervals and the difference to the reference variant; one row per (interval, variant).",
    ),
)

TABLES_BY_ID = {t.identifier: t for t in TABLES}


def table_def(identifier: str) -> TableDef:
    """The definition of ``namespace.name``; KeyError names the known tables."""
    try:
        return TABLES_BY_ID[identifier]
    except KeyError:
        raise KeyError(f"unknown table {identifier!r}; known: {sorted(TABLES_BY_ID)}") from None


def ensure_tables(catalog: Catalog) -> list[str]:
    """Create every namespace and table that does not exist yet; return the identifiers created."""
    created: list[str] = []
    for ns in sorted({t.namespace for t in TABLES}):
        try:
            catalog.create_namespace(ns)
        except Exception:
            # Two tasks starting at once (a backfill's days) both find the namespace missing; the
            # SQL catalog then raises IntegrityError, not NamespaceAlreadyExistsError, for the loser.
            if not catalog.namespace_exists(ns):
                raise
    for t in TABLES:
        if catalog.table_exists(t.identifier):
            table = catalog.load_table(t.identifier)
            _sync_properties(table, {**_WRITE_PROPS, **t.properties})
            _add_columns(table, t.schema())
            continue
        try:
            catalog.create_table(
                t.identifier,
                schema=t.schema(),
                partition_spec=t.spec(),
                properties={**_WRITE_PROPS, "comment": t.doc, **t.properties},
            )
            created.append(t.identifier)
        except Exception:  # created concurrently by another task (either error): fine
            if not catalog.table_exists(t.identifier):
                raise
    return created


def _add_columns(table: Table, wanted: Schema) -> None:
    """Add the columns a newer definition has (optional, at the end): old rows read them as null."""
    have = {f.name for f in table.schema().fields}
    if any(f.name not in have for f in wanted.fields):
        with table.update_schema() as update:
            update.union_by_name(wanted)


def _sync_properties(table: Table, wanted: dict[str, str]) -> None:
    """Bring table properties up to date (format-version is fixed at creation)."""
    changed = {k: v for k, v in wanted.items() if k != "format-version" and table.properties.get(k) != v}
    if changed:
        with table.transaction() as tx:
            tx.set_properties(changed)


def load_table(catalog: Catalog, identifier: str) -> Table:
    """Load a table, creating the whole set first if it is missing."""
    if not catalog.table_exists(identifier):
        ensure_tables(catalog)
    return catalog.load_table(identifier)


def equals(column: str, value: str | int) -> EqualTo:
    """A scan filter ``column == value`` as a bound expression: any string, quotes included, is a value
    (never SQL text), so filters on what a user typed (a run id, a user id) cannot be bent."""
    return EqualTo(term=Reference(column), value=literal(value))  # type: ignore[type-var]
