"""What is popular this hour: decayed popularity on a short half-life, beside the day-long one.

Which horizon predicts the next click depends on the deployment (a news feed's hits last hours,
a film catalogue's months), so the blend carries both and its ranker learns from the clicks how
much each one counts, rather than one half-life being set for one data set."""

from __future__ import annotations

from streamrec.models.catalog import Catalog
from streamrec.models.popularity import DecayedPopularity


class Trending(DecayedPopularity):
    """:class:`DecayedPopularity` with a one-hour half-life, under its own name. Each worker
    counts the events of its own partitions (it is not shared through Redis: a share of the
    traffic ranks items as the whole does, and it refills within a half-life after a restart).

    Examples
    --------
    >>> t = Trending(half_life_s=60)
    >>> for ts, item in [(0, "old"), (0, "old"), (0, "old"), (120, "new"), (120, "new")]:
    ...     t.learn_one("u", item, ts)
    >>> [(r.item_id, r.score) for r in t.recommend("u", k=2, now=120)]
    [('new', 2.0), ('old', 0.75)]
    """

    name = "trending"

    def __init__(self, catalog: Catalog | None = None, half_life_s: float = 3600.0,
                 view_weight: float = 0.5, click_weight: float = 1.0) -> None:
        super().__init__(catalog, half_life_s, view_weight, click_weight)
