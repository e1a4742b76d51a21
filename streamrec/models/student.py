"""The distilled student as a candidate source: its user vector against its item vectors.

The student is swapped in (:meth:`StudentSource.swap`) whenever a new snapshot is published;
until the first one, it has no opinion. Item vectors are computed once per item (and again at a
swap) from the item's fused content embedding and its behaviour in the training window.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from streamrec.models.base import CandidateSource
from streamrec.models.candidates import SourceScores
from streamrec.models.catalog import Catalog, grow_rows
from streamrec.models.index import EmbeddingIndex
from streamrec.models.student_scorer import StudentScorer
from streamrec.models.vector_search import VectorScores, VectorSearch


class StudentSource(CandidateSource):
    """Scores ``user . item + bias`` of the student in service.

    The user's history is their most recent distinct items, oldest first, each marked clicked
    or only viewed: in a blend, the blend's own seen-list (:meth:`use_history`), otherwise
    tracked here.

    Examples
    --------
    >>> import json
    >>> rng = np.random.default_rng(0)
    >>> t = {"ids.weight": np.zeros((3, 2)), "bias.weight": np.zeros((3, 1)),
    ...      "behaviour": np.zeros((3, 3)), "item1.weight": np.eye(4, 7),
    ...      "item1.bias": np.zeros(4), "item2.weight": np.eye(4), "item2.bias": np.zeros(4),
    ...      "recency": np.zeros(2), "user.weight": np.eye(4), "user.bias": np.zeros(4),
    ...      "prior.weight": np.zeros((4, 2)), "kind_weight": np.zeros(2)}
    >>> meta = {"config": "{}", "item_ids": json.dumps(["a", "b"])}
    >>> src = StudentSource(content_dim=2)
    >>> src.swap(StudentScorer(t, meta, "student-v1"))
    >>> src.set_embedding("cats", np.array([1.0, 0.0]), ts=0)
    >>> src.set_embedding("kittens", np.array([0.9, 0.1]), ts=0)
    >>> src.set_embedding("cars", np.array([0.0, 1.0]), ts=0)
    >>> src.learn_one("ann", "cats", ts=1)
    >>> [r.item_id for r in src.recommend("ann", k=1, exclude=["cats"])], src.version
    (['kittens'], 'student-v1')
    """

    name = "student"
    retrieves_at_scale = True
    floor = -np.inf

    def __init__(self, catalog: Catalog | None = None, content_dim: int = 128,
                 history: int = 30) -> None:
        self.catalog = catalog if catalog is not None else Catalog()
        self.content_dim = content_dim
        self.history = history
        self.scorer: StudentScorer | None = None
        self._fused = np.zeros((0, content_dim), np.float32)
        #: The content source's index when the student reads its embeddings (in a blend):
        #: one copy of the catalogue's vectors instead of two (512 MiB at a million items).
        self._shared: EmbeddingIndex | None = None
        self._vectors = np.zeros((0, 0), np.float32)
        self._bias = np.zeros(0, np.float32)
        self._stale: set[int] = set()  # rows whose embedding arrived after their vector
        self._history_of: Callable[[str, int], tuple[np.ndarray, np.ndarray]] | None = None
        self._own: dict[str, dict[int, bool]] = {}  # user -> item -> clicked (first-seen order)
        #: Item vectors with their bias as a last column (queries get a 1 there), and their
        #: index, for catalogues too large to score whole.
        self._augmented = np.zeros((0, 1), np.float32)
        self._augmented_rows = 0
        self.ann = VectorSearch(1, unit=False)

    @property
    def version(self) -> str | None:
        return self.scorer.version if self.scorer is not None else None

    @property
    def active(self) -> bool:
        return self.scorer is not None

    def use_history(self, history_of: Callable[[str, int], tuple[np.ndarray, np.ndarray]]) -> None:
        """Read users' histories from ``history_of(user, n)``: their latest ``n`` distinct
        items (catalogue indices, oldest first) and whether each was clicked."""
        self._history_of = history_of

    def read_embeddings_from(self, index: EmbeddingIndex) -> None:
        """Read items' fused embeddings from ``index`` (by catalogue row, as added; the
        content source's) rather than keeping a copy: whoever feeds ``index`` must also call
        :meth:`set_embedding` here, which then only notes that the row changed."""
        if index.dim != self.content_dim:
            raise ValueError(f"the student reads {self.content_dim}-d content, the index holds "
                             f"{index.dim}-d vectors")
        self._shared = index
        self._fused = np.zeros((0, self.content_dim), np.float32)
        self._stale.update(range(len(self._vectors)))

    def _fused_rows(self, rows: slice | np.ndarray) -> np.ndarray:
        """The fused embeddings of catalogue ``rows`` (zeros where an item has none)."""
        if self._shared is not None:
            self._shared.valid(len(self.catalog))  # rows up to the catalogue's exist
            return self._shared.matrix[rows]
        self._grow(len(self.catalog))
        return self._fused[rows]

    def swap(self, scorer: StudentScorer | None) -> None:
        """Put ``scorer`` in service; every item vector is recomputed."""
        if scorer is not None and scorer.content_dim != self.content_dim:
            raise ValueError(f"student {scorer.version} reads {scorer.content_dim}-d content, "
                             f"the catalogue has {self.content_dim}-d embeddings")
        self.scorer = scorer
        self._vectors = np.zeros((0, scorer.dim if scorer else 0), np.float32)
        self._bias = np.zeros(0, np.float32)
        self._stale.clear()
        self._augmented = np.zeros((0, self._vectors.shape[1] + 1), np.float32)
        self._augmented_rows = 0
        self.ann = VectorSearch(self._vectors.shape[1] + 1, unit=False)

    def set_embedding(self, item: str, vector: np.ndarray, ts: float = 0.0) -> None:
        j = self.catalog.add(item, ts)
        if self._shared is None:
            self._grow(j + 1)
            self._fused[j] = vector
        if j < len(self._vectors):
            self._stale.add(j)

    def _grow(self, n: int) -> None:
        if n > len(self._fused):
            grown = np.zeros((max(n, 2 * len(self._fused)), self.content_dim), np.float32)
            grown[:len(self._fused)] = self._fused
            self._fused = grown

    def _item_vectors(self) -> tuple[np.ndarray, np.ndarray]:
        """Vectors of the whole catalogue, computing only the rows that are new or stale."""
        n, done = len(self.catalog), len(self._vectors)
        ids = self.catalog.ids
        if n > done:
            v, b = self.scorer.item_vectors(self._fused_rows(slice(done, n)),
                                            self.scorer.rows(ids[done:n]))
            self._vectors = np.vstack([self._vectors, v]) if done else v
            self._bias = np.concatenate([self._bias, b]) if done else b
        if self._stale:
            rows = np.fromiter(self._stale, np.int64)
            v, b = self.scorer.item_vectors(self._fused_rows(rows), self.scorer.rows(
                [ids[j] for j in rows.tolist()]))
            self._vectors[rows], self._bias[rows] = v, b
            self._stale.clear()
        return self._vectors, self._bias

    def _augmented_vectors(self) -> np.ndarray:
        """``[vector, bias]`` rows of the whole catalogue (see :meth:`_item_vectors`)."""
        before = self._augmented_rows
        stale = np.fromiter(self._stale, np.int64)
        V, b = self._item_vectors()
        n = len(V)
        if n > before:
            self._augmented = grow_rows(self._augmented, n)
            self._augmented[before:n, :-1], self._augmented[before:n, -1] = V[before:], b[before:]
            self._augmented_rows = n
        stale = stale[stale < before]
        if len(stale):
            self._augmented[stale, :-1], self._augmented[stale, -1] = V[stale], b[stale]
            self.ann.changed(stale.tolist())
        return self._augmented[:n]

    def forget_user(self, user: str) -> None:
        self._own.pop(user, None)

    def forget_item(self, item: str) -> None:
        """Drop ``item``'s content (its vector is recomputed from none, for the histories
        that still hold it) and its place in the histories kept here."""
        super().forget_item(item)
        j = self.catalog.index.get(item)
        if j is None:
            return
        if self._shared is None and j < len(self._fused):
            self._fused[j] = 0.0
        if j < len(self._vectors):
            self._stale.add(j)
        for h in self._own.values():
            h.pop(j, None)

    def learn_one(self, user: str, item: str, ts: float, clicked: bool = True) -> None:
        j = self.catalog.add(item, ts)
        if self._history_of is None:
            h = self._own.setdefault(user, {})
            h[j] = h.get(j, False) or clicked

    def _own_history(self, user: str, n: int) -> tuple[np.ndarray, np.ndarray]:
        h = list(self._own.get(user, {}).items())[-n:]
        return np.array([j for j, _ in h], np.int64), np.array([c for _, c in h], bool)

    def _histories(self, users: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        H = self.scorer.history if self.scorer is not None else self.history
        out = np.full((len(users), H), -1, np.int64)
        flags = np.zeros((len(users), H), bool)
        history_of = self._history_of or self._own_history
        for r, u in enumerate(users):
            h, c = history_of(u, H)
            if len(h):
                out[r, H - len(h):] = h
                flags[r, H - len(h):] = c
        return out, flags

    def score_many(self, users: Sequence[str], now: float = 0.0) -> np.ndarray:
        n = len(self.catalog)
        if self.scorer is None or n == 0:
            return np.full((len(users), n), -np.inf, np.float32)
        V, b = self._item_vectors()
        hist, clicked = self._histories(users)
        S = (self.scorer.user_vectors(V, hist, clicked) @ V.T + b).astype(np.float32)
        S[(hist < 0).all(axis=1)] = -np.inf  # no history: no opinion
        return self.no_opinion_on_retired(S)

    def scores_for(self, users: Sequence[str], now: float) -> SourceScores:
        n = len(self.catalog)
        if self.scorer is None or self.dense_at(n):
            return super().scores_for(users, now)
        M = self._augmented_vectors()
        hist, clicked = self._histories(users)
        Q = np.ones((len(users), M.shape[1]), np.float32)
        Q[:, :-1] = self.scorer.user_vectors(self._vectors, hist, clicked)
        return VectorScores(Q, M, np.ones(len(M), bool), n, self.ann,
                            (hist >= 0).any(axis=1), self.floor)

    def score_all(self, user: str, now: float = 0.0) -> np.ndarray:
        return self.score_many([user], now)[0]
