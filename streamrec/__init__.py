"""streamrec: an event-driven streaming recommender (Kafka in, fresh top-K lists out)."""

__version__ = "0.1.0"
