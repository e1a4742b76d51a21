"""The engine in a process of its own, so a worker takes in batch N+1 while batch N is ranked.

One event loop holds the GIL for both halves of a worker's work: Faust's (fetching, per-event
stream bookkeeping, publishing, about half of each event's cost) and the models' (learning,
ranking, Redis write-back). In one process they take turns on one core while the other core
is mostly idle. Here the Faust side hands each micro-batch to a child that owns the
:class:`Engine` and goes on to take in the next batch; the child replies with the batch's
lists and dead letters, which the worker publishes and only then acknowledges the batch, so a
crash anywhere still means the batch is processed again (at least once).

The two talk over a socket pair in :mod:`frames <streamrec.engine.frames>` (no pickle). The
child runs each agent's batches in the order they were sent, the agents' streams side by
side as the worker's loop would, with the same retries and isolation of a bad message
(:func:`run_step`), and dies with its parent.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
import socket
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from streamrec import metrics
from streamrec.clients import redis_client
from streamrec.config import Settings
from streamrec.embedded import die_with_parent
from streamrec.engine import frames
from streamrec.engine.interface import OPS, Incoming, Outgoing, decode_one
from streamrec.engine.runner import run_step
from streamrec.event_loop import install_uvloop
from streamrec.heap import freeze_startup_objects, on_collections
from streamrec.records.errors import StateLost, WorkerMustStop

if TYPE_CHECKING:
    from streamrec.engine.engine import Engine

log = logging.getLogger(__name__)

#: Where the child finds its settings and worker id (JSON).
SETTINGS_ENV = "STREAMREC_MODEL_PROCESS_SETTINGS"
#: Counters the child keeps that the worker's /metrics reports (Prometheus sample names).
CHILD_COUNTERS = {"streamrec_student_swaps_total": metrics.STUDENT_SWAPS,
                  "streamrec_student_rejected_total": metrics.STUDENT_REJECTED,
                  "streamrec_encoder_restarts_total": metrics.ENCODER_RESTARTS,
                  "streamrec_offset_resets_total": metrics.OFFSET_RESETS}


class ModelProcessError(RuntimeError):
    """The model process failed or went away."""


class ModelProcess:
    """The worker's side: start the child, :meth:`submit` batches, read the replies."""

    def __init__(self, settings: Settings, worker: str,
                 on_gone: Callable[[Exception], object] | None = None) -> None:
        self.settings = settings
        self.worker = worker
        #: Called once if the child goes away while not being closed, with why: a
        #: ModelProcessError, or the WorkerMustStop that made the engine stop.
        self.on_gone = on_gone
        self._closing = False
        self._proc: subprocess.Popen | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._pending: dict[int, asyncio.Future] = {}
        self._next_id = 0
        self._reading: asyncio.Task | None = None
        #: Set once the child has gone: what every later call raises.
        self._gone: ModelProcessError | None = None
        #: The child's totals already added here, per sample (name and labels).
        self._counted: dict[tuple[str, tuple], float] = {}

    async def start(self) -> None:
        """Start the child and wait until its engine has loaded the shared state."""
        t0 = time.monotonic()
        mine, theirs = socket.socketpair()
        env = {**os.environ, SETTINGS_ENV: json.dumps(
            {"settings": dataclasses.asdict(self.settings), "worker": self.worker})}
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "streamrec.engine.model_process", str(theirs.fileno())],
            pass_fds=[theirs.fileno()], env=env)
        theirs.close()
        reader, self._writer = await asyncio.open_connection(sock=mine)
        self._reading = asyncio.create_task(self._read_replies(reader))
        try:
            await self.call("start")
        except BaseException:
            await self.close(timeout_s=2.0)  # so that a retry starts afresh
            raise
        log.info("model process ready in %.2f s", time.monotonic() - t0)

    def submit(self, op: str, batch: Sequence[Incoming] = ()) -> asyncio.Future:
        """Send ``batch`` to the child's ``op``; the future gets its :class:`Outgoing`.
        Interactions are decoded and validated here first: in the pipeline this side waits
        for the model half the time, and the child is what limits throughput."""
        if self._gone is not None:
            raise self._gone
        if self._writer is None:
            raise ModelProcessError("the model process has not been started")
        if op == "interactions":
            for msg in batch:
                msg.decoded = decode_one(msg)
        self._next_id += 1
        fut = self._pending[self._next_id] = asyncio.get_running_loop().create_future()
        self._writer.write(frames.batch_frame(self._next_id, op, batch))
        return fut

    async def call(self, op: str, batch: Sequence[Incoming] = ()) -> Outgoing:
        return await self.submit(op, batch)

    async def forget(self) -> None:
        """After a rebalance: the child drops owned state, behind the batches sent before."""
        await self.call("forget")

    async def refresh_models(self) -> None:
        await self.call("refresh_models")

    async def _read_replies(self, reader: asyncio.StreamReader) -> None:
        try:
            while True:
                head, blobs = await frames.read(reader)
                self._count(head.pop("counters", []))
                for generation, seconds in head.pop("gc_pauses", ()):
                    metrics.MODEL_GC_PAUSE_SECONDS.labels(str(generation)).observe(seconds)
                if head.get("fatal"):  # the engine cannot go on; the child exits
                    self._went_away((StateLost if head.get("state_lost") else
                                     WorkerMustStop)(head["error"]))
                    return
                fut = self._pending.pop(head["id"])
                if fut.done():  # its waiter was cancelled
                    continue
                if "error" in head:
                    fut.set_exception(ModelProcessError(head["error"]))
                else:
                    fut.set_result(frames.outgoing_from(head, blobs))
        except (asyncio.IncompleteReadError, ConnectionError) as exc:
            await asyncio.sleep(0.1)  # for its exit code to be there
            code = self._proc.poll() if self._proc is not None else None
            self._went_away(ModelProcessError(
                f"the model process went away (exit code {code}): {exc!r}"))

    def _went_away(self, reason: Exception) -> None:
        # Every waiter and later call gets a ModelProcessError; on_gone gets the reason.
        self._gone = reason if isinstance(reason, ModelProcessError) else \
            ModelProcessError(str(reason))
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(self._gone)
        self._pending.clear()
        if self.on_gone is not None and not self._closing:
            self.on_gone(reason)

    def _count(self, totals: list) -> None:
        for name, labels, total in totals:
            key = (name, tuple(sorted(labels.items())))
            counted = self._counted.get(key, 0.0)
            if total > counted:
                counter = CHILD_COUNTERS[name]
                (counter.labels(**labels) if labels else counter).inc(total - counted)
                self._counted[key] = total

    async def close(self, timeout_s: float = 15.0) -> None:
        """Ask the child to save what it keeps and exit; kill it if it does not."""
        if self._proc is None:
            return
        self._closing = True
        if self._gone is None:
            try:
                await asyncio.wait_for(self.call("close"), timeout_s)
            except (TimeoutError, ModelProcessError) as exc:
                log.warning("model process did not close cleanly: %r", exc)
        for _ in range(100):  # up to 5 s, without blocking the loop
            if self._proc.poll() is not None:
                break
            await asyncio.sleep(0.05)
        else:
            self._proc.kill()
            self._proc.wait()
        if self._writer is not None:
            self._writer.close()
        if self._reading is not None:
            self._reading.cancel()
        self._proc = self._writer = self._reading = self._gone = None
        self._pending.clear()
        self._closing = False


