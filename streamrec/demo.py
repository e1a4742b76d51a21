"""`streamrec demo`: the whole system, end to end, on the embedded runtime."""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import orjson
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table

from streamrec.clients import kafka_consumer, redis_client
from streamrec.config import Settings
from streamrec.embedded import EmbeddedRuntime
from streamrec.engine.shared_state import read_stats
from streamrec.heap import freeze_startup_objects
from streamrec.processes import Process, start_trainer, start_worker, wait_for_worker
from streamrec.records.events import Click, Event, View
from streamrec.records.topics import DEAD_LETTER, RECOMMENDATIONS, ensure_topics
from streamrec.simulator.publish import publish, start_producer
from streamrec.simulator.tail import render
from streamrec.simulator.world import World, WorldConfig

#: Bad events the demo mixes in, so the dead-letter path is visible.
BAD_EVENTS = [
    ("views", b'{"event_id": "bad-1", "user_id": "u1", "item_id": '),           # malformed JSON
    ("views", b'{"event_id": "bad-2", "item_id": "i1", "ts": 1700000000}'),    # missing user_id
    ("clicks", b'{"event_id": "bad-3", "user_id": 5, "item_id": "i1", "ts": 1}'),  # wrong type
    ("views", b'{"event_id": "bad-4", "type": "purchase", "user_id": "u1", "item_id": "i1", "ts": 1}'),
    ("views", b'{"event_id": "bad-5", "user_id": "u1", "item_id": "i1", "ts": 1, "pad": "'
     + b"x" * 8000 + b'"}'),                                                    # oversized
]


@dataclass
class OnlineHitRate:
    """The demo's online HR@10: was the clicked item in the latest list published for the user
    before their view of it (or before the click when there was no view)? The simulated app
    shows that list at the top of the user's page (a closed loop), so this is also the share of
    clicks the recommendations earned."""

    latest: dict[str, list[str]] = field(default_factory=dict)
    at_view: dict[tuple[str, str], bool] = field(default_factory=dict)
    clicks: int = 0
    hits: int = 0

    def on_list(self, user: str, items: list[str]) -> None:
        self.latest[user] = items

    def feed(self, user: str) -> list[str]:
        return self.latest.get(user, [])

    def on_event(self, ev: Event) -> None:
        if isinstance(ev, View):
            self.at_view.setdefault((ev.user_id, ev.item_id),
                                    ev.item_id in self.latest.get(ev.user_id, ()))
        elif isinstance(ev, Click):
            hit = self.at_view.pop((ev.user_id, ev.item_id), None)
            if hit is None:
                hit = ev.item_id in self.latest.get(ev.user_id, ())
            self.clicks += 1
            self.hits += hit

    @property
    def value(self) -> float:
        return self.hits / self.clicks if self.clicks else 0.0


@dataclass
class Observed:
    hr: OnlineHitRate = field(default_factory=OnlineHitRate)
    recs: int = 0
    dead: Counter = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)
    sample: deque = field(default_factory=lambda: deque(maxlen=6))
    #: Lists per student version that scored them (None: before the first student).
    students: Counter = field(default_factory=Counter)
    student_since: dict[str, float] = field(default_factory=dict)


@dataclass
class Training:
    """The demo's training round: `streamrec train` in a child process at lower priority."""

    started_s: float | None = None
    finished_s: float | None = None
    report: dict | None = None
    error: str | None = None

    def status(self) -> str:
        if self.started_s is None:
            return "not started yet"
        if self.finished_s is None:
            return f"training since {self.started_s:.0f}s (teacher, then student)"
        if self.report is None:
            return f"failed: {self.error}"
        r = self.report
        verdict = f"published {r['version']}" if r["published"] else "not published"
        return f"{verdict} at {self.finished_s:.0f}s: {r['reason']}"


async def train_once(rt: EmbeddedRuntime, snapshot_dir: Path, after_s: float, t0: float,
                     training: Training) -> None:
    await asyncio.sleep(after_s)
    proc = start_trainer(rt, snapshot_dir)
    training.started_s = time.monotonic() - t0
    try:
        while proc.proc.poll() is None:
            await asyncio.sleep(0.5)
    finally:
        proc.stop()
    training.finished_s = time.monotonic() - t0
    lines = proc.log.read_text(errors="replace").strip().splitlines()
    try:
        training.report = json.loads(lines[-1])
    except (IndexError, ValueError):
        training.error = f"exit {proc.proc.returncode}, see {proc.log}"


async def observe(settings: Settings, seen: Observed, stop: asyncio.Event, t0: float) -> None:
    consumer = kafka_consumer(settings, RECOMMENDATIONS, DEAD_LETTER,
                              auto_offset_reset="earliest", enable_auto_commit=False)
    await consumer.start()
    try:
        while not stop.is_set():
            batches = await consumer.getmany(timeout_ms=200, max_records=5000)
            for tp, msgs in batches.items():
                for m in msgs:
                    if tp.topic == DEAD_LETTER:
                        from streamrec.records.dead_letter import reason_kind, reason_of
                        seen.dead[reason_kind(reason_of(m.headers))] += 1
                        continue
                    d = orjson.loads(m.value)
                    seen.hr.on_list(d["user_id"], [i["item_id"] for i in d["items"]])
                    seen.recs += 1
                    seen.latencies.append(d["latency_ms"])
                    student = d["model_version"]["student"]
                    seen.students[student] += 1
                    if student is not None and student not in seen.student_since:
                        seen.student_since[student] = time.monotonic() - t0
                    if seen.recs % 50 == 1:
                        seen.sample.append(render(m.value))
    finally:
        await consumer.stop()


