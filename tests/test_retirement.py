"""Retired items: the engine against a real redis-server (two workers sharing it), and the
pipeline with the real broker and worker. Once a retirement is processed, no list holds the
item, every model and Redis have dropped its state, and its later views and clicks are not
learned."""

from __future__ import annotations

import asyncio
import itertools
import time

import numpy as np
import pytest
import redis.asyncio as aioredis

from streamrec.engine.engine import Engine
from streamrec.engine.interface import Incoming
from streamrec.engine.shared_state import SharedState, read_stats
from streamrec.models.blend import Blend
from streamrec.records.events import Click, RecRequest, Retire, Upload, View, encode

from conftest import send, uid

pytestmark = pytest.mark.integration

ITEMS = [f"item{n}" for n in range(8)]
USERS = [f"user{n}" for n in range(6)]
GONE = "item0"
#: Offsets of the test's partitions, shared by its workers (as one log is).
OFFSETS = itertools.count()


def message(ev, offset: int) -> Incoming:
    topic = {"view": "views", "click": "clicks"}.get(ev.type, "uploads")
    return Incoming(encode(ev), topic, 0, offset, time.time())


class Worker:
    """An engine and its shared state, as one worker of a group holds them."""

    def __init__(self, redis: aioredis.Redis, prefix: str, name: str) -> None:
        self.state = SharedState(redis, Blend(seed=0), prefix=prefix, worker=name,
                                 content_version="test")
        self.engine = Engine(self.state.blend, self.state, worker=name)

    async def run(self, op: str, events) -> dict:
        batch = [message(ev, next(OFFSETS)) for ev in events]
        return (await getattr(self.engine, op)(batch)).stats

    def lists(self, now: float, k: int = 30) -> dict[str, list[str]]:
        recs = self.engine.recommend_many(USERS + ["a-new-user"], k, now)
        return {u: [r.item_id for r in rs] for u, rs in zip(USERS + ["a-new-user"], recs)}


async def keys_holding(r: aioredis.Redis, prefix: str, item: str) -> list[str]:
    """Every key of ``prefix`` that still holds ``item`` (as a field, a member or in its name)."""
    found = []
    for key in await r.keys(f"{prefix}:*"):
        name, kind = key.decode(), (await r.type(key)).decode()
        if name.endswith(f":{item}") and name != f"{prefix}:retired":
            found.append(name)
        elif kind == "hash" and name != f"{prefix}:retired" and await r.hexists(key, item):
            found.append(name)
        elif kind == "zset" and await r.zscore(key, item) is not None:
            found.append(name)
    return found


async def populate(a: Worker, now: float) -> None:
    """Uploads (with content vectors) and a day of views and clicks in which every user
    touches ``GONE`` and a few others, so that every model holds something of it."""
    rng = np.random.default_rng(0)
    await a.run("uploads", [Upload(f"u-{i}", i, "c1", now, f"title {i}", tags=("t",))
                            for i in ITEMS])
    vectors = rng.normal(size=(len(ITEMS), 128)).astype(np.float32)
    await a.state.cache.put_many(ITEMS, vectors)
    a.state.blend.sources["content"].set_embeddings(ITEMS, vectors, now)
    events = []
    for n, user in enumerate(USERS):
        for m, item in enumerate([GONE, ITEMS[1 + n % 3], ITEMS[4 + n % 2]]):
            cls = Click if m % 2 == 0 else View
            events.append(cls(f"e-{user}-{m}", user, item, now + 10 * n + m))
    await a.run("interactions", events)


