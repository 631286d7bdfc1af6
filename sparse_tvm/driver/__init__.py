"""The pipeline driver: compile (and later tune and prune) a model end to end."""
