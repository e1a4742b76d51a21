"""One training round: the log window in, maybe a new student in service.

Train the teacher, distil the student, judge it on the window's most recent clicks (held out)
against the student in service, publish it only if it is not worse, and announce it on
``model-updates`` so workers swap it in. The snapshot carries the content fusion weights the
round chose, which workers put in service with the student.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import orjson
import redis.asyncio as aioredis

from streamrec.models.student_scorer import StudentScorer
from streamrec.records.errors import SnapshotError
from streamrec.records.events import Event
from streamrec.records.topics import MODEL_UPDATES
from streamrec.snapshots.store import STUDENT, SnapshotInfo, SnapshotStore
from streamrec.training.distill import (
    Progress,
    TrainConfig,
    Trained,
    hit_rate,
    scorer_scores,
    train_models,
)
from streamrec.training.training_log import TrainingLog

log = logging.getLogger(__name__)


@dataclass
class RoundReport:
    """What a round did, for the CLI's summary and ``--json``."""

    published: bool
    reason: str
    version: str | None = None
    in_service: str | None = None
    scores: dict[str, float] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    window: dict = field(default_factory=dict)
    #: The content fusion weights learned and those published with the student.
    fusion: dict = field(default_factory=dict)


def announcement(info: SnapshotInfo) -> bytes:
    """The ``model-updates`` message for a published snapshot."""
    return orjson.dumps({"kind": info.kind, "version": info.version, "sha256": info.sha256,
                         "created": info.created, "scores": info.scores})


async def in_service_hit_rate(store: SnapshotStore, trained: Trained) -> tuple[str | None, float | None]:
    """The student in service, judged on the same held-out clicks (None if there is none or
    it cannot be loaded: a broken snapshot should be replaced, not defended)."""
    try:
        tensors, meta, info = await store.load(STUDENT)
        scorer = StudentScorer(tensors, meta, info.version)
    except SnapshotError as exc:
        if "has been published" not in str(exc):
            log.warning("the student in service cannot be judged: %s", exc)
        return None, None
    w = trained.window
    return info.version, hit_rate(scorer_scores(scorer, w), trained.held_out, w.first_ts)


async def run_round(events: Sequence[Event], redis: aioredis.Redis, *, prefix: str = "streamrec",
                    snapshot_dir: str = "runs/snapshots", producer=None,
                    cfg: TrainConfig | None = None, int8: bool = False, force: bool = False,
                    image_root: str | None = None, keep: int = 5,
                    progress: Progress | None = None, key: bytes | None = None) -> RoundReport:
    """Train on ``events`` and publish the student if it is not worse than the one in
    service (or with ``force``). ``producer`` (aiokafka) announces it on ``model-updates``;
    without one, workers still find it at their next refresh. ``key`` signs the snapshot
    (None: the key generated in ``snapshot_dir``)."""
    cfg = cfg or TrainConfig()
    t0 = time.perf_counter()
    training_log = TrainingLog.from_events(events)
    if len(training_log) == 0:
        return RoundReport(False, "no views or clicks in the window")
    content = await asyncio.to_thread(training_log.content, image_root, 64,
                                      progress and (lambda d, t: progress("content", d, t)))
    encode_s = time.perf_counter() - t0
    try:
        trained = await asyncio.to_thread(train_models, training_log, content, None, cfg, progress)
    except ValueError as exc:
        return RoundReport(False, str(exc))
    store = SnapshotStore(redis, prefix, snapshot_dir, keep=keep, key=key)
    old_version, old_hr = await in_service_hit_rate(store, trained)
    judged_on = "student_int8_hr_at_10" if int8 else "student_hr_at_10"
    new_hr = trained.scores[judged_on]
    scores = {**trained.scores, "in_service_hr_at_10": old_hr}
    window = {"from_ts": float(training_log.ts[0]), "to_ts": float(training_log.ts[-1]),
              "interactions": len(training_log), "clicks_trained": trained.examples,
              "clicks_held_out": len(trained.held_out)}
    seconds = {"encode": encode_s, **trained.seconds}
    fusion = trained.fusion.report() if trained.fusion is not None else {}
    if old_hr is not None and new_hr < old_hr and not force:
        return RoundReport(False, f"held-out HR@10 {new_hr:.4f} is below the in-service "
                           f"{old_version}'s {old_hr:.4f}: kept {old_version}",
                           None, old_version, scores, seconds, window, fusion)
    tensors, meta = trained.student_snapshot(int8)
    info = await store.publish(STUDENT, tensors, meta, data_range=window, scores=scores)
    if producer is not None:
        await producer.send_and_wait(MODEL_UPDATES, announcement(info), key=STUDENT.encode())
    seconds["total"] = time.perf_counter() - t0
    was = f"{old_hr:.4f} for {old_version}" if old_hr is not None else "no student in service"
    return RoundReport(True, f"held-out HR@10 {new_hr:.4f} ({was})", info.version,
                       old_version, scores, seconds, window, fusion)
