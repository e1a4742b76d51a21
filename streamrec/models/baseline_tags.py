"""A simple baseline every evaluation reports: the user's tag counts, plus popularity."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from streamrec.models.base import CandidateSource
from streamrec.models.catalog import Catalog
from streamrec.models.popularity import DecayedPopularity
from streamrec.models.tag_profile import TagProfile


class TagCountBaseline(CandidateSource):
    """Counts of the tags of the items each user clicked (no decay, views ignored), with
    decayed popularity to order items within a tag and to serve users without a tag yet:
    ``score = share of the user's tag count on the item's tags + popularity_weight * popularity
    / the catalogue's top popularity``.

    If the full system cannot beat this, its other parts are not earning their keep on the
    data at hand (Dacrema et al., RecSys 2019).

    Examples
    --------
    >>> b = TagCountBaseline()
    >>> for item, tags in [("a", ["jazz"]), ("b", ["jazz"]), ("c", ["rock"]), ("d", ["jazz"])]:
    ...     b.add_item(item, 0.0, tags=tags)
    >>> for user, item in [("ann", "a"), ("bob", "c"), ("cid", "c"), ("dan", "b")]:
    ...     b.learn_one(user, item, ts=1.0)
    >>> [r.item_id for r in b.recommend("ann", k=3, exclude=["a"], now=1.0)]
    ['b', 'd', 'c']
    """

    name = "baseline_tags"

    def __init__(self, catalog: Catalog | None = None, popularity_weight: float = 0.1,
                 half_life_s: float = 86400.0) -> None:
        self.catalog = catalog if catalog is not None else Catalog()
        self.profile = TagProfile(self.catalog, half_life_s=None, view_weight=0.0)
        self.popularity = DecayedPopularity(self.catalog, half_life_s=half_life_s)
        self.popularity_weight = popularity_weight

    def add_item(self, item: str, ts: float, embedding: np.ndarray | None = None,
                 tags: Sequence[str] = ()) -> None:
        self.profile.add_item(item, ts, tags=tags)

    def forget_user(self, user: str) -> None:
        self.profile.forget_user(user)

    def forget_item(self, item: str) -> None:
        super().forget_item(item)
        self.profile.forget_item(item)
        self.popularity.forget_item(item)

    def learn_one(self, user: str, item: str, ts: float, clicked: bool = True) -> None:
        if clicked:
            self.profile.learn_one(user, item, ts)
        self.popularity.learn_one(user, item, ts, clicked)

    def score_many(self, users: Sequence[str], now: float = 0.0) -> np.ndarray:
        S = self.profile.score_many(users, now).astype(np.float64)
        S += self.popularity_weight * self.popularity.share_of_top(now)
        return S

    def score_all(self, user: str, now: float = 0.0) -> np.ndarray:
        return self.score_many([user], now)[0]
