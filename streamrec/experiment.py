"""`streamrec experiment`: a closed-loop A/B test of the live system on a synthetic world.

The simulated app (streamrec/simulator/closed_loop.py) shows each user the latest list the
worker published for them, its users view and click by their true affinity, and the events
go back to the worker, which learns from every bucket's events alike (a live A/B test).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from dataclasses import dataclass

import orjson
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from streamrec.clients import kafka_consumer, redis_client
from streamrec.config import Settings
from streamrec.embedded import EmbeddedRuntime
from streamrec.engine.buckets import Buckets
from streamrec.processes import start_trainer, start_worker, wait_for_worker
from streamrec.records.events import Event
from streamrec.records.topics import RECOMMENDATIONS, ensure_topics
from streamrec.simulator.closed_loop import ClosedLoopApp
from streamrec.simulator.publish import publish, start_producer
from streamrec.simulator.worlds import make_world

#: Every policy in one experiment, in equal shares: bucket sizes then weigh nothing in the
#: comparison (coverage and the new items' first clicks grow with a bucket's traffic).
DEFAULT_BUCKETS = ("blend:1,blend_no_content:1,blend_no_student:1,popularity:1,random:1,"
                   "oracle:1,organic:1")


@dataclass
class ExperimentConfig:
    world: str = "default"
    seed: int = 0
    users: int | None = None
    items: int | None = None
    events: int | None = 40_000
    duration_s: float | None = None
    rate: float = 200.0
    buckets: str = DEFAULT_BUCKETS
    new_within_s: float = 60.0
    #: Events played in the loop before the measured ones (not counted).
    warmup: int = 0
    #: After the warm-up, a training round whose student the worker serves before measuring
    #: (embedded runtime only: a deployment runs `streamrec train --every`).
    train: bool = False
    #: Extra environment of the embedded worker (e.g. STREAMREC_CONTENT=0).
    worker_env: dict[str, str] | None = None


async def _follow(settings: Settings, app: ClosedLoopApp, stop: asyncio.Event,
                  ready: asyncio.Event, from_beginning: bool) -> None:
    """Every list published from now on becomes its user's latest."""
    consumer = kafka_consumer(settings, RECOMMENDATIONS, enable_auto_commit=False,
                              auto_offset_reset="earliest" if from_beginning else "latest")
    await consumer.start()
    try:
        if not from_beginning:  # the end as it is now, before the first event is sent
            while not consumer.assignment():
                await asyncio.sleep(0.05)
            await consumer.seek_to_end()
            for tp in consumer.assignment():
                await consumer.position(tp)
        ready.set()
        while not stop.is_set():
            for msgs in (await consumer.getmany(timeout_ms=100, max_records=5000)).values():
                for m in msgs:
                    app.on_list(orjson.loads(m.value))
    finally:
        await consumer.stop()


async def _wait_indexed(settings: Settings, catalogue: list, console: Console,
                        quiet: bool, timeout_s: float = 600.0) -> None:
    """Until the worker has registered every item of ``catalogue`` (encoded, in Redis)."""
    r = redis_client(settings)
    deadline = time.monotonic() + timeout_s
    try:
        with console.status("indexing the catalogue") as status:
            while (n := await r.hlen(f"{settings.app_id}:items")) < len(catalogue):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"the worker indexed {n} of {len(catalogue)} items "
                                       f"in {timeout_s:.0f} s")
                status.update(f"indexing the catalogue: {n:,} / {len(catalogue):,} items")
                await asyncio.sleep(0.5)
    finally:
        await r.aclose()


def _live_line(app: ClosedLoopApp, names: list[str]) -> str:
    report = app.report(tuple(names))
    parts = [f"{n} {r['ctr']:.3f}" if r["ctr"] is not None else f"{n} -"
             for n, r in report.items() if n in names]
    return f"lists {sum(app.lists.values()):,}  CTR " + "  ".join(parts)


