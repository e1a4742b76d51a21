"""What every candidate source shares: learn from one interaction, score the whole catalogue."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import NamedTuple

import numpy as np

from streamrec.models.candidates import EXACT_BELOW, DenseScores, SourceScores
from streamrec.models.catalog import Catalog


class Recommendation(NamedTuple):
    """One recommended item: its id, its score and the sources that proposed it. (A named
    tuple: lists build a few hundred per batch, and a frozen dataclass is 3x slower to
    create.)"""

    item_id: str
    score: float
    sources: tuple[str, ...]


def top_k(scores: np.ndarray, k: int, exclude: Iterable[int] = (), floor: float = 0.0) -> np.ndarray:
    """Indices of the ``k`` highest scores, best first, skipping ``exclude`` and scores not
    above ``floor`` (by default a source with nothing to say about an item does not propose it).

    >>> top_k(np.array([0.1, 0.9, 0.0, 0.5]), 2).tolist()
    [1, 3]
    >>> top_k(np.array([0.1, 0.9, 0.0, 0.5]), 5, exclude=[1]).tolist()
    [3, 0]
    """
    s = scores.astype(np.float64, copy=True)
    ex = np.fromiter(exclude, dtype=np.int64)
    if ex.size:
        s[ex[ex < len(s)]] = -np.inf
    positive = int(np.count_nonzero(s > floor))
    k = min(k, positive)
    if k <= 0:
        return np.empty(0, dtype=np.int64)
    part = np.argpartition(-s, k - 1)[:k] if k < len(s) else np.arange(len(s))
    return part[np.argsort(-s[part], kind="stable")]


class RecordsChanges:
    """A model that can hand over what it changed, for a worker's write-back to Redis: off
    (``journal`` is None) until :meth:`record_changes`; models fill ``journal`` as they learn."""

    journal = None

    @staticmethod
    def _new_journal():
        return {}

    def record_changes(self) -> None:
        """From now on, keep what changes, for :meth:`take_changes`."""
        self.journal = self._new_journal()

    def take_changes(self):
        """What changed since the last call; forgotten here."""
        if self.journal is None:
            return self._new_journal()
        changes, self.journal = self.journal, self._new_journal()
        return changes


class CandidateSource:
    """Base class: subclasses set ``name`` and implement ``learn_one`` and ``score_all``.

    ``score_all(user, now)`` returns one score per catalogue index (0 means "no opinion");
    ``recommend`` turns it into a ranked list of item ids.
    """

    name = "source"
    catalog: Catalog
    #: Scores at or below this mean "no opinion".
    floor = 0.0
    #: Whether the blend also takes this source's best items among those nobody has clicked.
    proposes_cold = False
    #: From this catalogue size on, sources that can propose without scoring every item do
    #: (:meth:`scores_for`).
    exact_below = EXACT_BELOW
    #: Whether the source has a path for catalogues of ``exact_below`` items or more
    #: (:meth:`scores_for`, or :meth:`ranked_all` for a user-independent one).
    retrieves_at_scale = False

    @property
    def active(self) -> bool:
        """False while the source has nothing to say to anyone (a student not yet loaded)."""
        return True

    def learn_one(self, user: str, item: str, ts: float, clicked: bool = True) -> None:
        raise NotImplementedError

    def forget_user(self, user: str) -> None:
        """Drop everything held about ``user``, who is then scored as a user never seen (a
        worker evicts idle users this way and reloads them from Redis when they return).
        Sources without per-user state keep this no-op."""

    def forget_item(self, item: str) -> None:
        """Drop everything held about ``item`` (retired: taken down by its creator or by
        moderation), which the source never proposes again and has no opinion on (scores at
        or below :attr:`floor`). An item never seen is no error. This default marks it
        retired in the shared catalogue (which bans it from every list) and is all a source
        without per-item state needs; sources holding some override it and call it."""
        self.catalog.retire(item)

    def no_opinion_on_retired(self, scores: np.ndarray) -> np.ndarray:
        """``scores`` (over the catalogue, per user or one row) with the retired items at no
        opinion, in place: for sources whose scores do not come from per-item state they
        could drop (freshness from first-seen times, factor models' user vectors against
        item rows)."""
        rows = self.catalog.retired_rows
        if len(rows):
            scores[..., rows[rows < scores.shape[-1]]] = self.floor
        return scores

    def add_item(self, item: str, ts: float, embedding: np.ndarray | None = None,
                 tags: Sequence[str] = ()) -> None:
        """An uploaded item, in the catalogue from ``ts`` on, with its content ``embedding``
        if it has one (:meth:`set_embedding`) and its ``tags`` (read by the sources that
        use them)."""
        self.catalog.add(item, ts)
        if embedding is not None:
            self.set_embedding(item, embedding, ts)

    def set_embedding(self, item: str, vector: np.ndarray, ts: float = 0.0) -> None:
        """An item's content vector; sources that read content override this."""

    def score_all(self, user: str, now: float) -> np.ndarray:
        raise NotImplementedError

    def ranked_all(self, now: float) -> tuple[np.ndarray, np.ndarray | None]:
        """For a user-independent source: ``score_all(None, now)`` (or, for a catalogue too
        large to score whole every batch, a :class:`~streamrec.models.candidates.ScoresOf`
        that scores the items asked) and, if the source keeps one cheaply, the catalogue's
        order by it, best first (ties in catalogue order); None lets the caller select just
        the head it needs (:func:`~streamrec.models.candidates.head_by_score`)."""
        return self.score_all(None, now), None

    def score_many(self, users: Sequence[str], now: float) -> np.ndarray:
        """``score_all`` for several users at once (users x catalogue); sources override it
        with one vectorised computation."""
        return np.stack([self.score_all(u, now) for u in users]) if users else np.zeros((0, 0))

    def scores_for(self, users: Sequence[str], now: float) -> SourceScores:
        """The batch's view of this source's scores for ``users``
        (:mod:`streamrec.models.candidates`): by default :meth:`score_many` as a matrix;
        sources that can propose without scoring the catalogue override it for large ones."""
        return DenseScores(self.score_many(users, now), self.floor)

    def dense_at(self, n: int) -> bool:
        """Whether :meth:`scores_for` computes a users x catalogue matrix at ``n`` items."""
        return not self.retrieves_at_scale or n < self.exact_below

    def recommend(self, user: str, k: int = 10, exclude: Iterable[str] = (),
                  now: float = 0.0) -> list[Recommendation]:
        """The ``k`` best items for ``user``, best first, without ``exclude`` and retired items:
        the same contract as :meth:`Blend.recommend <streamrec.models.blend.Blend.recommend>`."""
        scores = self.score_all(user, now)
        ex = [self.catalog.index[i] for i in exclude if i in self.catalog.index]
        ex += self.catalog.retired_rows.tolist()
        idx = top_k(scores, k, ex, self.floor)
        mine = (self.name,)
        return [Recommendation(self.catalog.ids[j], float(scores[j]), mine) for j in idx]
