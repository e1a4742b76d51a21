"""What a catalogue of 10k to 1M items and an audience of 10k to 1M users cost one worker.

    python benchmarks/scale.py [--sizes 10000:10000 100000:100000 1000000:1000000]
                               [--events-per-user 2] [--drain 30000]
                               [--latency-seconds 20] [--skip-runtime] [--json]

Each size is ``ITEMS:USERS``. The world is cheap and synthetic (the simulator's per-event
cost grows with its catalogue): item vectors in 1,000 clusters (a centre plus noise of the
same norm, unit length, 128-d: the built-in space), one tag per item of 200, each user a
taste for one cluster; an interaction picks an item of the user's cluster (80%) or any item,
and is a click 30% of the time. Warming sends ``--events-per-user`` interactions per user.

Two phases per size:

- **Models** (in this process, the worker's :class:`~streamrec.models.blend.Blend`): the
  catalogue added, the warm interactions learned, then micro-batches of 100 users' lists:
  ``list_us`` is the CPU microseconds per list (median over ``--batches``, the sizes taking
  turns batch by batch once all are built), ``index_build_s``
  the CPU seconds the content source's inverted file took to build (0 below
  :data:`~streamrec.models.candidates.EXACT_BELOW` items, scored exactly; from 100,000 in
  the background), ``first_batch_s`` the wall seconds of the first batch of lists (which
  starts the build and, from 100,000 items, is answered by scoring every item meanwhile),
  ``recall_at_10``
  the share of its exact top 10 (scoring every item, the same banned items) the index found,
  over 200 users (1.0 where the catalogue is scored exactly; matrix factorisation searches
  its pool of most-learned items exactly).
- **Runtime** (a worker on the embedded runtime, 4 partitions): the catalogue published as
  uploads with their embeddings supplied (nothing is encoded), then
  ``--runtime-events-per-user`` warm interactions per user;
  ``events_per_s`` is how fast the worker drains a backlog of ``--drain`` more interactions
  (from its first to its last event processed, read from its counters in Redis), then it gets
  1,000 interactions per second for ``--latency-seconds`` and ``p50_ms_at_1000_eps`` /
  ``p99_ms_at_1000_eps`` are the event-to-list latencies of the lists published. Resident
  memory of the worker's two processes (``worker_rss_mib``) and Redis's ``used_memory``
  (``redis_used_mib``) are read at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import resource
import statistics
import sys
import time
from collections.abc import Iterator
from pathlib import Path

# One BLAS thread, as in the worker's model process (set before numpy loads).
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import orjson  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from streamrec.clients import kafka_consumer, redis_client  # noqa: E402
from streamrec.embedded import EmbeddedRuntime  # noqa: E402
from streamrec.engine.shared_state import read_stats  # noqa: E402
from streamrec.models.blend import Blend  # noqa: E402
from streamrec.models.candidates import Banned, DenseScores  # noqa: E402
from streamrec.processes import start_worker, wait_for_worker  # noqa: E402
from streamrec.records.events import Click, View  # noqa: E402
from streamrec.records.topics import RECOMMENDATIONS, ensure_topics  # noqa: E402
from streamrec.simulator.publish import publish  # noqa: E402

DIM, CLUSTERS, TAGS = 128, 1000, 200


class Synthetic:
    """The benchmark's world: clustered item vectors, one tag each, users with one taste."""

    def __init__(self, items: int, users: int, seed: int = 0) -> None:
        self.items, self.users = items, users
        rng = np.random.default_rng(seed)
        centres = rng.normal(size=(CLUSTERS, DIM)).astype(np.float32)
        self.cluster = rng.integers(0, CLUSTERS, items)
        self.members = np.argsort(self.cluster, kind="stable")
        self.first = np.searchsorted(self.cluster[self.members], np.arange(CLUSTERS + 1))
        self.taste = rng.integers(0, CLUSTERS, users)
        self._centres, self._seed = centres, seed
        self.rng = rng

    def vectors(self, a: int, b: int) -> np.ndarray:
        """Unit vectors of items ``a..b-1`` (drawn per block, the same on every call)."""
        rng = np.random.default_rng([self._seed, a])
        v = self._centres[self.cluster[a:b]]
        v = v + rng.normal(size=v.shape).astype(np.float32) * np.sqrt(DIM) / np.linalg.norm(
            v, axis=1, keepdims=True)
        return v / np.linalg.norm(v, axis=1, keepdims=True)

    def tag(self, j: int) -> str:
        return f"t{self.cluster[j] % TAGS}"

    def interactions(self, n: int, start_ts: float, dt: float
                     ) -> Iterator[tuple[str, str, float, bool]]:
        """``n`` (user, item, ts, clicked), users drawn uniformly."""
        rng = self.rng
        for e in range(n):
            u = int(rng.integers(self.users))
            c = self.taste[u]
            lo, hi = self.first[c], self.first[c + 1]
            j = int(self.members[rng.integers(lo, hi)]) if hi > lo and rng.random() < 0.8 \
                else int(rng.integers(self.items))
            yield f"u{u}", f"i{j}", start_ts + e * dt, bool(rng.random() < 0.3)


