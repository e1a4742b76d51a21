"""The ``streamrec`` command."""

from __future__ import annotations

import os

# One BLAS thread: a worker is one event loop on one core, and the broker and Redis need the
# other; threaded BLAS contended with them (measured: 394 vs 260 us per list, batched).
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import asyncio
import itertools
import json
import logging
import time
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from streamrec.config import Settings

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Event-driven streaming recommender: Kafka events in, fresh top-K lists out.")
console = Console(stderr=True)


def _settings(kafka: Optional[str], redis: Optional[str], partitions: Optional[int] = None) -> Settings:
    s = Settings()
    s.kafka = kafka or s.kafka
    s.redis = redis or s.redis
    if partitions:
        s.partitions = partitions
    return s


def _need_cluster(s: Settings) -> None:
    if not s.kafka:
        console.print("[red]No broker: set STREAMREC_KAFKA or pass --kafka host:port[/red]")
        raise typer.Exit(2)


def _check_security(s: Settings, *, kafka: bool = True, redis: bool = False,
                    web: bool = False) -> None:
    """Stop (exit code 2) with one line naming every problem of the security settings."""
    from streamrec.security import SecurityConfigError, check

    try:
        check(s, kafka=kafka, redis=redis, web=web)
    except SecurityConfigError as exc:
        # Not markup (paths and URLs may hold brackets), not wrapped: one line for log scrapers.
        console.print(f"security settings: {exc}", style="red", markup=False, highlight=False,
                      soft_wrap=True)
        raise typer.Exit(2) from None


def _check_snapshot_key(s: Settings) -> None:
    """Stop with the reason when the snapshot key settings are unusable."""
    from streamrec.snapshots.signing import configured_key

    try:
        configured_key(s)
    except ValueError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None


def _progress() -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), TextColumn("{task.fields[rate]}"), console=console,
                    transient=False)


@app.command()
def worker(
    kafka: Optional[str] = typer.Option(None, help="Broker host:port \\[env STREAMREC_KAFKA]"),
    redis: Optional[str] = typer.Option(None, help="Redis URL \\[env STREAMREC_REDIS]"),
    embedded: bool = typer.Option(False, help="Start an embedded broker and redis-server"),
    engine: Optional[str] = typer.Option(
        None, help="pipeline (default), or a benchmark baseline: naive, passthrough "
                   "\\[env STREAMREC_ENGINE]"),
    partitions: Optional[int] = typer.Option(None, help="Partitions per topic \\[env STREAMREC_PARTITIONS]"),
    web_port: int = typer.Option(0, help="Port of the worker's web server (/metrics); 0 picks one"),
    loglevel: str = typer.Option("warning", help="Faust log level"),
) -> None:
    """Run a Faust worker: consume events, update the models, publish recommendations."""
    from streamrec.streams.worker import run_worker

    s = _settings(kafka, redis, partitions)
    s.engine = engine or s.engine
    s.web_port = web_port or s.web_port
    _check_snapshot_key(s)
    _check_security(s, redis=True, web=True)
    _check_buckets(s.buckets)
    rt = None
    if embedded:
        from streamrec.embedded import EmbeddedRuntime
        from streamrec.security import uses_security

        if uses_security(s):
            console.print("[red]The embedded broker and Redis speak neither SASL, TLS nor "
                          "passwords: unset STREAMREC_KAFKA_SECURITY_PROTOCOL and the other "
                          "STREAMREC_KAFKA_*/STREAMREC_REDIS_* security settings, or drop "
                          "--embedded[/red]", soft_wrap=True)
            raise typer.Exit(2)
        rt = EmbeddedRuntime().start()
        s.kafka, s.redis = rt.kafka, rt.redis
        console.print(f"embedded broker {rt.kafka}, redis {rt.redis}, logs in {rt.run_dir}")
    if not s.kafka or not s.redis:
        console.print("[red]Set STREAMREC_KAFKA and STREAMREC_REDIS, or pass --embedded[/red]")
        raise typer.Exit(2)
    try:
        run_worker(s, loglevel)
    finally:
        if rt is not None:
            rt.stop()


