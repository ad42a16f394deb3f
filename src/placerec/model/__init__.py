"""Train: interactions, the hybrid recommender, evaluation and promotion."""
