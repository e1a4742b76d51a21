"""The simulated app of a closed-loop experiment (`streamrec experiment`): it shows each user
the latest list the system published for them at the top of their page, fills the rest
organically, and measures what each A/B bucket's lists earned.

Two buckets are served by the app itself: ``oracle`` (the user's unseen items with the
highest true affinity at that moment, which only a simulator knows) and ``organic`` (no
list: the organic page's top slots stand in for it). The others are served by the worker.

>>> import itertools
>>> from streamrec.simulator.world import World, WorldConfig
>>> world = World(WorldConfig(n_users=40, n_items=60, images=False, seed=3))
>>> app = ClosedLoopApp(world, lambda user: ("oracle", "organic")[int(user[1:]) % 2])
>>> for ev in itertools.islice(world.events(0.0, feed=app.feed), 4000):
...     app.on_event(ev)
>>> report = app.report()
>>> report["oracle"]["ctr"] > report["organic"]["ctr"]
True
>>> low, high = report["oracle"]["ctr_ci95"]
>>> low <= report["oracle"]["ctr"] <= high
True
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from streamrec.records.events import Click, Event, Upload, View
from streamrec.simulator.world import World

#: Buckets the app serves itself.
APP_SERVED = ("oracle", "organic")
#: Bootstrap resamples of users behind every interval.
RESAMPLES = 1000


@dataclass
class UserTally:
    """One user's counts in their bucket: list impressions and clicks, page loads and clicks
    anywhere on the page, and the list impressions and clicks of new uploads."""

    impressions: int = 0
    clicks: int = 0
    sessions: int = 0
    listed_sessions: int = 0  #: page loads whose top had at least one listed item
    page_clicks: int = 0
    new_impressions: int = 0
    new_clicks: int = 0


@dataclass
class BucketTally:
    users: dict[str, UserTally] = field(default_factory=dict)
    items_shown: set[str] = field(default_factory=set)
    #: New item -> simulated time of its first list impression / click in this bucket.
    first_impression: dict[str, float] = field(default_factory=dict)
    first_click: dict[str, float] = field(default_factory=dict)
    #: Each received list's latency (its trigger's production to its publication), ms.
    latencies: list[float] = field(default_factory=list)


def bootstrap_ratio(num: np.ndarray, den: np.ndarray, seed: int = 0,
                    resamples: int = RESAMPLES) -> tuple[float, float]:
    """95% percentile bootstrap interval of ``sum(num) / sum(den)``, resampling users (the
    rows) with replacement, so a busy user's correlated impressions move together.

    >>> bootstrap_ratio(np.array([1, 2, 3, 4]), np.array([10, 10, 10, 10]))
    (0.15, 0.35)
    """
    n = len(num)
    if n == 0 or den.sum() == 0:
        return (float("nan"), float("nan"))
    w = np.random.default_rng(seed).multinomial(n, np.full(n, 1.0 / n), size=resamples)
    d = w @ den
    r = np.divide(w @ num, d, out=np.full(resamples, np.nan), where=d > 0)
    lo, hi = np.nanpercentile(r, [2.5, 97.5])
    return (round(float(lo), 4), round(float(hi), 4))


class ClosedLoopApp:
    """Feeds a :class:`World` (``world.events(feed=app.feed)``) and tallies its events.

    ``bucket_of(user_id)`` names each user's bucket, by the same hash as the worker's
    (``streamrec.engine.buckets``); ``slots``: the top places of a page a list fills (half
    the page by default); ``new_within_s``: the horizon of the share of new items clicked.
    """

    def __init__(self, world: World, bucket_of: Callable[[str], str],
                 slots: int | None = None, new_within_s: float = 60.0) -> None:
        self.world = world
        self.bucket_of = bucket_of
        self.slots = slots or world.cfg.page_size // 2
        self.new_within_s = new_within_s
        self.latest: dict[str, list[str]] = {}
        self.seen: dict[str, set[str]] = {}
        self.on_page: dict[str, set[str]] = {}   #: the list shown on each user's current page
        self.in_list: dict[tuple[str, str], bool] = {}  #: (user, item) viewed from the list?
        self.tally: dict[str, BucketTally] = {}
        self.uploaded: dict[str, float] = {}     #: new items (after the catalogue) -> upload time
        self.catalogue_done = False
        self.last_ts = 0.0
        self.lists: Counter = Counter()          #: lists received, by bucket
        self.policies: dict[str, Counter] = {}   #: bucket -> the policies its lists name
        self.sources: dict[str, Counter] = {}    #: bucket -> its listed items' sources
        self.misfiled = 0                        #: lists whose bucket differs from the app's
        self.students: Counter = Counter()       #: lists by the student in service

    def _user(self, user: str) -> tuple[str, UserTally]:
        bucket = self.bucket_of(user)
        t = self.tally.setdefault(bucket, BucketTally())
        return bucket, t.users.setdefault(user, UserTally())

    def on_list(self, payload: dict) -> None:
        """A list published on ``recommendations``: the user's latest."""
        user = payload["user_id"]
        bucket = payload.get("bucket")
        self.lists[bucket] += 1
        self.policies.setdefault(bucket, Counter())[payload.get("policy")] += 1
        self.sources.setdefault(bucket, Counter()).update(
            s for i in payload["items"] for s in i["sources"])
        if bucket != self.bucket_of(user):
            self.misfiled += 1
        if "latency_ms" in payload:
            self.tally.setdefault(self.bucket_of(user), BucketTally()).latencies.append(
                payload["latency_ms"])
        self.students[(payload.get("model_version") or {}).get("student")] += 1
        self.latest[user] = [i["item_id"] for i in payload["items"]]

    def start_measuring(self) -> None:
        """Forget the figures so far (a warm-up's); users keep their lists and histories,
        and only items uploaded from now on count as new."""
        self.tally.clear()
        self.uploaded.clear()
        self.lists.clear()
        self.policies.clear()
        self.sources.clear()
        self.students.clear()
        self.misfiled = 0

    def feed(self, user: str) -> list[str]:
        """What the app shows at the top of ``user``'s page now."""
        bucket, tally = self._user(user)
        tally.sessions += 1
        seen = self.seen.get(user, set())
        if bucket == "organic":
            shown: list[str] = []
        elif bucket == "oracle":
            aff = self.world.affinity(int(user[1:]))
            order = np.argsort(-aff)
            shown = [f"i{j}" for j in order[: self.slots + len(seen)].tolist()
                     if f"i{j}" not in seen][: self.slots]
        else:  # the worker's list, less what the user has seen since it was made
            shown = [i for i in self.latest.get(user, ()) if i not in seen][: self.slots]
        self.on_page[user] = set(shown)
        tally.listed_sessions += bool(shown) or bucket == "organic"
        return shown

    def on_event(self, ev: Event, sent_at: float | None = None) -> None:
        self.last_ts = max(self.last_ts, ev.ts or 0.0)
        if isinstance(ev, Upload):
            if self.catalogue_done:
                self.uploaded[ev.item_id] = ev.ts
            return
        self.catalogue_done = True
        bucket, user = self._user(ev.user_id)
        tally = self.tally[bucket]
        new = ev.item_id in self.uploaded
        if isinstance(ev, View):
            self.seen.setdefault(ev.user_id, set()).add(ev.item_id)
            hit = ev.item_id in self.on_page.get(ev.user_id, ()) if bucket != "organic" \
                else ev.position is not None and ev.position < self.slots
            self.in_list[(ev.user_id, ev.item_id)] = hit
            if hit:
                user.impressions += 1
                tally.items_shown.add(ev.item_id)
                if new:
                    user.new_impressions += 1
                    tally.first_impression.setdefault(ev.item_id, ev.ts)
        elif isinstance(ev, Click):
            user.page_clicks += 1
            if self.in_list.pop((ev.user_id, ev.item_id), False):
                user.clicks += 1
                if new:
                    user.new_clicks += 1
                    tally.first_click.setdefault(ev.item_id, ev.ts)

    def report(self, buckets: tuple[str, ...] = ()) -> dict[str, dict]:
        """Per bucket: CTR of list impressions, clicks per page load, catalogue coverage and
        the new uploads' figures, with 95% bootstrap intervals over users."""
        n_items = len(self.world.item_quality)
        out = {}
        for name in dict.fromkeys((*buckets, *sorted(self.tally))):
            t = self.tally.get(name, BucketTally())
            u = list(t.users.values())
            col = {f: np.array([getattr(x, f) for x in u], dtype=float)
                   for f in UserTally.__dataclass_fields__}
            imp, clk = int(col["impressions"].sum()), int(col["clicks"].sum())
            nimp, nclk = int(col["new_impressions"].sum()), int(col["new_clicks"].sum())
            sessions = int(col["sessions"].sum())
            # New items old enough to have had the whole horizon within the run.
            old = [i for i, ts in self.uploaded.items() if ts <= self.last_ts - self.new_within_s]
            within = [i for i in old if i in t.first_click
                      and t.first_click[i] - self.uploaded[i] <= self.new_within_s]
            to_imp = [t.first_impression[i] - self.uploaded[i] for i in t.first_impression]
            to_click = [t.first_click[i] - self.uploaded[i] for i in t.first_click]
            out[name] = {
                "users": len(u),
                "impressions": int(imp),
                "clicks": int(clk),
                "ctr": round(clk / imp, 4) if imp else None,
                "ctr_ci95": _interval(col["clicks"], col["impressions"]),
                "sessions": int(sessions),
                "clicks_per_session": round(float(col["page_clicks"].sum()) / sessions, 4)
                if sessions else None,
                "clicks_per_session_ci95": _interval(col["page_clicks"], col["sessions"]),
                "coverage": round(len(t.items_shown) / n_items, 4) if n_items else None,
                "listed_session_share": round(col["listed_sessions"].sum() / sessions, 4)
                if sessions else None,
                "list_latency_ms_p50": _median(t.latencies),
                "new_items": len(self.uploaded),
                "new_item_impressions": int(nimp),
                "new_item_clicks": int(nclk),
                "new_item_ctr": round(nclk / nimp, 4) if nimp else None,
                "new_item_ctr_ci95": _interval(col["new_clicks"], col["new_impressions"]),
                "new_item_first_impression_s_median": _median(to_imp),
                "new_item_first_click_s_median": _median(to_click),
                "new_item_clicked_within_share": round(len(within) / len(old), 4) if old else None,
            }
        return out


def _interval(num: np.ndarray, den: np.ndarray) -> list[float] | None:
    lo, hi = bootstrap_ratio(num, den)
    return None if np.isnan(lo) else [lo, hi]


def _median(v: list[float]) -> float | None:
    return round(float(np.median(v)), 2) if v else None