@app.command()
def simulate(
    kafka: Optional[str] = typer.Option(None, help="Broker host:port \\[env STREAMREC_KAFKA]"),
    out: Optional[Path] = typer.Option(None, help="Write events to this JSONL file instead"),
    events: Optional[int] = typer.Option(None, help="Stop after this many events"),
    duration: Optional[float] = typer.Option(None, help="Stop after this many seconds"),
    rate: float = typer.Option(200.0, help="Events per second; 0 = as fast as possible"),
    world_name: str = typer.Option("default", "--world", help="Which world: default, tags, "
                                   "sessions, trends, drift, sparse, images (docs/worlds.md)"),
    users: Optional[int] = typer.Option(None, help="Users (default: the world's own size)"),
    items: Optional[int] = typer.Option(None, help="Items in the starting catalogue "
                                        "(default: the world's own size)"),
    seed: int = typer.Option(0),
    embeddings: bool = typer.Option(False, "--embeddings", help="Uploads carry a vector of "
                                    "their topics instead of an image: workers encode nothing"),
) -> None:
    """Generate a synthetic world and publish its events (or write them to JSONL)."""
    from streamrec.simulator.worlds import make_world

    try:
        world = make_world(world_name, n_users=users, n_items=items, seed=seed,
                           events_per_s=rate or 1000.0, embeddings=embeddings)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--world") from None
    if out is not None:
        from streamrec.simulator.logs import write_jsonl

        limit = events or 100_000
        n = write_jsonl(itertools.islice(world.events(time.time() - limit / (rate or 1000.0)), limit), out)
        console.print(f"wrote {n} events to {out}")
        return
    s = _settings(kafka, None)
    _need_cluster(s)
    _check_security(s)
    if events is None and duration is None:
        duration = 60.0
    stream = world.events(time.time())
    if events is not None:
        stream = itertools.islice(stream, events)
    stats = asyncio.run(_publish_with_progress(stream, s, rate=rate or None, duration_s=duration,
                                               total=events))
    console.print(f"published {stats.events} events {stats.by_type} in {stats.seconds:.1f}s")


async def _publish_with_progress(events, s: Settings, total: Optional[int] = None, **kw):
    from streamrec.records.topics import ensure_topics
    from streamrec.simulator.publish import publish

    await ensure_topics(s)
    with _progress() as progress:
        task = progress.add_task("publishing", total=total, rate="")
        t0 = time.monotonic()
        count = itertools.count(1)

        def tick(ev, sent_at):
            n = next(count)
            if n % 200 == 0:
                progress.update(task, completed=n, rate=f"{n / (time.monotonic() - t0):,.0f} ev/s")

        stats = await publish(events, s, on_event=tick, **kw)
        progress.update(task, completed=stats.events)
    return stats


def _load_events(file: Path, fmt: str, mapping: str, default_type: Optional[str]):
    from streamrec.simulator import logs

    if fmt == "auto":
        fmt = "csv" if file.suffix.lower() == ".csv" else "jsonl"
    if fmt == "csv":
        return logs.read_csv(file, logs.parse_mapping(mapping), default_type)
    if fmt == "jsonl":
        return logs.read_jsonl(file)
    raise typer.BadParameter(f"unknown format {fmt!r}: jsonl or csv")


