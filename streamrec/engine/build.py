"""Assembling an engine from the settings: the blend, its shared state, the encoder process
and the student loader."""

from __future__ import annotations

import logging

import redis.asyncio as aioredis

from streamrec.config import Settings
from streamrec.content.encoder_process import EncoderProcess
from streamrec.content.fusion import FixedFusion
from streamrec.engine.buckets import Buckets
from streamrec.engine.engine import Engine, PassthroughEngine
from streamrec.engine.interface import worker_id
from streamrec.engine.shared_state import SharedState
from streamrec.models.blend import Blend
from streamrec.records.events import MODEL_PATTERN
from streamrec.snapshots.hot_swap import StudentLoader
from streamrec.snapshots.signing import configured_key
from streamrec.snapshots.store import SnapshotStore

log = logging.getLogger(__name__)


def build_engine(settings: Settings, redis: aioredis.Redis, worker: str | None = None) -> Engine:
    """The engine ``settings.engine`` names (``pipeline`` or ``passthrough``)."""
    worker = worker or worker_id()
    space = settings.embedding_model
    if not MODEL_PATTERN.fullmatch(space):
        raise ValueError(f"STREAMREC_EMBEDDING_MODEL={space[:40]!r}: 1-200 characters of "
                         f"[A-Za-z0-9_.:/+,=@-]")
    # The encoders, the fusion weights a training round learns for their blocks and the
    # student (trained on their vectors) belong to their own space: in another, items get
    # the vectors uploads supply, and no student is served.
    builtin = space == FixedFusion().version
    if not builtin:
        log.info("serving embedding space %r: uploads are not encoded (only their supplied "
                 "embeddings are used) and no student is served", space)
    blend = Blend()
    blend.search_exactly_below(settings.exact_below)
    content = EncoderProcess(settings.image_root) if settings.content and builtin else None
    # The cache's key names the space, so vectors of two spaces never mix.
    state = SharedState(redis, blend, prefix=settings.app_id, refresh_s=settings.refresh_s,
                        worker=worker, content_version=space,
                        max_users=settings.max_users, user_ttl_s=settings.user_ttl_s)
    cls = {"pipeline": Engine, "passthrough": PassthroughEngine}.get(settings.engine)
    if cls is None:
        raise ValueError(f"unknown engine {settings.engine!r}: pipeline, passthrough or naive")
    student = blend.sources.get("student")
    students = None
    if student is not None and builtin:
        # Only snapshots signed with the trainer's key are served (snapshots/signing.py); the
        # content source takes the fusion weights that come with each student.
        store = SnapshotStore(redis, settings.app_id, settings.snapshot_dir,
                              key=configured_key(settings))
        students = StudentLoader(store, student, blend.sources.get("content"))
    return cls(blend, state, top_k=settings.top_k, worker=worker, content=content,
               students=students, on_offset_reset=settings.on_offset_reset,
               max_unknown_items=settings.max_unknown_items, embedding_model=space,
               buckets=Buckets.parse(settings.buckets))
