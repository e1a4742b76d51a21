"""Several workers in one consumer group on the embedded runtime: how fast 1, 2 and 4 workers
drain a backlog, how soon an upload through one worker is recommended by another, and how
long lists pause when a worker joins or leaves.

    python benchmarks/workers.py [--events 30000] [--counts 1,2,4] [--rounds 3]
                                 [--partitions 8] [--rate 200] [--probes 10] [--json]

**Drains.** For each worker count in turn (``--rounds`` times, the counts interleaved), a fresh
embedded runtime (a Tansu broker and a redis-server) with ``--partitions`` partitions per
topic, and that many pipeline workers in one consumer group. Once every worker holds its share
of the partitions and has learned a warm-up event, the workers are frozen (SIGSTOP, with
their model processes), the backlog of ``--events`` simulated events is loaded onto the
broker, and the workers are let go at once (SIGCONT): all of them start on the whole backlog,
with no rebalance in the measurement. events/s = backlog / the time from the first to the
last event processed, from the group's counters in Redis. The workers run without the content
path (``STREAMREC_CONTENT=0``: four encoder processes would each load the text and image
models), on a world without images.

**Upload visibility, join and leave pauses.** A fresh runtime, one worker, and a paced stream
of the same world at ``--rate`` events/s. A second worker joins; the longest gap between two
lists published by the group in the ``--settle-s`` seconds after it was started is the join
pause (with the longest gap of the seconds before, as a baseline). Then ``--probes`` items are
uploaded, one a second, each through a partition of one worker (uploads are keyed by item),
and a new user owned by the other worker asks for lists (``rec-request``, k = 200) every
0.1 s until one holds the item: the delay is from the item's registration in Redis (by the
worker that took the upload) to that list. Then one worker is stopped with SIGTERM, and the
longest gap after it is the leave pause. The largest latency of a list in each window (event
produced -> list published) is reported beside each gap.

Figures go to stdout (to stderr with ``--json``, whose line comes last). Exit code 0 when
every drain learned each view and click exactly once and every probe was seen.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import platform
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aiokafka.partitioner import murmur2  # noqa: E402
from throughput import cpu_probe_ms  # noqa: E402

from streamrec.clients import kafka_consumer, redis_client  # noqa: E402
from streamrec.embedded import EmbeddedRuntime  # noqa: E402
from streamrec.engine.shared_state import read_stats  # noqa: E402
from streamrec.processes import (  # noqa: E402
    Process,
    assigned_partitions,
    start_worker,
    wait_for_assignment,
)
from streamrec.records.events import MAX_K, Click, RecRequest, Upload, View, encode  # noqa: E402
from streamrec.records.topics import RECOMMENDATIONS, TOPIC_OF, ensure_topics  # noqa: E402
from streamrec.simulator.publish import key_of, publish, start_producer  # noqa: E402
from streamrec.simulator.world import World, WorldConfig  # noqa: E402

APP = "streamrec"
WORKER_ENV = {"STREAMREC_CONTENT": "0"}


def partition_of(key: str, partitions: int) -> int:
    """The partition the producer's default partitioner sends ``key`` to."""
    return (murmur2(key.encode()) & 0x7FFFFFFF) % partitions


def key_on(prefix: str, partitions: set[int], n: int) -> str:
    """A fresh id whose messages land on one of ``partitions`` (of ``n``)."""
    for k in itertools.count():
        key = f"{prefix}-{os.getpid()}-{time.monotonic_ns()}-{k}"
        if partition_of(key, n) in partitions:
            return key
    raise AssertionError("unreachable")


def signal_group(proc: Process, sig: int) -> None:
    """``sig`` to a worker and its children (its model process)."""
    os.killpg(proc.proc.pid, sig)


async def wait_settled(rt: EmbeddedRuntime, procs: list[Process], partitions: int,
                       timeout_s: float = 120.0) -> None:
    """Until the workers together hold every ``views`` partition, each its share."""
    r = redis_client(rt.settings())
    deadline = time.monotonic() + timeout_s
    try:
        for p in procs:
            await wait_for_assignment(rt.settings(), p, partitions=partitions // len(procs),
                                      timeout_s=timeout_s)
        while time.monotonic() < deadline:
            held = [sum(x.startswith("views:") for x in await assigned_partitions(r, p))
                    for p in procs]
            if sum(held) == partitions and min(held) >= partitions // len(procs):
                return
            await asyncio.sleep(0.1)
        raise TimeoutError("the group did not settle")
    finally:
        await r.aclose()