@app.command()
def replay(
    file: Optional[Path] = typer.Argument(None, help="JSONL or CSV event log"),
    dataset: Optional[str] = typer.Option(None, help="Instead of FILE: movielens-100k"),
    kafka: Optional[str] = typer.Option(None, help="Broker host:port \\[env STREAMREC_KAFKA]"),
    speed: float = typer.Option(0.0, help="Times faster than recorded; 0 = as fast as possible"),
    fmt: str = typer.Option("auto", "--format", help="jsonl, csv or auto (by extension)"),
    columns: str = typer.Option("", help="CSV column mapping: user_id=uid,item_id=movie,ts=time"),
    default_type: Optional[str] = typer.Option(None, help="CSV event type when there is no type column"),
    limit: Optional[int] = typer.Option(None, help="Replay at most this many events"),
) -> None:
    """Publish a recorded event log in timestamp order."""
    s = _settings(kafka, None)
    _need_cluster(s)
    _check_security(s)
    if dataset:
        events = _dataset(dataset)
    elif file is not None:
        if not file.is_file():
            raise typer.BadParameter(f"{file} does not exist")
        events = _load_events(file, fmt, columns, default_type)
    else:
        raise typer.BadParameter("give a FILE or --dataset")
    events = sorted(events, key=lambda e: e.ts or 0.0)  # stable: ties keep file order
    if limit:
        events = events[:limit]
    stats = asyncio.run(_publish_with_progress(iter(events), s, total=len(events),
                                               speed=speed or None))
    console.print(f"replayed {stats.events} events {stats.by_type} in {stats.seconds:.1f}s")


def _dataset(name: str):
    from streamrec.simulator.movielens import DatasetMissing, movielens_100k

    if name != "movielens-100k":
        raise typer.BadParameter(f"unknown dataset {name!r}: movielens-100k")
    try:
        return list(movielens_100k())
    except DatasetMissing as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None


def _world_events(name: str, n: int, seed: int, users: Optional[int], items: Optional[int],
                  images: bool) -> list:
    from streamrec.simulator.worlds import world_events

    try:
        with console.status(f"generating {n:,} events of the {name} world"):
            return world_events(name, n, seed=seed, n_users=users, n_items=items, images=images)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None


@app.command()
def tail(
    kafka: Optional[str] = typer.Option(None, help="Broker host:port \\[env STREAMREC_KAFKA]"),
    as_json: bool = typer.Option(False, "--json", help="Print JSON lines"),
    from_beginning: bool = typer.Option(False, help="Start at the oldest message"),
    limit: Optional[int] = typer.Option(None, help="Stop after this many messages"),
    topic: str = typer.Option("recommendations", help="recommendations or dead-letter"),
) -> None:
    """Follow the recommendations (or dead-letter) topic."""
    from streamrec.simulator.tail import follow

    s = _settings(kafka, None)
    _need_cluster(s)
    _check_security(s)
    try:
        asyncio.run(follow(s, topic, as_json, from_beginning, limit))
    except KeyboardInterrupt:
        pass