async def _train(rt: EmbeddedRuntime, console: Console) -> dict:
    """One training round (the worker swaps a published student in before its next batch:
    the measured lists name it, ``lists_by_student``)."""
    proc = start_trainer(rt, rt.run_dir / "snapshots")
    t0 = time.monotonic()
    try:
        with console.status("training a student (teacher, then student)"):
            while proc.proc.poll() is None:
                await asyncio.sleep(0.5)
    finally:
        proc.stop()
    lines = proc.log.read_text(errors="replace").strip().splitlines()
    try:
        report = json.loads(lines[-1])
    except (IndexError, ValueError):
        console.print(f"[yellow]training round failed (see {proc.log}); measuring without a "
                      f"student[/yellow]")
        return {"published": False, "reason": f"exit {proc.proc.returncode}"}
    out = {"published": report["published"], "version": report["version"],
           "reason": report["reason"], "seconds": round(time.monotonic() - t0, 1)}
    console.print(f"training round: {'published ' + str(report['version']) if report['published'] else 'not published'}"
                  f" ({report['reason']}) in {out['seconds']:.0f} s")
    return out


async def run_loop(settings: Settings, cfg: ExperimentConfig, console: Console,
                   from_beginning: bool, quiet: bool = False,
                   rt: EmbeddedRuntime | None = None) -> dict:
    """Publish the world's events with the app in the loop; the report per bucket."""
    buckets = Buckets.parse(cfg.buckets)
    names = [b.name for b in buckets.buckets]
    world = make_world(cfg.world, n_users=cfg.users, n_items=cfg.items, seed=cfg.seed,
                       events_per_s=cfg.rate or 1000.0)
    app = ClosedLoopApp(world, lambda user: buckets.of(user).name, new_within_s=cfg.new_within_s)
    stop, ready = asyncio.Event(), asyncio.Event()
    follower = asyncio.create_task(_follow(settings, app, stop, ready, from_beginning))
    await asyncio.wait_for(ready.wait(), 30)
    producer = await start_producer(settings)
    # The catalogue first, indexed before the first visit, as in a live app: the lists are
    # then compared on the items' content from the start, not on how fast it is encoded.
    catalogue = list(itertools.islice(world.events(time.time()), world.cfg.n_items))
    await publish(catalogue, settings, producer=producer)
    await _wait_indexed(settings, catalogue, console, quiet)
    stream = world.events(time.time(), feed=app.feed, catalogue=False)
    training = None
    if cfg.warmup:
        with console.status(f"warm-up: {cfg.warmup:,} events in the loop, not measured"):
            await publish(itertools.islice(stream, cfg.warmup), settings, rate=cfg.rate or None,
                          on_event=app.on_event, producer=producer)
        if cfg.train and rt is not None:
            # Training reads the log back; lists keep flowing for the warm-up's last batches.
            training = await _train(rt, console)
        app.start_measuring()
    if cfg.events is not None:
        stream = itertools.islice(stream, cfg.events)
    t0 = time.monotonic()
    progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                        TimeElapsedColumn(), TextColumn("{task.fields[line]}"), console=console,
                        transient=quiet, disable=quiet)
    count = itertools.count(1)
    try:
        with progress:
            task = progress.add_task("closed loop", total=cfg.events, line="")

            def on_event(ev: Event, sent_at: float) -> None:
                app.on_event(ev, sent_at)
                n = next(count)
                if n % 1000 == 0:
                    progress.update(task, completed=n, line=_live_line(app, names))
                    if not console.is_terminal and not quiet and n % 10_000 == 0:
                        console.print(f"{n:,} events  {_live_line(app, names)}")  # for logs

            stats = await publish(stream, settings, rate=cfg.rate or None,
                                  duration_s=cfg.duration_s, on_event=on_event,
                                  producer=producer)
            progress.update(task, completed=stats.events, line=_live_line(app, names))
    finally:
        stop.set()
        await producer.stop()
        await follower
    if app.misfiled:
        console.print(f"[yellow]{app.misfiled} lists named another bucket than the app's: "
                      f"does the worker run with STREAMREC_BUCKETS={cfg.buckets}?[/yellow]")
    return {"world": cfg.world, "seed": cfg.seed, "users": world.cfg.n_users,
            "items": world.cfg.n_items, "events": stats.events,
            "seconds": round(time.monotonic() - t0, 1),
            "lists": {b: {"count": n, "policies": dict(app.policies[b]),
                          "sources": dict(app.sources[b])} for b, n in app.lists.items()},
            "misfiled_lists": app.misfiled, "new_within_s": cfg.new_within_s,
            "warmup": cfg.warmup, "training": training,
            "lists_by_student": {str(k): v for k, v in app.students.items()},
            "buckets": app.report(tuple(names))}


