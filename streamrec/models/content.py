"""Content similarity: the user's taste as a decayed average of what they consumed, against
every item's multimodal embedding. It can propose an item the moment its upload is encoded,
before anyone has clicked it (the cold-start answer)."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import numpy as np

from streamrec.content.fusion import (
    DIM,
    FIXED,
    TEXT,
    FusionWeights,
    Reweighting,
    imageless_text,
)
from streamrec.models.base import CandidateSource
from streamrec.models.candidates import SourceScores
from streamrec.models.catalog import Catalog
from streamrec.models.index import EmbeddingIndex
from streamrec.models.vector_search import VectorScores


class ContentSource(CandidateSource):
    """Cosine between a user's profile and item embeddings.

    The profile is the sum of the embeddings of the items the user clicked, each decaying with
    ``half_life_s`` of event time and, unless ``half_life_clicks`` is None, halving every
    ``half_life_clicks`` clicks the user has made since: a taste that drifts from one visit to
    the next is followed at the pace of the user's clicks, however fast or slow they come.
    Views count ``view_weight`` (0 by default: a view that was not clicked says little about
    taste, and the items a user is shown are largely what the profile already proposed). The
    click count is relative, so a profile loaded without it (another worker's) just starts
    counting again.
    Cosines are taken after centring profile and items on the catalogue's mean embedding (see
    :class:`~streamrec.models.index.EmbeddingIndex`). Items without an embedding are never
    proposed. A click on an item whose embedding has not
    arrived yet (uploads are encoded by another agent) is kept, up to ``max_pending`` such
    interactions (the oldest items' go first), and added to the profile when it arrives.

    Item embeddings are stored as fused (:data:`~streamrec.content.fusion.FIXED` weights);
    :meth:`set_fusion` compares them with other block weights (those the training round
    learned from clicks, swapped in with the student) without re-encoding anything.

    Examples
    --------
    >>> cs = ContentSource(dim=2)
    >>> cs.set_embedding("jazz-night", np.array([1.0, 0.0]), ts=0)
    >>> cs.set_embedding("rock-show", np.array([0.0, 1.0]), ts=0)
    >>> cs.set_embedding("jazz-brunch", np.array([0.95, 0.31]), ts=1)
    >>> cs.learn_one("ann", "jazz-night", ts=2)
    >>> [r.item_id for r in cs.recommend("ann", k=1, exclude=["jazz-night"], now=2)]
    ['jazz-brunch']

    Two jazz clicks, then a rock one: by default the profile still leans to jazz; with a
    half-life of one click the latest click outweighs the two before it, and the profile
    follows the drift.

    >>> items = {"jazz-night": [1.0, 0.0], "jazz-club": [0.9, 0.1], "rock-show": [0.0, 1.0],
    ...          "jazz-brunch": [0.95, 0.31], "rock-opera": [0.31, 0.95]}
    >>> for half_life in (20, 1):
    ...     cs = ContentSource(dim=2, half_life_clicks=half_life)
    ...     for item, v in items.items():
    ...         cs.set_embedding(item, np.array(v), ts=0)
    ...     for ts, item in enumerate(["jazz-night", "jazz-club", "rock-show"]):
    ...         cs.learn_one("ann", item, ts=ts)
    ...     print([r.item_id for r in cs.recommend("ann", k=1, now=3, exclude=list(items)[:3])])
    ['jazz-brunch']
    ['rock-opera']
    """

    name = "content"
    retrieves_at_scale = True
    proposes_cold = True

    def __init__(self, catalog: Catalog | None = None, dim: int = 128,
                 half_life_s: float = 14 * 86400.0, view_weight: float = 0.0,
                 half_life_clicks: float | None = 20.0, max_pending: int = 50_000) -> None:
        self.catalog = catalog if catalog is not None else Catalog()
        self.index = EmbeddingIndex(dim)
        self.dim = dim
        self.half_life_s = half_life_s
        self.view_weight = view_weight
        self.half_life_clicks = half_life_clicks
        #: user -> (clicks learned, the click count the profile was last decayed to).
        self.clicks: dict[str, tuple[int, int]] = {}
        #: user -> (profile sum, its total weight, time both were last decayed to); the weight
        #: centres the profile on the catalogue's mean, as the index centres the items.
        self.profiles: dict[str, tuple[np.ndarray, float, float]] = {}
        #: user -> the part of the profile's text block that came from items without an
        #: image, decayed with it (their text is re-weighted apart: see :meth:`set_fusion`).
        self.imageless: dict[str, np.ndarray] = {}
        #: The block weights items and profiles are compared with.
        self.fusion: FusionWeights = FIXED
        self._reweighting: Reweighting | None = None
        #: item -> interactions waiting for its embedding: (user, weight, time, click count).
        self._pending: OrderedDict[int, list[tuple[str, float, float, int]]] = OrderedDict()
        self.max_pending = max_pending
        self._n_pending = 0

    def set_embedding(self, item: str, vector: np.ndarray, ts: float = 0.0) -> None:
        j = self.catalog.add(item, ts)
        self.index.add(j, np.asarray(vector, np.float32))
        for user, w, when, n in self._take_pending(j):
            self._add(user, j, w, when, n)

    def _take_pending(self, j: int) -> list[tuple[str, float, float, int]]:
        waiting = self._pending.pop(j, [])
        self._n_pending -= len(waiting)
        return waiting

    def set_embeddings(self, items: Sequence[str], vectors: np.ndarray, ts: float = 0.0) -> None:
        """:meth:`set_embedding` for many items at once (one rebuild of the index)."""
        rows = np.array([self.catalog.add(item, ts) for item in items], np.int64)
        self.index.add_many(rows, vectors)
        for j in rows.tolist():
            for user, w, when, n in self._take_pending(j):
                self._add(user, j, w, when, n)

    def has_embedding(self, item: str) -> bool:
        j = self.catalog.index.get(item)
        return j is not None and j in self.index

    def forget_user(self, user: str) -> None:
        self.profiles.pop(user, None)
        self.imageless.pop(user, None)
        self.clicks.pop(user, None)

    def forget_item(self, item: str) -> None:
        """Clear ``item``'s row of the index (and interactions waiting for its embedding);
        profiles keep what it taught them of their users' taste."""
        super().forget_item(item)
        j = self.catalog.index.get(item)
        if j is not None:
            self.index.remove(j)
            self._take_pending(j)

    def learn_one(self, user: str, item: str, ts: float, clicked: bool = True) -> None:
        j = self.catalog.add(item, ts)
        w = 1.0 if clicked else self.view_weight
        if w == 0.0:
            return
        n, mark = self.clicks.get(user, (0, 0))
        if clicked:
            n += 1
            self.clicks[user] = (n, mark)
        if j in self.index:
            self._add(user, j, w, ts, n)
            return
        self._pending.setdefault(j, []).append((user, w, ts, n))
        self._n_pending += 1
        # Items that never get an embedding (never uploaded, content switched off) must not
        # hold their interactions forever.
        while self._n_pending > self.max_pending:
            self._n_pending -= len(self._pending.popitem(last=False)[1])

    def set_fusion(self, weights: FusionWeights | None) -> None:
        """Compare items and profiles with these block weights (None: the fixed fusion's).

        The stored vectors and profiles stay as they are (so they mean the same whatever
        weights a worker serves); the index's centred copy is rebuilt once, here, from the
        re-weighted items, and each query is re-weighted as it is scored.

        >>> from streamrec.content.fusion import FixedFusion, FusionWeights
        >>> rng = np.random.default_rng(0)
        >>> text = rng.normal(size=(12, 384))
        >>> text[1] = text[0] + 0.3 * rng.normal(size=384)  # "b" reads much like "a"...
        >>> tags = [("jazz",), ("rock",), ("jazz",)] + [(f"t{n}",) for n in range(9)]
        >>> cs = ContentSource()
        >>> for item, v in zip("abcdefghijkl", FixedFusion().fuse(text, None, tags)):
        ...     cs.set_embedding(item, v)
        >>> cs.learn_one("ann", "a", ts=0)
        >>> [r.item_id for r in cs.recommend("ann", k=1, exclude=["a"])]
        ['b']
        >>> cs.set_fusion(FusionWeights(text=0.2, image=0.1, tags=0.7))  # ...but "c" is jazz
        >>> [r.item_id for r in cs.recommend("ann", k=1, exclude=["a"])]
        ['c']
        """
        weights = weights or FIXED
        if weights == self.fusion:
            return
        if weights != FIXED and self.dim != DIM:
            raise ValueError(f"block weights need the fused {DIM}-d layout, this content "
                             f"source holds {self.dim}-d vectors")
        self._reweighting = None if weights == FIXED else Reweighting(weights, FIXED)
        self.fusion = weights
        self.index.set_weighing(self._reweighting.items if self._reweighting else None)

    def _add(self, user: str, j: int, w: float, ts: float, n: int) -> None:
        """Add item ``j`` with weight ``w`` to ``user``'s profile, learned at time ``ts`` as of
        the user's ``n``-th click (a late embedding's interaction is older than the profile)."""
        x = self.index.matrix[j]
        text = imageless_text(x) if self.dim == DIM else None
        clicks, mark = self.clicks.get(user, (n, n))
        prev = self.profiles.get(user)
        if prev is None:
            self.profiles[user] = (w * x, w, ts)
            self.clicks[user] = (clicks, n)
            if text is not None:
                self.imageless[user] = w * text
            return
        p, weight, t0 = prev
        # Decay whichever of the two is older to the newer time, and to the higher click count.
        old = 2.0 ** (-max(ts - t0, 0.0) / self.half_life_s)
        new = w * 2.0 ** (-max(t0 - ts, 0.0) / self.half_life_s)
        if self.half_life_clicks is not None:
            old *= 2.0 ** (-max(n - mark, 0) / self.half_life_clicks)
            new *= 2.0 ** (-max(mark - n, 0) / self.half_life_clicks)
        self.profiles[user] = (old * p + new * x, old * weight + new, max(ts, t0))
        self.clicks[user] = (clicks, max(mark, n))
        side = self.imageless.get(user)
        if side is not None or text is not None:
            side = old * side if side is not None else 0.0
            self.imageless[user] = side + new * text if text is not None else side

    def _queries(self, users) -> np.ndarray:
        """Unit queries of ``users`` in the index's centred space (zero rows: no profile)."""
        raw = np.zeros((len(users), self.dim), np.float32)
        weights = np.zeros(len(users), np.float32)
        for r, u in enumerate(users):
            prev = self.profiles.get(u)
            if prev is not None:
                raw[r], weights[r] = prev[0], prev[1]
        if self._reweighting is not None:
            side = np.zeros((len(users), TEXT.width), np.float32)
            for r, u in enumerate(users):
                s = self.imageless.get(u)
                if s is not None:
                    side[r] = s
            raw = self._reweighting.profiles(raw, side)
        return self.index.centre_queries(raw, weights)

    def profile(self, user: str) -> np.ndarray | None:
        """The user's unit profile vector in the index's centred space, or None before any
        item with an embedding."""
        if user not in self.profiles:
            return None
        q = self._queries([user])[0]
        return q if q.any() else None

    def score_many(self, users, now: float = 0.0) -> np.ndarray:
        P = self._queries(users)
        S = self.index.scores(P, len(self.catalog))  # float32: cosines need no more
        S[~P.any(axis=1)] = -np.inf  # no profile: no opinion
        return S

    def score_all(self, user: str, now: float = 0.0) -> np.ndarray:
        return self.score_many([user], now)[0]

    def scores_for(self, users: Sequence[str], now: float) -> SourceScores:
        n = len(self.catalog)
        if self.dense_at(n):
            return super().scores_for(users, now)
        P = self._queries(users)
        self.index.release_centred()  # searched from now on: rows centred as they are read
        return VectorScores(P, self.index.centred_rows, self.index.valid(n), n,
                            self.index.ann, P.any(axis=1))