# ---- the child ----------------------------------------------------------------------------

#: Queued with the interactions as "forget" is: the periodic upkeep, run between two batches.
REFRESH: list = []


class _Child:
    """The model process's side: one task per batch op, replies in the order each op's
    batches were sent."""

    def __init__(self, engine: Engine, writer: asyncio.StreamWriter) -> None:
        self.engine = engine
        self.writer = writer
        self.queues = {op: asyncio.Queue() for op in OPS}
        #: (generation, seconds) of the collections since the last reply, which carries them
        #: to the worker's /metrics (bounded, should replies stop for long).
        self.gc_pauses: deque[tuple[int, float]] = deque(maxlen=10_000)

    def reply(self, request: int, out: Outgoing, extra: dict | None = None) -> None:
        # Each counter on its own: collecting the whole registry for two values cost ~30 us
        # per reply, against ~7.
        counters = [(s.name, s.labels, s.value) for name, counter in CHILD_COUNTERS.items()
                    for m in counter.collect() for s in m.samples if s.name == name]
        # Popped one by one: a collection may append while this runs.
        pauses = [self.gc_pauses.popleft() for _ in range(len(self.gc_pauses))]
        self.writer.write(frames.reply_frame(request, out, {"counters": counters,
                                                            "gc_pauses": pauses, **(extra or {})}))

    async def run_batches(self, op: str) -> None:
        queue, step = self.queues[op], self.engine.step(op)
        while True:
            request, batch = await queue.get()
            if batch is None:  # "forget", queued behind the batches sent before it
                self.engine.forget_owned_state()
                self.reply(request, Outgoing([], [], {}))
                continue
            if batch is REFRESH:  # between two batches of interactions, as the pulls need
                await self.control(request, "refresh_models")
                continue
            try:
                out = await run_step(step, batch, op)
                if op == "interactions":
                    await self.engine.state.refresh()
            except WorkerMustStop as exc:
                await self.fatal(request, exc)
            except Exception as exc:  # Redis gone for good: the worker decides what follows
                log.exception("%s: batch failed", op)
                self.reply(request, Outgoing([], [], {}), {"error": f"{op}: {exc!r}"})
                continue
            self.reply(request, out)

    async def fatal(self, request: int, exc: WorkerMustStop) -> None:
        """Tell the worker why it must stop, then exit: no later batch may run."""
        log.critical("%s", exc)
        self.reply(request, Outgoing([], [], {}), {"error": str(exc), "fatal": True,
                                                   "state_lost": isinstance(exc, StateLost)})
        await self.writer.drain()
        os._exit(3)

    async def control(self, request: int, op: str) -> bool:
        """Non-batch requests; False once the child should exit."""
        engine = self.engine
        try:
            if op == "start":
                await engine.start()
            elif op == "refresh_models":
                await engine.refresh_models()
            elif op == "close":
                await engine.close()
            else:
                raise ValueError(f"unknown op {op!r}")
        except WorkerMustStop as exc:
            await self.fatal(request, exc)
        except Exception as exc:
            self.reply(request, Outgoing([], [], {}), {"error": f"{op}: {exc!r}"})
        else:
            self.reply(request, Outgoing([], [], {}))
        return op != "close"

    async def serve(self, reader: asyncio.StreamReader) -> None:
        runners = [asyncio.create_task(self.run_batches(op)) for op in OPS]
        try:
            while True:
                try:
                    head, blobs = await frames.read(reader)
                except (asyncio.IncompleteReadError, ConnectionError):
                    return  # the worker has gone
                op = head["op"]
                if op in self.queues:
                    self.queues[op].put_nowait((head["id"], frames.batch_from(head, blobs)))
                elif op == "forget":
                    self.queues["interactions"].put_nowait((head["id"], None))
                elif op == "refresh_models":
                    self.queues["interactions"].put_nowait((head["id"], REFRESH))
                elif not await self.control(head["id"], op):
                    await self.writer.drain()
                    return
        finally:
            for task in runners:
                task.cancel()


async def _serve(fd: int, settings: Settings, worker: str) -> None:
    # Only this process imports the models (torch, river): the worker imports this module
    # for its side of the socket and must not pay for them (see engine/interface.py).
    from streamrec.engine.build import build_engine

    sock = socket.socket(fileno=fd)
    reader, writer = await asyncio.open_connection(sock=sock)
    redis = redis_client(settings)
    engine = build_engine(settings, redis, worker)
    freeze_startup_objects()  # as the worker does: full collections skip the start-up objects
    child = _Child(engine, writer)
    on_collections(lambda generation, seconds: child.gc_pauses.append((generation, seconds)))
    await child.serve(reader)
    writer.close()
    await redis.aclose()


def main(argv: Sequence[str]) -> None:
    die_with_parent()
    logging.basicConfig(level=logging.WARNING, format="model process: %(levelname)s %(message)s")
    config = json.loads(os.environ[SETTINGS_ENV])
    settings = Settings(**config["settings"])
    install_uvloop()
    asyncio.run(_serve(int(argv[0]), settings, config["worker"]))


if __name__ == "__main__":
    main(sys.argv[1:])
