"""What retiring an item costs a worker and Redis, once the models are warm.

    python benchmarks/retire.py [--items 5000] [--users 10000] [--events 100000] [--json]

One engine (the worker's models, ranking and write-back, without Kafka, content off) and a
redis-server started here. ``--events`` views and clicks (one in four a click) of
``--users`` users over ``--items`` uploaded items, popularity Zipf-like, in micro-batches of
500; then:

- the 20 most popular items are retired one at a time (the worst case: the longest neighbour
  lists, in the most users' recent items): the time the models take to forget each
  (``Blend.forget_item``: every neighbour list and user scanned) and the time of Redis's
  sweep (``SharedState.retire_items``, one script);
- a batch's ranking (250 users) with 0, 20 and 1,020 items marked retired (the banned mask
  and the sources' retired rows), the fastest of 5 turns each;
- the steady cost of a refresh on a worker that already knows the 1,020 retirements (the
  whole ``{app}:retired`` hash read and checked).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from streamrec.clients import redis_client  # noqa: E402
from streamrec.config import Settings  # noqa: E402
from streamrec.embedded import (  # noqa: E402
    REDIS_MODEL_SETTINGS,
    free_port,
    redis_binary,
    redis_ready,
    wait_ready,
)
from streamrec.engine.build import build_engine  # noqa: E402
from streamrec.engine.engine import Incoming  # noqa: E402
from streamrec.records.events import Click, View, encode  # noqa: E402

BATCH = 500
torch.set_num_threads(1)  # as the worker runs it (streamrec/models/base.py, smallest_per_row)


def ms(seconds: float) -> float:
    return round(seconds * 1000.0, 2)


async def run(args) -> dict:
    port = free_port()
    proc = subprocess.Popen([redis_binary(), "--port", str(port), "--bind", "127.0.0.1",
                             "--save", "", *REDIS_MODEL_SETTINGS],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_ready("redis", proc, lambda: redis_ready(port), 30.0, "")
        settings = Settings(redis=f"redis://127.0.0.1:{port}/0", content=False,
                            snapshot_dir="runs/snapshots")
        r = redis_client(settings)
        engine = build_engine(settings, r, "retire")
        await engine.state.load()
        blend, now = engine.blend, time.time() - 86400
        for j in range(args.items):
            blend.add_item(f"i{j}", now)
        rng = np.random.default_rng(0)
        weights = 1.0 / np.arange(1, args.items + 1) ** 0.8
        items = rng.choice(args.items, args.events, p=weights / weights.sum())
        users = rng.integers(args.users, size=args.events)
        clicks = rng.random(args.events) < 0.25
        for a in range(0, args.events, BATCH):
            batch = [Incoming(encode((Click if clicks[n] else View)(
                f"e{n}", f"u{users[n]}", f"i{items[n]}", now + n * 0.01)),
                "clicks" if clicks[n] else "views", 0, n, now) for n in range(a, min(
                    a + BATCH, args.events))]
            await engine.interactions(batch)
            if a % (20 * BATCH) == 0:
                print(f"\rwarming: {a + BATCH:,} / {args.events:,}", end="", file=sys.stderr)
        print(file=sys.stderr)
        co = blend.sources["covisitation"]
        lists = [len(co.neighbours.get(j, ())) for j in range(20)]

        forget, sweep = [], []
        for j in range(20):
            t0 = time.perf_counter()
            blend.forget_item(f"i{j}", now + args.events)
            t1 = time.perf_counter()
            await engine.state.retire_items([(f"i{j}", now + args.events, "benchmark")])
            forget.append(t1 - t0)
            sweep.append(time.perf_counter() - t1)

        many = [f"i{j}" for j in range(args.items - 1000, args.items)]
        for item in many:
            blend.forget_item(item, now + args.events)
        await engine.state.retire_items([(i, now + args.events, None) for i in many])
        # The mask's share of ranking: the same models with 0, 20 or 1,020 items marked
        # retired in the catalogue, in turns (the machine is shared: the fastest of 5 each).
        who = [f"u{u}" for u in range(250)]
        marked = {0: [], 20: [f"i{j}" for j in range(20)]}
        marked[1020] = marked[20] + many
        ranking = {n: [] for n in marked}
        for _ in range(5):
            for n, retired in marked.items():
                for item in marked[1020]:
                    blend.catalog.restore(item)
                for item in retired:
                    blend.catalog.retire(item, now + args.events)
                t0 = time.perf_counter()
                engine.recommend_many(who, now=now + args.events)
                ranking[n].append(time.perf_counter() - t0)

        steady = []
        for _ in range(7):
            t0 = time.perf_counter()
            remote = await r.hgetall(f"{settings.app_id}:retired")
            await engine.state._apply_retirements(remote, loading=False)
            steady.append(time.perf_counter() - t0)
        await r.aclose()
    finally:
        proc.terminate()
        proc.wait()
    return {
        "items": args.items, "users": args.users, "events": args.events,
        "neighbours_of_retired_median": int(statistics.median(lists)),
        "forget_item_ms_median": ms(statistics.median(forget)),
        "forget_item_ms_max": ms(max(forget)),
        "redis_sweep_ms_median": ms(statistics.median(sweep)),
        "redis_sweep_ms_max": ms(max(sweep)),
        "ranking_250_users_ms_none_retired": ms(min(ranking[0])),
        "ranking_250_users_ms_20_retired": ms(min(ranking[20])),
        "ranking_250_users_ms_1020_retired": ms(min(ranking[1020])),
        "refresh_retired_check_ms_1020": ms(statistics.median(steady)),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--items", type=int, default=5000)
    ap.add_argument("--users", type=int, default=10_000)
    ap.add_argument("--events", type=int, default=100_000)
    ap.add_argument("--json", action="store_true", help="end with one line of JSON results")
    args = ap.parse_args()
    if args.items < 1100:
        ap.error("--items must be at least 1,100 (1,020 of them are retired)")
    res = asyncio.run(run(args))
    print(f"warm models: {res['items']:,} items, {res['users']:,} users, "
          f"{res['events']:,} events")
    print(f"retiring one of the 20 most popular items ({res['neighbours_of_retired_median']} "
          f"neighbours, median): models {res['forget_item_ms_median']} ms (max "
          f"{res['forget_item_ms_max']}), Redis sweep {res['redis_sweep_ms_median']} ms (max "
          f"{res['redis_sweep_ms_max']})")
    print(f"ranking 250 users: {res['ranking_250_users_ms_none_retired']} ms with none "
          f"retired, {res['ranking_250_users_ms_20_retired']} ms with 20, "
          f"{res['ranking_250_users_ms_1020_retired']} ms with 1,020")
    print(f"a refresh's check of 1,020 known retirements: "
          f"{res['refresh_retired_check_ms_1020']} ms")
    print(f"machine: {res['machine']}")
    if args.json:
        print(json.dumps(res))


if __name__ == "__main__":
    main()
