"""A window of the event log as arrays a trainer can batch: interactions in time order, each
click's preceding history, per-item content and behaviour."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from streamrec.records.events import Click, Event, Upload, View

#: Items of history the towers read (most recent last).
HISTORY = 30


@dataclass
class Examples:
    """One row per click: the user's previous ``HISTORY`` items (-1 pads the front), whether
    the user had clicked each of them (or only viewed it), the clicked item, its time and its
    position among the log's interactions."""

    history: np.ndarray
    positive: np.ndarray
    ts: np.ndarray
    at: np.ndarray
    clicked: np.ndarray

    def __len__(self) -> int:
        return len(self.positive)

    def take(self, rows: np.ndarray) -> Examples:
        return Examples(self.history[rows], self.positive[rows], self.ts[rows], self.at[rows],
                        self.clicked[rows])


@dataclass
class ItemContent:
    """Content of every item (rows follow ``TrainingLog.item_ids``): the raw text and image
    features the teacher reads, and the fused embedding the student and the workers use."""

    text: np.ndarray
    image: np.ndarray
    has_image: np.ndarray
    fused: np.ndarray


@dataclass
class TrainingLog:
    """Interactions (views and clicks) in time order, with item indices into ``item_ids``.

    >>> log = TrainingLog.from_events([View("e1", "ann", "a", 1.0), Click("e2", "ann", "b", 2.0),
    ...                                View("e3", "bob", "c", 3.0), Click("e4", "bob", "c", 3.5)])
    >>> log.item_ids, len(log), log.clicked.tolist()
    (['a', 'b', 'c'], 4, [False, True, False, True])
    >>> ex = log.examples(history=2)
    >>> ex.history.tolist(), ex.clicked.tolist(), ex.positive.tolist()
    ([[-1, 0], [-1, -1]], [[False, False], [False, False]], [1, 2])
    """

    item_ids: list[str]
    users: np.ndarray
    items: np.ndarray
    ts: np.ndarray
    clicked: np.ndarray
    uploads: dict[str, Upload] = field(default_factory=dict)

    @classmethod
    def from_events(cls, events: Iterable[Event]) -> TrainingLog:
        index: dict[str, int] = {}
        user_index: dict[str, int] = {}
        users, items, ts, clicked = [], [], [], []
        uploads: dict[str, Upload] = {}
        for ev in events:
            if isinstance(ev, Upload):
                uploads[ev.item_id] = ev
                index.setdefault(ev.item_id, len(index))
            elif isinstance(ev, (View, Click)):
                items.append(index.setdefault(ev.item_id, len(index)))
                users.append(user_index.setdefault(ev.user_id, len(user_index)))
                ts.append(ev.ts)
                clicked.append(isinstance(ev, Click))
        return cls(list(index), np.array(users, np.int64), np.array(items, np.int64),
                   np.array(ts, np.float64), np.array(clicked, bool), uploads)

    def __len__(self) -> int:
        return len(self.items)

    @property
    def index(self) -> dict[str, int]:
        return {item: j for j, item in enumerate(self.item_ids)}

    def examples(self, start: int = 0, stop: int | None = None,
                 history: int = HISTORY) -> Examples:
        """The clicks among interactions ``[start, stop)``, each with the history before it
        (which may reach back before ``start``): the user's latest ``history`` distinct items,
        in the order first seen, before the click or, when the item was viewed first, before
        that view (as the evaluation protocol scores it: the list shown when it was viewed)."""
        stop = len(self) if stop is None else stop
        recent: dict[int, deque[int]] = {}
        seen: dict[int, dict[int, bool]] = {}  # user -> item -> clicked yet
        hist, flags, pos, at = [], [], [], []
        pad, no = [-1] * history, [False] * history
        for t in range(stop):
            u, j, c = int(self.users[t]), int(self.items[t]), bool(self.clicked[t])
            q = recent.get(u)
            if q is None:
                q = recent[u] = deque(maxlen=history)
                seen[u] = {}
            s = seen[u]
            if t >= start and c:
                h = list(q)
                if j in s:  # viewed first: the history as it stood at that view
                    h = h[:h.index(j)] if j in h else h
                hist.append(pad[:history - len(h)] + h)
                flags.append(no[:history - len(h)] + [s[x] for x in h])
                pos.append(j)
                at.append(t)
            if j not in s:  # distinct items in first-seen order, as workers keep them
                s[j] = c
                q.append(j)
            elif c:
                s[j] = True
        at_ = np.array(at, np.int64)
        return Examples(np.array(hist, np.int64).reshape(-1, history), np.array(pos, np.int64),
                        self.ts[at_] if len(at_) else np.zeros(0), at_,
                        np.array(flags, bool).reshape(-1, history))

    def behaviour(self, stop: int | None = None) -> np.ndarray:
        """Per item, from interactions before ``stop``: log1p(clicks), log1p(views), and 1 for
        items that occurred at all (the student's behavioural inputs; zeros for newer items)."""
        stop = len(self) if stop is None else stop
        n = len(self.item_ids)
        clicks = np.bincount(self.items[:stop][self.clicked[:stop]], minlength=n)
        views = np.bincount(self.items[:stop], minlength=n) - clicks
        return np.stack([np.log1p(clicks), np.log1p(views), (clicks + views > 0)],
                        axis=1).astype(np.float32)

    def content_placeholder(self, dim: int = 128) -> ItemContent:
        """Zero content for every item (evaluating without the encoders)."""
        from streamrec.content.encoders import IMAGE_DIM, TEXT_DIM

        n = len(self.item_ids)
        return ItemContent(np.zeros((n, TEXT_DIM), np.float32), np.zeros((n, IMAGE_DIM), np.float32),
                           np.zeros(n, bool), np.zeros((n, dim), np.float32))

    def content(self, image_root: str | Path | None = None, batch: int = 64,
                progress: Callable[[int, int], None] | None = None) -> ItemContent:
        """Encode every item's upload (items without one, or with unusable content, get zero
        vectors: only their behaviour speaks for them). An upload that supplied its vector in
        the encoders' space is not encoded: that vector is its fused embedding, as workers
        serve it, and its text and image features stay zero."""
        from streamrec.content.item_encoder import ItemEncoder

        enc = ItemEncoder(image_root)
        out = self.content_placeholder(enc.dim)
        rows = []
        for j, i in enumerate(self.item_ids):
            up = self.uploads.get(i)
            if up is None:
                continue
            if up.embedding is not None:
                if up.embedding_model == enc.version and up.embedding_dim == enc.dim:
                    v = np.frombuffer(up.embedding, "<f4")
                    out.fused[j] = v / np.linalg.norm(v)
                continue  # another space: nothing the encoders' vectors can stand in for
            rows.append((j, up))
        for a in range(0, len(rows), batch):
            chunk = rows[a:a + batch]
            f = enc.features([up for _, up in chunk])
            at = np.array([chunk[p][0] for p in f.positions], np.int64)
            if len(at):
                out.text[at] = f.text
                out.image[at] = f.image
                out.has_image[at] = f.has_image
                out.fused[at] = enc.fuse(f)
            if progress is not None:
                progress(min(a + batch, len(rows)), len(rows))
        return out
