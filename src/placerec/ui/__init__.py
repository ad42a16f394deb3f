"""The placerec page in the Airflow UI: figures read from the tables (``figures``), drawn as inline
SVG (``svg``), served by a FastAPI app the Airflow plugin mounts on the API server (``app``)."""
