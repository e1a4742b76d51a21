"""Runs one engine step over a Faust micro-batch and publishes what it produced.

A worker never dies on one bad event: invalid events become dead letters inside the engine;
if a batch fails for another reason, Redis being unreachable is retried with back-off, and any
other error is isolated by re-running the batch one message at a time, so only the message
that fails goes to the dead-letter topic (with the error as its reason).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence

import redis.exceptions

from streamrec import metrics
from streamrec.engine.interface import Incoming, Outgoing, reject
from streamrec.records import dead_letter
from streamrec.records.errors import WorkerMustStop
from streamrec.records.topics import DEAD_LETTER, RECOMMENDATIONS

log = logging.getLogger(__name__)

Step = Callable[[Sequence[Incoming]], Awaitable[Outgoing]]


def incoming(events, highwater: Callable[[object], int | None] | None = None
             ) -> list[Incoming]:
    """Our view of Faust events (raw bytes and where they came from); ``highwater`` gives a
    partition's log end (the consumer's ``highwater``)."""
    ends: dict = {}
    if highwater is not None:
        for e in events:
            tp = e.message.tp
            if tp not in ends:
                ends[tp] = highwater(tp)
    return [Incoming(e.message.value, e.message.topic, e.message.partition, e.message.offset,
                     e.message.timestamp, None, ends.get(e.message.tp)) for e in events]


async def run_step(step: Step, batch: Sequence[Incoming], agent: str,
                   max_retries: int = 30) -> Outgoing:
    for attempt in range(max_retries):
        try:
            return await step(batch)
        except WorkerMustStop:
            raise
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError) as exc:
            delay = min(0.1 * 2 ** attempt, 5.0)
            log.warning("%s: Redis unavailable (%s); retrying the batch in %.1fs", agent, exc, delay)
            await asyncio.sleep(delay)
        except Exception as exc:
            if len(batch) == 1:
                log.exception("%s: internal error on %s:%d@%d", agent, batch[0].topic,
                              batch[0].partition, batch[0].offset)
                out = Outgoing([], [], {})
                reject(batch[0], f"internal error: {exc!r}"[:500], out)
                return out
            log.warning("%s: batch failed (%r); isolating the message at fault", agent, exc)
            merged = Outgoing([], [], {})
            for msg in batch:
                one = await run_step(step, [msg], agent, max_retries)
                merged.recommendations += one.recommendations
                merged.dead_letters += one.dead_letters
                for k, v in one.stats.items():
                    merged.stats[k] = merged.stats.get(k, 0) + v
            return merged
    raise RuntimeError(f"{agent}: Redis unavailable after {max_retries} attempts")


async def publish(producer, out: Outgoing) -> None:
    """Queue every list and dead letter on the producer (it batches the network writes)."""
    send = producer.send
    for key, value in out.recommendations:
        await send(RECOMMENDATIONS, key, value, None, None, None)
    for value, headers in out.dead_letters:
        await send(DEAD_LETTER, None, value, None, None, headers)
        metrics.DEAD_LETTERS.labels(dead_letter.reason_kind(dead_letter.reason_of(headers))).inc()
    metrics.RECOMMENDATIONS.inc(len(out.recommendations))
    for k, v in out.stats.items():
        if k.startswith("events_"):
            metrics.EVENTS.labels(k[len("events_"):]).inc(v)
        elif k.startswith("ignored_retired_"):
            metrics.RETIRED_ITEM_EVENTS.labels(k[len("ignored_retired_"):]).inc(v)
    metrics.RETIREMENTS.inc(out.stats.get("retired", 0))


async def pipelined(batches, submit: Callable[[Sequence[Incoming]], Awaitable[Outgoing]],
                    producer, agent: str, depth: int = 2,
                    highwater: Callable[[object], int | None] | None = None) -> None:
    """Hand each batch of ``batches`` (a :class:`~streamrec.streams.batching.MicroBatches`) to
    ``submit``, which starts its work elsewhere, and take in the next while it runs; a second
    task publishes the results in order and only then acknowledges each batch. At most
    ``depth`` batches are in flight."""
    inflight: asyncio.Queue = asyncio.Queue(maxsize=depth)

    async def finish() -> None:
        while True:
            events, t0, result = await inflight.get()
            out = await result
            await publish(producer, out)
            metrics.BATCH_SECONDS.labels(agent).observe(time.perf_counter() - t0)
            metrics.BATCH_SIZE.labels(agent).observe(len(events))
            await batches.ack(events)

    finisher = asyncio.create_task(finish())
    try:
        async for events in batches:
            item = (events, time.perf_counter(), submit(incoming(events, highwater)))
            if inflight.full():  # wait for room, unless the finisher failed meanwhile
                put = asyncio.ensure_future(inflight.put(item))
                await asyncio.wait({put, finisher}, return_when=asyncio.FIRST_COMPLETED)
                if not put.done():
                    put.cancel()
                    finisher.result()  # raises its error
            else:
                inflight.put_nowait(item)
            if finisher.done():
                finisher.result()
    finally:
        finisher.cancel()
