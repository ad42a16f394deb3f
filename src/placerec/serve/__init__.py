"""Serving: versioned OpenSearch indices (publish, validate, swap, roll back) and the queries that read them."""
