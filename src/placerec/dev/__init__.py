"""Local platform for the embedded default: downloads, OpenSearch, embeddings server, Airflow."""