async def wait_counter(r, key: str, at_least: int, timeout_s: float) -> float | None:
    """Until the group's counter ``key`` reaches ``at_least``; the time it did (None: never)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if (await read_stats(r, APP)).get(key, 0) >= at_least:
            return time.monotonic()
        await asyncio.sleep(0.05)
    return None


# ---- drains -----------------------------------------------------------------------------------

def children(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (a worker's model process)."""
    out = []
    for p in filter(str.isdigit, os.listdir("/proc")):
        try:
            if int(Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(p))
        except (OSError, ValueError):
            continue
    return out


def cpu_s(pids: list[int]) -> float:
    """CPU seconds (user and system) the processes ``pids`` have used so far."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / os.sysconf("SC_CLK_TCK")


def cpu_parts(rt: EmbeddedRuntime, procs: list[Process]) -> dict[str, float]:
    """CPU seconds so far of the workers' own processes, their model processes, the broker
    and Redis."""
    mains = [p.proc.pid for p in procs]
    redis = [p.pid for p in rt.procs if "redis" in str(p.args)]
    return {"workers": cpu_s(mains),
            "model_processes": cpu_s([c for pid in mains for c in children(pid)]),
            "broker": cpu_s([p.pid for p in rt.procs if p.pid not in redis]),
            "redis": cpu_s(redis)}


async def assignment_times(r, procs: list[Process]) -> list[float]:
    """When each worker was last assigned partitions (a rebalance changes them)."""
    raw = [await r.hget(f"{APP}:workers", p.name) for p in procs]
    return [orjson.loads(x)["ts"] if x else 0.0 for x in raw]


async def drain(backlog: list, n: int, args, run_dir: Path, log) -> dict:
    with EmbeddedRuntime(run_dir=run_dir) as rt:
        settings = rt.settings()
        await ensure_topics(settings, args.partitions)
        procs = [start_worker(rt, args.partitions, extra_env={**WORKER_ENV, **args.env},
                              log_name=f"worker-{i}.log") for i in range(n)]
        r = redis_client(settings)
        try:
            await wait_settled(rt, procs, args.partitions)
            # One view per partition: every worker's model process is up and has loaded.
            producer = await start_producer(settings)
            warm = [View(f"warm-{p}", key_on("warm", {p}, args.partitions), "warm-item",
                         time.time()) for p in range(args.partitions)]
            for ev in warm:
                await producer.send(TOPIC_OF[ev.type], encode(ev), key=key_of(ev))
            await producer.stop()
            if await wait_counter(r, "events", len(warm), 120.0) is None:
                raise TimeoutError("the warm-up events were not processed")
            assigned = await assignment_times(r, procs)
            for p in procs:
                signal_group(p, signal.SIGSTOP)
            t0 = time.monotonic()
            await publish(backlog, settings)
            loaded_s = time.monotonic() - t0
            cpu0 = cpu_parts(rt, procs)
            for p in procs:
                signal_group(p, signal.SIGCONT)
            total = len(warm) + len(backlog)
            t_first = await wait_counter(r, "events", len(warm) + 1, 60.0)
            t_last = await wait_counter(r, "events", total, args.max_seconds)
            cpu1 = cpu_parts(rt, procs)
            if t_first is None or t_last is None:
                raise TimeoutError(f"{n} worker(s) did not drain the backlog; see {run_dir}")
            stats = await read_stats(r, APP)
            # Frozen longer than the session timeout, a worker would have been given up on.
            rebalanced = await assignment_times(r, procs) != assigned
        finally:
            for p in procs:
                if p.proc.poll() is None:
                    signal_group(p, signal.SIGCONT)
                p.stop()
            await r.aclose()
    seconds = t_last - t_first
    out = {"workers": n, "events": len(backlog), "seconds": round(seconds, 2),
           "events_per_s": round(len(backlog) / seconds, 1), "loaded_s": round(loaded_s, 1),
           "learned": stats.get("learned", 0) - len(warm), "rebalanced": rebalanced,
           # CPU per event of every process of the system, so a figure that does not depend
           # on how much of the shared machine the run was given.
           "cpu_ms_per_event": {k: round((cpu1[k] - cpu0[k]) * 1e3 / len(backlog), 4)
                                for k in cpu0}}
    out["cpu_ms_per_event"]["total"] = round(sum(out["cpu_ms_per_event"].values()), 4)
    log(f"{n} worker(s): {out['events_per_s']:>9,.0f} events/s ({len(backlog)} events in "
        f"{seconds:.2f} s), {out['cpu_ms_per_event']['total']:.3f} CPU ms per event "
        f"({', '.join(f'{k} {v:.3f}' for k, v in out['cpu_ms_per_event'].items() if k != 'total')}"
        f"); loaded in {loaded_s:.1f} s while frozen"
        f"{'; REBALANCED meanwhile' if rebalanced else ''})")
    return out


# ---- paced: join, visibility, leave -------------------------------------------------------------

class Lists:
    """Every list published: (arrival time, worker, latency ms, items, request id)."""

    def __init__(self) -> None:
        self.seen: list[tuple[float, str, float, list[str], str | None]] = []

    async def run(self, rt: EmbeddedRuntime, ready: asyncio.Event) -> None:
        consumer = kafka_consumer(rt.settings(), RECOMMENDATIONS, auto_offset_reset="latest",
                                  enable_auto_commit=False, fetch_max_wait_ms=10)
        await consumer.start()
        ready.set()
        try:
            while True:
                for records in (await consumer.getmany(timeout_ms=100)).values():
                    now = time.monotonic()
                    for rec in records:
                        d = orjson.loads(rec.value)
                        self.seen.append((now, d["worker"], d["latency_ms"],
                                          [i["item_id"] for i in d["items"]], d["request_id"]))
        finally:
            await consumer.stop()

    def pause(self, t0: float, t1: float) -> tuple[float, float]:
        """The longest gap between lists over [t0, t1] (counting from the last list before
        t0), and the largest latency of a list arriving in it, in seconds."""
        times = [t for t, *_ in self.seen if t <= t1]
        before = [t for t in times if t < t0]
        inside = [t for t in times if t >= t0]
        marks = before[-1:] + inside + [t1]
        gap = max((b - a for a, b in zip(marks, marks[1:])), default=t1 - t0)
        worst = max((lat for t, _, lat, *_ in self.seen if t0 <= t <= t1), default=0.0)
        return gap, worst / 1000.0


async def probe(rt: EmbeddedRuntime, producer, r, lists: Lists, via: set[int], ask: set[int],
                args) -> float | None:
    """Upload an item through partitions ``via``; ask as a user of partitions ``ask`` until
    it is recommended: seconds from its registration to that list (None: not in time)."""
    item = key_on("probe", via, args.partitions)
    user = key_on("asker", ask, args.partitions)
    up = Upload(f"up-{item}", item, "bench", time.time(), f"probe {item}")
    await producer.send(TOPIC_OF[up.type], encode(up), key=key_of(up))
    deadline = time.monotonic() + 3 * args.refresh_s + 10.0
    asked: set[str] = set()
    n = 0
    while time.monotonic() < deadline:
        n += 1
        req = RecRequest(f"{user}-{n}", user, k=MAX_K, ts=time.time())
        asked.add(req.request_id)
        await producer.send(TOPIC_OF[req.type], encode(req), key=key_of(req))
        await asyncio.sleep(0.1)
        for t, _, _, items, rid in lists.seen[-2000:]:
            if rid in asked and item in items:
                raw = await r.hget(f"{APP}:items", item)
                registered = orjson.loads(raw)["indexed_ts"]
                # Arrival (monotonic) back to wall-clock time of registration.
                return time.time() - (time.monotonic() - t) - registered
    return None


async def paced(args, run_dir: Path, log) -> dict:
    # Simulated time at the rate sent, so the probes' uploads are as new as the world's.
    world = World(WorldConfig(n_users=args.users, n_items=args.items, images=False, seed=3,
                              events_per_s=args.rate))
    events = world.events(time.time())
    env = {**WORKER_ENV, **args.env}
    with EmbeddedRuntime(run_dir=run_dir) as rt:
        settings = rt.settings()
        await ensure_topics(settings, args.partitions)
        r = redis_client(settings)
        lists, ready = Lists(), asyncio.Event()
        reader = asyncio.create_task(lists.run(rt, ready))
        await ready.wait()
        producer = await start_producer(settings)
        w1 = start_worker(rt, args.partitions, extra_env=env, log_name="worker-1.log")
        w2: Process | None = None
        stop = asyncio.Event()
        sender = asyncio.create_task(publish(
            itertools.takewhile(lambda _: not stop.is_set(), events), settings, rate=args.rate))
        try:
            await wait_settled(rt, [w1], args.partitions)
            deadline = time.monotonic() + 120.0  # past the world's catalogue, lists flow
            while len(lists.seen) < 100 and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
            await asyncio.sleep(args.settle_s)
            t_join = time.monotonic()
            baseline = lists.pause(t_join - args.settle_s + 1.0, t_join)
            w2 = start_worker(rt, args.partitions, extra_env=env, log_name="worker-2.log")
            await wait_settled(rt, [w1, w2], args.partitions)
            settled = time.monotonic()
            await asyncio.sleep(args.settle_s)
            join = lists.pause(t_join, time.monotonic())
            owned = []
            for w in (w1, w2):
                got = await assigned_partitions(r, w)
                owned.append({t: {int(p.split(":")[1]) for p in got if p.startswith(t + ":")}
                              for t in ("uploads", "rec-requests")})
            tasks = []
            for k in range(args.probes):
                a, b = owned[k % 2], owned[1 - k % 2]
                tasks.append(asyncio.create_task(
                    probe(rt, producer, r, lists, a["uploads"], b["rec-requests"], args)))
                await asyncio.sleep(1.0)
            delays = await asyncio.gather(*tasks)
            t_leave = time.monotonic()
            os.kill(w2.proc.pid, signal.SIGTERM)  # the main process, as a supervisor stops it
            await asyncio.to_thread(w2.proc.wait, 60)
            stopped = time.monotonic()
            await wait_settled(rt, [w1], args.partitions)
            await asyncio.sleep(args.settle_s)
            leave = lists.pause(t_leave, time.monotonic())
        finally:
            stop.set()
            await sender
            reader.cancel()
            await producer.stop()
            for w in (w1, w2):
                if w is not None:
                    w.stop()
            await r.aclose()
    seen = [d for d in delays if d is not None]
    out = {"join_to_settled_s": round(settled - t_join, 2),
           "join_gap_s": round(join[0], 2), "join_max_latency_s": round(join[1], 2),
           "leave_exit_s": round(stopped - t_leave, 2),
           "leave_gap_s": round(leave[0], 2), "leave_max_latency_s": round(leave[1], 2),
           "baseline_gap_s": round(baseline[0], 3), "baseline_max_latency_s": round(baseline[1], 3),
           "visibility_s": [None if d is None else round(d, 3) for d in delays],
           "visibility_p50_s": round(statistics.median(seen), 3) if seen else None,
           "visibility_max_s": round(max(seen), 3) if seen else None,
           "probes_never_seen": len(delays) - len(seen)}
    log(f"join: settled {out['join_to_settled_s']} s after the start, longest gap in lists "
        f"{out['join_gap_s']} s (max latency {out['join_max_latency_s']} s; steady: gap "
        f"{out['baseline_gap_s']} s); leave: longest gap {out['leave_gap_s']} s (max latency "
        f"{out['leave_max_latency_s']} s); upload visible on the other worker after "
        f"{out['visibility_p50_s']} s median, {out['visibility_max_s']} s max "
        f"({out['probes_never_seen']} never)")
    return out


def spread(values: list[float], digits: int = 1) -> dict:
    return {"median": round(statistics.median(values), digits),
            "min": round(min(values), digits), "max": round(max(values), digits)}


async def main(args) -> dict:
    def log(*a) -> None:
        print(*a, file=sys.stderr if args.json else sys.stdout, flush=True)

    probe_start = cpu_probe_ms()
    log(f"CPU probe: {probe_start} ms per fixed loop (lower is faster)")
    world = World(WorldConfig(n_users=args.users, n_items=args.items, images=False, seed=1))
    backlog = list(itertools.islice(world.events(time.time() - 3600), args.events))
    drains: dict[int, list[dict]] = {n: [] for n in args.counts}
    paced_runs = []
    with tempfile.TemporaryDirectory(prefix="workers-") as tmp:
        base = Path(args.keep or tmp)
        for round_ in range(args.rounds):
            for n in args.counts:
                drains[n].append(await drain(backlog, n, args, base / f"drain-{round_}-{n}", log))
        for round_ in range(args.paced_rounds):
            paced_runs.append(await paced(args, base / f"paced-{round_}", log))
    probe_end = cpu_probe_ms()
    log(f"CPU probe at the end: {probe_end} ms")
    rates = {n: [d["events_per_s"] for d in runs if not d["rebalanced"]] or
             [d["events_per_s"] for d in runs] for n, runs in drains.items()}
    one = statistics.median(rates[args.counts[0]])
    delays = [d for p in paced_runs for d in p["visibility_s"] if d is not None]
    cpu = {n: [d["cpu_ms_per_event"]["total"] for d in runs] for n, runs in drains.items()}
    interactions = sum(isinstance(e, (View, Click)) for e in backlog)
    summary = {
        # Every drain learned each view and click of the backlog exactly once.
        "learned_exactly_once": all(d["learned"] == interactions
                                    for runs in drains.values() for d in runs),
        "events_per_s": {str(n): spread(v) for n, v in rates.items()},
        "cpu_ms_per_event": {str(n): spread(v, 4) for n, v in cpu.items()},
        "cpu_ms_per_event_by_process": {
            str(n): {k: round(statistics.median(d["cpu_ms_per_event"][k] for d in runs), 4)
                     for k in runs[0]["cpu_ms_per_event"]} for n, runs in drains.items()},
        # What two cores given wholly to the system could drain at most at that CPU cost.
        "events_per_s_two_cores_at_most": {str(n): round(2000.0 / statistics.median(v))
                                           for n, v in cpu.items()},
        "speedup_vs_first": {str(n): round(statistics.median(v) / one, 2)
                             for n, v in rates.items()},
        "visibility_p50_s": round(statistics.median(delays), 3) if delays else None,
        "visibility_max_s": round(max(delays), 3) if delays else None,
        "probes_never_seen": sum(p["probes_never_seen"] for p in paced_runs),
        "join_gap_s": [p["join_gap_s"] for p in paced_runs],
        "join_max_latency_s": [p["join_max_latency_s"] for p in paced_runs],
        "leave_gap_s": [p["leave_gap_s"] for p in paced_runs],
        "leave_max_latency_s": [p["leave_max_latency_s"] for p in paced_runs],
        "baseline_gap_s": [p["baseline_gap_s"] for p in paced_runs],
        "events": args.events, "partitions": args.partitions, "rounds": args.rounds,
        "rate": args.rate, "refresh_s": args.refresh_s, "worker_env": {**WORKER_ENV, **args.env},
        "cpu_probe_ms": [probe_start, probe_end],
        "machine": f"{platform.machine()}, {os.cpu_count()} cpus, "
                   f"Python {platform.python_version()}",
        "drains": drains, "paced": paced_runs,
    }
    log(f"\nworkers  events/s (median, min-max over rounds)  vs {args.counts[0]}  "
        f"CPU ms/event (median, min-max)  2 cores at most")
    for n in args.counts:
        s, c = summary["events_per_s"][str(n)], summary["cpu_ms_per_event"][str(n)]
        log(f"{n:7d}  {s['median']:>9,.0f} ({s['min']:,.0f}-{s['max']:,.0f})"
            f"{summary['speedup_vs_first'][str(n)]:>12.2f}x  {c['median']:>9.3f} "
            f"({c['min']:.3f}-{c['max']:.3f}){summary['events_per_s_two_cores_at_most'][str(n)]:>15,}")
    log(f"upload visible on the other worker: median {summary['visibility_p50_s']} s, max "
        f"{summary['visibility_max_s']} s (refresh every {args.refresh_s} s); join gaps "
        f"{summary['join_gap_s']} s, leave gaps {summary['leave_gap_s']} s, steady gaps "
        f"{summary['baseline_gap_s']} s")
    return summary


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=30000, help="backlog of each drain")
    ap.add_argument("--counts", default="1,2,4", help="worker counts to drain with")
    ap.add_argument("--rounds", type=int, default=3, help="drains of each count")
    ap.add_argument("--paced-rounds", type=int, default=2,
                    help="runs of the join / visibility / leave part")
    ap.add_argument("--partitions", type=int, default=8)
    ap.add_argument("--users", type=int, default=5000)
    ap.add_argument("--items", type=int, default=2000)
    ap.add_argument("--rate", type=float, default=200.0, help="events/s of the paced stream")
    ap.add_argument("--probes", type=int, default=10, help="uploads whose visibility is timed")
    ap.add_argument("--settle-s", type=float, default=8.0,
                    help="seconds watched after a join or leave has settled")
    ap.add_argument("--refresh-s", type=float, default=5.0, help="STREAMREC_REFRESH_S")
    ap.add_argument("--max-seconds", type=float, default=300.0)
    ap.add_argument("--keep", type=Path, help="run in this folder and keep its logs")
    ap.add_argument("--json", action="store_true", help="end with one JSON line of results")
    args = ap.parse_args(argv)
    args.counts = [int(n) for n in args.counts.split(",")]
    args.env = {"STREAMREC_REFRESH_S": str(args.refresh_s)}
    return args


if __name__ == "__main__":
    args = parse_args()
    summary = asyncio.run(main(args))
    if args.json:
        print(json.dumps(summary))
    sys.exit(0 if summary["learned_exactly_once"] and not summary["probes_never_seen"] else 1)