@app.command()
def evaluate(
    dataset: Optional[str] = typer.Option(None, help="movielens-100k"),
    log: Optional[Path] = typer.Option(None, help="JSONL event log"),
    world: Optional[str] = typer.Option(None, help="A synthetic world, generated in memory "
                                        "(see `streamrec simulate --world`)"),
    world_seed: int = typer.Option(0, help="With --world: the world's seed"),
    users: Optional[int] = typer.Option(None, help="With --world: users (default: the world's)"),
    items: Optional[int] = typer.Option(None, help="With --world: items (default: the world's)"),
    events_n: int = typer.Option(60_000, "--events", help="With --world: events to generate"),
    models: str = typer.Option("", help="Comma-separated subset of: popularity, baseline_tags, "
                               "baseline_cooccurrence, covisitation, isgd, river_biasedmf, "
                               "content, tags, blend, blend_no_content, blend_no_content_no_fresh, "
                               "teacher, student, "
                               "student_int8, blend_no_student"),
    content: bool = typer.Option(True, help="Encode upload text and images for the content "
                                 "source (--no-content skips the encoders)"),
    train_fraction: float = typer.Option(
        0.5, min=0.0, max=0.95, help="Train a teacher and distil a student on this first share "
        "of the interactions, then score every model on the rest only (0: no teacher or "
        "student, score the whole log)"),
    epochs: Optional[int] = typer.Option(None, help="Teacher epochs (the student gets the "
                                         "same number, split between its two phases)"),
    seed: int = typer.Option(0, help="Seed of the models' initialisation and sampling"),
    limit: Optional[int] = typer.Option(None, help="Use only the first N events"),
    as_json: bool = typer.Option(False, "--json", help="End with one JSON line of results"),
) -> None:
    """Prequential (test-then-train) evaluation of the online models, without Kafka."""
    from streamrec.evaluation.prequential import default_models, encode_uploads, prequential

    if sum(x is not None for x in (dataset, log, world)) != 1:
        raise typer.BadParameter("give one of --dataset, --log or --world")
    if dataset:
        events = _dataset(dataset)
    elif log is not None:
        if not log.is_file():
            raise typer.BadParameter(f"{log} does not exist")
        events = sorted(_load_events(log, "jsonl", "", None), key=lambda e: e.ts or 0.0)
    else:
        events = _world_events(world, events_n, world_seed, users, items, content)
    if limit:
        events = events[:limit]
    chosen = default_models(seed)
    distilled = ("teacher", "student", "student_int8", "blend_no_student")
    wanted = [m.strip() for m in models.split(",") if m.strip()] or list(chosen) + (
        list(distilled) if train_fraction > 0 else [])
    unknown = set(wanted) - chosen.keys() - set(distilled)
    if unknown:
        raise typer.BadParameter(f"unknown models {sorted(unknown)}; have "
                                 f"{sorted(chosen) + list(distilled)}")
    train = train_fraction > 0 and bool(set(wanted) & {"teacher", "student", "student_int8", "blend"})
    embeddings, window, score_from = {}, None, 0
    with _progress() as progress:
        trained = None
        if train:
            try:
                trained, embeddings, score_from = _train_for_evaluation(
                    events, train_fraction, content, epochs, progress, seed)
            except ValueError as exc:  # too little to train on: evaluate the rest anyway
                console.print(f"[yellow]no teacher or student: {exc}[/yellow]")
                wanted = [m for m in wanted if m not in distilled]
                train = False
        if trained is not None:
            from streamrec.evaluation.prequential import distilled_models

            chosen.update(distilled_models(trained, seed))
            w = trained.window
            window = {"interactions": w.stop, "events": score_from,
                      "from_ts": float(w.log.ts[0]), "to_ts": float(w.log.ts[w.stop - 1]),
                      "held_out": trained.scores, "seconds": trained.seconds,
                      "fusion": trained.fusion.report() if trained.fusion else None}
        if not train and content:
            enc_task = progress.add_task("encoding uploads", total=None, rate="")
            embeddings = encode_uploads(events, progress=_ticker(progress, enc_task, "items"))
        chosen = {k: v for k, v in chosen.items() if k in wanted}
        task = progress.add_task("evaluating", total=len(events), rate="")
        result = prequential(events, chosen, progress=_ticker(progress, task, "ev"),
                             embeddings=embeddings, score_from=score_from)
        progress.update(task, completed=len(events))
    result["training_window"] = window
    scored = f"events {score_from + 1}-{result['events']}" if score_from else "all events"
    table = Table(title=f"prequential, {result['events']} events ({scored} scored, "
                        f"{result['clicks']} clicks)")
    cols = ["hr_at_10", "mrr_at_10", "ndcg_at_10", "cold_hr_at_10", "new_item_hr_at_10",
            "coverage", "events_per_s"]
    table.add_column("model")
    for c in cols:
        table.add_column(c, justify="right")
    for name, m in result["models"].items():
        table.add_row(name, *(f"{m[c]:,.0f}" if c == "events_per_s" else f"{m[c]:.4f}" for c in cols))
    console.print(table)
    console.print(f"cold: {result['cold_clicks']:,} scored clicks on items nobody had clicked; "
                  f"new items: {result['new_item_clicks']:,} of them on items that appeared at "
                  f"most {_seconds(result['new_item_window_s'])} earlier (1% of the log's span)")
    if window:
        console.print(f"teacher and student trained on the first {window['interactions']:,} "
                      f"interactions (events 1-{score_from}); held-out HR@10 of the window's "
                      f"last clicks: " + ", ".join(f"{k} {v:.4f}" for k, v in
                                                    window["held_out"].items() if "hr" in k))
        if window["fusion"]:
            f = window["fusion"]
            console.print("content fusion weights learned from the window's clicks: "
                          + ", ".join(f"{k} {v:.3f}" for k, v in f["learned"].items())
                          + f"; the blend serves the {f['served']} ones"
                          + (" (not beaten on the held-out clicks)" if f["served"] == "fixed"
                             else "") + (f"; {f['note']}" if "note" in f else ""))
    if as_json:
        print(json.dumps(result))


