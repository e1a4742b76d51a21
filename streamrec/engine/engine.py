"""The work of one micro-batch, independent of Faust: validate, learn, recommend, write back.

Agents hand the engine the raw messages of a batch; it returns the recommendation lists to
publish and the dead letters to route. Keeping this free of Faust makes it testable alone and
lets the benchmark swap in the pass-through variant with the same I/O.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import OrderedDict
from collections.abc import Sequence

import numpy as np
import orjson

from streamrec import metrics
from streamrec.config import BUILTIN_EMBEDDING_MODEL
from streamrec.content.encoder_process import EncoderProcess
from streamrec.engine import policies
from streamrec.engine.buckets import APP_SERVED, BLEND_WITHOUT, DEFAULT, Buckets
from streamrec.engine.interface import OPS, Incoming, Outgoing, decode_one, reject
from streamrec.engine.shared_state import SharedState
from streamrec.models.base import Recommendation
from streamrec.models.blend import Blend
from streamrec.records.errors import WorkerMustStop
from streamrec.records.events import (
    Click,
    Event,
    InvalidEvent,
    Retire,
    Upload,
    View,
    decode_item_event,
    decode_model_update,
)
from streamrec.snapshots.hot_swap import StudentLoader

log = logging.getLogger(__name__)


#: What a worker does when a partition's log is found behind the offsets already applied.
OFFSET_RESET_POLICIES = ("relearn", "stop")


def decode_batch(batch: Sequence[Incoming], out: Outgoing,
                 expected: str | None = None) -> list[tuple[Incoming, Event]]:
    """The valid events of a batch with their messages; the rest become dead letters.
    ``expected`` is the event type, else the one implied by each message's topic."""
    valid = []
    for msg in batch:
        ev = msg.decoded if msg.decoded is not None else decode_one(msg, expected)
        if isinstance(ev, InvalidEvent):
            reject(msg, str(ev), out)
        else:
            valid.append((msg, ev))
    return valid


#: Event-loop turns a redis-py pipeline takes to be on the wire (two in redis-py 8, measured;
#: one spare). Fewer only costs the overlap, not correctness.
SEND_TURNS = 3

#: Items first met in a view or click (never uploaded) a worker takes into its catalogue by
#: default; views and clicks of further ones are dead-lettered.
MAX_UNKNOWN_ITEMS = 100_000


