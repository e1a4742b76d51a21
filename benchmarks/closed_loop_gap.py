"""Why the closed-loop blend earns about what popularity does: the experiment's loop replayed in
one process, with what the live run cannot see measured beside the clicks.

The world, the app (streamrec/simulator/closed_loop.py), the buckets' hash and the policies
are those of `streamrec experiment`; the worker is replaced by one in-process blend that every
bucket's events train (shared learning, as in the live A/B test), and each list is computed at
the user's page load (no list latency). No student is served (`blend` here is the live run's
`blend_no_student`, which matched `blend` in every live run).

Beside each bucket's CTR it reports, from the world's click model (click chance
``sigmoid(click_sharpness * (affinity - 0.6))``, views ``1 / (1 + position) ** 0.7``):

- ``expected_ctr``: the mean click chance of the listed places as shown (no sampling noise);
- ``oracle_expected_ctr``: the same of the user's top places by true affinity, at the same
  page loads: the ceiling;
- ``profile_expected_ctr``: of the top places by the cosine of the true topics of the items
  the user clicked so far (plus the item's true quality): what a perfect reader of the user's
  history and of the items' topics would list; the ceiling of learning from the clicks a
  user has made;
- ``encoded_profile_expected_ctr``: the same reader with the items' vectors as the system
  has them (encoded text and image, or the supplied ones) in place of their true topics:
  the ceiling of a profile over that representation;
- ``popularity_overlap``: the share of the listed places that popularity's list for the same
  user at the same moment also has in its first places;
- ``slot_ctr``: CTR of the list's places (0-3) and of the organic places below (4-7);
- all of it by the user's clicks before the page load (0, 1-4, 5-19, 20+).

With ``--source-lists``, at each of the blend buckets' pages every candidate source's own list
(its top places among the user's unseen items) is scored the same way (``source_lists``:
``expected_ctr`` by source, over the pages where the source had a list, ``pages_with_list``),
beside the share of the listed places each source proposed (``proposed_share``): which
sources would earn more than the list the ranker makes of them.
``--dump PATH`` writes one JSON line per measured page with a list (bucket, user, clicks so
far, each listed place's item, proposing sources, true affinity and click chance), to read
what a bucket shows to whom.

    python benchmarks/closed_loop_gap.py --json
    python benchmarks/closed_loop_gap.py --label-window 5 --json
    python benchmarks/closed_loop_gap.py --embeddings --source-lists --dump pages.jsonl
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import time
from collections import defaultdict

import numpy as np

from streamrec.content.item_encoder import ItemEncoder
from streamrec.engine.buckets import BLEND_WITHOUT, Buckets
from streamrec.engine.policies import popularity_lists, random_lists
from streamrec.evaluation.prequential import encode_uploads
from streamrec.experiment import DEFAULT_BUCKETS
from streamrec.models.blend import Blend
from streamrec.models.catalog import Catalog
from streamrec.models.content import ContentSource
from streamrec.models.covisitation import CoVisitation
from streamrec.models.freshness import Freshness
from streamrec.models.isgd import ISGD
from streamrec.models.popularity import DecayedPopularity
from streamrec.models.tag_profile import TagProfile
from streamrec.models.trending import Trending
from streamrec.records.events import Click, Upload, View
from streamrec.simulator.closed_loop import ClosedLoopApp
from streamrec.simulator.worlds import make_world

HISTORY_BINS = ((0, 0, "0"), (1, 4, "1-4"), (5, 19, "5-19"), (20, 10**9, "20+"))


def _bin(n: int) -> str:
    return next(name for lo, hi, name in HISTORY_BINS if lo <= n <= hi)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


class Probe:
    """Expected click chances of each page's listed places, and of the ceilings', by bucket
    and by the user's clicks so far."""

    def __init__(self, world, slots: int) -> None:
        self.world = world
        self.slots = slots
        self.view_p = 1.0 / (1.0 + np.arange(slots)) ** 0.7
        self.sums: dict[tuple[str, str], np.ndarray] = defaultdict(lambda: np.zeros(8))
        #: item index -> the vector the system holds for it (zeros until it is known)
        self.vectors = np.zeros((0, 0), np.float32)
        #: (bucket, source) -> pages, of them with a list from the source, summed expected CTR
        #: of those lists, listed places, of them proposed by the source.
        self.source_sums: dict[tuple[str, str], np.ndarray] = defaultdict(lambda: np.zeros(5))
        self.clicked: dict[str, list[int]] = defaultdict(list)

    def add_vector(self, j: int, v: np.ndarray) -> None:
        if j >= len(self.vectors) or self.vectors.shape[1] != len(v):
            grown = np.zeros((max(2 * len(self.vectors), j + 1), len(v)), np.float32)
            if self.vectors.shape[1] == len(v):
                grown[: len(self.vectors)] = self.vectors
            self.vectors = grown
        self.vectors[j] = v

    def _profile_top(self, vectors: np.ndarray, hist: list[int], unseen: np.ndarray) -> list[int]:
        """The top places by the cosine of ``vectors`` with the mean of the clicked items',
        plus the item's true quality."""
        n = len(unseen)
        t = vectors[:n]
        if len(t) < n:
            t = np.vstack([t, np.zeros((n - len(t), t.shape[1]), t.dtype)])
        prof = t[hist].mean(axis=0)
        cos = t @ prof / (np.linalg.norm(t, axis=1) * np.linalg.norm(prof) + 1e-12)
        est = cos + self.world.cfg.quality_weight * self.world.item_quality[:n]
        return np.argsort(-np.where(unseen, est, -np.inf))[: self.slots].tolist()

    def _expected(self, p: np.ndarray, idx: list[int]) -> float:
        w = self.view_p[: len(idx)]
        return float((p[idx] * w).sum() / w.sum()) if idx else float("nan")

    def page(self, bucket: str, user: str, shown: list[str], seen: set[str],
             popular: list[str], source_lists: dict[str, list[str]] | None = None,
             proposers: dict[str, tuple[str, ...]] | None = None) -> dict:
        """Book one page load's listed places ``shown``; ``source_lists``: each source's own
        list at the same moment, ``proposers``: the sources that proposed each listed item.
        Returns the page's figures (for ``--dump``)."""
        u = int(user[1:])
        c = self.world.cfg
        aff = self.world.affinity(u)
        p = _sigmoid(c.click_sharpness * (aff - 0.6))
        unseen = np.ones(len(aff), bool)
        unseen[[int(i[1:]) for i in seen if int(i[1:]) < len(aff)]] = False
        oracle = np.argsort(-np.where(unseen, aff, -np.inf))[: self.slots].tolist()
        hist = self.clicked[user]
        profile = self._profile_top(self.world.item_topics, hist, unseen) if hist else []
        encoded = (self._profile_top(self.vectors, hist, unseen)
                   if hist and self.vectors.size else [])
        idx = [int(i[1:]) for i in shown if int(i[1:]) < len(aff)]
        row = np.array([1.0, self._expected(p, idx), self._expected(p, oracle),
                        self._expected(p, profile) if profile else 0.0, float(bool(profile)),
                        len(set(shown) & set(popular)) / len(shown) if shown else 0.0,
                        self._expected(p, encoded) if encoded else 0.0, float(bool(encoded))])
        for key in ((bucket, "all"), (bucket, _bin(len(hist)))):
            self.sums[key] += np.nan_to_num(row)
        for name, lst in (source_lists or {}).items():
            s = self.source_sums[(bucket, name)]
            own = [int(i[1:]) for i in lst if int(i[1:]) < len(aff)]
            s[0] += 1
            s[1] += bool(own)
            s[2] += self._expected(p, own) if own else 0.0
            s[3] += len(shown)
            s[4] += sum(name in (proposers or {}).get(i, ()) for i in shown)
        return {"bucket": bucket, "user": user, "clicks": len(hist),
                "expected_ctr": round(float(row[1]), 4), "oracle_expected_ctr": round(
                    float(row[2]), 4),
                "places": [{"item": i, "sources": list((proposers or {}).get(i, ())),
                            "affinity": round(float(aff[int(i[1:])]), 4),
                            "p_click": round(float(p[int(i[1:])]), 4)}
                           for i in shown if int(i[1:]) < len(aff)]}

    def report(self) -> dict:
        out: dict[str, dict] = {}
        for (bucket, hb), s in sorted(self.sums.items()):
            n = s[0]
            out.setdefault(bucket, {})[hb] = {
                "pages": int(n), "expected_ctr": round(s[1] / n, 4),
                "oracle_expected_ctr": round(s[2] / n, 4),
                "profile_expected_ctr": round(s[3] / s[4], 4) if s[4] else None,
                "encoded_profile_expected_ctr": round(s[6] / s[7], 4) if s[7] else None,
                "popularity_overlap": round(s[5] / n, 4)}
        return out

    def source_report(self) -> dict:
        out: dict[str, dict] = {}
        for (bucket, name), s in sorted(self.source_sums.items()):
            out.setdefault(bucket, {})[name] = {
                "pages_with_list": round(s[1] / s[0], 4) if s[0] else None,
                "expected_ctr": round(s[2] / s[1], 4) if s[1] else None,
                "proposed_share": round(s[4] / s[3], 4) if s[3] else None}
        return out


