"""Fault drills: workers killed, Redis and the broker restarted, all mid-stream, with exact counts.

    python benchmarks/chaos.py [--kills 10] [--events 20000] [--rate 300] [--workers 1]
                               [--no-static] [--seed 0] [--json]

A simulated world's events are sent at ``--rate`` to the embedded runtime (a Tansu broker and a
redis-server on free ports) while ``--workers`` pipeline workers in one group serve them, and
faults strike at random moments of the stream: ``--kills`` times a worker is killed with
SIGKILL and started again at once (as a supervisor would), once its model process is killed
(the worker stops; it is started again), once Redis is restarted (with its append-only file),
and once the broker is restarted: Tansu keeps its log in memory, so sending pauses until the
workers have drained it, and resumes into the empty broker once it is back.

Each fault's recovery is the time from the restart until the first list published by the
restarted worker (for a Redis or broker restart: until the first list after it). With several
workers, the longest pause in the other workers' lists around each kill is reported too.

At the end the state in Redis is compared with exact counts from the events sent: each item's
interactions and clicks, its popularity (recomputed by the same model from the log),
users' seen items, registered items. ``lost`` is interactions sent and never learned,
``learned_twice`` those learned more than once; lists are counted as doubled when two share a
user and trigger (a restarted worker publishes again the lists of events it finds already
applied), and lost when none was triggered by a user's last interactions.

Exit code 0 when nothing was lost or learned twice and both restarts were handled.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import orjson
import redis.asyncio as aioredis

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from streamrec.clients import kafka_consumer, redis_client  # noqa: E402
from streamrec.config import Settings  # noqa: E402
from streamrec.embedded import EmbeddedRuntime  # noqa: E402
from streamrec.engine.shared_state import read_stats  # noqa: E402
from streamrec.models.blend import MAX_SEEN  # noqa: E402
from streamrec.models.catalog import Catalog  # noqa: E402
from streamrec.models.popularity import DecayedPopularity  # noqa: E402
from streamrec.processes import Process, start_worker, wait_for_worker  # noqa: E402
from streamrec.records.events import Click, Upload, View, encode  # noqa: E402
from streamrec.records.topics import RECOMMENDATIONS, TOPIC_OF, ensure_topics  # noqa: E402
from streamrec.simulator.publish import key_of, start_producer  # noqa: E402
from streamrec.simulator.world import World, WorldConfig  # noqa: E402

APP = "streamrec"


@dataclass
class Fault:
    kind: str  # kill, model, redis, broker
    at_event: int
    worker: int = 0
    recovery_s: float | None = None
    others_gap_s: float | None = None


@dataclass
class Lists:
    """Every list published, as (arrival time, worker name, user, trigger)."""

    seen: list[tuple[float, str, str, str | None]] = field(default_factory=list)
    #: Set when the broker restarted empty: the reader starts over.
    reconnect: asyncio.Event = field(default_factory=asyncio.Event)

    def first_after(self, t: float, exclude_workers: set[str] = frozenset()) -> float | None:
        for at, worker, _, _ in self.seen:
            if at > t and worker not in exclude_workers:
                return at
        return None

    def workers_before(self, t: float) -> set[str]:
        return {w for at, w, _, _ in self.seen if at <= t}


class Group:
    """The workers, each restarted under the same instance id (static membership)."""

    def __init__(self, rt: EmbeddedRuntime, n: int, partitions: int, static: bool) -> None:
        self.rt, self.partitions, self.static = rt, partitions, static
        self.procs: list[Process] = [self.start(i) for i in range(n)]

    def start(self, i: int) -> Process:
        env = {"STREAMREC_INSTANCE_ID": f"chaos-{i}"} if self.static else {}
        return start_worker(self.rt, self.partitions, extra_env=env,
                            log_name=f"worker-{i}.log")

    def restart(self, i: int) -> None:
        self.procs[i].kill()
        self.procs[i] = self.start(i)

    def model_pid(self, i: int) -> int | None:
        """The model process (a child of the worker running ``streamrec.engine.model_process``)."""
        parent = self.procs[i].proc.pid
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
                ppid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError):
                continue
            if ppid == parent and b"streamrec.engine.model_process" in cmd:
                return int(pid)
        return None

    def stop(self) -> None:
        for p in self.procs:
            p.stop()


def world_events(args) -> list:
    world = World(WorldConfig(n_users=args.users, n_items=args.items, seed=args.seed,
                              images=False))
    return list(world.events(time.time() - 3600, limit=args.events))


def plan_faults(args, rng: random.Random) -> list[Fault]:
    """Kills at random moments of the first 80% of the stream (one in each of ``kills`` equal
    stretches, so each finds the group settled), then the model process, Redis, the broker."""
    n = args.events
    lo, hi = n // 20, int(n * 0.8)
    step = (hi - lo) / max(args.kills, 1)
    spots = [int(lo + k * step + rng.random() * step * 0.8) for k in range(args.kills)]
    faults = [Fault("kill", at, rng.randrange(args.workers)) for at in spots]
    faults += [Fault("model", int(n * 0.83)), Fault("redis", int(n * 0.88)),
               Fault("broker", int(n * 0.93))]
    return faults


async def collect_lists(settings: Settings, lists: Lists, stop: asyncio.Event,
                        reconnect: asyncio.Event) -> None:
    """Read every list; ``reconnect`` starts over on a broker that came back empty."""
    while not stop.is_set():
        reconnect.clear()
        # A short fetch wait: the embedded broker sleeps out the whole wait of a fetch even
        # when records arrive meanwhile (streams/transport.py), which at aiokafka's 500 ms
        # added 0-0.5 s to every recovery measured, after the list had been published.
        consumer = kafka_consumer(settings, RECOMMENDATIONS, auto_offset_reset="earliest",
                                  enable_auto_commit=False, fetch_max_wait_ms=10)
        await consumer.start()
        try:
            while not stop.is_set() and not reconnect.is_set():
                batches = await consumer.getmany(timeout_ms=100)
                now = time.monotonic()
                for records in batches.values():
                    for rec in records:
                        d = orjson.loads(rec.value)
                        lists.seen.append((now, d.get("worker", ""), d["user_id"],
                                           d.get("trigger")))
        finally:
            await consumer.stop()


async def quiet(lists: Lists, for_s: float, timeout_s: float) -> None:
    """Wait until no list has come for ``for_s`` (the reader may lag behind the workers, more
    so just after the broker restarted), at most ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        last = lists.seen[-1][0] if lists.seen else 0.0
        if time.monotonic() - last >= for_s:
            return
        await asyncio.sleep(0.2)


