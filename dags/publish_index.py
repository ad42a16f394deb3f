"""
### publish_index

Runs when `train_hybrid` promotes a model (the `model.recommendations` Asset), for the interval it
announced (or the `start`/`end` Params of a manual run):

1. **publish_index**: new versioned OpenSearch indices (`placerec-places-<version>`,
   `placerec-recommendations-<version>`, `placerec-users-<version>`) bulk-loaded from Iceberg by
   Spark (refresh off, no replicas while loading), then validated (document counts equal the
   source rows, k-NN recall@10 against exact cosine ≥ `PLACEREC_PUBLISH_MIN_RECALL`, canned
   queries answer). Only then the aliases move, all in one atomic request. A failed or rejected
   build is deleted and the aliases stay where they were. The newest `PLACEREC_INDEX_KEEP_VERSIONS`
   versions are kept; `placerec rollback` moves the aliases back. Each index's fate is a row of
   `ops.index_versions` (source snapshot ids, model version, validation figures).
2. **announce_serving**: emit the `serving.indices` Asset with the interval and version.

Params: `dry_run` builds and validates, then drops the build (aliases untouched); `force` rebuilds
even when the live version was built from the same inputs; `model_version` publishes that version
of `model.runs` instead of the newest promoted one. OpenSearch is reached through the
`opensearch_default` connection (type `opensearch`, the OpenSearch provider's: host, port,
login/password, `extra.use_ssl` / `verify_certs` / `ca_certs`), query vectors through `embeddings_default`.

Same code as `placerec publish-index --start … --end …` at a shell.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import DAG, Asset

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
)

SERVING = Asset(name="serving.indices", uri="opensearch://placerec/serving", group="opensearch")

with DAG(
    dag_id="publish_index",
    description="Versioned OpenSearch indices: bulk load, validate, atomic alias swap, keep N for rollback",
    doc_md=__doc__,
    schedule=[table_asset("model.recommendations")],
    start_date=pendulum.datetime(2026, 10, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    tags=["placerec", "publish"],
    params={
        **interval_params("train_hybrid (a promoted model)"),
        "dry_run": flag_param("Build and validate, then drop the build (aliases untouched).", "Dry run"),
        "force": flag_param("Rebuild even if the live version was built from the same inputs.", "Force rebuild"),
        "model_version": optional_text_param(
            "Model version of model.runs to publish (empty: the newest promoted one).", "Model version", "Run"
        ),
        "spark_conn_id": spark_conn_param(),
    },
):
    interval = resolve_interval("train_hybrid", own="publish_index")
    publish = spark_job(
        task_id="publish_index",
        job="publish_index",
        args=[
            *INTERVAL_ARGS,
            "--dry-run",
            "{{ params.dry_run }}",
            "--force",
            "{{ params.force }}",
            "--model-version",
            optional_arg("model_version"),
        ],
        connections=("opensearch", "embeddings"),
    )
    interval >> publish >> announce("announce_serving", [SERVING])
