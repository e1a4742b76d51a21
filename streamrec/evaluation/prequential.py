"""Prequential (test-then-train) evaluation of online models on an event stream.

Every model sees the same events in the same order. A click on (user, item) is scored against
the user's top-K as it stood just before that user's view of the item, or just before the click
when there was no view, so a view that precedes its click leaks nothing. Lists exclude items the
user already viewed or clicked.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from streamrec.models.base import Recommendation
from streamrec.models.baseline_cooccurrence import CoOccurrenceBaseline
from streamrec.models.baseline_tags import TagCountBaseline
from streamrec.models.blend import Blend
from streamrec.models.catalog import Catalog
from streamrec.models.content import ContentSource
from streamrec.models.covisitation import CoVisitation
from streamrec.models.freshness import Freshness
from streamrec.models.isgd import ISGD
from streamrec.models.popularity import DecayedPopularity
from streamrec.models.river_mf import RiverBiasedMF
from streamrec.models.tag_profile import TagProfile
from streamrec.models.trending import Trending
from streamrec.records.events import Click, Event, Retire, Upload, View


class OnlineModel(Protocol):
    """What the protocol needs of a model: every candidate source and the blend are one."""

    def learn_one(self, user: str, item: str, ts: float, clicked: bool = True) -> None: ...

    def recommend(self, user: str, k: int = 10, exclude: Iterable[str] = (),
                  now: float = 0.0) -> list[Recommendation]: ...

    def add_item(self, item: str, ts: float, embedding: Any = None,
                 tags: Sequence[str] = ()) -> None: ...

    def forget_item(self, item: str) -> None: ...


def blend_without_content(seed: int = 0) -> Blend:
    """The blend with no source that reads what uploads carry (neither content, tags nor the
    student): behaviour alone."""
    c = Catalog()
    return Blend(c, sources=[DecayedPopularity(c), Trending(c), CoVisitation(c), ISGD(c, seed=seed),
                             Freshness(c)], seed=seed)


def blend_without_content_or_freshness(seed: int = 0) -> Blend:
    """:func:`blend_without_content` less the freshness source too: nothing offers an item
    before its clicks do, so against it the blend without content shows what showing new items
    at all adds, and the blend what content adds on top."""
    c = Catalog()
    return Blend(c, sources=[DecayedPopularity(c), Trending(c), CoVisitation(c), ISGD(c, seed=seed)],
                 seed=seed)


def blend_without_student(seed: int = 0) -> Blend:
    c = Catalog()
    return Blend(c, sources=[DecayedPopularity(c), Trending(c), CoVisitation(c), ISGD(c, seed=seed),
                             Freshness(c), TagProfile(c), ContentSource(c)], seed=seed)


def default_models(seed: int = 0) -> dict[str, Any]:
    """The models `streamrec evaluate` compares, each with its own catalogue: the simple
    baselines first (no table may leave them out), then each source alone and the blends."""
    return {
        "popularity": DecayedPopularity(Catalog()),
        "baseline_tags": TagCountBaseline(Catalog()),
        "baseline_cooccurrence": CoOccurrenceBaseline(Catalog()),
        "covisitation": CoVisitation(Catalog()),
        "isgd": ISGD(Catalog(), seed=seed),
        "river_biasedmf": RiverBiasedMF(Catalog(), seed=seed),
        "content": ContentSource(Catalog()),
        "tags": TagProfile(Catalog()),
        "blend": blend_without_student(seed),
        "blend_no_content": blend_without_content(seed),
        "blend_no_content_no_fresh": blend_without_content_or_freshness(seed),
    }


def distilled_models(trained: Any, seed: int = 0) -> dict[str, Any]:
    """The models of a training round (:class:`~streamrec.training.distill.Trained`):
    ``teacher``, ``student`` and ``student_int8`` alone, and ``blend`` (with the student in
    service, and the content fusion weights the round chose, as a worker swaps them in
    together) beside ``blend_no_student``."""
    from streamrec.models.student import StudentSource
    from streamrec.models.student_scorer import StudentScorer
    from streamrec.training.teacher import TeacherSource

    w = trained.window
    c = w.content
    students = {}
    for name, q in (("student", False), ("student_int8", True)):
        students[name] = StudentSource(content_dim=c.fused.shape[1])
        students[name].swap(StudentScorer(*trained.student_snapshot(q), f"{name}-evaluated"))
    cat = Catalog()
    blend_student = StudentSource(cat, content_dim=c.fused.shape[1])
    blend_student.swap(students["student"].scorer)
    content = ContentSource(cat)
    fusion = trained.fusion
    content.set_fusion(fusion.chosen if fusion is not None else None)
    return {
        "teacher": TeacherSource(trained.teacher, w.log.item_ids, c.text, c.image, c.has_image,
                                 w.id_rows, c.fused),
        **students,
        "blend": Blend(cat, sources=[DecayedPopularity(cat), Trending(cat), CoVisitation(cat),
                                     ISGD(cat, seed=seed), Freshness(cat), TagProfile(cat),
                                     content, blend_student], seed=seed),
        "blend_no_student": blend_without_student(seed),
    }


def first_event_after(events: Sequence[Event], n_interactions: int) -> int:
    """The position of the first event after the first ``n_interactions`` views and clicks
    (``len(events)`` when there are no more): where scoring starts after a training window.

    >>> first_event_after([Upload("e0", "i", "c", 0.0, "t"), View("e1", "u", "i", 1.0),
    ...                    Click("e2", "u", "i", 2.0)], 1)
    2
    """
    for pos, ev in enumerate(events):
        n_interactions -= isinstance(ev, (View, Click))
        if n_interactions < 0:
            return pos
    return len(events)


def encode_uploads(events: Iterable[Event], batch: int = 64,
                   progress: Callable[[int, int], None] | None = None,
                   image_root: str | None = None) -> dict[str, Any]:
    """Fused content embeddings of every upload's item, encoded in batches (as the worker
    does); uploads whose content is unusable get none. An upload that supplies its vector in
    the encoders' space keeps it, normalised (one of another space gets none)."""
    from streamrec.content.item_encoder import ItemEncoder

    enc = ItemEncoder(image_root)
    out: dict[str, Any] = {}
    uploads = []
    for e in events:
        if not isinstance(e, Upload):
            continue
        if e.embedding is None:
            uploads.append(e)
        elif e.embedding_model == enc.version and e.embedding_dim == enc.dim:
            v = np.frombuffer(e.embedding, "<f4")
            out[e.item_id] = v / np.linalg.norm(v)
    for a in range(0, len(uploads), batch):
        chunk = uploads[a:a + batch]
        res = enc.encode(chunk)
        out.update({chunk[p].item_id: v for p, v in zip(res.positions, res.vectors)})
        if progress is not None:
            progress(min(a + batch, len(uploads)), len(uploads))
    return out