def run_experiment(cfg: ExperimentConfig, console: Console, quiet: bool = False,
                   settings: Settings | None = None) -> dict:
    """Against ``settings``' broker and Redis when both are set (a worker there must run with
    the same ``STREAMREC_BUCKETS``), else on the embedded runtime with a worker of its own."""
    s = settings or Settings()
    if s.kafka and s.redis:
        return asyncio.run(run_loop(s, cfg, console, from_beginning=False, quiet=quiet))
    rt = EmbeddedRuntime().start()
    worker = None
    try:
        console.print(f"broker {rt.kafka}  redis {rt.redis}  logs {rt.run_dir}")
        asyncio.run(ensure_topics(rt.settings(), 4))
        worker = start_worker(rt, extra_env={
            "STREAMREC_BUCKETS": cfg.buckets,
            "STREAMREC_SNAPSHOT_DIR": str(rt.run_dir / "snapshots"), **(cfg.worker_env or {})})
        console.print("worker starting (joining its consumer group takes a few seconds)...")
        asyncio.run(wait_for_worker(rt.settings(), worker))
        return asyncio.run(run_loop(rt.settings(), cfg, console, from_beginning=True,
                                    quiet=quiet, rt=rt))
    finally:
        if worker is not None:
            worker.stop()
        rt.stop()


def _fmt(v, digits: int = 3) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def _ci(r: dict, key: str) -> str:
    ci = r.get(f"{key}_ci95")
    return f"{_fmt(r[key])} ({_fmt(ci[0])}-{_fmt(ci[1])})" if ci else _fmt(r[key])


def tables(result: dict) -> tuple[Table, Table]:
    """The per-bucket figures of the lists and of the new uploads, 95% bootstrap intervals
    over users in parentheses."""
    lists = Table(title=f"closed loop: {result['world']} world, seed {result['seed']}, "
                        f"{result['users']:,} users, {result['items']:,} items, "
                        f"{result['events']:,} events; 95% CIs, bootstrap over users")
    for col in ("bucket", "users", "impressions", "CTR", "clicks/session", "coverage"):
        lists.add_column(col, justify="left" if col == "bucket" else "right")
    new = Table(title=f"new uploads ({next(iter(result['buckets'].values()))['new_items']:,} "
                      f"during the run)")
    for col in ("bucket", "impressions", "CTR", f"clicked ≤{result['new_within_s']:g}s",
                "1st impr. s", "1st click s"):
        new.add_column(col, justify="left" if col == "bucket" else "right")
    for name, r in result["buckets"].items():
        lists.add_row(name, f"{r['users']:,}", f"{r['impressions']:,}", _ci(r, "ctr"),
                      _ci(r, "clicks_per_session"), _fmt(r["coverage"]))
        new.add_row(name, f"{r['new_item_impressions']:,}", _ci(r, "new_item_ctr"),
                    _fmt(r["new_item_clicked_within_share"]),
                    _fmt(r["new_item_first_impression_s_median"], 1),
                    _fmt(r["new_item_first_click_s_median"], 1))
    return lists, new
