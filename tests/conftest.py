"""Fixtures: a real broker and redis-server on free ports, and a worker shared by the tests
(a Faust worker takes ~20 s to start and join its group on this broker, so it is started once)."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import numpy as np
import orjson
import pytest
import pytest_asyncio
import redis.asyncio as aioredis
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from streamrec.embedded import EmbeddedRuntime
from streamrec.processes import start_worker, wait_for_worker
from streamrec.records.dead_letter import reason_of
from streamrec.records.events import Event, RecRequest, Retire, Upload, encode
from streamrec.records.topics import DEAD_LETTER, RECOMMENDATIONS, TOPIC_OF, ensure_topics


def uid(prefix: str) -> str:
    """A fresh id, so tests sharing the broker and Redis never see each other's events."""
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


async def send(producer: AIOKafkaProducer, ev: Event, topic: str | None = None) -> None:
    """Publish ``ev`` on its topic, keyed as apps key it (uploads and retirements by item,
    the rest by user)."""
    key = ev.item_id if isinstance(ev, (Upload, Retire)) else ev.user_id
    await producer.send(topic or TOPIC_OF[ev.type], encode(ev), key=key.encode())


async def ask(producer, collector, user: str, ts: float, until, timeout_s: float = 40.0):
    """Send rec-requests for ``user`` until an answer satisfies ``until`` (or time runs out);
    returns the last answer."""
    deadline = time.monotonic() + timeout_s
    while True:
        request = uid("req")
        await send(producer, RecRequest(request, user, k=100, ts=ts))
        await producer.flush()
        await collector.wait_for(lambda request=request: any(r["request_id"] == request
                                             for r in collector.recommendations))
        answer = [r for r in collector.recommendations if r["request_id"] == request][-1]
        if until(answer) or time.monotonic() > deadline:
            return answer


def tiny_student(items: list[str], dim: int = 128) -> tuple[dict, dict]:
    """A valid student snapshot of ``items`` (a user is the mean of their items' content)."""
    n, hidden = len(items) + 1, 4
    t = {"ids.weight": np.zeros((n, 2)), "bias.weight": np.zeros((n, 1)),
         "behaviour": np.zeros((n, 3)), "item1.weight": np.zeros((hidden, dim + 5)),
         "item1.bias": np.zeros(hidden), "item2.weight": np.zeros((hidden, hidden)),
         "item2.bias": np.zeros(hidden), "recency": np.zeros(2), "user.weight": np.eye(hidden),
         "user.bias": np.zeros(hidden), "prior.weight": np.eye(hidden, dim),
         "kind_weight": np.zeros(2)}
    return ({k: v.astype(np.float32) for k, v in t.items()},
            {"config": "{}", "item_ids": json.dumps(items)})


@pytest.fixture(scope="session")
def runtime(tmp_path_factory) -> EmbeddedRuntime:
    rt = EmbeddedRuntime(run_dir=Path(tmp_path_factory.mktemp("run"))).start()
    asyncio.run(ensure_topics(rt.settings(), 4))
    yield rt
    rt.stop()


@pytest.fixture(scope="session")
def worker(runtime):
    proc = start_worker(runtime, partitions=4)
    asyncio.run(wait_for_worker(runtime.settings(), proc))
    yield proc
    proc.stop()
    assert proc.proc.returncode is not None


class Collector:
    """Everything published on the output topics since the collector started."""

    def __init__(self) -> None:
        self.recommendations: list[dict] = []
        self.dead_letters: list[tuple[str, bytes]] = []

    async def run(self, bootstrap: str, ready: asyncio.Event) -> None:
        consumer = AIOKafkaConsumer(RECOMMENDATIONS, DEAD_LETTER, bootstrap_servers=bootstrap,
                                    auto_offset_reset="earliest", enable_auto_commit=False)
        await consumer.start()
        ready.set()
        try:
            while True:
                for tp, msgs in (await consumer.getmany(timeout_ms=100)).items():
                    for m in msgs:
                        if tp.topic == DEAD_LETTER:
                            self.dead_letters.append((reason_of(m.headers), m.value))
                        else:
                            self.recommendations.append(orjson.loads(m.value))
        finally:
            await consumer.stop()

    async def wait_for(self, predicate: Callable[[], bool], timeout_s: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_s
        while not predicate():
            if time.monotonic() > deadline:
                raise TimeoutError("condition not met in time")
            await asyncio.sleep(0.05)

    def lists_for(self, user: str) -> list[dict]:
        return [r for r in self.recommendations if r["user_id"] == user]


@pytest_asyncio.fixture(scope="session")
async def collector(runtime, worker) -> AsyncIterator[Collector]:
    c = Collector()
    ready = asyncio.Event()
    task = asyncio.create_task(c.run(runtime.kafka, ready))
    await ready.wait()
    yield c
    task.cancel()


@pytest_asyncio.fixture(scope="session")
async def producer(runtime) -> AsyncIterator[AIOKafkaProducer]:
    p = AIOKafkaProducer(bootstrap_servers=runtime.kafka, linger_ms=2)
    await p.start()
    yield p
    await p.stop()


@pytest_asyncio.fixture(scope="session")
async def redis_client(runtime) -> AsyncIterator[aioredis.Redis]:
    r = aioredis.from_url(runtime.redis)
    yield r
    await r.aclose()