def top_ids(model: OnlineModel, user: str, k: int, seen: set[str], now: float) -> list[str]:
    """A model's current top-``k`` item ids for ``user``, excluding ``seen``."""
    return [r.item_id for r in model.recommend(user, k, seen, now)]


@dataclass
class Scores:
    """Running prequential metrics of one model."""

    k: int
    clicks: int = 0
    hits: int = 0
    cold_clicks: int = 0
    cold_hits: int = 0
    new_clicks: int = 0
    new_hits: int = 0
    rr: float = 0.0
    dcg: float = 0.0
    seconds: float = 0.0
    recommended: set[str] = field(default_factory=set)

    def add(self, rank: int | None, cold: bool, new: bool = False) -> None:
        self.clicks += 1
        self.cold_clicks += cold
        self.new_clicks += new
        if rank is not None:
            self.hits += 1
            self.cold_hits += cold
            self.new_hits += new
            self.rr += 1.0 / (rank + 1)
            self.dcg += 1.0 / math.log2(rank + 2)

    def summary(self, n_events: int, n_items: int) -> dict[str, float]:
        c = max(self.clicks, 1)
        return {
            "hr_at_10" if self.k == 10 else f"hr_at_{self.k}": self.hits / c,
            f"mrr_at_{self.k}": self.rr / c,
            f"ndcg_at_{self.k}": self.dcg / c,  # one relevant item: ideal DCG is 1
            f"cold_hr_at_{self.k}": self.cold_hits / max(self.cold_clicks, 1),
            f"new_item_hr_at_{self.k}": self.new_hits / max(self.new_clicks, 1),
            "coverage": len(self.recommended) / max(n_items, 1),
            "events_per_s": n_events / self.seconds if self.seconds else 0.0,
        }


