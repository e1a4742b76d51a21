"""Freshness: newly uploaded items, so they are recommendable before anyone has seen them."""

from __future__ import annotations

import numpy as np

from streamrec.online_models.base import CandidateSource
from streamrec.online_models.catalog import Catalog


class Freshness(CandidateSource):
    """Scores items by how recently they appeared: ``2 ** (-age / half_life_s)``.

    Items enter through :meth:`add` (an upload) or their first interaction. Only items younger
    than ``max_age_s`` are proposed.

    Examples
    --------
    >>> fresh = Freshness(half_life_s=60)
    >>> fresh.add("old", ts=0); fresh.add("new", ts=100)
    >>> fresh.recommend("anyone", k=5, now=120)
    [('new', 0.7937005259840998), ('old', 0.25)]
    """

    name = "fresh"

    def __init__(self, catalog: Catalog | None = None, half_life_s: float = 3600.0,
                 max_age_s: float = 7 * 86400.0) -> None:
        self.catalog = catalog if catalog is not None else Catalog()
        self.half_life_s = half_life_s
        self.max_age_s = max_age_s

    def add(self, item: str, ts: float) -> None:
        self.catalog.add(item, ts)

    def learn_one(self, user: str, item: str, ts: float, clicked: bool = True) -> None:
        self.catalog.add(item, ts)

    def score_all(self, user: str | None = None, now: float = 0.0) -> np.ndarray:
        age = np.maximum(now - self.catalog.first_seen, 0.0)
        s = 2.0 ** (-age / self.half_life_s)
        s[age > self.max_age_s] = 0.0
        return s
