"""Cold start: what content adds on clicks nobody could have predicted from behaviour, and the
most any model could add on the synthetic world.

For each world seed (and MovieLens-100K unless ``--no-movielens``), the blend and the blend
without content run the evaluation protocol over the log: the first half learned, the second
scored. Printed per log: HR@10, cold HR@10 (clicks on items nobody had clicked), new-item
HR@10 (those of them on items that appeared at most 1% of the log's span earlier: the
evaluation's definition) and the ratios with / without content.

The world knows its users' true tastes, so for it the script also prints a ceiling: the share
of scored new-item clicks whose item is in the top 10 of the 25 newest items the user has not
seen (what the freshness source proposes), ranked by the user's *true* affinity at the view.
A list that gave all ten places to new items, ordered by the truth, would reach that new-item
HR@10; no content model can do better on these clicks without giving up more of the list.

    python benchmarks/cold_start.py [--seeds 0 1 2] [--events 60000] [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from streamrec.evaluation.prequential import (  # noqa: E402
    blend_without_content,
    blend_without_student,
    encode_uploads,
    first_event_after,
    prequential,
)
from streamrec.records.events import Click, Upload, View  # noqa: E402
from streamrec.simulator.world import World, WorldConfig  # noqa: E402


def count_interactions(events) -> int:
    return sum(isinstance(e, (View, Click)) for e in events)


def world_log(seed: int, n_events: int, ceiling_head: int = 25):
    """The world's events and the ceiling measured while generating them (tastes drift, so
    the truth is read at each view)."""
    world = World(WorldConfig(n_users=2000, n_items=1000, seed=seed, events_per_s=1000.0))
    events = list(world.events(0.0, limit=n_events))
    clicked_pairs = {(e.user_id, e.item_id) for e in events if isinstance(e, Click)}
    window = 0.01 * (events[-1].ts - events[0].ts)
    score_from = first_event_after(events, count_interactions(events) // 2)
    # Generate again (same seed, same stream) to read the true affinities at each view.
    world = World(WorldConfig(n_users=2000, n_items=1000, seed=seed, events_per_s=1000.0))
    first: dict[str, float] = {}
    clicked: set[str] = set()
    seen: dict[str, set[int]] = {}
    hits = total = 0
    for n, ev in enumerate(world.events(0.0, limit=n_events)):
        if isinstance(ev, Upload):
            first[ev.item_id] = ev.ts
            continue
        j = int(ev.item_id[1:])
        user_seen = seen.setdefault(ev.user_id, set())
        if (n >= score_from and isinstance(ev, View) and ev.item_id not in clicked
                and (ev.user_id, ev.item_id) in clicked_pairs
                and ev.ts - first[ev.item_id] <= window):
            aff = world.affinity(int(ev.user_id[1:]))
            head = [k for k in range(len(aff) - 1, -1, -1) if k not in user_seen][:ceiling_head]
            total += 1
            hits += j in head and int((aff[head] > aff[j]).sum()) < 10
        if isinstance(ev, Click):
            clicked.add(ev.item_id)
        user_seen.add(j)
    return events, hits / max(total, 1)


def compare(events, embeddings) -> dict:
    models = {"blend": blend_without_student(), "blend_no_content": blend_without_content()}
    res = prequential(events, models, embeddings=embeddings, score_from=first_event_after(
        events, count_interactions(events) // 2))
    b, nb = res["models"]["blend"], res["models"]["blend_no_content"]
    ratio = lambda key: b[key] / nb[key] if nb[key] else float("inf")  # noqa: E731
    return {"clicks": res["clicks"], "cold_clicks": res["cold_clicks"],
            "new_item_clicks": res["new_item_clicks"],
            **{f"{name}_{key}": m[key] for name, m in (("blend", b), ("no_content", nb))
               for key in ("hr_at_10", "cold_hr_at_10", "new_item_hr_at_10")},
            "cold_ratio": ratio("cold_hr_at_10"), "new_item_ratio": ratio("new_item_hr_at_10"),
            "hr_ratio": ratio("hr_at_10")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--events", type=int, default=60_000)
    ap.add_argument("--no-movielens", action="store_true")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    rows: dict[str, dict] = {}
    for seed in args.seeds:
        t0 = time.perf_counter()
        events, ceiling = world_log(seed, args.events)
        rows[f"world-{seed}"] = {**compare(events, encode_uploads(events)),
                                 "true_affinity_ceiling": ceiling}
        print(f"world seed {seed}: {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    if not args.no_movielens:
        from streamrec.simulator.movielens import movielens_100k

        events = list(movielens_100k())
        rows["movielens-100k"] = compare(events, encode_uploads(events))
    print(f"{'log':16} {'HR@10 with/without':>20} {'cold HR@10':>16} {'x':>5} "
          f"{'new-item HR@10':>16} {'x':>5} {'ceiling':>8} (new-item clicks)")
    for name, r in rows.items():
        ceiling = r.get("true_affinity_ceiling")
        print(f"{name:16} {r['blend_hr_at_10']:9.4f} {r['no_content_hr_at_10']:.4f} "
              f"{r['blend_cold_hr_at_10']:7.3f} {r['no_content_cold_hr_at_10']:.3f} "
              f"{r['cold_ratio']:5.2f} {r['blend_new_item_hr_at_10']:7.3f} "
              f"{r['no_content_new_item_hr_at_10']:.3f} {r['new_item_ratio']:5.2f} "
              f"{'' if ceiling is None else f'{ceiling:8.3f}'} ({r['new_item_clicks']})")
    worlds = [r for k, r in rows.items() if k.startswith("world")]
    summary = {key: statistics.median(r[key] for r in worlds)
               for key in ("cold_ratio", "new_item_ratio", "hr_ratio", "true_affinity_ceiling")}
    print("world medians: " + ", ".join(f"{k} {v:.3f}" for k, v in summary.items()))
    if args.json:
        print(json.dumps({"logs": rows, "world_medians": summary}))


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
