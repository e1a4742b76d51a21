"""Publishing events to the broker: keyed, batched, paced by their timestamps or a rate."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from aiokafka import AIOKafkaProducer

from streamrec.clients import kafka_producer
from streamrec.config import Settings
from streamrec.records.events import Event, Retire, Upload, encode
from streamrec.records.topics import TOPIC_OF


def key_of(ev: Event) -> bytes:
    """Interactions and requests are keyed by user (one worker owns a user); uploads and
    retirements by item (so an item's retirement stays behind its upload)."""
    return (ev.item_id if isinstance(ev, (Upload, Retire)) else ev.user_id).encode()


@dataclass
class PublishStats:
    events: int = 0
    by_type: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0


async def start_producer(settings: Settings) -> AIOKafkaProducer:
    producer = kafka_producer(settings, linger_ms=5, max_batch_size=256 * 1024, acks=1)
    await producer.start()
    return producer


async def publish(events: Iterable[Event], settings: Settings, *, rate: float | None = None,
                  speed: float | None = None, duration_s: float | None = None,
                  on_event: Callable[[Event, float], None] | None = None,
                  producer: AIOKafkaProducer | None = None) -> PublishStats:
    """Send ``events`` to their topics.

    Pacing: ``rate`` events per second, or ``speed`` times the gaps between their timestamps
    (2.0 = twice as fast as recorded), or neither for as fast as possible. Stops after
    ``duration_s`` seconds if given. ``on_event(event, sent_at)`` is called for every event.
    """
    own = producer is None
    producer = producer or await start_producer(settings)
    stats = PublishStats()
    t0 = time.monotonic()
    first_ts: float | None = None
    try:
        for ev in events:
            now = time.monotonic() - t0
            if duration_s is not None and now >= duration_s:
                break
            if rate:
                due = stats.events / rate
            elif speed and ev.ts is not None:
                first_ts = ev.ts if first_ts is None else first_ts
                due = (ev.ts - first_ts) / speed
            else:
                due = 0.0
            if due > now + 0.002:
                await asyncio.sleep(due - now)
            elif stats.events % 500 == 0:
                await asyncio.sleep(0)  # let the producer's sender task run
            await producer.send(TOPIC_OF[ev.type], encode(ev), key=key_of(ev))
            if on_event is not None:
                on_event(ev, time.time())
            stats.events += 1
            stats.by_type[ev.type] = stats.by_type.get(ev.type, 0) + 1
        await producer.flush()
    finally:
        if own:
            await producer.stop()
    stats.seconds = time.monotonic() - t0
    return stats
