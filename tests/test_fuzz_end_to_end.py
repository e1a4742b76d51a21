"""Hostile input through the broker: thousands of malformed messages of every kind (junk bytes,
bad UTF-8, truncated JSON, duplicate keys, deep nesting, NaN and huge numbers, bad fields,
exploding or lying images, path traversal) interleaved with good events, into the running
worker. Every malformed one must come out on ``dead-letter`` exactly once with its reason, the
worker must live on in the same process, and the good events must be served and counted."""

from __future__ import annotations

import asyncio
import random
import time
import urllib.request
from collections import Counter

import orjson
import pytest

from streamrec.records.events import Click, View, encode

from conftest import uid
from hostile import malformed

pytestmark = [pytest.mark.integration, pytest.mark.slow]

#: Malformed messages sent; one good event follows every GOOD_EVERY of them.
MALFORMED = 10_000
GOOD_EVERY = 10


def encoder_restarts(web: str) -> float:
    body = urllib.request.urlopen(f"{web}/metrics", timeout=5).read().decode()
    return sum(float(line.split()[1]) for line in body.splitlines()
               if line.startswith("streamrec_encoder_restarts_total "))


async def worker_web(redis_client) -> str:
    raw = await redis_client.hgetall("streamrec:workers")
    return orjson.loads(next(iter(raw.values())))["web"]


@pytest.mark.timeout(900)
@pytest.mark.parametrize("n", [MALFORMED])
async def test_malformed_events_are_dead_lettered_and_good_ones_served(
        n, producer, collector, redis_client, worker):
    started = time.monotonic()
    pid, web = worker.proc.pid, await worker_web(redis_client)
    restarts = encoder_restarts(web)
    users, items = [uid("fz-user") for _ in range(40)], [uid("fz-item") for _ in range(80)]
    rng, now = random.Random(7), time.time()
    expected_reason: dict[bytes, str] = {}
    events, clicks = Counter(), Counter()
    for i, (topic, value, reason) in enumerate(malformed(n, seed=7)):
        await producer.send(topic, value, key=b"fuzz-%d" % (i % 32))
        expected_reason[value] = reason
        if i % GOOD_EVERY == GOOD_EVERY - 1:
            user, item = rng.choice(users), rng.choice(items)
            ev = (Click if rng.random() < 0.3 else View)(uid("e"), user, item, now)
            await producer.send(f"{ev.type}s", encode(ev), key=user.encode())
            events[item] += 1
            clicks[item] += isinstance(ev, Click)
    await producer.flush()
    assert len(expected_reason) == n, "every malformed value is distinct"
    sent_s = time.monotonic() - started

    def dead_lettered() -> list[tuple[str, bytes]]:
        return [(r, v) for r, v in collector.dead_letters if v in expected_reason]

    await collector.wait_for(lambda: len(dead_lettered()) >= n, timeout_s=600)
    learned = sorted(events)

    async def counts(key: str) -> list[int]:
        return [int(v or 0) for v in await redis_client.hmget(f"streamrec:{key}", learned)]

    deadline = time.monotonic() + 120
    while (await counts("item-events") != [events[i] for i in learned]
           or not all(collector.lists_for(u) for u in users)) and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    took_s = time.monotonic() - started

    got = dead_lettered()
    per_value = Counter(v for _, v in got)
    wrong = [(expected_reason[v], r, v[:100]) for r, v in got
             if not r or not r.startswith(expected_reason[v])]
    kinds = Counter(r.split(":", 1)[0] for r, _ in got)
    print(f"\nfuzz end to end: {n} malformed and {sum(events.values())} good events sent in "
          f"{sent_s:.1f}s; {len(got)} dead letters ({len(per_value)} distinct) by reason "
          f"{dict(sorted(kinds.items()))}; {sum(bool(collector.lists_for(u)) for u in users)}"
          f"/{len(users)} users served; all done in {took_s:.1f}s")
    assert len(got) == n and len(per_value) == n and set(per_value.values()) == {1}
    assert not wrong, wrong[:5]
    assert not any(r.startswith("internal error") for r, _ in got)
    assert await counts("item-events") == [events[i] for i in learned]
    assert await counts("item-clicks") == [clicks[i] for i in learned]
    assert all(collector.lists_for(u) for u in users)
    assert worker.proc.poll() is None and worker.proc.pid == pid, "the same worker, alive"
    assert encoder_restarts(web) == restarts, "the encoder process never died"
