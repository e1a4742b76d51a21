"""Errors that stop a worker rather than one event (they import nothing of the project)."""

from __future__ import annotations


class WorkerMustStop(RuntimeError):
    """The worker cannot go on without losing or corrupting state (Redis lost the shared
    state, a partition's offsets went back under the "stop" policy): the batch at hand is not
    acknowledged, and the worker stops with this reason (exit code 1)."""


class StateLost(WorkerMustStop):
    """The shared state this worker loaded is no longer in Redis."""


class SnapshotError(RuntimeError):
    """A snapshot that is missing, corrupt, truncated or not what its manifest says."""
