"""The placerec page in the Airflow UI.

``fastapi_apps`` mounts ``placerec.ui.app`` on the API server at ``/placerec`` (every route behind
Airflow's authentication); ``external_views`` put it in the navigation bar and add a "placerec
report" tab to every DAG run, which opens that run's figures (training table, publish verdict).
"""

from __future__ import annotations

from typing import Any, ClassVar

from airflow.plugins_manager import AirflowPlugin

from placerec.ui.app import URL_PREFIX, airflow_app


class PlacerecPlugin(AirflowPlugin):
    name = "placerec"
    fastapi_apps: ClassVar[list[dict[str, Any]]] = [
        {"app": airflow_app(), "url_prefix": URL_PREFIX, "name": "placerec"}
    ]
    external_views: ClassVar[list[dict[str, Any]]] = [
        {
            "name": "placerec",
            "href": f"{URL_PREFIX}/",
            "destination": "nav",
            "url_route": "placerec",
        },
        {
            "name": "placerec report",
            "href": f"{URL_PREFIX}/runs/{{DAG_ID}}/{{RUN_ID}}",
            "destination": "dag_run",
            "url_route": "placerec-run",
        },
    ]
