"""Event records and validation, topics, the Faust app and its transport, metrics."""
