"""The blend: candidates from every source, ranked by the online river ranker."""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Iterable, Sequence

import numpy as np

from streamrec.models.base import CandidateSource, Recommendation, RecordsChanges
from streamrec.models.candidates import (
    DENSE_CELLS,
    Banned,
    SharedScores,
    SourceScores,
    best_of_block,
)
from streamrec.models.catalog import Catalog
from streamrec.models.content import ContentSource
from streamrec.models.covisitation import CoVisitation
from streamrec.models.freshness import Freshness
from streamrec.models.isgd import ISGD
from streamrec.models.item_counts import ItemCounts
from streamrec.models.new_item_slots import NewItemSlots
from streamrec.models.popularity import DecayedPopularity
from streamrec.models.ranker import OnlineRanker
from streamrec.models.student import StudentSource
from streamrec.models.tag_profile import TagProfile
from streamrec.models.trending import Trending


def best_first_by_row(rows: np.ndarray, v: np.ndarray, stable: bool = True) -> np.ndarray:
    """The order that groups candidates by ``rows`` (ascending), highest ``v`` first in each,
    ties in their original order: ``np.lexsort((-v, rows))``, 2.5x faster as one float key.
    ``stable=False`` leaves the order of ties unspecified, for another 2x.

    >>> best_first_by_row(np.array([0, 0, 1, 1]), np.array([1.0, 3.0, 2.0, 2.0])).tolist()
    [1, 0, 2, 3]
    """
    # Scaled into [-1, 1], where arctan is nearly linear (so close scores stay apart), then
    # into (0, 1) keeping their order: the key stays below rows + 1.
    finite = np.abs(v[np.isfinite(v)])
    scale = finite.max() if finite.size and finite.max() > 0 else 1.0
    return np.argsort(rows + (0.5 - np.arctan(v / scale) / np.pi) * 0.999,
                      kind="stable" if stable else "quicksort")


