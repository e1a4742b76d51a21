"""Reading the recent event log back from Kafka, for the trainer."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from aiokafka import AIOKafkaConsumer, TopicPartition

from streamrec.clients import kafka_consumer
from streamrec.config import Settings
from streamrec.records.events import Event, InvalidEvent, decode
from streamrec.records.topics import CLICKS, EVENT_TYPE, UPLOADS, VIEWS


async def read_log(settings: Settings, max_interactions: int | None = None,
                   idle_s: float = 2.0, progress: Callable[[int], None] | None = None
                   ) -> list[Event]:
    """Every view, click and upload in the topics as they stand, in time order; with
    ``max_interactions``, only the latest that many views and clicks (all uploads are kept:
    the items' content is needed whatever the window). Invalid messages are skipped (the
    workers dead-letter them).

    Reading stops at the end offsets taken at the start, or after ``idle_s`` without a
    message (the embedded broker can under-report its end offsets)."""
    consumer = kafka_consumer(settings, enable_auto_commit=False,
                              auto_offset_reset="earliest", max_poll_records=5000)
    await consumer.start()
    events: list[Event] = []
    try:
        parts = await _partitions(consumer)
        if not parts:
            return []
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        end = await consumer.end_offsets(parts)
        loop = asyncio.get_running_loop()
        last = loop.time()
        while True:
            batch = await consumer.getmany(timeout_ms=200)
            for tp, msgs in batch.items():
                for m in msgs:
                    try:
                        events.append(decode(m.value, EVENT_TYPE[tp.topic]))
                    except InvalidEvent:
                        pass
            if batch:
                last = loop.time()
                if progress is not None:
                    progress(len(events))
            done = all([await consumer.position(tp) >= end[tp] for tp in parts])
            if (done and not batch) or loop.time() - last > idle_s:
                break
    finally:
        await consumer.stop()
    events.sort(key=lambda e: e.ts or 0.0)
    return events if max_interactions is None else latest_interactions(events, max_interactions)


def latest_interactions(events: list[Event], n: int) -> list[Event]:
    """Every upload (the items' content is needed whatever the window), and the latest ``n``
    views and clicks; ``events`` in time order.

    >>> from streamrec.records.events import Click, Upload, View
    >>> evs = [Upload("e0", "a", "c", 0.0, "A"), View("e1", "u", "a", 1.0),
    ...        Click("e2", "u", "a", 2.0)]
    >>> [e.event_id for e in latest_interactions(evs, 1)]
    ['e0', 'e2']
    """
    interactions = [i for i, e in enumerate(events) if e.type in ("view", "click")]
    if len(interactions) <= n:
        return events
    first = interactions[-n]
    return [e for i, e in enumerate(events) if i >= first or e.type == "upload"]


async def _partitions(consumer: AIOKafkaConsumer) -> list[TopicPartition]:
    topics = await consumer.topics()
    parts = []
    for t in (VIEWS, CLICKS, UPLOADS):
        if t in topics:
            parts += [TopicPartition(t, p) for p in sorted(consumer.partitions_for_topic(t) or ())]
    return parts