def blend_of(args: argparse.Namespace) -> Blend:
    """The benchmark's blend; the models' own defaults for what the options leave unset."""
    c = Catalog()
    content_kw, blend_kw = {}, {}
    if args.content_view_weight is not None:
        content_kw["view_weight"] = args.content_view_weight
    if args.half_life_clicks is not None:  # 0: no decay by clicks
        content_kw["half_life_clicks"] = args.half_life_clicks or None
    if args.view_negatives_on_click is not None:
        blend_kw["view_negatives_on_click"] = args.view_negatives_on_click
    return Blend(c, sources=[DecayedPopularity(c), Trending(c), CoVisitation(c),
                             ISGD(c, seed=args.seed), Freshness(c), TagProfile(c),
                             ContentSource(c, **content_kw)],
                 seed=args.seed, label_window_s=args.label_window,
                 view_negative_weight=args.view_negative_weight, **blend_kw)


def run(args: argparse.Namespace) -> dict:
    world = make_world(args.world, args.users, args.items, seed=args.seed, events_per_s=args.rate,
                       embeddings=args.embeddings)
    buckets = Buckets.parse(DEFAULT_BUCKETS)
    policy_of = {}

    def bucket(user: str) -> str:
        if user not in policy_of:
            policy_of[user] = buckets.of(user).name
        return policy_of[user]

    app = ClosedLoopApp(world, bucket)
    blend = blend_of(args)
    dump = open(args.dump, "w") if args.dump else None  # noqa: SIM115 (closed below)
    probe = Probe(world, app.slots)
    slot = defaultdict(lambda: np.zeros(4))  # bucket -> list views, clicks, organic views, clicks
    view_pos: dict[tuple[str, str], int] = {}
    measuring = False
    t_now = [0.0]

    def feed(user: str) -> list[str]:
        b = bucket(user)
        now = t_now[0]
        seen_now = app.seen.get(user, set())
        proposers = None
        if b in BLEND_WITHOUT or b in ("popularity", "random"):
            if b == "popularity":
                lst = popularity_lists(blend, [user], 10, now)[0]
            elif b == "random":
                lst = random_lists(blend, [user], 10, now)[0]
            else:
                lst = blend.recommend_many([user], 10, now, without=BLEND_WITHOUT[b])[0]
                proposers = {r.item_id: r.sources for r in lst}
            app.latest[user] = [r.item_id for r in lst]
        shown = app.feed(user)
        if measuring and b != "organic":  # its places are the world's: no list to probe
            popular = [r.item_id for r in popularity_lists(blend, [user], app.slots, now)[0]]
            own = None
            if args.source_lists and proposers is not None:
                own = {name: [r.item_id for r in src.recommend(user, app.slots, seen_now, now)]
                       for name, src in blend.sources.items()
                       if src.active and name not in BLEND_WITHOUT[b]}
            figures = probe.page(b, user, shown, seen_now, popular, own, proposers)
            if dump is not None:
                dump.write(json.dumps({"ts": now, **figures}) + "\n")
        return shown

    encoder = None if args.embeddings else ItemEncoder()

    def encode(uploads: list) -> dict[str, np.ndarray]:
        if encoder is None:  # supplied vectors, normalised as the worker takes them
            return encode_uploads(uploads)
        out = {}
        for a in range(0, len(uploads), 64):
            chunk = uploads[a:a + 64]
            res = encoder.encode(chunk)
            out.update({chunk[p].item_id: v for p, v in zip(res.positions, res.vectors)})
        return out

    encoded: dict[str, np.ndarray] = {}
    stream = world.events(1_700_000_000.0, feed=feed)
    catalogue = list(itertools.islice(stream, world.cfg.n_items))
    t0 = time.perf_counter()
    encoded.update(encode(catalogue))
    for item, vec in encoded.items():
        probe.add_vector(int(item[1:]), vec)
    for ev in catalogue:
        blend.add_item(ev.item_id, ev.ts, encoded.get(ev.item_id), ev.tags)
        app.on_event(ev)
    encode_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    n = 0
    for ev in stream:
        n += 1
        if n == args.warmup + 1:
            measuring = True
            app.start_measuring()
        t_now[0] = ev.ts
        app.on_event(ev)
        if isinstance(ev, Upload):
            vec = encode([ev]).get(ev.item_id)
            if vec is not None:
                probe.add_vector(int(ev.item_id[1:]), vec)
            blend.add_item(ev.item_id, ev.ts, vec, ev.tags)
            continue
        if isinstance(ev, View):
            view_pos[(ev.user_id, ev.item_id)] = ev.position
            if measuring:
                slot[bucket(ev.user_id)][0 if ev.position < app.slots else 2] += 1
        elif isinstance(ev, Click):
            pos = view_pos.pop((ev.user_id, ev.item_id), None)
            if measuring and pos is not None:
                slot[bucket(ev.user_id)][1 if pos < app.slots else 3] += 1
            probe.clicked[ev.user_id].append(int(ev.item_id[1:]))
        blend.learn_one(ev.user_id, ev.item_id, ev.ts, isinstance(ev, Click))
        if n >= args.warmup + args.events:
            break
    if dump is not None:
        dump.close()
    report = app.report(tuple(b.name for b in buckets.buckets))
    figures = probe.report()
    source_figures = probe.source_report()
    out = {"world": args.world, "seed": args.seed, "users": world.cfg.n_users,
           "items": world.cfg.n_items, "warmup": args.warmup, "events": args.events,
           "label_window_s": args.label_window,
           "view_negative_weight": args.view_negative_weight,
           # As the models ran (the code under test may predate some of these).
           "view_negatives_on_click": getattr(blend, "view_negatives_on_click", False),
           "content_view_weight": blend.sources["content"].view_weight,
           "half_life_clicks": getattr(blend.sources["content"], "half_life_clicks", None),
           "embeddings": "supplied topic vectors" if args.embeddings else "encoders",
           "encode_s": round(encode_s, 1), "loop_s": round(time.perf_counter() - t0, 1),
           "buckets": {}}
    for name, r in report.items():
        s = slot[name]
        out["buckets"][name] = {
            "ctr": r["ctr"], "ctr_ci95": r["ctr_ci95"], "impressions": r["impressions"],
            "new_item_ctr": r["new_item_ctr"], "new_item_ctr_ci95": r["new_item_ctr_ci95"],
            "list_slot_ctr": round(s[1] / s[0], 4) if s[0] else None,
            "organic_slot_ctr": round(s[3] / s[2], 4) if s[2] else None,
            "list_views": int(s[0]), "organic_views": int(s[2]),
            "by_history": figures.get(name, {})}
        if name in source_figures:
            out["buckets"][name]["source_lists"] = source_figures[name]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--world", default="default")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--rate", type=float, default=200.0, help="simulated events per second")
    ap.add_argument("--warmup", type=int, default=20_000)
    ap.add_argument("--events", type=int, default=40_000)
    ap.add_argument("--label-window", type=float, default=1800.0,
                    help="the blend's label_window_s (event-time seconds)")
    ap.add_argument("--users", type=int, default=None, help="the world's users (default: its own)")
    ap.add_argument("--items", type=int, default=None, help="the world's items (default: its own)")
    ap.add_argument("--view-negative-weight", type=float, default=0.3)
    ap.add_argument("--view-negatives-on-click", default=None,
                    action=argparse.BooleanOptionalAction,
                    help="a click ranks the user's views waiting for their label below it "
                         "(default: the blend's)")
    ap.add_argument("--content-view-weight", type=float, default=None,
                    help="the content profile's weight of a view (default: the source's)")
    ap.add_argument("--half-life-clicks", type=float, default=None,
                    help="the content profile's half-life in clicks, 0 for none "
                         "(default: the source's)")
    ap.add_argument("--source-lists", action="store_true",
                    help="score every candidate source's own list at the blend buckets' pages")
    ap.add_argument("--dump", metavar="PATH",
                    help="one JSON line per measured page with a list")
    ap.add_argument("--embeddings", action="store_true",
                    help="uploads carry their topic vectors (no encoders)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    out = run(args)
    print(f"{args.world} world, seed {args.seed}, {out['users']:,} users, {out['items']:,} "
          f"items: {args.warmup:,} warm-up + {args.events:,} measured events, label window "
          f"{args.label_window:g} s; {os.cpu_count()} cores")
    print(f"{'bucket':18} {'CTR':>6} {'(95% CI)':>15} {'list':>6} {'organic':>7} "
          f"{'E[CTR]':>7} {'oracle':>7} {'profile':>7} {'encoded':>7} {'pop∩':>5}")
    for name, b in out["buckets"].items():
        a = b["by_history"].get("all", {})
        ci = b["ctr_ci95"] or [float("nan")] * 2
        print(f"{name:18} {b['ctr'] or 0:6.3f} ({ci[0]:.3f}-{ci[1]:.3f}) "
              f"{b['list_slot_ctr'] or 0:6.3f} {b['organic_slot_ctr'] or 0:7.3f} "
              f"{a.get('expected_ctr', 0):7.3f} {a.get('oracle_expected_ctr', 0):7.3f} "
              f"{a.get('profile_expected_ctr') or 0:7.3f} "
              f"{a.get('encoded_profile_expected_ctr') or 0:7.3f} "
              f"{a.get('popularity_overlap', 0):5.2f}")
    for name, b in out["buckets"].items():
        if "source_lists" in b:
            print(f"{name}: E[CTR] of each source's own list (share of the listed places it "
                  "proposed): " + ", ".join(
                      f"{src} {f['expected_ctr'] or 0:.3f} ({f['proposed_share']:.2f})"
                      for src, f in b["source_lists"].items()))
    if args.json:
        print(json.dumps(out))


if __name__ == "__main__":
    main()
