"""The Faust side: the app and its agents, micro-batching, scheduling, the transport, and
starting a worker."""