async def test_a_retired_item_leaves_every_list_model_and_key_on_both_workers(redis_client):
    prefix = uid("retire")
    now = time.time() - 3600
    a, b = Worker(redis_client, prefix, "a"), Worker(redis_client, prefix, "b")
    await a.state.load()
    await populate(a, now)
    await b.state.load()  # b holds GONE too: its popularity, vector, neighbours, embedding
    await b.state.before_batch(USERS, ())
    assert GONE in b.state.blend.catalog and GONE in {
        b.state.blend.catalog.ids[j] for nb in b.state.blend.sources["covisitation"]
        .neighbours.values() for j in nb.arrays()[0].tolist()}
    assert await keys_holding(redis_client, prefix, GONE), "nothing to drop"
    # b learns a click on it before it hears of the retirement: its write-back adds to its
    # counters and neighbour lists again after a has dropped them.
    stats = await a.run("uploads", [Retire("r-1", GONE, now + 100, "taken down")])
    assert stats["retired"] == 1 and stats["events_retire"] == 1
    assert not any(GONE in got for got in a.lists(now + 100).values())
    assert await keys_holding(redis_client, prefix, GONE) == []
    await b.run("interactions", [Click("e-late", "user0", ITEMS[7], now + 101),
                                 Click("e-late2", "user0", GONE, now + 101)])
    assert await keys_holding(redis_client, prefix, GONE), "b's write-back brought keys back"
    await b.state.refresh(force=True)  # b learns of it and sweeps what it wrote
    assert await keys_holding(redis_client, prefix, GONE) == []
    for w in (a, b):
        assert not any(GONE in got for got in w.lists(now + 200).values())
        cat = w.state.blend.catalog
        j = cat.index[GONE]
        assert cat.retired[j] and j not in w.state.blend.sources["content"].index
        assert not any(j in nb.pos for nb in w.state.blend.sources["covisitation"]
                       .neighbours.values())
    # Later views and clicks of it (stale pages) are counted, not learned, not dead-lettered;
    # their users still get lists.
    stats = await a.run("interactions", [View("e-v", "user1", GONE, now + 300),
                                         Click("e-c", "user2", GONE, now + 301),
                                         Click("e-ok", "user3", ITEMS[6], now + 302)])
    assert stats.get("ignored_retired_view") == 1 and stats.get("ignored_retired_click") == 1
    assert stats["learned"] == 1 and stats["recommendations"] == 3
    assert "dead_letter" not in stats
    assert await keys_holding(redis_client, prefix, GONE) == []
    assert (await read_stats(redis_client, prefix))["retired"] == 1
    assert await redis_client.hget(f"{prefix}:retired", GONE) is not None


async def test_a_replayed_upload_stays_retired_and_a_later_one_restores(redis_client):
    prefix = uid("restore")
    now = time.time() - 3600
    a = Worker(redis_client, prefix, "a")
    await a.state.load()
    await populate(a, now)
    # In one batch: an upload, its retirement, then the upload again (a replay): retired.
    stats = await a.run("uploads", [Upload("u-x", "fresh", "c1", now + 50, "fresh one"),
                                    Retire("r-x", "fresh", now + 60),
                                    Upload("u-x", "fresh", "c1", now + 50, "fresh one")])
    assert stats["retired"] == 1 and stats["ignored_retired_upload"] == 1
    assert not any("fresh" in got for got in a.lists(now + 70).values())
    assert await keys_holding(redis_client, prefix, "fresh") == []
    # Uploaded again after its retirement, in a later batch or the same one: live again.
    await a.run("uploads", [Retire("r-y", GONE, now + 100), Retire("r-z", ITEMS[1], now + 100)])
    assert not any(GONE in got for got in a.lists(now + 100).values())
    b = Worker(redis_client, prefix, "b")  # knows GONE as retired, then hears it came back
    await b.state.load()
    assert b.state.blend.catalog.is_retired(GONE)
    await a.run("uploads", [Upload("u-y", GONE, "c1", now + 110, "back again"),
                            Retire("r-w", ITEMS[2], now + 100),
                            Upload("u-w", ITEMS[2], "c1", now + 120, "kept")])
    assert a.state.blend.catalog.is_retired(ITEMS[1])
    assert not a.state.blend.catalog.is_retired(GONE)
    assert not a.state.blend.catalog.is_retired(ITEMS[2])
    assert await redis_client.hget(f"{prefix}:items", GONE) is not None
    assert await redis_client.hexists(f"{prefix}:retired", GONE) == 0
    assert any(GONE in got for got in a.lists(now + 110).values())
    # The other worker at its refresh, and one starting now, see the same: ITEMS[1] retired,
    # GONE live.
    await b.state.refresh(force=True)
    c = Worker(redis_client, prefix, "c")
    await c.state.load()
    for w in (b, c):
        assert w.state.blend.catalog.is_retired(ITEMS[1])
        assert not w.state.blend.catalog.is_retired(GONE)
        got = w.lists(now + 110)
        assert not any(ITEMS[1] in g for g in got.values())
        assert any(GONE in g for g in got.values())


