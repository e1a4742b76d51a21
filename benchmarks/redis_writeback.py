"""The write-back's cost in Redis, by how redis-server encodes the co-visitation zsets.

    python benchmarks/redis_writeback.py [--events 30000] [--batch 500] [--json]

Two redis-servers side by side: one with Redis's default (zsets of up to 128 members in the
compact encoding, where each ZINCRBY scans and rewrites the list) and one started as the
embedded runtime starts it (``REDIS_MODEL_SETTINGS``: always skip lists). The throughput
benchmark's world is learnt by two identical blends in micro-batches of ``--batch`` events,
and after each batch each blend's write-back (:meth:`SharedState.write_back`: counters,
co-visitation pairs both ways, item vectors, user states, offsets) goes to its own server,
alternating which goes first. Reported per batch (medians): the time Redis spent in the
write-back's Lua call (``INFO commandstats``), the time until the write-back was applied as
the worker sees it; then each server's mean time per ZINCRBY and its memory at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

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
from streamrec.engine.shared_state import SharedState  # noqa: E402
from streamrec.models.blend import Blend  # noqa: E402
from streamrec.records.events import Click, Upload  # noqa: E402
from streamrec.security import plaintext  # noqa: E402
from streamrec.simulator.world import World, WorldConfig  # noqa: E402

SERVERS = {"default encoding": [], "skip lists (embedded)": REDIS_MODEL_SETTINGS}


async def eval_usec(r: aioredis.Redis) -> float:
    return float((await r.info("commandstats")).get("cmdstat_eval", {}).get("usec", 0.0))


async def run(args) -> dict:
    world = World(WorldConfig(n_users=5000, n_items=2000, seed=1))
    events = list(itertools.islice(world.events(time.time() - 3600), args.events))
    procs, sides = [], {}
    try:
        for name, settings in SERVERS.items():
            port = free_port()
            procs.append(subprocess.Popen(
                [redis_binary(), "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                 "--appendonly", "no", *settings], stdout=subprocess.DEVNULL))
            wait_ready("redis-server", procs[-1], lambda port=port: redis_ready(port), 10.0)
            r = redis_client(plaintext(Settings(), redis=f"redis://127.0.0.1:{port}/0"))
            blend = Blend(seed=0)
            sides[name] = {"r": r, "blend": blend, "state": SharedState(r, blend),
                           "lua_ms": [], "applied_ms": []}
        names = list(sides)
        batch: list = []
        n_batches = 0
        for ev in events:
            if isinstance(ev, Upload):
                for side in sides.values():
                    side["blend"].add_item(ev.item_id, ev.ts)
                continue
            batch.append(ev)
            if len(batch) < args.batch:
                continue
            order = names if n_batches % 2 == 0 else names[::-1]
            for name in order:
                side = sides[name]
                for e in batch:
                    side["blend"].learn_one(e.user_id, e.item_id, e.ts, isinstance(e, Click))
                    side["state"].touched_users.add(e.user_id)
                before = await eval_usec(side["r"])
                t = time.perf_counter()
                await side["state"].write_back({"interactions:0": n_batches}, {})
                side["applied_ms"].append((time.perf_counter() - t) * 1e3)
                side["lua_ms"].append((await eval_usec(side["r"]) - before) / 1e3)
            batch = []
            n_batches += 1
        out = {"batches": n_batches, "batch": args.batch,
               "machine": f"{platform.machine()}, {platform.python_version()}"}
        for name, side in sides.items():
            mem = (await side["r"].info("memory"))["used_memory"]
            zincrby = (await side["r"].info("commandstats")).get("cmdstat_zincrby", {})
            out[name] = {"lua_ms_per_batch": round(statistics.median(side["lua_ms"]), 2),
                         "applied_ms_per_batch": round(statistics.median(side["applied_ms"]), 2),
                         "zincrby_us": zincrby.get("usec_per_call"),
                         "used_memory_mb": round(mem / 1e6, 1)}
            await side["r"].aclose()
        return out
    finally:
        for p in procs:
            p.terminate()
            p.wait()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, default=30_000)
    ap.add_argument("--batch", type=int, default=500)
    ap.add_argument("--json", action="store_true", help="end with one JSON line")
    args = ap.parse_args()
    out = asyncio.run(run(args))
    print(f"{out['batches']} batches of {out['batch']} events, medians per batch:")
    for name in SERVERS:
        f = out[name]
        print(f"  {name:24s} Lua {f['lua_ms_per_batch']:6.2f} ms   applied after "
              f"{f['applied_ms_per_batch']:6.2f} ms   ZINCRBY {f['zincrby_us']} us   "
              f"memory {f['used_memory_mb']:6.1f} MB")
    a, b = (out[name]["lua_ms_per_batch"] for name in SERVERS)
    print(f"skip lists: Redis's Lua time {a / b:.2f}x shorter")
    if args.json:
        print(json.dumps(out))


if __name__ == "__main__":
    main()
