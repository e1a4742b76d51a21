"""The lists of each A/B bucket's policy (streamrec/engine/buckets.py): the blend with some
sources switched off, or one of two baselines served apart from the blend's ranker.

>>> from streamrec.models.blend import Blend
>>> blend = Blend(seed=0)
>>> for item in ("a", "b", "c"):
...     blend.add_item(item, ts=0.0)
>>> for user in ("x", "y"):
...     blend.learn_one(user, "b", ts=1.0)
>>> blend.learn_one("x", "c", ts=2.0)
>>> [r.item_id for r in popularity_lists(blend, ["z", "x"], k=2, now=2.0)[1]]
[]
>>> [r.item_id for r in popularity_lists(blend, ["z"], k=2, now=2.0)[0]]
['b', 'c']
>>> first = random_lists(blend, ["z"], k=2, now=2.0)
>>> first == random_lists(blend, ["z"], k=2, now=2.0), len(first[0])
(True, 2)
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence

import numpy as np

from streamrec.models.base import Recommendation
from streamrec.models.blend import Blend
from streamrec.models.candidates import head_by_score


def _banned(blend: Blend, user: str, exclude: Iterable[str]) -> set[int]:
    index = blend.catalog.index
    return set(blend.seen_items(user).tolist()) | {index[i] for i in exclude if i in index}


def popularity_lists(blend: Blend, users: Sequence[str], k: int, now: float,
                     exclude: Sequence[Iterable[str]] | None = None,
                     shared: dict | None = None) -> list[list[Recommendation]]:
    """Each user's ``k`` most popular unseen items by the decayed popularity source alone
    (items with no popularity yet are not proposed)."""
    src = blend.sources["popularity"]
    if shared is not None and "popularity" in shared:
        v, order = shared["popularity"]
    else:
        v, order = src.ranked_all(now)
    out = []
    for r, user in enumerate(users):
        banned = _banned(blend, user, exclude[r] if exclude else ())
        head = order[: k + len(banned)] if order is not None \
            else head_by_score(v, min(len(v), k + len(banned)))
        chosen = [j for j in head.tolist() if j not in banned and v[j] > src.floor][:k]
        out.append([Recommendation(blend.catalog.ids[j], float(v[j]), ("popularity",))
                    for j in chosen])
    return out


def random_lists(blend: Blend, users: Sequence[str], k: int, now: float,
                 exclude: Sequence[Iterable[str]] | None = None) -> list[list[Recommendation]]:
    """``k`` items drawn uniformly from each user's unseen catalogue, seeded by the user and
    ``now``: the same batch ranked again gives the same lists."""
    n = len(blend.catalog)
    out = []
    for r, user in enumerate(users):
        banned = _banned(blend, user, exclude[r] if exclude else ())
        seed = hashlib.blake2b(f"{user}|{now!r}".encode(), digest_size=8).digest()
        rng = np.random.default_rng(int.from_bytes(seed, "big"))
        drawn = rng.choice(n, size=min(n, k + len(banned)), replace=False).tolist()
        chosen = [j for j in drawn if j not in banned][:k]
        out.append([Recommendation(blend.catalog.ids[j], 0.0, ("random",)) for j in chosen])
    return out