# ---- the pipeline ---------------------------------------------------------------------------

async def test_a_retired_item_is_in_no_list_the_worker_publishes_after(producer, collector,
                                                                      redis_client):
    now = time.time()
    items = [uid("item") for _ in range(6)]
    gone, others = items[0], items[1:]
    fans, users = [uid("fan") for _ in range(4)], [uid("user") for _ in range(5)]
    for n, item in enumerate(items):
        await send(producer, Upload(uid("e"), item, "c1", now, f"retirement title {n}",
                                    tags=("retirement-test",)))
    await producer.flush()
    await wait_for_key(redis_client, lambda: redis_client.hexists("streamrec:items", gone))
    # Fans make it popular and a neighbour of the others; the users never touch it.
    for fan in fans:
        await send(producer, Click(uid("e"), fan, gone, now + 1))
        await send(producer, Click(uid("e"), fan, others[0], now + 2))
    for user in users:
        await send(producer, Click(uid("e"), user, others[0], now + 3))
    await producer.flush()

    async def lists_of(who: list[str], t: float) -> dict[str, list[str]]:
        """A fresh rec-request answer (k=200) for each of ``who``."""
        asked = {uid("req"): u for u in who}
        for req, u in asked.items():
            await send(producer, RecRequest(req, u, k=200, ts=t))
        await producer.flush()
        await collector.wait_for(lambda: set(asked) <= {r["request_id"] for r in
                                                        collector.recommendations})
        return {asked[r["request_id"]]: [i["item_id"] for i in r["items"]]
                for r in collector.recommendations if r["request_id"] in asked}

    deadline = time.monotonic() + 30
    while True:  # until the clicks are learned: then every user's list holds it
        before = await lists_of(users, now + 4)
        if all(gone in got for got in before.values()):
            break
        assert time.monotonic() < deadline, f"{gone} never reached every list: {before}"
        await asyncio.sleep(0.2)
    await send(producer, Retire(uid("e"), gone, now + 5, "moderation"))
    await producer.flush()
    await wait_for_key(redis_client, lambda: redis_client.hexists("streamrec:retired", gone))
    # Lists computed from here on: triggered by new clicks, and asked for.
    triggers = {uid("e"): u for u in users + fans}
    for n, (event_id, u) in enumerate(triggers.items()):
        await send(producer, Click(event_id, u, others[1 + n % 4], now + 6))
    late_click = uid("e")  # a stale page: not learned, no dead letter, still a list
    await send(producer, Click(late_click, uid("user"), gone, now + 7))
    await producer.flush()
    await collector.wait_for(lambda: {*triggers, late_click} <= {
        r["trigger"] for r in collector.recommendations})
    after = [r for r in collector.recommendations if r["trigger"] in {*triggers, late_click}]
    assert not [r["user_id"] for r in after if gone in {i["item_id"] for i in r["items"]}]
    for got in (await lists_of(users + fans, now + 8)).values():
        assert gone not in got and set(others) & set(got)
    assert await keys_holding(redis_client, "streamrec", gone) == []
    assert not [v for _, v in collector.dead_letters if late_click.encode() in v]


async def wait_for_key(r: aioredis.Redis, exists, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not await exists():
        assert time.monotonic() < deadline, "not processed in time"
        await asyncio.sleep(0.1)
