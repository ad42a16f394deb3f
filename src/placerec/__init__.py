"""placerec: batch data engineering for a hybrid place recommender."""