def _z_by_row(v: np.ndarray, rows: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """``v`` standardised within each row's candidates; 0 for rows with a non-finite value or
    no spread."""
    U = len(counts)
    finite = np.isfinite(v)
    v0 = np.where(finite, v, 0.0)
    ok = np.bincount(rows, ~finite, minlength=U) == 0
    mean = np.bincount(rows, v0, minlength=U) / np.maximum(counts, 1)
    var = np.bincount(rows, v0 ** 2, minlength=U) / np.maximum(counts, 1) - mean ** 2
    sd = np.sqrt(np.maximum(var, 0.0))
    good = ok[rows] & (sd[rows] > 1e-12)
    return np.where(good, (v0 - mean[rows]) / np.where(good, sd[rows], 1.0), 0.0)


#: One reciprocal-rank feature per source (rank among this user's candidates, 0 when the source
#: has no opinion) plus a few scale-free extras. Ranks rather than raw scores keep the features
#: comparable across sources, users and time, which a linear ranker needs.
FEATURES = (
    "popularity_rr", "covisitation_rr", "isgd_rr", "fresh_rr",
    "popularity_log", "covisitation_share", "isgd_z", "age_log",
    "isgd_x_activity", "covisitation_x_activity",
    "content_rr", "content_cosine", "content_x_unseen_item",
    "student_rr", "student_z",
    "content_z", "fresh_x_content_z", "unclicked_x_content_z", "unclicked_x_log_events",
    "click_rate",
    "tags_rr", "tags_share", "unclicked_x_tags_share",
    "trending_rr", "trending_log",
)
#: Seen items a user's history keeps at least (their latest; older ones may be recommended
#: again).
MAX_SEEN = 2000
#: Sources whose scores are the same for every user: computed once per batch.
USER_INDEPENDENT = ("popularity", "fresh", "trending")
#: Columns of the per-source reciprocal ranks.
RANK_COLUMNS = {"popularity": 0, "covisitation": 1, "isgd": 2, "fresh": 3, "content": 10,
                "student": 13, "tags": 20, "trending": 23}


class Blend(RecordsChanges):
    """Union of each source's top candidates, ordered by an :class:`OnlineRanker`.

    The ranker learns pairs from impressions, the candidates of the list last computed for the
    user (the latest ``max_offers`` users' are kept, with their features, so learning costs no
    extra scoring): a click (with the features its item had when it was viewed, if a view came
    first) is preferred to ``negatives_per_click`` of the other candidates, drawn at random;
    clicks on items that were not among the candidates are skipped, since the ranker cannot
    reorder what it never sees; a view not followed by a click on the same item within
    ``label_window_s`` is a negative, ranked below the user's latest click (with weight
    ``view_negative_weight``). With ``view_negatives_on_click`` (the default) a click does not
    wait for the window: the user's views still waiting for their label, of items other than
    the one clicked, are ranked below it at once (with the same weight), so the ranker learns
    what a user passed over on the page they clicked from, while the taste that chose it still
    holds. Items the user has viewed or clicked are never recommended again
    (the latest ``max_seen`` of them at least: older ones are forgotten in bulk, so a user's
    state stays bounded).

    Sources marked ``proposes_cold`` (content) also propose their best ``cold_per_source``
    items among those nobody has clicked yet, so items too new to have a behavioural signal
    still reach the ranker; :class:`ItemCounts` tells which those are. Up to
    ``new_item_slots`` of each list's last places go to the candidates among the user's
    ``new_pool`` freshest that best match their content profile, as many as clicks have shown
    to be worth the ranker's items they displace (:class:`NewItemSlots`).

    Examples
    --------
    >>> blend = Blend(seed=0)
    >>> t = 0
    >>> for n in range(60):  # people who watch a show tend to watch its sequel next
    ...     show = f"show{n % 5}"
    ...     for item in (show, f"{show}-sequel", f"filler{n}"):
    ...         _ = blend.recommend(f"user{n}", now=t)  # test, then train
    ...         blend.learn_one(f"user{n}", item, ts=t, clicked=True)
    ...         t += 1
    >>> blend.learn_one("eve", "show3", ts=t)
    >>> best = blend.recommend("eve", k=3, now=t)[0]
    >>> best.item_id, "covisitation" in best.sources
    ('show3-sequel', True)
    """

    name = "blend"

    def __init__(self, catalog: Catalog | None = None, *,
                 sources: Sequence[CandidateSource] | None = None,
                 per_source: int = 25, label_window_s: float = 1800.0,
                 negatives_per_click: int = 4, view_negative_weight: float = 0.3,
                 view_negatives_on_click: bool = True,
                 max_offers: int = 20_000, cold_per_source: int = 5, new_item_slots: int = 6,
                 new_pool: int = 40, max_seen: int = MAX_SEEN, cold_pool: int = 10_000,
                 seed: int = 0) -> None:
        self.catalog = catalog if catalog is not None else Catalog()
        if sources is None:
            sources = [DecayedPopularity(self.catalog), Trending(self.catalog),
                       CoVisitation(self.catalog),
                       ISGD(self.catalog, seed=seed), Freshness(self.catalog),
                       TagProfile(self.catalog), ContentSource(self.catalog),
                       StudentSource(self.catalog)]
        self.sources = {s.name: s for s in sources}
        #: The names of the sources set in each bit mask of a candidate's proposers.
        self._labels = [tuple(nm for c, nm in enumerate(self.sources) if b >> c & 1)
                        for b in range(1 << len(self.sources))]
        for s in sources:
            if s.catalog is not self.catalog:
                raise ValueError(f"source {s.name!r} must share the blend's catalogue")
            if isinstance(s, StudentSource):
                s.use_history(self.recent_history)
                content = self.sources.get("content")
                if isinstance(content, ContentSource) and content.dim == s.content_dim:
                    s.read_embeddings_from(content.index)
        self.per_source = per_source
        self.label_window_s = label_window_s
        self.negatives_per_click = negatives_per_click
        self.view_negative_weight = view_negative_weight
        self.view_negatives_on_click = view_negatives_on_click
        self.ranker = OnlineRanker(FEATURES)
        self.seen: dict[str, set[int]] = {}
        #: Items each user clicked (a subset of ``seen``).
        self.clicked: dict[str, set[int]] = {}
        self._seen_idx: dict[str, tuple[int, np.ndarray]] = {}
        self.activity: dict[str, int] = {}
        self._pending: dict[tuple[str, int], tuple[float, np.ndarray]] = {}
        self._pending_order: deque[tuple[float, str, int]] = deque()
        #: user -> the items of their views in ``_pending``, oldest first.
        self._pending_of: dict[str, dict[int, None]] = {}
        self._last_positive: dict[str, np.ndarray] = {}
        self._offered: OrderedDict[str, tuple[np.ndarray, np.ndarray]] = OrderedDict()
        self.max_offers = max_offers
        self.max_seen = max_seen
        self._rng = np.random.default_rng(seed)
        self.item_counts = ItemCounts(self.catalog)
        self.cold_per_source = cold_per_source
        self.new_slots = NewItemSlots(new_item_slots) \
            if new_item_slots and "content" in self.sources else None
        self.new_pool = new_pool
        self.cold_pool = cold_pool
        #: Sources switched off for the lists being computed (:meth:`recommend_many`).
        self._without: frozenset[str] = frozenset()

    # ---- features -------------------------------------------------------------------------

    def shared_scores(self, now: float) -> dict[str, tuple[np.ndarray, np.ndarray | None]]:
        """Scores of the user-independent sources (popularity, freshness) at ``now`` and, where
        the source keeps it, their order: computed once per batch, each user's top items are a
        walk down the head of that order."""
        return {name: s.ranked_all(now) for name, s in self.sources.items()
                if name in USER_INDEPENDENT}

    def _proposals(self, users: Sequence[str], banned: Banned, now: float,
                   shared: dict[str, tuple[np.ndarray, np.ndarray | None]]):
        """Each source's top ``per_source`` allowed items for every user, as flat arrays of
        (user row, item, source column), and each source's scores for the batch's users."""
        U, n = banned.users, banned.n
        P = min(self.per_source, n)
        rows_, items_, cols_ = [], [], []
        values: dict[str, SourceScores] = {}
        for col, (name, src) in enumerate(self.sources.items()):
            if not src.active or name in self._without:
                continue
            if name in shared:
                v, order = shared[name]
                sc = values[name] = SharedScores(v, order, src.floor, U)
            else:
                sc = values[name] = src.scores_for(users, now)
            r, t = sc.top(P, banned)
            if src.proposes_cold and self.cold_per_source:
                rc, tc = self._cold_proposals(sc, banned, r, t)
                r, t = np.concatenate([r, rc]), np.concatenate([t, tc])
            rows_.append(r)
            items_.append(t)
            cols_.append(np.full(len(r), col))
        return np.concatenate(rows_), np.concatenate(items_), np.concatenate(cols_), values

    def _cold_proposals(self, sc: SourceScores, banned: Banned, r: np.ndarray, t: np.ndarray
                        ) -> tuple[np.ndarray, np.ndarray]:
        """A source's best ``cold_per_source`` items per user among those nobody has clicked
        (the latest ``cold_pool`` of them), beside the ``(r, t)`` pairs it proposed already.
        Without these, a catalogue's warm items crowd the cold ones out of the source's top: a
        cold click's item was then rarely a candidate (measured on the synthetic world: a fifth
        of them)."""
        n = banned.n
        cold = np.flatnonzero(self.item_counts.unclicked()[:n])[-self.cold_pool:]
        if not len(cold) or not self.cold_per_source:
            return r[:0], t[:0]
        where = np.full(n, -1)
        where[cold] = np.arange(len(cold))
        mask = banned.block(cold)
        mine = where[t] >= 0
        mask[r[mine], where[t[mine]]] = True  # proposed already
        rc, c = best_of_block(sc.block(cold), self.cold_per_source, mask, sc.floor)
        return rc, cold[c]

    def _features(self, users: Sequence[str], rows: np.ndarray, idx: np.ndarray,
                  starts: np.ndarray, values: dict[str, SourceScores], now: float
                  ) -> np.ndarray:
        """Features of candidate pairs (``rows[i]``'s user, item ``idx[i]``), grouped by row;
        ranks and shares are taken within each user's candidates."""
        U = len(users)
        X = np.zeros((len(idx), len(FEATURES)))
        at = {name: v.pairs(rows, idx) for name, v in values.items()}
        pos = np.arange(len(idx)) - starts[rows]
        counts = np.bincount(rows, minlength=U)
        for name, col in RANK_COLUMNS.items():
            v = at.get(name)
            if v is None:
                continue
            # Tied scores get some order of their ranks: the feature does not need a fair one.
            order = best_first_by_row(rows, v, stable=False)
            rank = np.empty(len(idx))
            rank[order] = pos
            X[:, col] = np.where(v > self.sources[name].floor, 1.0 / (1.0 + rank), 0.0)
        if "popularity" in at:
            X[:, 4] = np.log1p(at["popularity"])
        cv = at.get("covisitation")
        if cv is not None:
            total = np.bincount(rows, cv, minlength=U)[rows]
            X[:, 5] = np.divide(cv, total, out=np.zeros_like(cv), where=total > 0)
        for name, col in (("isgd", 6), ("student", 14)):
            if name in at:
                X[:, col] = _z_by_row(at[name], rows, counts)
        X[:, 7] = np.log1p(np.maximum(now - self.catalog.first_seen[idx], 0.0) / 3600.0)
        act = np.log1p(np.array([self.activity.get(u, 0) for u in users], dtype=float)) / 5.0
        X[:, 8] = X[:, 6] * act[rows]
        X[:, 9] = X[:, 5] * act[rows]
        unclicked = self.item_counts.clicks_of(idx) == 0
        content = at.get("content")
        if content is not None:
            X[:, 11] = np.where(np.isfinite(content), content, 0.0)
            if "popularity" in at:  # nobody has touched the item yet: content is all we have
                X[:, 12] = (X[:, 11] + 1.0) / 2.0 * (at["popularity"] <= 0.0)
            # For items nobody has clicked, content is the only taste signal: these let the
            # linear ranker weigh it differently there (measured in the README).
            X[:, 15] = _z_by_row(content.astype(np.float64), rows, counts)
            X[:, 16] = X[:, 15] * X[:, 3]
            X[:, 17] = X[:, 15] * unclicked
        X[:, 18] = unclicked * np.log1p(self.item_counts.events_of(idx))  # seen, never clicked
        X[:, 19] = self.item_counts.click_rate(idx)
        if "trending" in at:
            X[:, 24] = np.log1p(at["trending"])
        tags = at.get("tags")
        if tags is not None:
            X[:, 21] = tags
            X[:, 22] = tags * unclicked
        return X

    # ---- learning -------------------------------------------------------------------------

    def _expire(self, now: float) -> None:
        """Views older than the label window without a click become negatives, ranked below
        the user's latest positive."""
        order = self._pending_order
        while order and order[0][0] < now - self.label_window_s:
            _, user, j = order.popleft()
            pending = self._take_pending(user, j)
            positive = self._last_positive.get(user)
            if pending is not None and positive is not None:
                self.ranker.learn_pair(positive, pending[1], self.view_negative_weight)

    def _take_pending(self, user: str, j: int) -> tuple[float, np.ndarray] | None:
        """Remove and return ``user``'s view of item ``j`` waiting for its label, if any."""
        pending = self._pending.pop((user, j), None)
        if pending is not None:
            mine = self._pending_of[user]
            del mine[j]
            if not mine:
                del self._pending_of[user]
        return pending

    def _label_views(self, user: str, x_pos: np.ndarray) -> None:
        """Rank ``user``'s views still waiting for their label below the click ``x_pos``."""
        for j in self._pending_of.pop(user, ()):
            _, x_view = self._pending.pop((user, j))
            self.ranker.learn_pair(x_pos, x_view, self.view_negative_weight)

    def learn_one(self, user: str, item: str, ts: float, clicked: bool = True) -> None:
        """Learn from one view (``clicked=False``) or click, in time order; those of a retired
        item are ignored (:meth:`forget_item`)."""
        if self.catalog.retired_at and item in self.catalog.retired_at:
            return
        j = self.catalog.add(item, ts)
        self._expire(ts)
        offered = self._offered.get(user)
        row = None
        if offered is not None:
            hit = np.flatnonzero(offered[0] == j)
            row = int(hit[0]) if hit.size else None
        if clicked:
            pending = self._take_pending(user, j)
            x_pos = pending[1] if pending is not None else (
                offered[1][row] if row is not None else None)
            if x_pos is not None and offered is not None:
                self._learn_click(x_pos, offered[1], row)
                self._last_positive[user] = x_pos
                if self.view_negatives_on_click:
                    self._label_views(user, x_pos)
        elif row is not None and (user, j) not in self._pending:
            self._pending[(user, j)] = (ts, offered[1][row])
            self._pending_order.append((ts, user, j))
            self._pending_of.setdefault(user, {})[j] = None
        for s in self.sources.values():
            s.learn_one(user, item, ts, clicked)
        self.record_interaction(user, j, clicked)
        self.item_counts.learn_one(user, item, ts, clicked)
        if self.new_slots is not None:
            self.new_slots.observe(user, j, clicked)

    def record_interaction(self, user: str, j: int, clicked: bool) -> None:
        """Book ``user``'s view or click of item ``j``: seen (never recommended again), clicked,
        one more event of activity, and in the journal a write-back takes
        (:meth:`take_changes`): ``(j, clicked, first time seen)``."""
        new = self.mark_seen(user, j)
        if clicked:
            self.clicked.setdefault(user, set()).add(j)
        self.activity[user] = self.activity.get(user, 0) + 1
        if self.journal is not None:
            self.journal.setdefault(user, []).append((j, clicked, new))

    def forget_user(self, user: str) -> None:
        """Drop everything held about ``user`` here and in every source: they are then served
        as a user never seen, until their state is loaded again."""
        for held in (self.seen, self._seen_idx, self.clicked, self.activity,
                     self._last_positive, self._offered):
            held.pop(user, None)
        for s in self.sources.values():
            s.forget_user(user)
        if self.new_slots is not None:
            self.new_slots.forget_user(user)

    def forget_seen(self, user: str) -> None:
        """Drop what ``user`` has seen here (before their state is loaded from elsewhere)."""
        self.seen.pop(user, None)
        self._seen_idx.pop(user, None)

    def mark_seen(self, user: str, j: int) -> bool:
        """Never recommend item ``j`` to ``user`` again (kept as a set and, for building the
        batch's exclusion mask quickly, as a growing index array); whether it is new."""
        seen = self.seen.setdefault(user, set())
        if j in seen:
            return False
        seen.add(j)
        n, arr = self._seen_idx.get(user, (0, np.empty(8, dtype=np.int64)))
        if n == 2 * self.max_seen:  # keep the latest max_seen: trimming in bulk stays O(1)
            dropped = arr[: n - self.max_seen].tolist()
            seen.difference_update(dropped)
            self.clicked.get(user, set()).difference_update(dropped)
            arr[: self.max_seen] = arr[n - self.max_seen: n]
            n = self.max_seen
        elif n == len(arr):
            arr = np.concatenate([arr, np.empty(n, dtype=np.int64)])
        arr[n] = j
        self._seen_idx[user] = (n + 1, arr)
        return True

    def seen_items(self, user: str) -> np.ndarray:
        """Indices of the items ``user`` has viewed or clicked, oldest first."""
        n, arr = self._seen_idx.get(user, (0, np.empty(0, dtype=np.int64)))
        return arr[:n]

    def recent_history(self, user: str, n: int) -> tuple[np.ndarray, np.ndarray]:
        """The user's latest ``n`` distinct items, oldest first, and which were clicked."""
        items = self.seen_items(user)[-n:]
        clicked = self.clicked.get(user, ())
        return items, np.fromiter((j in clicked for j in items.tolist()), bool, len(items))

    def _learn_click(self, x_pos: np.ndarray, X: np.ndarray, row: int | None) -> None:
        others = np.arange(len(X)) if row is None else np.delete(np.arange(len(X)), row)
        n_neg = min(self.negatives_per_click, others.size)
        # Random rather than hard negatives: pairs against the ranker's own top picks make it
        # demote whatever it currently promotes (measured: HR@10 0.10 vs 0.17 on MovieLens).
        for r in self._rng.choice(others, n_neg, replace=False):
            self.ranker.learn_pair(x_pos, X[r])

    def _remember_offer(self, user: str, idx: np.ndarray, X: np.ndarray) -> None:
        """Keep the user's latest candidates and their features: the impression the ranker
        learns from when the user views or clicks one of them."""
        offered = self._offered
        offered.pop(user, None)
        offered[user] = (idx, X)
        if len(offered) > self.max_offers:
            offered.popitem(last=False)

    def add_item(self, item: str, ts: float, embedding: np.ndarray | None = None,
                 tags: Sequence[str] = ()) -> None:
        """Register a new item (an upload) so the freshness source can propose it at once, the
        sources that read content (content, student) too when its ``embedding`` is given, and
        the tag source when it carries ``tags``. A retired item comes back only with an upload
        made after its retirement; an older one (a replay) is ignored."""
        if not self.catalog.admits_upload(item, ts):
            return
        self.catalog.restore(item)
        self.catalog.mark_uploaded(self.catalog.add(item, ts))
        for s in self.sources.values():
            s.add_item(item, ts, embedding, tags)

    def add_items(self, uploads: Sequence[tuple[str, float, np.ndarray | None, Sequence[str]]]
                  ) -> None:
        """:meth:`add_item` for a batch of ``(item, ts, embedding, tags)``: the content index
        takes the batch's vectors in one update (a catalogue loaded at start, a batch of
        uploads). An item given twice keeps its last embedding; retired items as in
        :meth:`add_item`."""
        content = self.sources.get("content")
        vectors: dict[str, np.ndarray] = {}
        for item, ts, embedding, tags in uploads:
            if not self.catalog.admits_upload(item, ts):
                continue
            self.catalog.restore(item)
            self.catalog.mark_uploaded(self.catalog.add(item, ts))
            for s in self.sources.values():
                s.add_item(item, ts, None if s is content else embedding, tags)
            if embedding is not None and content is not None:
                vectors[item] = embedding
        if vectors:
            content.set_embeddings(list(vectors), np.stack(list(vectors.values())))

    def forget_item(self, item: str, ts: float = 0.0) -> None:
        """Retire ``item`` as of ``ts`` (taken down by its creator or by moderation): banned
        from every list from now on (the catalogue keeps its index), forgotten by every source,
        the item counts and the new-item places, and its later views and clicks are not
        learned. An upload made after ``ts`` brings it back (:meth:`add_item`).

        >>> blend = Blend(seed=0)
        >>> for n, item in enumerate(["a", "b", "c"]):
        ...     blend.add_item(item, ts=n)
        >>> blend.forget_item("b", ts=5)
        >>> sorted(r.item_id for r in blend.recommend("ann", k=5, now=5))
        ['a', 'c']
        >>> blend.add_item("b", ts=2)  # a replay of its upload: still retired
        >>> blend.add_item("b", ts=9)  # uploaded again, after the retirement
        >>> sorted(r.item_id for r in blend.recommend("ann", k=5, now=9))
        ['a', 'b', 'c']
        """
        j = self.catalog.retire(item, ts)
        for s in self.sources.values():
            s.forget_item(item)
        self.item_counts.forget_item(item)
        if j is not None and self.new_slots is not None:
            self.new_slots.forget_item(j)

    # ---- recommending ---------------------------------------------------------------------

    def dense_for(self, n: int) -> bool:
        """Whether some active source scores the whole catalogue of ``n`` items per user."""
        return any(s.active and s.dense_at(n) for name, s in self.sources.items()
                   if name not in USER_INDEPENDENT)

    def search_exactly_below(self, n: int) -> None:
        """Catalogue size from which the sources propose through indexes rather than by
        scoring every item (:data:`~streamrec.models.vector_search.EXACT_BELOW` by default);
        tests set it low to compare both on a small catalogue."""
        for s in self.sources.values():
            s.exact_below = n

    def recommend(self, user: str, k: int = 10, exclude: Iterable[str] = (), now: float = 0.0,
                  *, shared: dict | None = None) -> list[Recommendation]:
        """The ``k`` best unseen items for ``user``, each with the sources that proposed it."""
        return self.recommend_many([user], k, now, [exclude], shared=shared)[0]

    def recommend_many(self, users: Sequence[str], k: int = 10, now: float = 0.0,
                       exclude: Sequence[Iterable[str]] | None = None, *,
                       shared: dict | None = None,
                       without: frozenset[str] = frozenset()) -> list[list[Recommendation]]:
        """One list per user, computed together: a micro-batch costs a few matrix operations
        rather than a few dozen numpy calls per user. ``exclude``: one list of item ids per
        user; ``shared``: the user-independent scores at ``now``, if already computed;
        ``without``: sources switched off for these lists (an A/B bucket's policy): they
        propose nothing and their features are zero, as for a source with no opinion.

        >>> blend = Blend(seed=0)
        >>> blend.add_item("a", ts=0.0)
        >>> [r.sources for r in blend.recommend_many(["u"], k=1)[0]]
        [('fresh',)]
        >>> blend.recommend_many(["u"], k=1, without=frozenset({"fresh"}))
        [[]]
        """
        n = len(self.catalog)
        if n == 0 or not users:
            return [[] for _ in users]
        shared = self.shared_scores(now) if shared is None else shared
        # Bounds the users x catalogue matrices, where sources still compute them.
        chunk = max(1, DENSE_CELLS // n) if self.dense_for(n) else 1024
        out: list[list[Recommendation]] = []
        self._without = without
        try:
            for a in range(0, len(users), chunk):
                out += self._recommend_chunk(users[a:a + chunk], k, now, shared,
                                             exclude[a:a + chunk] if exclude else None)
        finally:
            self._without = frozenset()
        return out

    def _recommend_chunk(self, users, k, now, shared, exclude) -> list[list[Recommendation]]:
        n, U = len(self.catalog), len(users)
        index = self.catalog.index
        banned = Banned(n, [
            np.concatenate([self.seen_items(user),
                            np.array([index[i] for i in exclude[r] if i in index], np.int64)])
            if exclude and exclude[r] else self.seen_items(user)
            for r, user in enumerate(users)],
            everyone=self.catalog.retired_rows)  # retired items are nobody's
        rows, items, cols, values = self._proposals(users, banned, now, shared)
        # Unique (user, item) pairs, grouped by user; a bit per proposing source.
        keys, inverse = np.unique(rows * n + items, return_inverse=True)
        # A source proposes an item once per user, so summing the bits is or-ing them.
        bits = np.bincount(inverse, 1 << cols, minlength=len(keys)).astype(np.int64)
        rows, idx = keys // n, keys % n
        starts = np.searchsorted(rows, np.arange(U + 1))
        X = self._features(users, rows, idx, starts, values, now)
        p = self.ranker.score_many(X)
        order = best_first_by_row(rows, p)
        place = np.empty(len(order), np.int64)
        place[order] = np.arange(len(order)) - starts[rows[order]]  # rank within the user
        # Python objects only for what a list can show: each user's top k and new-item picks.
        top = order[place[order] < k]
        top_bounds = np.searchsorted(rows[top], np.arange(U + 1)).tolist()
        picks = self._new_item_picks(rows, order, place, X, k, U) \
            if self.new_slots is not None else None
        shown = top if picks is None else np.concatenate([top, picks[0]])
        shown_l, cat_l = shown.tolist(), idx[shown].tolist()
        item_l = [self.catalog.ids[j] for j in cat_l]
        score_l = p[shown].tolist()
        label_l = [self._labels[b] for b in bits[shown].tolist()]
        rec = dict(zip(shown_l, map(Recommendation, item_l, score_l, label_l)))
        cat = dict(zip(shown_l, cat_l))
        X32 = X.astype(np.float32)  # what offers keep: one conversion, copied per user
        starts_l = starts.tolist()
        out = []
        for r, user in enumerate(users):
            a, b = starts_l[r], starts_l[r + 1]
            if a == b:
                out.append([])
                continue
            # Copies, not views: a view would keep the whole batch's arrays alive.
            self._remember_offer(user, idx[a:b].copy(), X32[a:b].copy())
            chosen = shown_l[top_bounds[r]:top_bounds[r + 1]]
            if picks is not None:
                chosen = self._with_new_items(user, chosen, picks[1][r], cat, k)
            out.append([rec[i] for i in chosen])
        return out

    def _new_item_picks(self, rows: np.ndarray, order: np.ndarray, place: np.ndarray,
                        X: np.ndarray, k: int, U: int
                        ) -> tuple[np.ndarray, list[list[int]]]:
        """Each user's best new items by content (positions in the batch arrays, best first, at
        most ``new_slots.max_slots``): among their ``new_pool`` freshest candidates with a
        content opinion, outside the ranker's top ``k`` (``place``: rank within the user). One
        sort for the whole batch. Returns them as one array and per user."""
        ok = (place >= k) & (X[:, 3] > 1.0 / (1.0 + self.new_pool)) & (X[:, 11] != 0.0)
        eligible = order[ok[order]]  # in the ranker's order, which breaks content's ties
        ranked = eligible[best_first_by_row(rows[eligible], X[eligible, 15])]
        er = rows[ranked]
        first = np.searchsorted(er, np.arange(U))
        ranked = ranked[np.arange(len(ranked)) - first[er] < self.new_slots.max_slots]
        bounds = np.searchsorted(rows[ranked], np.arange(U + 1)).tolist()
        ranked_l = ranked.tolist()
        return ranked, [ranked_l[bounds[r]:bounds[r + 1]] for r in range(U)]

    def _with_new_items(self, user: str, top: list[int], picks: list[int],
                        cat: dict[int, int], k: int) -> list[int]:
        """The user's top ``k`` candidates (positions in the batch arrays), some of the last
        places maybe given to their ``picks`` (:meth:`_new_item_picks`); ``cat``: the
        catalogue index at each position."""
        item_of = {cat[i]: i for i in top}
        item_of.update((cat[i], i) for i in picks)
        chosen = self.new_slots.choose(user, [cat[i] for i in top], [cat[i] for i in picks], k)
        return [item_of[j] for j in chosen]