def prequential(events: Iterable[Event], models: Mapping[str, OnlineModel], k: int = 10,
                progress: Callable[[int], None] | None = None,
                embeddings: Mapping[str, Any] | None = None,
                score_from: int = 0, new_item_window_s: float | None = None) -> dict[str, Any]:
    """Run the protocol over ``events``; returns ``{"events", "clicks", "models": {...}}``.
    ``embeddings`` (item -> content vector) are handed to models at the item's upload. Events
    before position ``score_from`` (a training window) are learned but not scored.

    Two cold-start hit rates: ``cold_hr_at_K`` over clicks on items nobody had clicked
    before, and ``new_item_hr_at_K`` over those of them whose item appeared (its upload, or its
    first event) at most ``new_item_window_s`` earlier (default: 1% of the events' time span,
    which needs ``events`` to be a sequence)."""
    embeddings = embeddings or {}
    if new_item_window_s is None:
        events = list(events)
        span = events[-1].ts - events[0].ts if events else 0.0
        new_item_window_s = 0.01 * span
    appeared: dict[str, float] = {}
    scores = {name: Scores(k) for name in models}
    seen: dict[str, set[str]] = {}
    at_view: dict[tuple[str, str], dict[str, int | None]] = {}
    clicked_items: set[str] = set()
    items: set[str] = set()
    retired: set[str] = set()
    n_events = n_clicks = n_cold = n_new = 0
    for ev in events:
        n_events += 1
        if progress is not None and n_events % 1000 == 0:
            progress(n_events)
        if isinstance(ev, Upload):
            items.add(ev.item_id)
            appeared.setdefault(ev.item_id, ev.ts)
            for name, m in models.items():
                t0 = time.perf_counter()
                m.add_item(ev.item_id, ev.ts, embeddings.get(ev.item_id), ev.tags)
                scores[name].seconds += time.perf_counter() - t0
            continue
        if isinstance(ev, Retire):  # as a worker does: forgotten, its later events unlearned
            retired.add(ev.item_id)
            for m in models.values():
                m.forget_item(ev.item_id)
            continue
        if not isinstance(ev, (View, Click)) or ev.item_id in retired:
            continue
        user, item, ts = ev.user_id, ev.item_id, ev.ts
        items.add(item)
        user_seen = seen.setdefault(user, set())
        is_click = isinstance(ev, Click)
        cold = is_click and item not in clicked_items
        new = cold and ts - appeared.setdefault(item, ts) <= new_item_window_s
        if n_events <= score_from:
            for m in models.values():
                m.learn_one(user, item, ts, is_click)
            clicked_items.update((item,) if is_click else ())
            user_seen.add(item)
            continue
        ranks = at_view.pop((user, item), None) if is_click else None
        for name, m in models.items():
            sc = scores[name]
            t0 = time.perf_counter()
            if ranks is None or name not in ranks:
                lst = top_ids(m, user, k, user_seen, ts)
                sc.recommended.update(lst)
                rank = lst.index(item) if item in lst else None
            else:
                rank = ranks[name]
            m.learn_one(user, item, ts, is_click)
            sc.seconds += time.perf_counter() - t0
            if is_click:
                sc.add(rank, cold, new)
            elif (user, item) not in at_view or name not in at_view[(user, item)]:
                at_view.setdefault((user, item), {})[name] = rank
        if is_click:
            n_clicks += 1
            n_cold += cold
            n_new += new
            clicked_items.add(item)
        user_seen.add(item)
    return {
        "events": n_events,
        "scored_from_event": score_from,
        "new_item_window_s": new_item_window_s,
        "clicks": n_clicks,
        "cold_clicks": n_cold,
        "new_item_clicks": n_new,
        "models": {name: sc.summary(n_events - score_from, len(items))
                   for name, sc in scores.items()},
    }