class Engine:
    """Applies batches of interactions, uploads and requests to a :class:`Blend`."""

    def __init__(self, blend: Blend, state: SharedState, top_k: int = 10,
                 worker: str = "worker", dedupe_window: int = 200_000,
                 content: EncoderProcess | None = None,
                 students: StudentLoader | None = None,
                 on_offset_reset: str = "relearn",
                 max_unknown_items: int = MAX_UNKNOWN_ITEMS,
                 embedding_model: str = BUILTIN_EMBEDDING_MODEL,
                 buckets: Buckets | None = None) -> None:
        if on_offset_reset not in OFFSET_RESET_POLICIES:
            raise ValueError(f"unknown offset reset policy {on_offset_reset!r}: "
                             f"{' or '.join(OFFSET_RESET_POLICIES)}")
        self.on_offset_reset = on_offset_reset
        self.max_unknown_items = max_unknown_items
        #: The first offset of the last batch this worker took from each partition since it
        #: was assigned (a batch run again, or one message at a time, never goes below it).
        self._batch_starts: dict[str, int] = {}
        self.blend = blend
        self.state = state
        #: Encodes uploads (text, image) into item embeddings; None: only supplied ones.
        self.content = content
        #: The space of the item vectors served: a supplied embedding must name it.
        self.embedding_model = embedding_model
        #: Fetches published students; None: no student source.
        self.students = students
        self.top_k = top_k
        #: Which policy serves each user (STREAMREC_BUCKETS); learning is shared by all.
        self.buckets = buckets or Buckets.parse(DEFAULT)
        self.worker = worker
        self.model_version = {"blend": "online", "student": None}
        self._recent_ids: OrderedDict[str, None] = OrderedDict()
        self._dedupe_window = dedupe_window
        #: Newest event time seen: "now" for scoring, so replays of old logs score consistently.
        self.clock = 0.0

    # ---- helpers --------------------------------------------------------------------------

    def forget_owned_state(self) -> None:
        """After a rebalance: what this worker knew of its partitions may be stale."""
        self.state.forget_owned_state()
        self._batch_starts.clear()

    def _check_offsets(self, events: list[tuple[Incoming, Event]],
                       applied: dict[str, int]) -> None:
        """Find partitions whose log is behind the offsets applied from it (the topic was
        deleted and recreated, the broker lost its data): their new events would otherwise
        be taken for replays and skipped. Either sign shows it: the log ends at or before the
        applied offset, or its offsets went back under this worker. ``applied`` is updated
        under the "relearn" policy; "stop" raises :class:`WorkerMustStop`."""
        first: dict[str, int] = {}
        last: dict[str, int] = {}
        log_end: dict[str, int] = {}
        for msg, _ in events:
            part = f"{msg.topic}:{msg.partition}"
            first[part] = min(msg.offset, first.get(part, msg.offset))
            last[part] = max(msg.offset, last.get(part, msg.offset))
            if msg.highwater is not None:
                log_end[part] = max(msg.highwater, log_end.get(part, -1))
        for part, lo in first.items():
            done = applied.get(part, -1)
            end = log_end.get(part)
            # A log end at or below a message's own offset is stale: not evidence.
            ends_before = end is not None and end > last[part] and end <= done
            before = self._batch_starts.get(part, -1)
            went_back = lo < before
            self._batch_starts[part] = lo
            if not (ends_before or went_back):
                continue
            metrics.OFFSET_RESETS.labels(part).inc()
            what = (f"its log ends at offset {end}" if ends_before else
                    f"its offsets went back to {lo} from {before}")
            reason = (f"partition {part}: {what}, but offsets up to {done} were applied: the "
                      f"topic was recreated or the broker lost its data")
            if self.on_offset_reset == "stop":
                raise WorkerMustStop(f"{reason} (STREAMREC_ON_OFFSET_RESET=stop)")
            log.error("%s; learning its events from offset %d on "
                      "(STREAMREC_ON_OFFSET_RESET=relearn)", reason, lo)
            self.state.reset_applied(part, lo - 1)
            applied[part] = lo - 1

    def _duplicate(self, event_id: str) -> bool:
        ids = self._recent_ids
        if event_id in ids:
            return True
        ids[event_id] = None
        if len(ids) > self._dedupe_window:
            ids.popitem(last=False)
        return False

    def _payload(self, user: str, recs: Sequence[Recommendation], trigger: str,
                 trigger_ts: float, request_id: str | None = None) -> bytes:
        now = time.time()
        bucket = self.buckets.of(user)
        return orjson.dumps({
            "user_id": user,
            "bucket": bucket.name,
            "policy": bucket.policy,
            "trigger": trigger,
            "request_id": request_id,
            "ts": now,
            "event_ts": trigger_ts,
            "items": [{"item_id": r.item_id, "score": round(r.score, 6), "sources": r.sources}
                      for r in recs],
            "model_version": self.model_version,
            "latency_ms": round((now - trigger_ts) * 1000.0, 3),
            "worker": self.worker,
        }, option=orjson.OPT_SERIALIZE_NUMPY)

    def recommend_users(self, latest: dict[str, tuple[str, float]], now: float,
                        out: Outgoing) -> None:
        """One fresh list per user in ``latest`` (user -> (triggering event id, its time))."""
        users = list(latest)
        for user, recs in zip(users, self.recommend_many(users, now=now)):
            trigger, trigger_ts = latest[user]
            out.recommendations.append((user.encode(), self._payload(user, recs, trigger, trigger_ts)))

    def recommend_many(self, users: Sequence[str], k: int | None = None, now: float = 0.0,
                       exclude: Sequence[Sequence[str]] | None = None) -> list[list[Recommendation]]:
        """Each user's list by the policy of their bucket (``k`` defaults to the worker's
        ``top_k``)."""
        k = k or self.top_k
        groups: dict[str, list[int]] = {}
        for r, user in enumerate(users):
            groups.setdefault(self.buckets.of(user).policy, []).append(r)
        if groups.keys() == {"blend"}:
            return self.blend.recommend_many(users, k, now, exclude)
        shared = self.blend.shared_scores(now) if len(self.blend.catalog) else None
        out: list[list[Recommendation]] = [[] for _ in users]
        for policy, rows in groups.items():
            some = [users[r] for r in rows]
            ex = [exclude[r] for r in rows] if exclude else None
            if policy in APP_SERVED:
                continue  # the app serves these users itself: an empty list
            if policy == "popularity":
                lists = policies.popularity_lists(self.blend, some, k, now, ex, shared)
            elif policy == "random":
                lists = policies.random_lists(self.blend, some, k, now, ex)
            else:
                lists = self.blend.recommend_many(some, k, now, ex, shared=shared,
                                                  without=BLEND_WITHOUT[policy])
            for r, recs in zip(rows, lists):
                out[r] = recs
        return out

    async def check_student(self) -> None:
        """Fetch a newly published student, if any; it goes into service before the next
        batch (:meth:`_swap_student`)."""
        if self.students is not None:
            rejected = len(self.students.rejected)
            await self.students.check()
            metrics.STUDENT_REJECTED.inc(len(self.students.rejected) - rejected)

    #: The batch operations, each a method of the engine taking a batch of messages.
    OPS = OPS

    def step(self, op: str):
        """The method that runs batches of ``op`` (one of :attr:`OPS`)."""
        if op not in self.OPS:
            raise ValueError(f"unknown op {op!r}")
        return getattr(self, op)

    async def start(self) -> None:
        """Load the shared state and any student in service (once, before the first batch)."""
        await self.state.load()
        await self.check_student()

    async def close(self) -> None:
        """Save what only this worker holds (the ranker) and stop the encoder."""
        try:
            if self.state.marker is not None:  # started
                await self.state.save_ranker()
        finally:
            if self.content is not None:
                self.content.close()

    async def refresh_models(self) -> None:
        """Periodic upkeep, between two batches of interactions: check the shared state is
        still there, save the ranker, fetch a student published meanwhile (in a consumer
        group only one worker gets each announcement: the others find the new student here,
        within one interval), and pull what other workers wrote if it is time (a worker
        whose partitions carry no interactions for a while would otherwise never see the
        items uploaded through the others)."""
        await self.state.check_marker()
        await self.state.save_ranker()
        await self.check_student()
        await self.state.refresh(early_s=self.state.refresh_s / 4)

    def _swap_student(self) -> None:
        if self.students is not None and self.students.apply():
            self.model_version["student"] = self.students.version
            metrics.STUDENT_SWAPS.inc()

    def _admit_items(self, events: list[tuple[Incoming, Event]], out: Outgoing
                     ) -> list[tuple[Incoming, Event]]:
        """The events whose item the catalogue holds or may take: items never uploaded enter
        it up to ``max_unknown_items``, so a stream of made-up item ids cannot grow memory
        without bound; views and clicks of further ones are dead-lettered."""
        cat = self.blend.catalog
        room = self.max_unknown_items - cat.never_uploaded
        if room >= len(events):  # no batch this size can fill it
            return events
        admitted: set[str] = set()
        kept = []
        for msg, ev in events:
            if ev.item_id in cat or ev.item_id in admitted:
                kept.append((msg, ev))
            elif len(admitted) < room:
                admitted.add(ev.item_id)
                kept.append((msg, ev))
            else:
                reject(msg, f"unknown item: {ev.item_id} was never uploaded, and this worker "
                            f"already holds {self.max_unknown_items} such items "
                            f"(STREAMREC_MAX_UNKNOWN_ITEMS)", out)
        return kept

    def learn(self, ev: View | Click) -> None:
        self.blend.learn_one(ev.user_id, ev.item_id, ev.ts, isinstance(ev, Click))

    # ---- batches --------------------------------------------------------------------------

    async def interactions(self, batch: Sequence[Incoming]) -> Outgoing:
        """Validate, learn (once per event, even across replays), publish a list per user."""
        out = Outgoing([], [], {})
        self._swap_student()
        events = self._admit_items(decode_batch(batch, out), out)
        if not events:
            await self.state.after_batch({}, out.stats)
            return out
        parts = {f"{m.topic}:{m.partition}" for m, _ in events}
        applied = await self.state.before_batch({e.user_id for _, e in events}, parts)
        self._check_offsets(events, applied)
        latest: dict[str, tuple[str, float]] = {}
        newest: dict[str, float] = {}
        new_offsets: dict[str, int] = {}
        learned = 0
        retired = self.blend.catalog.retired_at
        for msg, ev in events:
            part = f"{msg.topic}:{msg.partition}"
            # Replayed after a rebalance (already in Redis) or a duplicate id: do not learn
            # twice, but the user still gets a fresh list.
            if msg.offset > applied.get(part, -1) and not self._duplicate(ev.event_id):
                if retired and ev.item_id in retired:
                    # A stale page's view or click of a retired item: normal traffic, not
                    # learned, counted (streamrec_retired_item_events_total).
                    key = f"ignored_retired_{ev.type}"
                    out.stats[key] = out.stats.get(key, 0) + 1
                else:
                    self.learn(ev)
                    learned += 1
                new_offsets[part] = max(new_offsets.get(part, -1), msg.offset)
            self.clock = max(self.clock, ev.ts)
            # The user's latest event by event time: a batch can hold two fetches, the
            # second with older events (replayed after a rebalance, a partition behind).
            if ev.ts >= newest.get(ev.user_id, -math.inf):
                latest[ev.user_id] = (ev.event_id, msg.timestamp)
                newest[ev.user_id] = ev.ts
            self.state.touched_users.add(ev.user_id)
        out.stats["events"] = len(events)
        out.stats["learned"] = learned
        out.stats["recommendations"] = len(latest)
        for _, ev in events:
            key = f"events_{ev.type}"
            out.stats[key] = out.stats.get(key, 0) + 1
        # The lists depend only on the local copy, so Redis applies the write-back while they
        # are computed; the batch (and its offsets) is done only once both are.
        writing = asyncio.ensure_future(self.state.write_back(new_offsets, out.stats))
        for _ in range(SEND_TURNS):  # the task takes a connection and sends, then waits
            await asyncio.sleep(0)
        try:
            self.recommend_users(latest, self.clock, out)
        finally:
            await writing
        return out

    def _supplied(self, uploads: list[tuple[Incoming, Upload]], out: Outgoing
                  ) -> tuple[list[tuple[Incoming, Upload]], dict[str, np.ndarray]]:
        """The uploads still usable, and the unit vectors of those that supplied one. A
        supplied embedding of another space than this worker's, or of another dimension than
        its catalogue's, sends its upload to the dead letters (the decoder has checked the
        rest: size, finiteness, norm)."""
        dim = self.state.cache.dim if self.state.cache is not None else None
        kept, ids, rows = [], [], []
        for msg, ev in uploads:
            if ev.embedding is not None:
                if ev.embedding_model != self.embedding_model:
                    reject(msg, f"embedding model mismatch: {ev.embedding_model[:200]!r}, this "
                                f"worker serves {self.embedding_model!r} "
                                f"(STREAMREC_EMBEDDING_MODEL)", out)
                    continue
                if dim is not None and ev.embedding_dim != dim:
                    reject(msg, f"embedding dimension mismatch: {ev.embedding_dim} values, this "
                                f"worker's item vectors have {dim}", out)
                    continue
                if dim is not None:  # no content source: the upload is registered without it
                    ids.append(ev.item_id)
                    rows.append(ev.embedding)
            kept.append((msg, ev))
        if not ids:
            return kept, {}
        x = np.frombuffer(b"".join(rows), "<f4").reshape(len(ids), dim)
        # Stored as unit vectors, as the encoders give them: profiles sum items' vectors.
        x = x / np.linalg.norm(x.astype(np.float64), axis=1, keepdims=True).astype(np.float32)
        return kept, dict(zip(ids, x))

    async def uploads(self, batch: Sequence[Incoming]) -> Outgoing:
        """Register uploaded items: recommendable at once through the freshness source, and
        through the content source once they have a vector: the one the upload supplied
        (``embedding``), else its text and image encoded (in the encoder process, up to 8
        uploads per model call, so the interactions agent keeps running). Uploads with
        unusable content (blank text, corrupt or oversized image, an embedding of the wrong
        space or dimension) are dead-lettered."""
        out = Outgoing([], [], {})
        decoded, retirements = self._item_events(batch, out)
        decoded, supplied = self._supplied(decoded, out)
        vectors: dict[str, object] = {}
        put_ids: list[str] = list(supplied)
        put_rows: list[np.ndarray] = list(supplied.values())
        pending = [(m, ev) for m, ev in decoded if ev.embedding is None]
        if self.content is not None and pending:
            # Items already in the cache (a replay after a rebalance, another consumer group
            # of the same app) are not encoded again.
            vectors = await self.state.cache.get_many([ev.item_id for _, ev in pending])
            todo = [(m, ev) for m, ev in pending if ev.item_id not in vectors]
            if todo:
                restarts = self.content.restarts
                try:
                    enc = await self.content.encode([ev for _, ev in todo])
                finally:
                    metrics.ENCODER_RESTARTS.inc(self.content.restarts - restarts)
                for pos, reason in enc.rejected:
                    reject(todo[pos][0], reason, out)
                encoded = [todo[p][1].item_id for p in enc.positions]
                put_ids += encoded
                put_rows += list(enc.vectors)
                vectors.update(zip(encoded, enc.vectors))
                rejected = {id(todo[pos][1]) for pos, _ in enc.rejected}
                decoded = [(m, ev) for m, ev in decoded if id(ev) not in rejected]
        if put_ids:
            # A supplied vector replaces the item's cached one: the producer's latest word.
            await self.state.cache.put_many(put_ids, np.asarray(put_rows, np.float32))
        vectors.update(supplied)
        items = []
        self.blend.add_items([(ev.item_id, ev.ts, vectors.get(ev.item_id), ev.tags)
                              for _, ev in decoded])
        for msg, ev in decoded:
            self.clock = max(self.clock, ev.ts)
            meta = orjson.dumps({"title": ev.title, "description": ev.description,
                                 "tags": ev.tags, "creator_id": ev.creator_id, "ts": ev.ts,
                                 "produced_ts": msg.timestamp, "indexed_ts": time.time(),
                                 "embedding": ev.item_id in vectors,
                                 "embedding_supplied": ev.item_id in supplied})
            items.append((ev.item_id, ev.ts, meta))
        await self.state.register_items(items)
        out.stats["events"] = out.stats["events_upload"] = len(items)
        out.stats["embedded"] = len(vectors)
        if supplied:
            out.stats["embeddings_supplied"] = len(supplied)
        await self._retire(retirements, out)
        await self.state.after_batch({}, out.stats)
        return out

    def _item_events(self, batch: Sequence[Incoming], out: Outgoing
                     ) -> tuple[list[tuple[Incoming, Upload]], list[tuple[Incoming, Retire]]]:
        """The uploads topic's batch, in order, as the uploads to take in and the retirements
        to apply after them. An upload no newer than its item's retirement (known already, or
        earlier in the batch) stays out: a replay of the upload that retirement outdates. A
        retirement followed by a newer upload of its item is superseded by it."""
        cat = self.blend.catalog
        uploads: list[tuple[Incoming, Upload]] = []
        retiring: dict[str, tuple[Incoming, Retire]] = {}
        for msg in batch:
            try:
                ev = decode_item_event(msg.value)
            except InvalidEvent as exc:
                reject(msg, str(exc), out)
                continue
            if isinstance(ev, Retire):
                if ev.item_id not in retiring or ev.ts >= retiring[ev.item_id][1].ts:
                    retiring[ev.item_id] = (msg, ev)
                continue
            earlier = retiring.get(ev.item_id)
            since = max(cat.retired_at.get(ev.item_id, -math.inf),
                        earlier[1].ts if earlier is not None else -math.inf)
            if ev.ts <= since:
                out.stats["ignored_retired_upload"] = out.stats.get("ignored_retired_upload",
                                                                    0) + 1
                continue
            retiring.pop(ev.item_id, None)
            uploads.append((msg, ev))
        return uploads, list(retiring.values())

    async def _retire(self, retirements: list[tuple[Incoming, Retire]], out: Outgoing) -> None:
        """Retire items: every model forgets them now (no list computed from here on holds
        them), Redis drops their state, and the other workers forget them at their next
        refresh (:meth:`SharedState.retire_items`)."""
        if not retirements:
            return
        for _, ev in retirements:
            self.blend.forget_item(ev.item_id, ev.ts)
            self.clock = max(self.clock, ev.ts)
        await self.state.retire_items([(ev.item_id, ev.ts, ev.reason) for _, ev in retirements])
        out.stats["events"] = out.stats.get("events", 0) + len(retirements)
        out.stats["events_retire"] = out.stats["retired"] = len(retirements)

    async def requests(self, batch: Sequence[Incoming]) -> Outgoing:
        """Answer rec-requests with the user's current list."""
        out = Outgoing([], [], {})
        self._swap_student()
        reqs = decode_batch(batch, out, "rec-request")
        if not reqs:
            await self.state.after_batch({}, out.stats)
            return out
        await self.state.before_batch({r.user_id for _, r in reqs}, ())
        now = max(self.clock, max((r.ts or 0.0) for _, r in reqs))
        for msg, req in reqs:  # one at a time: each request has its own k and exclusions
            recs = self.recommend_many([req.user_id], req.k, now, [req.exclude])[0]
            out.recommendations.append((req.user_id.encode(), self._payload(
                req.user_id, recs, req.request_id, msg.timestamp, req.request_id)))
        out.stats["recommendations"] = out.stats["events"] = len(reqs)
        out.stats["events_rec-request"] = len(reqs)
        await self.state.after_batch({}, out.stats)
        return out

    async def model_updates(self, batch: Sequence[Incoming]) -> Outgoing:
        """Announcements of new students: fetch and verify the one now in service.
        Announcements that are not JSON objects with a ``kind`` and a ``version`` are
        dead-lettered."""
        out = Outgoing([], [], {})
        for msg in batch:
            try:
                decode_model_update(msg.value)
            except InvalidEvent as exc:
                reject(msg, str(exc), out)
        if len(out.dead_letters) < len(batch):
            await self.check_student()
        return out


