"""Tags as a signal of their own: each user's decayed weight on every tag they consumed, against
the tags items carry. A tag or a genre says in one word what a text embedding spreads over many
dimensions, and it reaches items before anyone has clicked them."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from streamrec.models.base import CandidateSource
from streamrec.models.candidates import Banned, SourceScores, first_per_row
from streamrec.models.catalog import Catalog
from streamrec.models.item_tags import ItemTags


class TagProfile(CandidateSource):
    """Scores an item by the share of the user's tag weight that falls on its tags.

    A click adds 1 to each tag of its item (a view ``view_weight``), spread over the item's
    tags; weights decay with ``half_life_s`` (``None``: never). A user's score for an item is
    ``sum over its tags of weight / total weight``, scaled by ``1 / sqrt(its tag count)``, so
    it lies in [0, 1]. Items without tags, and users without a tagged item, get no opinion.

    Examples
    --------
    >>> tp = TagProfile()
    >>> tp.add_item("jazz-night", 0.0, tags=("jazz",))
    >>> tp.add_item("rock-show", 0.0, tags=("rock",))
    >>> tp.add_item("jazz-brunch", 1.0, tags=("jazz", "food"))
    >>> tp.learn_one("ann", "jazz-night", ts=2)
    >>> [(r.item_id, round(r.score, 3)) for r in tp.recommend("ann", k=2, exclude=["jazz-night"], now=2)]
    [('jazz-brunch', 0.707)]
    """

    name = "tags"
    retrieves_at_scale = True
    proposes_cold = True

    def __init__(self, catalog: Catalog | None = None, half_life_s: float | None = 14 * 86400.0,
                 view_weight: float = 0.3) -> None:
        self.catalog = catalog if catalog is not None else Catalog()
        self.tags = ItemTags(self.catalog)
        self.half_life_s = half_life_s
        self.view_weight = view_weight
        #: user -> ({tag id: weight}, time the weights were last decayed to)
        self.profiles: dict[str, tuple[dict[int, float], float]] = {}

    def add_item(self, item: str, ts: float, embedding: np.ndarray | None = None,
                 tags: Sequence[str] = ()) -> None:
        self.set_tags(item, tags, ts)

    def set_tags(self, item: str, tags: Iterable[str], ts: float = 0.0) -> None:
        self.tags.set_tags(self.catalog.add(item, ts), tags)

    def _decay(self, user: str, ts: float) -> dict[int, float]:
        weights, t0 = self.profiles.get(user, ({}, ts))
        if self.half_life_s and ts > t0:
            f = 2.0 ** (-(ts - t0) / self.half_life_s)
            weights = {t: w * f for t, w in weights.items() if w * f > 1e-6}
        self.profiles[user] = (weights, max(ts, t0))
        return weights

    def forget_user(self, user: str) -> None:
        self.profiles.pop(user, None)

    def forget_item(self, item: str) -> None:
        """Drop ``item``'s tags (users keep the weight it gave theirs)."""
        super().forget_item(item)
        j = self.catalog.index.get(item)
        if j is not None:
            self.tags.set_tags(j, ())

    def learn_one(self, user: str, item: str, ts: float, clicked: bool = True) -> None:
        j = self.catalog.add(item, ts)
        ids = self.tags.of_item.get(j)
        if not ids:
            return
        weights = self._decay(user, ts)
        w = (1.0 if clicked else self.view_weight) / len(ids)
        for t in ids:
            weights[t] = weights.get(t, 0.0) + w

    def user_weights(self, users: Sequence[str]) -> np.ndarray:
        """``users x tags``: each user's share of weight on every tag (rows sum to 1, or 0)."""
        W = np.zeros((len(users), self.tags.n_tags), np.float32)
        for r, u in enumerate(users):
            prof = self.profiles.get(u)
            if prof and prof[0]:
                ids, w = zip(*prof[0].items())
                W[r, list(ids)] = w
                W[r] /= W[r].sum()
        return W

    def score_many(self, users: Sequence[str], now: float = 0.0) -> np.ndarray:
        return self.tags.scores(self.user_weights(users), len(self.catalog))

    def score_all(self, user: str, now: float = 0.0) -> np.ndarray:
        return self.score_many([user], now)[0]

    def scores_for(self, users: Sequence[str], now: float) -> SourceScores:
        if self.dense_at(len(self.catalog)):
            return super().scores_for(users, now)
        return TagScores(self.tags, self.user_weights(users), self.floor)


class TagScores(SourceScores):
    """Tag scores of a batch's users for a catalogue too large to score whole: pairs are
    scored exactly (:meth:`ItemTags.pair_scores`), and each user's top items are sought among
    the latest items of their ``favourite_tags`` heaviest tags."""

    def __init__(self, tags: ItemTags, weights: np.ndarray, floor: float,
                 favourite_tags: int = 3) -> None:
        self.tags, self.weights, self.floor = tags, weights, floor
        self.favourite_tags = favourite_tags

    def pairs(self, rows: np.ndarray, items: np.ndarray) -> np.ndarray:
        return self.tags.pair_scores(self.weights, rows, items)

    def block(self, items: np.ndarray) -> np.ndarray:
        return self.tags.block_scores(self.weights, items)

    def top(self, k: int, banned: Banned) -> tuple[np.ndarray, np.ndarray]:
        rows_, items_ = [], []
        for r, w in enumerate(self.weights):
            liked = np.flatnonzero(w > 0)
            liked = liked[np.argsort(-w[liked], kind="stable")[: self.favourite_tags]]
            latest = [self.tags.latest_items(int(t)) for t in liked]
            if latest:
                items = np.unique(np.concatenate(latest))
                rows_.append(np.full(len(items), r))
                items_.append(items)
        if not rows_:
            empty = np.empty(0, np.int64)
            return empty, empty
        rows, items = np.concatenate(rows_), np.concatenate(items_)
        s = self.pairs(rows, items)
        ok = (s > self.floor) & ~banned.contains(rows, items)
        rows, items, s = rows[ok], items[ok], s[ok]
        order = np.lexsort((-s, rows))
        rows, items = rows[order], items[order]
        keep = first_per_row(rows, k)
        return rows[keep], items[keep]
