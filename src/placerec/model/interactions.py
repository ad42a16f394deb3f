"""``features.interactions``: the weighted, time-decayed user–place signal every model trains on.

Each event type has a weight (settings: ``interaction_weights``); a review's weight is scaled by its
rating on its source's scale (Naver movie reviews 1..10, places 1..5), so a one-star review is a weak
positive, not a strong one. Every event decays with ``interaction_half_life_days``, counted back from
the as-of instant. Per user, only the ``interaction_max_places`` strongest places are kept and the
total weight is scaled down to ``interaction_user_cap``, so that a few heavy ids (NSMC's masked
authors merge many people) cannot dominate the factorisation.

``build_interactions`` is an "as of" job like the place profiles: for an interval ending at ``end``
it replaces the partition ``built_for`` = the interval's last day with the signal of every event
before ``end``.
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import TYPE_CHECKING, Any

from placerec.enrich.profiles import as_of, time_decay
from placerec.ingest.records import DEFAULT_RATING_RANGE, RATING_RANGE
from placerec.ops import read_at, record_job_metrics, snapshot_ids
from placerec.settings import Settings, get_settings

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame, SparkSession

JOB = "build_interactions"


def parse_weights(spec: str) -> dict[str, float]:
    """``"view=1,click=2"`` → ``{"view": 1.0, "click": 2.0}``; a clear error for anything else."""
    out: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        name, sep, value = part.partition("=")
        try:
            weight = float(value)
        except ValueError:
            weight = float("nan")
        if not sep or not name.strip() or weight != weight or weight < 0:
            raise ValueError(f"interaction weight {part!r}: expected <event_type>=<weight ≥ 0>")
        out[name.strip()] = weight
    if not any(w > 0 for w in out.values()):
        raise ValueError(f"interaction weights {spec!r}: no event type has a positive weight")
    return out


def _rating_factor() -> Column:
    """A review's rating as a share of its source's scale: top rating 1.0, lowest 1/steps."""
    from pyspark.sql import functions as F

    lo, hi = DEFAULT_RATING_RANGE
    low, high = F.lit(float(lo)), F.lit(float(hi))
    for source, (slo, shi) in RATING_RANGE.items():
        low = F.when(F.col("source") == source, F.lit(float(slo))).otherwise(low)
        high = F.when(F.col("source") == source, F.lit(float(shi))).otherwise(high)
    share = (F.col("rating") - low + 1.0) / (high - low + 1.0)
    return F.when(F.col("rating").isNull(), F.lit(1.0)).otherwise(F.least(F.greatest(share, F.lit(0.0)), F.lit(1.0)))


def interaction_rows(events: DataFrame, end: datetime, settings: Settings) -> DataFrame:
    """Pure transform: events (any period) → ``user_id, place_id, weight, events, last_ts`` as of ``end``.

    Only events strictly before ``end`` count, so a model trained at ``end`` never sees later behaviour.
    """
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    weights = {k: v for k, v in parse_weights(settings.interaction_weights).items() if v > 0}
    type_weight = F.lit(0.0)
    for etype, w in weights.items():
        type_weight = F.when(F.col("event_type") == etype, F.lit(w)).otherwise(type_weight)
    decay = time_decay("event_ts", end, settings.interaction_half_life_days)
    review_factor = F.when(F.col("event_type") == "review", _rating_factor()).otherwise(F.lit(1.0))

    pairs = (
        events.where(F.col("event_ts") < F.lit(end).cast("timestamp"))
        .where(F.col("event_type").isin(list(weights)))
        .where(F.col("user_id").isNotNull() & F.col("place_id").isNotNull())
        .withColumn("w", type_weight * review_factor * decay)
        .groupBy("user_id", "place_id")
        .agg(F.sum("w").alias("weight"), F.count("*").alias("events"), F.max("event_ts").alias("last_ts"))
    )
    strongest = Window.partitionBy("user_id").orderBy(F.col("weight").desc(), F.col("place_id"))
    per_user = Window.partitionBy("user_id")
    kept = pairs.withColumn("rank", F.row_number().over(strongest)).where(
        F.col("rank") <= settings.interaction_max_places
    )
    scale = F.least(F.lit(1.0), F.lit(settings.interaction_user_cap) / F.sum("weight").over(per_user))
    return kept.select("user_id", "place_id", (F.col("weight") * scale).alias("weight"), "events", "last_ts")


def run_build_interactions(
    spark: SparkSession,
    start: datetime,
    end: datetime,
    *,
    run_id: str = "manual",
    settings: Settings | None = None,
) -> dict[str, Any]:
    """Replace ``features.interactions`` for ``built_for`` = the interval's last day; returns what it did."""
    from pyspark.sql import functions as F

    from placerec.catalog import ensure_tables_once

    s = settings or get_settings()
    began = time.monotonic()
    ensure_tables_once()
    built_for = as_of(end)
    snaps = snapshot_ids(["raw.events"])
    events = read_at(spark, "raw.events", snaps)
    rows = interaction_rows(events, end, s).localCheckpoint()
    out = rows.select("user_id", "place_id", "weight", "events", "last_ts", F.lit(built_for).alias("built_for"))
    out.writeTo("features.interactions").overwrite(F.col("built_for") == F.lit(built_for))
    stats = rows.agg(
        F.count("*").alias("rows"),
        F.countDistinct("user_id").alias("users"),
        F.countDistinct("place_id").alias("places"),
        F.sum("events").alias("events"),
    ).first()
    assert stats is not None
    details: dict[str, Any] = {
        "built_for": str(built_for),
        "rows": int(stats["rows"]),
        "users": int(stats["users"]),
        "places": int(stats["places"]),
        "events": int(stats["events"] or 0),
        "weights": s.interaction_weights,
        "half_life_days": s.interaction_half_life_days,
        "user_cap": s.interaction_user_cap,
        "max_places": s.interaction_max_places,
        "source_snapshots": snaps,
    }
    record_job_metrics(
        JOB, start, end, run_id, began, details, rows_read=details["events"], rows_written=details["rows"]
    )
    return details