class PassthroughEngine(Engine):
    """The benchmark's ceiling: the same decoding, Redis reads and writes, batching and
    publishing as :class:`Engine`, with no model work (every list is the same cached one).

    "The same writes" means the pipeline's write-back, computed without models: the counters
    (popularity, item counts), a co-visitation increment for each pair of a user's recent
    items (journalled, no neighbour lists kept), the vector of each item touched and of each
    user (drawn from the prior, never trained), and each touched user's state. The content
    profiles are the one part left out (they need the embeddings' arithmetic)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.blend.sources["covisitation"].keep_lists = False

    def learn(self, ev: View | Click) -> None:
        b = self.blend
        user, item, ts, clicked = ev.user_id, ev.item_id, ev.ts, isinstance(ev, Click)
        j = b.catalog.add(item, ts)
        b.record_interaction(user, j, clicked)
        for name in ("popularity", "covisitation"):  # O(1) and a few pairs: bookkeeping
            b.sources[name].learn_one(user, item, ts, clicked)
        b.item_counts.learn_one(user, item, ts, clicked)
        mf = b.sources["isgd"]
        mf.reserve(j + 1)
        mf.user_vector(user)
        mf.mark_changed({item})

    def recommend_many(self, users: Sequence[str], k: int | None = None, now: float = 0.0,
                       exclude: Sequence[Sequence[str]] | None = None) -> list[list[Recommendation]]:
        ids = self.blend.catalog.ids[-(k or self.top_k):]
        same = [Recommendation(i, 0.0, ("passthrough",)) for i in ids]
        return [same for _ in users]
