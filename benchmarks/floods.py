"""Floods of new ids: what a stream of new users, of made-up items, or one very long history
costs the worker's memory and Redis, with the bounds on.

    python benchmarks/floods.py [--users 400000] [--max-users 20000] [--unknown 50000]
                                [--max-unknown 10000] [--json]

One engine (the worker's models, ranking and write-back, without Kafka) and a redis-server
started here. Three floods, in micro-batches of 500 events, each event a view:

- ``--users`` distinct new user ids, one view each of one of 2,000 uploaded items, with
  ``--max-users`` users kept in memory: the process's resident memory while the cap fills
  (bytes per user) and over the last third of the users, once the fixed-size buffers (the
  200,000 event ids kept to spot duplicates, clicks waiting for an item's embedding) are full
  (bytes per further user, which the cap holds near 0), and Redis's memory per user;
- ``--unknown`` views of distinct items never uploaded, with ``--max-unknown`` of them taken:
  the catalogue's size and the dead letters;
- one user with 2,000 items of 110-character ids, then 100 more events: the bytes each write
  sends to Redis, beside the size of the whole state a write used to send.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import random
import subprocess
import sys
import time
from pathlib import Path

import orjson
import redis.asyncio as aioredis

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
from streamrec.engine.engine import Engine, Incoming  # noqa: E402
from streamrec.records.events import View, encode  # noqa: E402
from streamrec.security import plaintext  # noqa: E402

BATCH = 500


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


async def redis_used(r: aioredis.Redis) -> int:
    return int((await r.info("memory"))["used_memory"])


def batch_of(events: list[tuple[str, str]], start: int, now: float) -> list[Incoming]:
    return [Incoming(encode(View(f"e{start + n}", user, item, now)), "views", 0, start + n, now)
            for n, (user, item) in enumerate(events)]


async def feed(engine: Engine, events: list[tuple[str, str]], offset: int, progress: str
               ) -> tuple[int, int]:
    """Run ``events`` through ``engine`` in batches; the dead letters and the next offset."""
    dead = 0
    now = time.time()
    for a in range(0, len(events), BATCH):
        out = await engine.interactions(batch_of(events[a:a + BATCH], offset + a, now))
        dead += out.stats.get("dead_letter", 0)
        if progress and a % (20 * BATCH) == 0:
            print(f"\r{progress}: {a + BATCH:,} / {len(events):,}", end="", file=sys.stderr)
    if progress:
        print(file=sys.stderr)
    return dead, offset + len(events)


async def run(args) -> dict:
    port = free_port()
    proc = subprocess.Popen([redis_binary(), "--port", str(port), "--bind", "127.0.0.1",
                             "--save", "", *REDIS_MODEL_SETTINGS],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_ready("redis", proc, lambda: redis_ready(port), 30.0, "")
        settings = plaintext(Settings(), redis=f"redis://127.0.0.1:{port}/0", content=False,
                             snapshot_dir="runs/snapshots", max_users=args.max_users,
                             max_unknown_items=args.max_unknown)
        r = redis_client(settings)
        engine = build_engine(settings, r, "floods")
        await engine.state.load()
        now = time.time()
        for j in range(2000):
            engine.blend.add_item(f"i{j}", now)
        rng = random.Random(0)
        users = [(f"new-user-{n}", f"i{rng.randrange(2000)}") for n in range(args.users)]
        offset = 0
        # Warm up (first batches allocate the models' arrays), then measure.
        warm = min(5000, args.max_users // 4)
        _, offset = await feed(engine, users[:warm], offset, "")
        rss0, redis0 = rss_bytes(), await redis_used(r)
        _, offset = await feed(engine, users[warm:args.max_users], offset, "users to the cap")
        rss_cap = rss_bytes()
        tail = args.users // 3
        _, offset = await feed(engine, users[args.max_users:-tail], offset, "users past the cap")
        rss_full = rss_bytes()
        _, offset = await feed(engine, users[-tail:], offset, "the last third")
        rss_end, redis_end = rss_bytes(), await redis_used(r)
        held = len(engine.state.loaded_users)
        filled = args.max_users - warm

        unknown = [(f"flood-user-{n % 1000}", f"made-up-{n}") for n in range(args.unknown)]
        before = len(engine.blend.catalog)
        dead, offset = await feed(engine, unknown, offset, "items never uploaded")
        catalogue_growth = len(engine.blend.catalog) - before

        long_ids = [("long", f"item-{'x' * 100}-{n}") for n in range(2000)]
        _, offset = await feed(engine, long_ids, offset, "")
        whole = len(orjson.dumps({"seen": [i for _, i in long_ids],
                                  "clicked": [], "recent": [], "n": 2000}))
        sent = []
        for n in range(100):
            await r.config_resetstat()
            _, offset = await feed(engine, [("long", f"i{n}")], offset, "")
            sent.append(int((await r.info("stats"))["total_net_input_bytes"]))
        sent.sort()
    finally:
        proc.terminate()
        proc.wait()
    return {
        "users": args.users, "max_users": args.max_users, "users_held": held,
        "worker_bytes_per_user": round((rss_cap - rss0) / filled),
        "worker_bytes_per_user_past_cap": round((rss_end - rss_full) / tail),
        "worker_rss_mib": round(rss_end / 2**20, 1),
        "redis_bytes_per_user": round((redis_end - redis0) / (args.users - warm)),
        "unknown_items_sent": args.unknown, "max_unknown_items": args.max_unknown,
        "catalogue_growth": catalogue_growth, "unknown_dead_lettered": dead,
        "long_history_write_bytes_p50": sent[len(sent) // 2],
        "long_history_whole_state_bytes": whole,
        "machine": f"{platform.machine()}, {__import__('os').cpu_count()} cores",
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--users", type=int, default=400_000)
    ap.add_argument("--max-users", type=int, default=20_000)
    ap.add_argument("--unknown", type=int, default=50_000)
    ap.add_argument("--max-unknown", type=int, default=10_000)
    ap.add_argument("--json", action="store_true", help="end with one line of JSON results")
    args = ap.parse_args()
    if args.users < 2 * args.max_users:
        ap.error("--users must be at least twice --max-users, to show what happens past the cap")
    res = asyncio.run(run(args))
    print(f"new users: {res['users']:,} with {res['max_users']:,} kept in memory "
          f"(held at the end: {res['users_held']:,})")
    print(f"  worker: {res['worker_bytes_per_user']:,} B per user up to the cap, "
          f"{res['worker_bytes_per_user_past_cap']:,} B per user over the last third "
          f"(resident {res['worker_rss_mib']} MiB)")
    print(f"  redis:  {res['redis_bytes_per_user']:,} B per user")
    print(f"items never uploaded: {res['unknown_items_sent']:,} sent, catalogue grew by "
          f"{res['catalogue_growth']:,} (cap {res['max_unknown_items']:,}), "
          f"{res['unknown_dead_lettered']:,} dead-lettered")
    print(f"a user with 2,000 long item ids: {res['long_history_write_bytes_p50']:,} B sent to "
          f"Redis per event (median); the whole state is {res['long_history_whole_state_bytes']:,} B")
    print(f"machine: {res['machine']}")
    if args.json:
        print(json.dumps(res))


if __name__ == "__main__":
    main()
