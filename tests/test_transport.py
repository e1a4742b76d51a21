"""Our Faust transport on the real broker: the consumer runs on the worker's own event loop
(no consumer thread) with the app's fetch wait, delivers every record to the agent, commits,
and stops cleanly."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from streamrec.streams.transport import App

pytestmark = pytest.mark.integration

TOPIC = "transport-probe"
N = 200


async def committed_total(bootstrap: str, group: str) -> int:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group,
                                enable_auto_commit=False)
    await consumer.start()
    try:
        partitions = consumer.partitions_for_topic(TOPIC) or set()
        return sum([await consumer.committed(TopicPartition(TOPIC, p)) or 0 for p in partitions])
    finally:
        await consumer.stop()


def test_the_consumer_runs_on_the_workers_loop_and_commits(runtime, tmp_path: Path):
    async def scenario():
        app = App("transport-probe", broker=f"kafka://{runtime.kafka}", store="memory://",
                  web_enabled=False, datadir=str(tmp_path),
                  consumer_auto_offset_reset="earliest", broker_commit_interval=0.2)
        app.fetch_max_wait_ms = 7
        topic = app.topic(TOPIC, key_type=bytes, value_type=bytes, key_serializer="raw",
                          value_serializer="raw")
        seen: list[bytes] = []
        agent_threads: set[int] = set()

        @app.agent(topic)
        async def probe(stream):
            async for value in stream:
                seen.append(value)
                agent_threads.add(threading.get_ident())

        threads_before = {t.ident for t in threading.enumerate()}
        await app.start()
        fetch_wait = app.consumer._thread._consumer._fetch_max_wait_ms
        try:
            producer = AIOKafkaProducer(bootstrap_servers=runtime.kafka)
            await producer.start()
            try:
                for i in range(N):
                    await producer.send(TOPIC, str(i).encode(), key=str(i).encode())
            finally:
                await producer.stop()
            deadline = time.monotonic() + 60
            while len(seen) < N and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            # Faust's threaded consumer would show up here as one more thread.
            new_threads = {t.name for t in threading.enumerate() if t.ident not in threads_before}
            committed = await committed_total(runtime.kafka, "transport-probe")
            while committed < N and time.monotonic() < deadline:
                await asyncio.sleep(0.2)
                committed = await committed_total(runtime.kafka, "transport-probe")
        finally:
            await app.stop()
        return seen, committed, agent_threads, new_threads, fetch_wait

    seen, committed, agent_threads, new_threads, fetch_wait = asyncio.run(scenario())
    assert sorted(int(v) for v in seen) == list(range(N))
    assert committed == N
    assert agent_threads == {threading.get_ident()}
    assert new_threads == set()
    assert fetch_wait == 7
