"""Ingestion: landing files → validated, de-duplicated rows in ``raw.*``; rejects → ``raw.quarantine``."""
