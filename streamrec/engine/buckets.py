"""A/B buckets: users split by a stable hash of their id into named buckets, each served by a
named policy (docs/configuration.md, ``STREAMREC_BUCKETS``).

The hash is BLAKE2b of the user id, not Python's ``hash`` (salted per process), so every
worker, the simulated app and a restarted worker put a user in the same bucket.

>>> buckets = Buckets.parse("blend:80,blend_no_content:10,random:10")
>>> buckets.of("u1")
Bucket(name='blend', policy='blend', weight=80)
>>> buckets.of("u2").name, buckets.of("u2").name  # the same in every process, every time
('random', 'random')
>>> from collections import Counter
>>> shares = Counter(buckets.of(f"u{i}").name for i in range(10_000))
>>> [round(shares[b.name] / 10_000, 2) for b in buckets.buckets]
[0.8, 0.1, 0.1]
>>> Buckets.parse("a=blend:50,b=blend:50").of("u7")
Bucket(name='b', policy='blend', weight=50)
>>> Buckets.parse("blend:80,magic:20")
Traceback (most recent call last):
...
ValueError: STREAMREC_BUCKETS: unknown policy 'magic' in 'magic:20'; policies: blend, blend_no_content, blend_no_student, popularity, random, oracle, organic
"""

from __future__ import annotations

import hashlib
import re
from bisect import bisect_right
from dataclasses import dataclass
from itertools import accumulate

#: Policies a worker serves, and the sources each switches off in the blend.
BLEND_WITHOUT: dict[str, frozenset[str]] = {
    "blend": frozenset(),
    # What uploads carry (content, tags) and what reads it (the student): behaviour only, as
    # `streamrec evaluate`'s blend_no_content.
    "blend_no_content": frozenset({"content", "tags", "student"}),
    "blend_no_student": frozenset({"student"}),
}
#: Policies served apart from the blend (streamrec/engine/policies.py).
OWN_PATH = ("popularity", "random")
#: Policies the app serves itself (an experiment's controls): the worker publishes an empty
#: list for these users.
APP_SERVED = ("oracle", "organic")
POLICIES = (*BLEND_WITHOUT, *OWN_PATH, *APP_SERVED)

DEFAULT = "blend:100"
_ENTRY = re.compile(r"^(?P<name>[a-z0-9_-]+)(?:=(?P<policy>[a-z0-9_-]+))?:(?P<weight>\d+)$")


@dataclass(frozen=True)
class Bucket:
    name: str
    policy: str
    weight: int


def slot_of(user: str, modulus: int) -> int:
    """``user``'s place in ``[0, modulus)``: the first 8 bytes of BLAKE2b of the id.

    >>> slot_of("u1", 100)
    25
    """
    digest = hashlib.blake2b(user.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % modulus


class Buckets:
    """The buckets of a spec ``NAME[=POLICY]:WEIGHT,...`` (the policy defaults to the name)."""

    def __init__(self, buckets: list[Bucket]) -> None:
        if not buckets:
            raise ValueError("STREAMREC_BUCKETS: no bucket")
        self.buckets = buckets
        self._ends = list(accumulate(b.weight for b in buckets))
        self._cache: dict[str, Bucket] = {}

    @classmethod
    def parse(cls, spec: str) -> Buckets:
        out: list[Bucket] = []
        for raw in spec.split(","):
            entry = raw.strip()
            m = _ENTRY.match(entry)
            if m is None:
                raise ValueError(f"STREAMREC_BUCKETS: {entry!r} is not NAME[=POLICY]:WEIGHT "
                                 f"(e.g. blend:80,random:20)")
            name, weight = m["name"], int(m["weight"])
            policy = m["policy"] or name
            if policy not in POLICIES:
                raise ValueError(f"STREAMREC_BUCKETS: unknown policy {policy!r} in {entry!r}; "
                                 f"policies: {', '.join(POLICIES)}")
            if weight <= 0:
                raise ValueError(f"STREAMREC_BUCKETS: weight of {name!r} must be positive")
            if any(b.name == name for b in out):
                raise ValueError(f"STREAMREC_BUCKETS: bucket {name!r} named twice")
            out.append(Bucket(name, policy, weight))
        return cls(out)

    def of(self, user: str) -> Bucket:
        b = self._cache.get(user)
        if b is None:
            b = self.buckets[bisect_right(self._ends, slot_of(user, self._ends[-1]))]
            if len(self._cache) > 1_000_000:  # bounded: a cache, not state
                self._cache.clear()
            self._cache[user] = b
        return b

    def spec(self) -> str:
        return ",".join(b.name + ("" if b.policy == b.name else f"={b.policy}") + f":{b.weight}"
                        for b in self.buckets)
