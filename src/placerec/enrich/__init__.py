"""Enrichment: review keywords from an LLM (or a local extractor), place profiles and embeddings."""
