"""
### train_hybrid

Runs when enrichment updates `features.place_profiles` and `features.user_interests` (Assets), for
the interval the enrich run announced (or the `start`/`end` Params of a manual run):

1. **build_interactions**: `raw.events` before the interval end → weighted (per event type),
   time-decayed, per-user capped user–place signal → `features.interactions` (as of the end).
2. **train_hybrid**: ALS (implicit) + content cosine + popularity prior, blended per user (content
   for short histories, CF for long ones; blend chosen on a validation split). Evaluated on the last
   `PLACEREC_TRAIN_TEST_DAYS` against popularity, CF-only, content-only, EASE and `implicit` ALS,
   for cold, light and heavy users. Top-K lists with reasons → `model.recommendations`; the run →
   `model.runs`; a report with charts under `.local/reports/<model version>/`.
3. **if_promoted** → **announce_recommendations**: the gate promoted the model (NDCG@10 at least
   the best baseline's and within tolerance of the promoted model's), or the `force` Param did
   (recorded as forced): emit the `model.recommendations` Asset with the model version.

Same code as `placerec build-interactions` / `placerec train-hybrid --start … --end …` at a shell.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import DAG

from placerec.orchestration import (
    DEFAULT_ARGS,
    INTERVAL_ARGS,
    announce_promoted,
    flag_param,
    if_promoted,
    interval_params,
    resolve_interval,
    spark_conn_param,
    spark_job,
    table_asset,
)

RECOMMENDATIONS = table_asset("model.recommendations")

with DAG(
    dag_id="train_hybrid",
    description="Hybrid recommender: interactions, ALS + content, time-split evaluation, gated promotion",
    doc_md=__doc__,
    schedule=[table_asset("features.place_profiles"), table_asset("features.user_interests")],
    start_date=pendulum.datetime(2026, 10, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    tags=["placerec", "train"],
    params={
        **interval_params("build_place_profiles (enrich_reviews)"),
        "force": flag_param("Promote even if the gate refuses (recorded as forced).", "Force promotion"),
        "spark_conn_id": spark_conn_param(),
    },
):
    interval = resolve_interval("build_place_profiles", own="train_hybrid")
    interactions = spark_job(
        task_id="build_interactions",
        job="build_interactions",
        args=INTERVAL_ARGS,
        outlets=[table_asset("features.interactions")],
    )
    train = spark_job(
        task_id="train_hybrid",
        job="train_hybrid",
        args=[*INTERVAL_ARGS, "--force", "{{ params.force }}"],
        connections=("embeddings",),
    )

    interval >> interactions >> train >> if_promoted() >> announce_promoted("announce_recommendations", RECOMMENDATIONS)
