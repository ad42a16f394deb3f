"""Tests against the running local services (``placerec dev up``)."""
