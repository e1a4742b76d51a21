"""Time-decayed popularity: what is trending now."""

from __future__ import annotations

import math

import numpy as np

from streamrec.models.base import CandidateSource, RecordsChanges
from streamrec.models.candidates import head_by_score
from streamrec.models.catalog import Catalog, grow_rows

#: Scores are kept as ``weight * 2**((ts - epoch) / half_life)`` so that learning is one add and
#: decay costs nothing; the epoch moves every ``EPOCH_HALF_LIVES`` half-lives (float64 holds
#: 2**1023), and every process derives the same epoch from the time, so shared counters agree.
EPOCH_HALF_LIVES = 512
#: Items whose order a large catalogue's popularity keeps between batches (its head): more
#: than any user's list looks past (their own seen items, at most twice ``MAX_SEEN``).
HEAD = 8192


def epoch_of(ts: float, half_life_s: float) -> float:
    """The decay epoch a timestamp falls in (identical for every worker)."""
    span = half_life_s * EPOCH_HALF_LIVES
    return math.floor(ts / span) * span


class DecayedPopularity(RecordsChanges, CandidateSource):
    """Counts interactions per item, each decaying with a half-life.

    Parameters
    ----------
    half_life_s
        After this many seconds an interaction counts half as much.
    view_weight, click_weight
        What a view and a click add to an item's count.

    Examples
    --------
    >>> pop = DecayedPopularity(half_life_s=3600)
    >>> for ts, item in [(0, "old"), (0, "old"), (3600, "new"), (3600, "new"), (3600, "new")]:
    ...     pop.learn_one("u", item, ts)
    >>> [(r.item_id, r.score) for r in pop.recommend("u", k=2, now=3600)]
    [('new', 3.0), ('old', 1.0)]
    """

    name = "popularity"
    retrieves_at_scale = True

    def __init__(self, catalog: Catalog | None = None, half_life_s: float = 86400.0,
                 view_weight: float = 0.5, click_weight: float = 1.0) -> None:
        self.catalog = catalog if catalog is not None else Catalog()
        self.half_life_s = half_life_s
        self.view_weight = view_weight
        self.click_weight = click_weight
        self.epoch: float | None = None
        self._raw = np.zeros(1024, dtype=np.float64)
        #: Increments not yet written to shared storage (``None``: nobody is collecting them).
        self.journal: dict[str, float] | None = None
        #: At scale: the best :data:`HEAD` items when last ordered, and the items learned from
        #: since (the only ones whose place can have changed: decay scales every count alike).
        self._head: np.ndarray | None = None
        self._touched: set[int] = set()

    def _scale(self, ts: float) -> float:
        epoch = epoch_of(ts, self.half_life_s)
        if self.epoch is None:
            self.epoch = epoch
        elif epoch > self.epoch:  # rebase: everything older shrinks by the elapsed half-lives
            self._raw *= 2.0 ** (-(epoch - self.epoch) / self.half_life_s)
            self.epoch = epoch
        return 2.0 ** ((ts - self.epoch) / self.half_life_s)

    def learn_one(self, user: str, item: str, ts: float, clicked: bool = True) -> None:
        j = self.catalog.add(item, ts)
        self._raw = grow_rows(self._raw, j + 1)
        w = (self.click_weight if clicked else self.view_weight) * self._scale(ts)
        self._raw[j] += w
        if self._head is not None:
            self._touched.add(j)
        if self.journal is not None:
            self.journal[item] = self.journal.get(item, 0.0) + w

    def forget_item(self, item: str) -> None:
        super().forget_item(item)
        j = self.catalog.index.get(item)
        if j is not None and j < len(self._raw):
            self._raw[j] = 0.0
            self._head = None  # a count went down: order the catalogue again
        if self.journal is not None:
            self.journal.pop(item, None)

    def set_raw(self, epoch: float, values: dict[str, float]) -> None:
        """Replace counts with shared ones (raw values relative to ``epoch``)."""
        if self.epoch is None or epoch > self.epoch:
            self._scale(epoch)
        factor = 2.0 ** (-(self.epoch - epoch) / self.half_life_s)
        for item, v in values.items():
            j = self.catalog.add(item, epoch)
            self._raw = grow_rows(self._raw, j + 1)
            self._raw[j] = v * factor
        self._head = None  # counts may have gone down: order the catalogue again

    def score_all(self, user: str | None = None, now: float = 0.0) -> np.ndarray:
        self._raw = grow_rows(self._raw, len(self.catalog))
        raw = self._raw[: len(self.catalog)]
        if self.epoch is None:
            return raw.copy()
        return raw * 2.0 ** (-(max(now, self.epoch) - self.epoch) / self.half_life_s)

    def ranked_all(self, now: float) -> tuple[np.ndarray, np.ndarray | None]:
        """Scores at ``now`` and, for a catalogue too large to order every batch, the order of
        its head, kept up to date with the items learned from since it was last taken."""
        scores = self.score_all(None, now)
        if self.dense_at(len(scores)):
            return scores, None
        if self._head is None or len(self._touched) > HEAD:
            self._head, self._touched = head_by_score(scores, HEAD), set()
        else:
            ahead = np.union1d(self._head, np.fromiter(self._touched, np.int64))
            self._head = ahead[np.lexsort((ahead, -scores[ahead]))][:HEAD]
            self._touched = set()
        return scores, self._head

    def share_of_top(self, now: float = 0.0) -> np.ndarray:
        """Each item's score as a share of the top item's (all 0 before any interaction)."""
        scores = self.score_all(None, now)
        top = scores.max() if len(scores) else 0.0
        return scores / top if top > 0 else scores