async def learned(r: aioredis.Redis) -> int:
    return (await read_stats(r, APP)).get("learned", 0)


async def wait_learned(r: aioredis.Redis, n: int, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if await learned(r) >= n:
            return True
        await asyncio.sleep(0.2)
    return False


async def strike(f: Fault, rt: EmbeddedRuntime, group: Group, lists: Lists, args
                 ) -> asyncio.Task:
    """Cause ``f``; returns the task that measures the recovery (sending goes on meanwhile)."""
    t_fault = time.monotonic()
    before = lists.workers_before(t_fault)
    if f.kind == "kill":
        group.restart(f.worker)
    elif f.kind == "model":
        pid = group.model_pid(f.worker)
        if pid is not None:
            os.kill(pid, 9)
        # The worker stops on its own (its model process is gone); a supervisor restarts it.
        await asyncio.to_thread(group.procs[f.worker].proc.wait, 60)
        group.procs[f.worker] = group.start(f.worker)
    elif f.kind == "redis":
        await asyncio.to_thread(rt.restart, "redis")
        before = set()
    else:  # broker: its log is in memory, so drained first and resumed into the empty one
        await asyncio.to_thread(rt.restart, "broker")
        await ensure_topics(rt.settings(), args.partitions)
        lists.reconnect.set()
        before = set()
    return asyncio.create_task(measure(f, time.monotonic(), t_fault, before, lists, args))


async def measure(f: Fault, t0: float, t_fault: float, before: set[str], lists: Lists,
                  args) -> None:
    """Recovery: from ``t0`` to the first list by a worker not in ``before``."""
    deadline = t0 + args.recovery_timeout
    while time.monotonic() < deadline:
        at = lists.first_after(t0, before)
        if at is not None:
            f.recovery_s = at - t0
            break
        await asyncio.sleep(0.05)
    print(f"  {f.kind:6s} at event {f.at_event:6d}: recovery "
          f"{'-' if f.recovery_s is None else f'{f.recovery_s:.1f} s'}", flush=True)
    if f.kind == "kill" and args.workers > 1:
        await asyncio.sleep(5.0)
        others = [at for at, w, _, _ in lists.seen if w in before and t_fault - 30 < at]
        gaps = [b - a for a, b in zip(others, others[1:])]
        f.others_gap_s = max(gaps, default=None)


async def send_all(events: list, rt: EmbeddedRuntime, group: Group, lists: Lists,
                   faults: list[Fault], r: aioredis.Redis, args) -> None:
    producer = await start_producer(rt.settings())
    pending = sorted(faults, key=lambda f: f.at_event)
    interval, t_start = 1.0 / args.rate, time.monotonic()
    measuring: list[asyncio.Task] = []
    try:
        for j, ev in enumerate(events):
            while pending and pending[0].at_event == j:
                f = pending.pop(0)
                if measuring:  # each fault finds the group recovered from the one before
                    await measuring[-1]
                if f.kind == "broker":
                    await producer.flush()
                    sent = sum(e.type in ("view", "click") for e in events[:j])
                    await wait_learned(r, sent, args.recovery_timeout)
                    await producer.stop()
                measuring.append(await strike(f, rt, group, lists, args))
                if f.kind == "broker":
                    producer = await start_producer(rt.settings())
                t_start = time.monotonic() - j * interval
            await producer.send(TOPIC_OF[ev.type], encode(ev), key=key_of(ev))
            ahead = t_start + (j + 1) * interval - time.monotonic()
            if ahead > 0:
                await asyncio.sleep(ahead)
        await producer.flush()
        await asyncio.gather(*measuring)
    finally:
        await producer.stop()


def expected_state(events: list) -> dict:
    """What Redis must hold after every event was learned exactly once."""
    inter = [e for e in events if isinstance(e, (View, Click))]
    pop = DecayedPopularity(Catalog())
    seen: dict[str, set[str]] = defaultdict(set)
    for e in inter:
        pop.learn_one(e.user_id, e.item_id, e.ts, isinstance(e, Click))
        seen[e.user_id].add(e.item_id)
    return {
        "interactions": len(inter),
        "item_events": Counter(e.item_id for e in inter),
        "item_clicks": Counter(e.item_id for e in inter if isinstance(e, Click)),
        "popularity": dict(zip(pop.catalog.ids, pop.score_all(None, pop.epoch))),
        "seen": seen,
        "items": {e.item_id for e in events if isinstance(e, Upload)},
    }


async def compare(r: aioredis.Redis, want: dict) -> dict:
    def counts(h: dict) -> Counter:
        return Counter({k.decode(): int(v) for k, v in h.items()})
    got_events = counts(await r.hgetall(f"{APP}:item-events"))
    got_clicks = counts(await r.hgetall(f"{APP}:item-clicks"))
    lost = sum((want["item_events"] - got_events).values())
    twice = sum((got_events - want["item_events"]).values())
    clicks_off = sum(((want["item_clicks"] - got_clicks) + (got_clicks - want["item_clicks"]))
                     .values())
    # Every event of the drill falls in one decay epoch: one hash, relative to the same epoch.
    keys = await r.keys(f"{APP}:pop:*")
    got_pop = {k.decode(): float(v) for key in keys for k, v in (await r.hgetall(key)).items()}
    pop_off = len(want["popularity"]) if len(keys) != 1 else int(sum(
        abs(got_pop.get(i, 0.0) - w) > 1e-6 * max(1.0, w) for i, w in want["popularity"].items()))
    seen_off = 0
    for user, items in want["seen"].items():
        stored = {i.decode() for i in await r.lrange(f"{APP}:seen:{user}", 0, -1)}
        if len(items) <= MAX_SEEN and stored != items:
            seen_off += 1
    registered = {k.decode() for k in await r.hkeys(f"{APP}:items")}
    return {"lost": lost, "learned_twice": twice, "clicks_off": clicks_off,
            "popularity_off": pop_off, "users_seen_off": seen_off,
            "items_missing": len(want["items"] - registered)}


def list_counts(events: list, lists: Lists) -> dict:
    """Lists doubled (two with one user and trigger), and users left without a list for their
    last interactions. A list names the latest event of its user in its micro-batch, in event
    time across topics, so a user's list may name a view that came just before their last
    click: any of the user's events within a second of their last counts."""
    triggers = Counter((user, trig) for _, _, user, trig in lists.seen if trig)
    named = {trig for _, trig in triggers}
    last: dict[str, list] = {}
    for j, e in enumerate(events):
        if isinstance(e, (View, Click)):
            last.setdefault(e.user_id, []).append((j, e))
    lost = sorted(mine[-1][0] for mine in last.values()
                  if not any(e.event_id in named for _, e in mine
                             if e.ts >= mine[-1][1].ts - 1.0))
    return {"lists": len(lists.seen),
            "lists_doubled": sum(n - 1 for n in triggers.values()),
            "lists_lost": len(lost), "lists_lost_at_events": lost[:20]}


async def main(args) -> dict:
    rng = random.Random(args.seed)
    events = world_events(args)
    faults = plan_faults(args, rng)
    want = expected_state(events)
    with tempfile.TemporaryDirectory(prefix="chaos-") as tmp, \
            EmbeddedRuntime(run_dir=Path(args.keep or tmp)) as rt:
        await ensure_topics(rt.settings(), args.partitions)
        r = redis_client(rt.settings())
        group = Group(rt, args.workers, args.partitions, not args.no_static)
        lists, stop = Lists(), asyncio.Event()
        collector = asyncio.create_task(collect_lists(rt.settings(), lists, stop, lists.reconnect))
        try:
            for p in group.procs:
                await wait_for_worker(rt.settings(), p)
            print(f"{len(events)} events at {args.rate}/s, {args.workers} worker(s), "
                  f"{len(faults)} faults", flush=True)
            await send_all(events, rt, group, lists, faults, r, args)
            drained = await wait_learned(r, want["interactions"], args.drain_timeout)
            await quiet(lists, 3.0, 30.0)  # the last lists
            state = await compare(r, want)
        finally:
            stop.set()
            await collector
            group.stop()
            await r.aclose()
    kills = [f for f in faults if f.kind in ("kill", "model")]
    rec = [f.recovery_s for f in kills if f.recovery_s is not None]
    by_kind = {f.kind: f for f in faults}
    exact = drained and not any(state[k] for k in ("clicks_off", "popularity_off",
                                                    "users_seen_off", "items_missing"))
    return {
        "kills": len(kills), "events_sent": len(events), "workers": args.workers,
        "static_membership": not args.no_static,
        "lost": state["lost"], "learned_twice": state["learned_twice"],
        "recovery_s_p50": round(statistics.median(rec), 2) if rec else None,
        "recovery_s_max": round(max(rec), 2) if len(rec) == len(kills) else None,
        "redis_restart_ok": exact and by_kind["redis"].recovery_s is not None,
        "broker_restart_ok": exact and by_kind["broker"].recovery_s is not None,
        **{k: v for k, v in state.items() if k not in ("lost", "learned_twice")},
        **list_counts(events, lists),
        "faults": [{"kind": f.kind, "at_event": f.at_event, "worker": f.worker,
                    "recovery_s": None if f.recovery_s is None else round(f.recovery_s, 2),
                    "others_gap_s": None if f.others_gap_s is None
                    else round(f.others_gap_s, 2)} for f in faults],
        "machine": f"{platform.machine()}, {os.cpu_count()} cpus, "
                   f"Python {platform.python_version()}",
    }


def print_table(s: dict) -> None:
    print(f"\n{'fault':8s} {'at event':>9s} {'worker':>6s} {'recovery':>9s} {'others gap':>11s}")
    for f in s["faults"]:
        rec = "-" if f["recovery_s"] is None else f"{f['recovery_s']:.1f} s"
        gap = "" if f["others_gap_s"] is None else f"{f['others_gap_s']:.1f} s"
        print(f"{f['kind']:8s} {f['at_event']:9d} {f['worker']:6d} {rec:>9s} {gap:>11s}")
    print(f"\nevents sent {s['events_sent']}, lost {s['lost']}, learned twice "
          f"{s['learned_twice']}, clicks off {s['clicks_off']}, popularity off "
          f"{s['popularity_off']}, users' seen off {s['users_seen_off']}, items missing "
          f"{s['items_missing']}")
    print(f"lists {s['lists']}, doubled {s['lists_doubled']}, users whose last interaction got "
          f"no list {s['lists_lost']}")
    print(f"recovery p50 {s['recovery_s_p50']} s, max {s['recovery_s_max']} s; redis restart "
          f"{'ok' if s['redis_restart_ok'] else 'FAILED'}, broker restart "
          f"{'ok' if s['broker_restart_ok'] else 'FAILED'}  ({s['machine']})")


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--kills", type=int, default=10)
    ap.add_argument("--events", type=int, default=20000)
    ap.add_argument("--rate", type=float, default=300.0, help="events per second sent")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument("--users", type=int, default=500)
    ap.add_argument("--items", type=int, default=300)
    ap.add_argument("--no-static", action="store_true",
                    help="restart workers without an instance id (dynamic membership)")
    ap.add_argument("--recovery-timeout", type=float, default=180.0)
    ap.add_argument("--drain-timeout", type=float, default=300.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--keep", type=Path, help="run in this folder and keep its logs")
    ap.add_argument("--json", action="store_true")
    return ap.parse_args(argv)


if __name__ == "__main__":
    args = parse_args()
    summary = asyncio.run(main(args))
    print_table(summary)
    if args.json:
        print(json.dumps(summary))
    ok = (summary["lost"] == 0 and summary["learned_twice"] == 0
          and summary["redis_restart_ok"] and summary["broker_restart_ok"])
    sys.exit(0 if ok else 1)
