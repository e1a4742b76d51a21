"""Places in a list for new items chosen by content, as many as clicks say they are worth."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import numpy as np


class NewItemSlots:
    """Gives up to ``max_slots`` of a list's last places to the new items that best match the
    user's content profile, sizing the number online.

    A linear ranker trained on every click weighs content for the few clicks on new items no
    better than for the many on established ones, so a new item that fits a user rarely makes
    their top ``k``. Each list therefore also records two counterfactual rankings: ``picks``,
    the best-matching new items outside the ranker's top ``k`` (slot ``r`` would add pick
    ``r``), and ``tail``, the ranker's items from place ``k`` upwards (slot ``r`` would drop
    tail item ``r``). A later click (or a view that turns into one) on pick ``r`` is a point
    for slot ``r``, on tail item ``r`` a point against; scores decay by ``decay`` per point.
    The list gets the number of slots whose running total is best (none while nothing has been
    learned, or when the established items win, as on MovieLens where a movie's first weeks
    draw few of its clicks).

    Examples
    --------
    >>> slots = NewItemSlots(max_slots=2)
    >>> slots.choose("ann", ranked=[10, 11, 12], picks=[20, 21], k=3)  # nothing learned yet
    [10, 11, 12]
    >>> for _ in range(3):  # ann keeps clicking the best new pick: slot 1 pays
    ...     _ = slots.choose("ann", ranked=[10, 11, 12], picks=[20, 21], k=3)
    ...     slots.observe("ann", 20, clicked=True)
    >>> slots.size, slots.choose("ann", ranked=[10, 11, 12], picks=[20, 21], k=3)
    (1, [10, 11, 20])
    """

    def __init__(self, max_slots: int = 6, decay: float = 0.999,
                 max_users: int = 20_000) -> None:
        self.max_slots = max_slots
        self.decay = decay
        self.max_users = max_users
        #: Decayed points per slot (1-based slot r at index r - 1).
        self.gain = np.zeros(max_slots)
        self.size = 0
        #: user -> (picks, tail) of their latest list: pick r (role +r) is ``picks[r - 1]``,
        #: tail item r (role -r) is ``tail[r - 1]``.
        self._roles: OrderedDict[str, tuple[list[int], list[int]]] = OrderedDict()
        #: (user, item) -> role, for items viewed now and maybe clicked later.
        self._viewed: OrderedDict[tuple[str, int], int] = OrderedDict()

    def choose(self, user: str, ranked: Sequence[int], picks: Sequence[int], k: int
               ) -> list[int]:
        """The list: the ranker's top ``k`` of ``ranked`` (best first) with its last places
        given to the first ``size`` of ``picks`` (best new items first, none in the top)."""
        top = list(ranked[:k])
        picks = list(picks[: self.max_slots])
        tail = top[::-1][: self.max_slots]
        self._roles.pop(user, None)
        self._roles[user] = (picks, tail)  # roles are looked up when the user acts
        if len(self._roles) > self.max_users:
            self._roles.popitem(last=False)
        n = min(self.size, len(picks), len(top))
        return top[: len(top) - n] + picks[:n] if n else top

    def forget_user(self, user: str) -> None:
        """Drop the roles of ``user``'s latest list (an idle user evicted from memory)."""
        self._roles.pop(user, None)

    def forget_item(self, item: int) -> None:
        """Drop item ``item`` (a retired one) from every list's roles; the other items keep
        theirs."""
        for picks, tail in self._roles.values():
            for roles in (picks, tail):
                if item in roles:
                    roles[roles.index(item)] = -1
        for key in [key for key in self._viewed if key[1] == item]:
            del self._viewed[key]

    def observe(self, user: str, item: int, clicked: bool) -> None:
        """A view or click of ``item`` by ``user``, before the next list is chosen."""
        role = self._viewed.pop((user, item), None) if clicked else None
        if role is None:
            picks, tail = self._roles.get(user, ((), ()))
            if item in picks:
                role = picks.index(item) + 1
            elif item in tail:
                role = -(tail.index(item) + 1)
            else:
                return
        if not clicked:  # a view: judged if it turns into a click
            self._viewed[(user, item)] = role
            if len(self._viewed) > self.max_users:
                self._viewed.popitem(last=False)
            return
        self.gain *= self.decay
        self.gain[abs(role) - 1] += 1.0 if role > 0 else -1.0
        totals = np.concatenate([[0.0], np.cumsum(self.gain)])
        self.size = int(np.argmax(totals))  # the first best: ties keep fewer slots
