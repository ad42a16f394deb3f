"""
### enrich_reviews

Runs when ingestion updates `raw.reviews` and `raw.events` (Assets). For the data interval of
the ingest runs that triggered it (or the `start`/`end` Params of a manual run):

1. **extract_review_keywords**: keywords of the interval's reviews. Only texts whose content hash
   is not yet in `ops.llm_cache` for (model, prompt version) are sent: a replay or backfill of
   enriched days makes no call. Calls run concurrently in Spark partitions under the rate limits
   and the optional budget; reviews without keywords go to `raw.quarantine` with their reason.
   Tokens, calls and cost are in `ops.task_metrics`.
2. **build_place_profiles**: keywords per place (frequency, recency, sentiment) → profile text →
   embedding (cached) → `features.place_profiles`, as of the interval end.
3. **extract_search_interests**: search queries → interest keywords (same extractor and cache) →
   embedding per user → `features.user_interests` (cold start).
4. **announce_features**: emits the `features.place_profiles` and `features.user_interests` Assets
   with the interval in the events' extra (`train_hybrid` runs on them).

Params: `extractor` (local = offline Kiwi + e5; llm = the OpenAI-compatible endpoint of the
`llm_default` connection: Admin → Connections, host = the `/v1` base URL, password = the key,
extra `{"model": …}`; else `PLACEREC_LLM_*`), `model`, `prompt_version`, `budget_tokens` /
`budget_cost` (stop before the run spends more), `dry_run` (estimate calls, tokens and cost
only; later tasks are skipped).
Same code as `placerec extract-review-keywords --start <ds> …` at a shell.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import DAG, Param

from placerec.orchestration import (
    DEFAULT_ARGS,
    INTERVAL_ARGS,
    announce,
    flag_param,
    interval_params,
    optional_arg,
    optional_text_param,
    resolve_interval,
    spark_conn_param,
    spark_job,
    table_asset,
    unless_dry_run,
)

EXTRACTOR = [
    "--extractor",
    "{{ params.extractor }}",
    "--model",
    optional_arg("model"),
    "--prompt-version",
    optional_arg("prompt_version"),
]

with DAG(
    dag_id="enrich_reviews",
    description="Review keywords (LLM or local), place profiles and user interest vectors",
    doc_md=__doc__,
    schedule=[table_asset("raw.reviews"), table_asset("raw.events")],
    start_date=pendulum.datetime(2026, 10, 1, tz="UTC"),
    catchup=False,
    # Not 1: Airflow 3.3 creates no asset-triggered run while the DAG is at max_active_runs, and the
    # run it creates afterwards consumes only the events up to the first queued one; the later
    # events' intervals would never be enriched. Runs own disjoint intervals, so they may overlap.
    max_active_runs=8,
    default_args=DEFAULT_ARGS,
    tags=["placerec", "enrich"],
    params={
        **interval_params("ingest_events"),
        "extractor": Param(
            "",
            enum=["", "local", "llm"],
            values_display={
                "": "as configured (PLACEREC_KEYWORD_EXTRACTOR)",
                "local": "local: Kiwi morphology + e5 embeddings, offline",
                "llm": "llm: the llm_default connection's endpoint",
            },
            title="Keyword extractor",
            section="Extraction",
            description="Who extracts the keywords.",
        ),
        "model": optional_text_param(
            "LLM model (empty: the connection's or PLACEREC_LLM_MODEL).", "LLM model", "Extraction"
        ),
        "prompt_version": optional_text_param(
            "Prompt version (empty: the promoted one, see placerec eval-keywords).", "Prompt version", "Extraction"
        ),
        "budget_tokens": Param(
            None,
            type=["null", "integer"],
            minimum=1,
            title="Token budget",
            section="Budget",
            description="Stop before this run spends more tokens, prompt + completion (empty: no ceiling).",
        ),
        "budget_cost": Param(
            None,
            type=["null", "number"],
            exclusiveMinimum=0,
            title="Cost budget (USD)",
            section="Budget",
            description="Stop before this run spends more US dollars (empty: no ceiling).",
        ),
        "dry_run": flag_param("Only estimate calls, tokens and cost; write nothing.", "Dry run"),
        "spark_conn_id": spark_conn_param(),
    },
):
    interval = resolve_interval("ingest_events", own="build_place_profiles")
    keywords = spark_job(
        task_id="extract_review_keywords",
        job="extract_review_keywords",
        args=[
            *INTERVAL_ARGS,
            *EXTRACTOR,
            "--budget-tokens",
            optional_arg("budget_tokens"),
            "--budget-cost",
            optional_arg("budget_cost"),
            "--dry-run",
            "{{ params.dry_run }}",
        ],
        outlets=[table_asset("features.review_keywords")],
        connections=("llm", "embeddings"),
    )
    go_on = unless_dry_run()
    profiles = spark_job(
        task_id="build_place_profiles", job="build_place_profiles", args=INTERVAL_ARGS, connections=("embeddings",)
    )
    interests = spark_job(
        task_id="extract_search_interests",
        job="extract_search_interests",
        args=[*INTERVAL_ARGS, *EXTRACTOR],
        connections=("llm", "embeddings"),
    )
    # One event per asset per run, carrying the interval (this run has none of its own for train to inherit).
    done = announce(
        "announce_features", [table_asset("features.place_profiles"), table_asset("features.user_interests")]
    )
    interval >> keywords >> go_on >> [profiles, interests] >> done
