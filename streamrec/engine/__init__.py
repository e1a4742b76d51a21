"""The work of one micro-batch, independent of Faust: validate, learn, recommend, write back;
the shared state in Redis; the engine's two hosts (the worker's loop, a model process)."""
