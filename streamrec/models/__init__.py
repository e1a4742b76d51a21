"""Incremental models, one per module, usable without Kafka or Redis: the candidate sources,
the ranker and the blend over them."""
