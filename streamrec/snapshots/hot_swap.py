"""Keeping a worker's student current: load and verify a new version off the hot path, swap it
in between batches, keep the old one when anything is wrong with the new.

A student snapshot also carries the content fusion's block weights its training round chose
(metadata :data:`FUSION_WEIGHTS`); the content source switches to them at the same swap."""

from __future__ import annotations

import logging

from streamrec.content.fusion import DIM, FIXED, FusionWeights
from streamrec.models.content import ContentSource
from streamrec.models.student import StudentSource
from streamrec.models.student_scorer import StudentScorer
from streamrec.records.errors import SnapshotError
from streamrec.snapshots.store import STUDENT, SnapshotStore

log = logging.getLogger(__name__)

#: Snapshot metadata key of the fusion weights (JSON ``{"text", "image", "tags"}``).
FUSION_WEIGHTS = "fusion_weights"


def snapshot_fusion(meta: dict[str, str], version: str) -> FusionWeights:
    """The fusion weights a snapshot carries (the fixed ones when it carries none); raises
    :class:`SnapshotError` when they are not three finite non-negative numbers summing to 1.

    >>> snapshot_fusion({}, "student-v1") == FIXED
    True
    >>> snapshot_fusion({FUSION_WEIGHTS: '{"text": 0.5, "image": 0.5, "tags": -0.1}'}, "student-v2")
    Traceback (most recent call last):
    ...
    streamrec.records.errors.SnapshotError: student student-v2: bad fusion weights: fusion weights must be non-negative, got (0.5, 0.5, -0.1)
    """
    raw = meta.get(FUSION_WEIGHTS)
    if raw is None:
        return FIXED
    try:
        return FusionWeights.parse(raw)
    except ValueError as exc:
        raise SnapshotError(f"student {version}: bad fusion weights: {exc}") from None


class StudentLoader:
    """Loads the student in service from the store into ``source``, and its fusion weights
    into ``content`` (if given).

    :meth:`check` (on a ``model-updates`` announcement, and on every refresh tick, since in a
    consumer group only one worker receives each announcement) fetches and verifies the
    version in service if it is new; :meth:`apply`, called by the engine before a batch,
    swaps it in. A version that fails is remembered with its reason and not retried.
    """

    def __init__(self, store: SnapshotStore, source: StudentSource,
                 content: ContentSource | None = None) -> None:
        self.store = store
        self.source = source
        self.content = content
        self._pending: StudentScorer | None = None
        self._pending_fusion: FusionWeights = FIXED
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
            fusion = snapshot_fusion(meta, info.version)
            if scorer.content_dim != self.source.content_dim:
                raise SnapshotError(f"student {target} reads {scorer.content_dim}-d content, "
                                    f"this worker has {self.source.content_dim}-d embeddings")
            if self.content is not None and fusion != FIXED and self.content.dim != DIM:
                raise SnapshotError(f"student {target} carries fusion weights for {DIM}-d "
                                    f"embeddings, this worker has {self.content.dim}-d ones")
        except SnapshotError as exc:
            self.rejected[target] = str(exc)
            log.error("student %s rejected, %s stays in service: %s", target,
                      self.version or "no student", exc)
            return None
        self._pending, self._pending_fusion = scorer, fusion
        return target

    def apply(self) -> bool:
        """Swap in the student fetched by :meth:`check`, if any, and its fusion weights
        (between batches)."""
        if self._pending is None:
            return False
        self.source.swap(self._pending)
        if self.content is not None:
            self.content.set_fusion(self._pending_fusion)
        self._pending = None
        self.swaps += 1
        log.info("student %s in service%s", self.version, f", content fusion "
                 f"{self._pending_fusion}" if self.content is not None else "")
        return True
