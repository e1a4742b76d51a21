"""Per-item counts of clicks and interactions: which items nobody has clicked yet (cold), and
how often an item that is seen gets clicked."""

from __future__ import annotations

import numpy as np

from streamrec.models.base import RecordsChanges
from streamrec.models.catalog import Catalog, grow_rows


class ItemCounts(RecordsChanges):
    """Clicks and interactions (views and clicks) per item, never decayed.

    Not a candidate source: the blend reads it to tell cold items (no click yet) from warm
    ones, and for a smoothed click-through rate. With a ``journal`` (a dict, set by the shared
    state) every increment is also recorded there for the write-back to Redis.

    Examples
    --------
    >>> counts = ItemCounts()
    >>> for item, clicked in [("a", False), ("a", True), ("b", False)]:
    ...     counts.learn_one("u", item, ts=0, clicked=clicked)
    >>> idx = np.array([0, 1])  # a, b
    >>> counts.clicks_of(idx).tolist(), counts.events_of(idx).tolist()
    ([1.0, 0.0], [2.0, 1.0])
    >>> counts.click_rate(idx, prior_events=2).round(3).tolist()  # (clicks + 1) / (events + 2)
    [0.5, 0.333]
    """

    def __init__(self, catalog: Catalog | None = None) -> None:
        self.catalog = catalog if catalog is not None else Catalog()
        self._clicks = np.zeros(1024)
        self._events = np.zeros(1024)
        #: item -> [clicks, events] added since the last write-back (None: not recording).
        self.journal: dict[str, list[float]] | None = None

    def learn_one(self, user: str, item: str, ts: float, clicked: bool = True) -> None:
        j = self.catalog.add(item, ts)
        self._grow(j + 1)
        self._events[j] += 1.0
        self._clicks[j] += clicked
        if self.journal is not None:
            d = self.journal.setdefault(item, [0.0, 0.0])
            d[0] += clicked
            d[1] += 1.0

    def forget_item(self, item: str) -> None:
        """Drop ``item``'s counts (a retired item)."""
        j = self.catalog.index.get(item)
        if j is not None and j < len(self._clicks):
            self._clicks[j] = self._events[j] = 0.0
        if self.journal is not None:
            self.journal.pop(item, None)

    def _grow(self, n: int) -> None:
        self._clicks = grow_rows(self._clicks, n)
        self._events = grow_rows(self._events, n)

    def set_counts(self, clicks: dict[str, float], events: dict[str, float],
                   ts: float = 0.0) -> None:
        """Replace counts with shared ones (every worker's); an item not in the catalogue yet
        enters it as first seen at ``ts``."""
        for values, arr in ((clicks, "_clicks"), (events, "_events")):
            for item, v in values.items():
                j = self.catalog.add(item, ts)
                self._grow(j + 1)
                getattr(self, arr)[j] = v

    def clicks_of(self, idx: np.ndarray) -> np.ndarray:
        self._grow(len(self.catalog))
        return self._clicks[idx]

    def events_of(self, idx: np.ndarray) -> np.ndarray:
        self._grow(len(self.catalog))
        return self._events[idx]

    def unclicked(self) -> np.ndarray:
        """A mask over the catalogue: items nobody has clicked yet."""
        self._grow(len(self.catalog))
        return self._clicks[: len(self.catalog)] == 0

    def click_rate(self, idx: np.ndarray, prior_events: float = 10.0) -> np.ndarray:
        """Clicks per interaction, smoothed as if each item had ``prior_events`` more
        interactions and one more click (so one lucky click does not make an item a hit)."""
        return (self.clicks_of(idx) + 1.0) / (self.events_of(idx) + prior_events)
