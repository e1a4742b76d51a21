"""Keeping a worker's student current: load and verify a new version off the hot path, swap it
in between batches, keep the old one when anything is wrong with the new."""

from __future__ import annotations

import logging

from streamrec.models.student import StudentSource
from streamrec.models.student_scorer import StudentScorer
from streamrec.records.errors import SnapshotError
from streamrec.snapshots.store import STUDENT, SnapshotStore

log = logging.getLogger(__name__)


class StudentLoader:
    """Loads the student in service from the store into ``source``.

    :meth:`check` (on a ``model-updates`` announcement, and on every refresh tick, since in a
    consumer group only one worker receives each announcement) fetches and verifies the
    version in service if it is new; :meth:`apply`, called by the engine before a batch,
    swaps it in. A version that fails is remembered with its reason and not retried.
    """

    def __init__(self, store: SnapshotStore, source: StudentSource) -> None:
        self.store = store
        self.source = source
        self._pending: StudentScorer | None = None
        #: version -> why it was refused
        self.rejected: dict[str, str] = {}
        self.swaps = 0

    @property
    def version(self) -> str | None:
        return self.source.version

    async def check(self) -> str | None:
        """Fetch the version in service if it is not already (or about to be) in use;
        returns the version fetched, or None."""
        target = await self.store.current(STUDENT)
        pending = self._pending.version if self._pending is not None else None
        if target is None or target in (self.version, pending) or target in self.rejected:
            return None
        try:
            tensors, meta, info = await self.store.load(STUDENT, target)
            scorer = StudentScorer(tensors, meta, info.version)
            if scorer.content_dim != self.source.content_dim:
                raise SnapshotError(f"student {target} reads {scorer.content_dim}-d content, "
                                    f"this worker has {self.source.content_dim}-d embeddings")
        except SnapshotError as exc:
            self.rejected[target] = str(exc)
            log.error("student %s rejected, %s stays in service: %s", target,
                      self.version or "no student", exc)
            return None
        self._pending = scorer
        return target

    def apply(self) -> bool:
        """Swap in the student fetched by :meth:`check`, if any (between batches)."""
        if self._pending is None:
            return False
        self.source.swap(self._pending)
        self._pending = None
        self.swaps += 1
        log.info("student %s in service", self.version)
        return True
