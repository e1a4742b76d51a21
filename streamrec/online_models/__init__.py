"""Incremental models, one per module, usable without Kafka; the blend; shared Redis state."""