def _seconds(s: float) -> str:
    """A duration as people read it: 0.58 s, 42 s, 2.1 days."""
    if s >= 86400:
        return f"{s / 86400:.1f} days"
    return f"{s:.2f} s" if s < 10 else f"{s:,.0f} s"


def _ticker(progress: Progress, task, unit: str):
    """A progress callback ``(done[, total])`` that also shows the rate."""
    t0 = time.monotonic()

    def tick(done, total=None):
        progress.update(task, completed=done, total=total if total is not None else
                        progress.tasks[task].total,
                        rate=f"{done / max(time.monotonic() - t0, 1e-9):,.0f} {unit}/s")
    return tick


def _train_for_evaluation(events, fraction: float, content: bool, epochs: Optional[int],
                          progress: Progress, seed: int = 0):
    """Encode, train the teacher and distil the student on the first ``fraction`` of the
    interactions; returns the round, the content embeddings and the first scored event."""
    import numpy as np

    from streamrec.evaluation.prequential import first_event_after
    from streamrec.training.distill import TrainConfig, train_models
    from streamrec.training.training_log import TrainingLog

    log = TrainingLog.from_events(events)
    if content:
        enc_task = progress.add_task("encoding items", total=None, rate="")
        feats = log.content(progress=_ticker(progress, enc_task, "items"))
    else:
        feats = log.content_placeholder()
    embeddings = {item: feats.fused[j] for j, item in enumerate(log.item_ids)
                  if np.any(feats.fused[j])}
    stop = int(len(log) * fraction)
    cfg = TrainConfig(seed=seed)
    if epochs:
        cfg.teacher_epochs = epochs
        cfg.student_epochs = ((epochs + 1) // 2, epochs // 2)
    tasks = {}

    def train_tick(phase, done, total):
        if phase not in tasks:
            tasks[phase] = progress.add_task(f"training {phase}", total=total, rate="")
        progress.update(tasks[phase], completed=done)
    trained = train_models(log, feats, stop, cfg, train_tick)
    return trained, embeddings, first_event_after(events, stop)


@app.command()
def train(
    kafka: Optional[str] = typer.Option(None, help="Broker host:port \\[env STREAMREC_KAFKA]: "
                                        "the log is read from it, the student announced on it"),
    redis: Optional[str] = typer.Option(None, help="Redis URL \\[env STREAMREC_REDIS]: the "
                                        "snapshot manifest"),
    log: Optional[Path] = typer.Option(None, help="Train on this JSONL log instead of Kafka"),
    dataset: Optional[str] = typer.Option(None, help="Train on a dataset: movielens-100k"),
    window: int = typer.Option(200_000, min=100, help="Latest views and clicks trained on"),
    every: Optional[float] = typer.Option(None, help="Repeat every this many minutes"),
    int8: bool = typer.Option(False, help="Publish the int8-quantised student"),
    force: bool = typer.Option(False, help="Publish even if worse than the one in service"),
    epochs: Optional[int] = typer.Option(None, help="Teacher epochs (default 6)"),
    device: Optional[str] = typer.Option(None, help="cpu or cuda (default: cuda when present)"),
    snapshot_dir: Optional[Path] = typer.Option(None, help="Folder for large snapshots "
                                                "\\[env STREAMREC_SNAPSHOT_DIR]"),
    keep: int = typer.Option(5, min=1, help="Snapshots kept per kind"),
    as_json: bool = typer.Option(False, "--json", help="Print each round as one JSON line"),
) -> None:
    """Train the teacher on the recent log, distil a student, and publish it if it is not
    worse than the one in service (workers swap it in without a restart)."""
    s = _settings(kafka, redis)
    if not s.redis:
        console.print("[red]No Redis for the snapshot manifest: set STREAMREC_REDIS or pass "
                      "--redis[/red]")
        raise typer.Exit(2)
    if not log and not dataset and not s.kafka:
        console.print("[red]Nothing to train on: give --log, --dataset, or a broker "
                      "(STREAMREC_KAFKA / --kafka) to read the log from[/red]")
        raise typer.Exit(2)
    if log is not None and not log.is_file():
        raise typer.BadParameter(f"{log} does not exist")
    _check_snapshot_key(s)
    _check_security(s, kafka=bool(s.kafka), redis=True)
    from streamrec.training.distill import TrainConfig

    cfg = TrainConfig(device=device)
    if epochs:
        cfg.teacher_epochs = epochs
        cfg.student_epochs = ((epochs + 1) // 2, epochs // 2)
    directory = str(snapshot_dir or s.snapshot_dir)
    try:
        asyncio.run(_train_rounds(s, log, dataset, window, every, cfg, int8, force, directory,
                                  keep, as_json))
    except KeyboardInterrupt:
        pass


async def _train_rounds(s: Settings, log, dataset, window, every, cfg, int8, force, directory,
                        keep, as_json) -> None:
    """Rounds until done (or forever with ``every``: a failed round, say the broker or Redis
    being away, is reported and the next one runs on schedule)."""
    from aiokafka.errors import KafkaError
    from redis.exceptions import RedisError

    from streamrec.clients import redis_client
    from streamrec.simulator.publish import start_producer

    r = redis_client(s)
    producer = await start_producer(s) if s.kafka else None
    try:
        while True:
            started = time.monotonic()
            try:
                await _one_round(s, r, producer, log, dataset, window, cfg, int8, force,
                                 directory, keep, as_json)
            except (OSError, RedisError, KafkaError) as exc:
                if every is None:
                    raise
                console.print(f"[red]round failed, next in {every} min: {exc!r}[/red]")
            if every is None:
                return
            await asyncio.sleep(max(0.0, every * 60 - (time.monotonic() - started)))
    finally:
        if producer is not None:
            await producer.stop()
        await r.aclose()


async def _one_round(s: Settings, r, producer, log, dataset, window, cfg, int8, force,
                     directory, keep, as_json) -> None:
    """Read the window, train, judge, maybe publish, print the summary."""
    from streamrec.snapshots.signing import configured_key
    from streamrec.training.log_reader import latest_interactions, read_log
    from streamrec.training.trainer import run_round

    with _progress() as progress:
        if log is not None:
            events = sorted(_load_events(log, "jsonl", "", None), key=lambda e: e.ts or 0.0)
        elif dataset:
            events = _dataset(dataset)
        else:
            task = progress.add_task("reading the log", total=None, rate="")
            events = await read_log(s, window, progress=_ticker(progress, task, "ev"))
        if log is not None or dataset:
            events = latest_interactions(events, window)
        tasks = {}

        def tick(phase, done, total):
            if phase not in tasks:
                tasks[phase] = progress.add_task(f"training {phase}" if phase != "content"
                                                 else "encoding items", total=total, rate="")
            progress.update(tasks[phase], completed=done, total=total)
        report = await run_round(events, r, prefix=s.app_id, snapshot_dir=directory,
                                 producer=producer, cfg=cfg, int8=int8, force=force,
                                 image_root=s.image_root, keep=keep, progress=tick,
                                 key=configured_key(s))
    _print_round(report, as_json)


def _print_round(report, as_json: bool) -> None:
    from dataclasses import asdict

    colour = "green" if report.published else "yellow"
    title = f"published {report.version}" if report.published else "not published"
    table = Table(title=f"training round: [{colour}]{title}[/{colour}]: {report.reason}")
    table.add_column("figure")
    table.add_column("value", justify="right")
    for k, v in {**report.scores, **{f"{k}_s": v for k, v in report.seconds.items()},
                 **report.window}.items():
        table.add_row(k, "-" if v is None else f"{v:,.4f}" if isinstance(v, float) else str(v))
    if report.fusion:
        table.add_row(f"fusion ({report.fusion['served']})", ", ".join(
            f"{k} {v:.3f}" for k, v in report.fusion["weights"].items()))
    console.print(table)
    if as_json:
        print(json.dumps(asdict(report)), flush=True)


@app.command()
def experiment(
    world_name: str = typer.Option("default", "--world", help="Which world (docs/worlds.md)"),
    seed: int = typer.Option(0, help="The world's seed"),
    users: Optional[int] = typer.Option(None, help="Users (default: the world's own size)"),
    items: Optional[int] = typer.Option(None, help="Items in the starting catalogue "
                                        "(default: the world's own size)"),
    events: Optional[int] = typer.Option(None, help="Measure this many events after the "
                                         "warm-up (40,000 unless --duration)"),
    duration: Optional[float] = typer.Option(None, help="Measure for this many seconds"),
    rate: float = typer.Option(200.0, help="Events per second; 0 = as fast as possible"),
    buckets: Optional[str] = typer.Option(
        None, help="NAME[=POLICY]:WEIGHT,... (default: every policy in equal shares, or "
                   "STREAMREC_BUCKETS against an external broker)"),
    new_within: float = typer.Option(60.0, help="Horizon, in simulated seconds, of the share "
                                     "of new uploads clicked"),
    warmup: int = typer.Option(20_000, help="Events played in the loop before the measured "
                               "ones, not counted"),
    train: bool = typer.Option(True, help="After the warm-up, a training round whose student "
                               "the worker serves while measuring (embedded runtime only)"),
    as_json: bool = typer.Option(False, "--json", help="End with one JSON line of results"),
) -> None:
    """A closed-loop A/B test: the simulated app shows each user their latest list, its users
    click by their true affinity, the events go back; figures per bucket with 95% CIs."""
    from streamrec.experiment import DEFAULT_BUCKETS, ExperimentConfig, run_experiment, tables
    from streamrec.simulator.worlds import WORLDS

    if world_name not in WORLDS:
        raise typer.BadParameter(f"unknown world {world_name!r}; known worlds: "
                                 f"{', '.join(sorted(WORLDS))}", param_hint="--world")
    s = Settings()
    external = bool(s.kafka and s.redis)
    spec = buckets or (s.buckets if external else DEFAULT_BUCKETS)
    _check_buckets(spec)
    if external:
        _check_security(s, redis=True)
    cfg = ExperimentConfig(world=world_name, seed=seed, users=users, items=items,
                           events=events if events is not None or duration is not None
                           else 40_000, duration_s=duration, rate=rate, buckets=spec,
                           new_within_s=new_within, warmup=warmup, train=train)
    if external and train:
        console.print("[yellow]no training round against an external deployment: its "
                      "`streamrec train --every` serves the student[/yellow]")
    result = run_experiment(cfg, console, quiet=False, settings=s)
    for t in tables(result):  # wider than a pipe's 80 columns: the intervals fit
        console.print(t, width=max(console.width, 118))
    if as_json:
        print(json.dumps(result), flush=True)


def _check_buckets(spec: str) -> None:
    from streamrec.engine.buckets import Buckets

    try:
        Buckets.parse(spec)
    except ValueError as exc:
        console.print(str(exc), style="red", markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None


@app.command()
def demo(
    duration: float = typer.Option(60.0, help="Seconds of simulated traffic"),
    rate: float = typer.Option(300.0, help="Events per second"),
    train_at: float = typer.Option(0.4, min=0.0, max=1.0, help="Start a training round "
                                   "(teacher, student, hot swap) at this share of the duration; "
                                   "0: none"),
    as_json: bool = typer.Option(False, "--json", help="End with one JSON line of results"),
) -> None:
    """The whole system on the embedded runtime: broker, Redis, a worker, simulated traffic,
    a training round whose student the worker swaps in, live progress and sample
    recommendations, then a summary."""
    from streamrec.demo import run_demo

    summary = run_demo(duration, rate, console, quiet=as_json, train_at=train_at)
    if as_json:
        print(json.dumps(summary))


def main() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    app()


if __name__ == "__main__":
    main()