def rss_mib(pid: int | str = "self") -> float:
    with open(f"/proc/{pid}/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2 ** 20


def tree_rss_mib(pid: int) -> float:
    """Resident memory of ``pid`` and its children (the worker and its model process)."""
    total = rss_mib(pid)
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            kids = f.read().split()
    except OSError:
        kids = []
    return total + sum(tree_rss_mib(int(k)) for k in kids if Path(f"/proc/{k}").exists())


def recall_at_10(blend: Blend, users: list[str], now: float) -> dict[str, float]:
    """Each source searched through an inverted file (content; the student when one is in
    service) against scoring every item, on the same banned items."""
    n = len(blend.catalog)
    banned = Banned(n, [blend.seen_items(u) for u in users])
    out: dict[str, float] = {}
    for name in ("content", "student"):
        src = blend.sources[name]
        if src.dense_at(n) or not src.active:
            continue  # scored exactly
        approx = src.scores_for(users, now)
        exact = DenseScores(src.score_many(users, now), src.floor)
        ra, ia = approx.top(10, banned)
        re, ie = exact.top(10, banned)
        found = [len(set(ia[ra == r].tolist()) & set(ie[re == r].tolist()))
                 / max(1, int((re == r).sum())) for r in range(len(users)) if (re == r).any()]
        out[name] = round(float(np.mean(found)), 4)
    return out


def model_phase(world: Synthetic, events: int, log) -> dict:
    """The worker's models in this process: list cost, index build, recall."""
    rss0 = rss_mib()
    blend = Blend(seed=0)
    t0 = time.process_time()
    for a in range(0, world.items, 10_000):
        b = min(world.items, a + 10_000)
        V = world.vectors(a, b)  # in batches, as a worker takes uploads
        blend.add_items([(f"i{j}", 0.0, V[j - a], (world.tag(j),)) for j in range(a, b)])
    add_s = time.process_time() - t0
    rss_items = rss_mib()
    log(f"  models: {world.items:,} items added in {add_s:.1f}s CPU")
    t0 = time.process_time()
    ts = 1.0
    for user, item, ts, clicked in world.interactions(events, 1.0, 0.001):
        blend.learn_one(user, item, ts, clicked)
    learn_us = (time.process_time() - t0) / max(events, 1) * 1e6
    log(f"  models: {events:,} interactions learned, {learn_us:.0f} us each")
    rng = np.random.default_rng(1)
    # The first batch builds the inverted files, in the background from 100,000 items: it is
    # answered meanwhile by scoring every item. Then the lists take over.
    t0 = time.perf_counter()
    blend.recommend_many([f"u{u}" for u in rng.integers(0, world.users, 100)], 10, ts)
    first_batch_s = time.perf_counter() - t0
    ann = blend.sources["content"].index.ann
    ann.wait()
    blend.recommend_many([f"u{u}" for u in rng.integers(0, world.users, 100)], 10, ts)
    build_s = ann.build_s
    recall = recall_at_10(blend, [f"u{u}" for u in rng.integers(0, world.users, 200)], ts)
    rss_all = rss_mib()
    out = {"index_build_s": round(build_s, 2), "first_batch_s": round(first_batch_s, 2),
           "recall_at_10": min(recall.values(), default=1.0),
           "recall_at_10_by_source": recall,
           "learn_us": round(learn_us),
           "model_bytes_per_item": round((rss_items - rss0) * 2 ** 20 / world.items),
           "model_bytes_per_user": round((rss_all - rss_items) * 2 ** 20 / world.users)}
    log(f"  models: index build {build_s:.1f}s CPU (the first batch of lists waited "
        f"{first_batch_s:.1f}s), recall@10 {recall}")
    return out, (blend, world, ts)


def list_costs(built: list, batches: int, log) -> list[float]:
    """CPU microseconds per list of each size's blend, in micro-batches of 100 users, the
    sizes taking turns batch by batch (so that a slow phase of a shared machine weighs on
    every size alike); medians."""
    rng = np.random.default_rng(2)
    per_list: list[list[float]] = [[] for _ in built]
    for _ in range(batches):
        for costs, (blend, world, ts) in zip(per_list, built):
            users = [f"u{u}" for u in rng.integers(0, world.users, 100)]
            t0 = time.process_time()
            blend.recommend_many(users, 10, ts)
            costs.append((time.process_time() - t0) / len(users) * 1e6)
    medians = [round(statistics.median(c)) for c in per_list]
    log(f"list cost, sizes side by side: {medians} us per list")
    return medians


def interaction_events(world: Synthetic, n: int, start_ts: float, dt: float, tag: str):
    for e, (user, item, ts, clicked) in enumerate(world.interactions(n, start_ts, dt)):
        cls = Click if clicked else View
        yield cls(f"{tag}{e}", user, item, ts)


async def wait_events(r, app_id: str, key: str, total: int, max_s: float) -> tuple[float, int]:
    """Seconds from the first to the last of ``total`` counted events (``key``), and how many
    were counted by then."""
    t_first = n_first = None
    deadline = time.monotonic() + max_s
    while time.monotonic() < deadline:
        n = (await read_stats(r, app_id)).get(key, 0)
        if n and t_first is None:
            t_first, n_first = time.monotonic(), n
        if n >= total:
            break
        await asyncio.sleep(0.05)
    n = (await read_stats(r, app_id)).get(key, 0)
    return (time.monotonic() - t_first if t_first else 0.0), n - (n_first or 0)


async def paced_latency(rt, events: list, rate: float, seconds: float) -> dict:
    consumer = kafka_consumer(rt.settings(), RECOMMENDATIONS, auto_offset_reset="latest",
                              enable_auto_commit=False)
    await consumer.start()
    await asyncio.sleep(1.0)
    lat: list[float] = []
    start = time.time()

    async def collect():
        while True:
            for msgs in (await consumer.getmany(timeout_ms=100)).values():
                for m in msgs:
                    d = orjson.loads(m.value)
                    if d.get("event_ts", 0) >= start:
                        lat.append(d["latency_ms"])

    task = asyncio.create_task(collect())
    stats = await publish(events, rt.settings(), rate=rate, duration_s=seconds)
    await asyncio.sleep(2.0)
    task.cancel()
    await consumer.stop()
    a = np.array(lat) if lat else np.array([np.nan])
    return {"events": stats.events, "lists": len(lat),
            "p50_ms": round(float(np.percentile(a, 50)), 2),
            "p99_ms": round(float(np.percentile(a, 99)), 2)}


async def runtime_phase(world: Synthetic, events: int, args, log) -> dict:
    """A worker on the embedded runtime: uploads, warm interactions, a drain, a paced run."""
    from streamrec.simulator.embeddings import upload_with_embedding

    run_dir = Path("runs") / f"scale-{world.items}-{time.strftime('%Y%m%d-%H%M%S')}"
    app_id = "scale"
    with EmbeddedRuntime(run_dir=run_dir) as rt:
        await ensure_topics(rt.settings(), 4)
        proc = start_worker(rt, partitions=4, app_id=app_id)
        r = redis_client(rt.settings())
        try:
            await wait_for_worker(rt.settings(), proc, app_id=app_id, timeout_s=120)

            def uploads():
                for a in range(0, world.items, 10_000):
                    V = world.vectors(a, min(world.items, a + 10_000))
                    for j in range(a, min(world.items, a + 10_000)):
                        yield upload_with_embedding(f"i{j}", V[j - a], ts=1.0,
                                                    tags=(world.tag(j),))

            t0 = time.monotonic()
            await publish(uploads(), rt.settings())
            sent_s = time.monotonic() - t0
            took, n = await wait_events(r, app_id, "events_upload", world.items, args.max_s)
            registered = (await read_stats(r, app_id)).get("events_upload", 0)
            took_up, n_up = took, n
            log(f"  runtime: {world.items:,} uploads sent in {sent_s:.0f}s, {registered:,} "
                f"registered, at {n / max(took, 1e-9):,.0f}/s")
            start = time.time() - 3 * 86400
            dt = 3 * 86400 / max(1, events + args.drain)
            t0 = time.monotonic()
            await publish(interaction_events(world, events, start, dt, "w"), rt.settings())
            took, n = await wait_events(r, app_id, "events", world.items + events, args.max_s)
            log(f"  runtime: {events:,} warm interactions learned in "
                f"{time.monotonic() - t0:.0f}s")
            base = (await read_stats(r, app_id)).get("events", 0)
            backlog = list(interaction_events(world, args.drain, start + events * dt, dt, "d"))
            await publish(backlog, rt.settings())
            took, n = await wait_events(r, app_id, "events", base + args.drain, args.max_s)
            rate = n / took if took else 0.0
            log(f"  runtime: drained {n:,} interactions at {rate:,.0f} events/s")
            paced = list(interaction_events(world, int(1000 * args.latency_seconds) + 1,
                                            time.time(), 0.001, "p"))
            lat = await paced_latency(rt, paced, 1000.0, args.latency_seconds)
            log(f"  runtime: at 1,000 events/s p50 {lat['p50_ms']} ms, p99 {lat['p99_ms']} ms "
                f"over {lat['lists']:,} lists")
            worker_rss = tree_rss_mib(proc.proc.pid)
            info = await r.info("memory")
            redis_mib = info["used_memory"] / 2 ** 20
        finally:
            await r.aclose()
            proc.stop()
    return {"events_per_s": round(rate), "uploads_per_s": round(n_up / max(took_up, 1e-9)),
            "p50_ms_at_1000_eps": lat["p50_ms"],
            "p99_ms_at_1000_eps": lat["p99_ms"], "lists_at_1000_eps": lat["lists"],
            "worker_rss_mib": round(worker_rss), "redis_used_mib": round(redis_mib),
            "redis_bytes_per_item_and_user": round(redis_mib * 2 ** 20
                                                   / (world.items + world.users))}


async def main(args) -> dict:
    def log(*a) -> None:
        print(*a, file=sys.stderr if args.json else sys.stdout, flush=True)

    sizes, built = [], []
    for spec in args.sizes:
        items, users = (int(x) for x in spec.split(":"))
        log(f"{items:,} items, {users:,} users")
        events = users * args.events_per_user
        row = {"items": items, "users": users, "warm_events": events}
        figures, blend = model_phase(Synthetic(items, users), events, log)
        row.update(figures)
        sizes.append(row)
        built.append(blend)
    for row, cost in zip(sizes, list_costs(built, args.batches, log)):
        row["list_us"] = cost
        row["list_cost_vs_smallest"] = round(cost / sizes[0]["list_us"], 2)
    built.clear()  # the runtime phase's worker gets the memory
    if not args.skip_runtime:
        for row in sizes:
            world = Synthetic(row["items"], row["users"])
            warm = int(row["users"] * args.runtime_events_per_user)
            row.update(await runtime_phase(world, warm, args, log))
            row["runtime_warm_events"] = warm
    return {"sizes": sizes, "machine": f"{platform.machine()}, {os.cpu_count()} cpus, "
            f"Python {platform.python_version()}",
            "peak_rss_mib_this_process": round(resource.getrusage(
                resource.RUSAGE_SELF).ru_maxrss / 1024)}


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", nargs="+", default=["10000:10000", "100000:100000",
                                                   "1000000:1000000"])
    ap.add_argument("--events-per-user", type=int, default=2)
    ap.add_argument("--runtime-events-per-user", type=float, default=0.5,
                    help="Warm interactions per user sent through the worker (each costs the "
                         "worker a list; 2 per user at 1M users would take an hour here)")
    ap.add_argument("--batches", type=int, default=15,
                    help="Micro-batches of 100 lists per size for the list cost")
    ap.add_argument("--drain", type=int, default=30_000)
    ap.add_argument("--latency-seconds", type=float, default=20.0)
    ap.add_argument("--max-s", type=float, default=3600.0, help="Longest wait for a phase")
    ap.add_argument("--skip-runtime", action="store_true", help="The models phase only")
    ap.add_argument("--json", action="store_true", help="End with one JSON line of results")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(1)
    summary = asyncio.run(main(args))
    if args.json:
        print(json.dumps(summary))