def _view(published: Counter, seen: Observed, elapsed: float, duration: float,
          training: Training) -> Group:
    t = Table(title=f"streamrec demo  {elapsed:5.1f}s / {duration:.0f}s", show_header=False)
    lat = np.array(seen.latencies[-5000:]) if seen.latencies else np.zeros(1)
    t.add_row("events published", f"{sum(published.values()):,}  {dict(published)}")
    t.add_row("recommendations out", f"{seen.recs:,}")
    t.add_row("dead letters", f"{sum(seen.dead.values())}  {dict(seen.dead)}")
    t.add_row("online HR@10", f"{seen.hr.value:.3f}  ({seen.hr.clicks} clicks)")
    t.add_row("latency p50 / p99", f"{np.percentile(lat, 50):.1f} / {np.percentile(lat, 99):.1f} ms")
    t.add_row("training round", training.status())
    in_service = [f"{v} (in lists from {s:.0f}s)" for v, s in seen.student_since.items()]
    t.add_row("student in service", ", ".join(in_service) or "none yet")
    samples = Table(title="latest recommendations (user [latency] item(sources))", show_header=False)
    for line in seen.sample:
        samples.add_row(line)
    return Group(t, samples)


async def _demo(rt: EmbeddedRuntime, worker: Process, duration: float, rate: float,
                console: Console, quiet: bool, train_at: float) -> dict:
    await wait_for_worker(rt.settings(), worker)
    seen, published, training = Observed(), Counter(), Training()
    stop = asyncio.Event()
    t0 = time.monotonic()
    observer = asyncio.create_task(observe(rt.settings(), seen, stop, t0))
    producer = await start_producer(rt.settings())
    world = World(WorldConfig(n_users=1000, n_items=500, events_per_s=rate, seed=42))
    # The demo drives and measures in this process: its own full collections would pause the
    # sends and count as the worker's latency (see benchmarks/throughput.py).
    freeze_startup_objects()
    trainer = asyncio.create_task(train_once(rt, rt.run_dir / "snapshots", train_at * duration,
                                             t0, training)) if train_at > 0 else None

    def on_event(ev: Event, sent_at: float) -> None:
        published[ev.type] += 1
        seen.hr.on_event(ev)

    async def bad_events() -> None:
        for topic, value in BAD_EVENTS:
            await asyncio.sleep(duration / (len(BAD_EVENTS) + 1))
            await producer.send(topic, value, key=b"u1")
            published["invalid"] += 1

    with Live(_view(published, seen, 0, duration, training), console=console,
              refresh_per_second=4, transient=quiet) as live:
        async def refresh() -> None:
            while not stop.is_set():
                live.update(_view(published, seen, time.monotonic() - t0, duration, training))
                await asyncio.sleep(0.25)

        painter = asyncio.create_task(refresh())
        bad = asyncio.create_task(bad_events())
        await publish(world.events(time.time(), feed=seen.hr.feed), rt.settings(), rate=rate, duration_s=duration,
                      on_event=on_event, producer=producer)
        await bad
        if trainer is not None:  # a round started late may still be running: let it finish
            try:
                await asyncio.wait_for(trainer, timeout=300)
            except TimeoutError:
                training.error = "still running after the stream ended; stopped"
        # Let the worker drain what is in flight, then stop observing.
        r = redis_client(rt.settings())
        want = sum(v for k, v in published.items() if k != "invalid")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            stats = await read_stats(r)
            if stats.get("events", 0) >= want and sum(seen.dead.values()) >= len(BAD_EVENTS):
                break
            await asyncio.sleep(0.2)
        await asyncio.sleep(0.5)
        stop.set()
        await asyncio.gather(observer, painter)
        live.update(_view(published, seen, time.monotonic() - t0, duration, training))
        await r.aclose()
    await producer.stop()
    lat = np.array(seen.latencies) if seen.latencies else np.zeros(1)
    return {
        "events_in": sum(v for k, v in published.items() if k != "invalid"),
        "events_by_type": {k: v for k, v in published.items() if k != "invalid"},
        "invalid_events_sent": published.get("invalid", 0),
        "recommendations_out": seen.recs,
        "dead_letter": sum(seen.dead.values()),
        "dead_letter_reasons": dict(seen.dead),
        "online_hr_at_10": round(seen.hr.value, 4),
        "clicks": seen.hr.clicks,
        "latency_ms_p50": round(float(np.percentile(lat, 50)), 2),
        "latency_ms_p99": round(float(np.percentile(lat, 99)), 2),
        "duration_s": round(time.monotonic() - t0, 2),
        "worker_stats": stats,
        "training": {"started_s": training.started_s, "finished_s": training.finished_s,
                     "published": training.report and training.report["published"],
                     "version": training.report and training.report["version"],
                     "reason": training.report["reason"] if training.report else training.error,
                     "scores": training.report and training.report["scores"]},
        "lists_by_student": {str(k): v for k, v in seen.students.items()},
        "student_in_lists_from_s": {k: round(v, 2) for k, v in seen.student_since.items()},
    }


def run_demo(duration: float, rate: float, console: Console, quiet: bool = False,
             train_at: float = 0.4) -> dict:
    rt = EmbeddedRuntime().start()
    worker = None
    try:
        console.print(f"broker {rt.kafka}  redis {rt.redis}  logs {rt.run_dir}")
        asyncio.run(ensure_topics(rt.settings(), 4))
        worker = start_worker(rt, extra_env={"STREAMREC_SNAPSHOT_DIR": str(rt.run_dir / "snapshots")})
        console.print("worker starting (joining its consumer group takes a few seconds)...")
        summary = asyncio.run(_demo(rt, worker, duration, rate, console, quiet, train_at))
        if not quiet:
            console.print(f"summary: {orjson.dumps(summary).decode()}")
        return summary
    finally:
        if worker is not None:
            worker.stop()
        rt.stop()
