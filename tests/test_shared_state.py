"""The write-back to a real redis-server: a write that fails is resent with the next one and
lands exactly once, whether or not the failed transaction was applied; other workers pull only
the items changed since their last pull."""

from __future__ import annotations

import time

import orjson
import pytest
import redis.asyncio as aioredis
import redis.exceptions

from streamrec.embedded import free_port
from streamrec.engine.shared_state import APPLY_INCREMENTS, SharedState
from streamrec.models.blend import Blend

from conftest import uid

pytestmark = pytest.mark.integration

EVENTS = [("ann", "tea", 1.0, True), ("ann", "cake", 2.0, False), ("bob", "tea", 3.0, True),
          ("bob", "jam", 4.0, True), ("ann", "jam", 5.0, True)]


def learn(state: SharedState, events) -> None:
    for user, item, ts, clicked in events:
        state.blend.learn_one(user, item, ts, clicked)
        state.touched_users.add(user)


async def snapshot(r: aioredis.Redis, prefix: str) -> dict:
    """Everything the write-back stores, with the prefix taken out of the keys."""
    out = {}
    for key in await r.keys(f"{prefix}:*"):
        name = key.decode()[len(prefix):]
        kind = (await r.type(key)).decode()
        if name == ":changed":  # stamped with the time of each write: which items only
            out[name] = set(await r.zrange(key, 0, -1))
        elif kind == "zset":
            out[name] = {m: round(s, 9) for m, s in await r.zrange(key, 0, -1, withscores=True)}
        elif kind == "hash":
            out[name] = {k: round(float(v), 9) if ":pop:" in name else v
                         for k, v in (await r.hgetall(key)).items()}
        elif kind == "list":  # users' seen and clicked items
            out[name] = await r.lrange(key, 0, -1)
        elif kind == "string":  # user states, the co-visitation epoch
            out[name] = await r.get(key)
    return out


async def test_a_failed_write_back_is_resent_with_the_next_and_lands_once(redis_client):
    reference = SharedState(redis_client, Blend(seed=0), prefix=uid("ref"))
    learn(reference, EVENTS)
    await reference.write_back({"views:0": 4}, {"events": 5})

    state = SharedState(redis_client, Blend(seed=0), prefix=uid("retry"))
    learn(state, EVENTS[:3])
    state.r = aioredis.from_url(f"redis://127.0.0.1:{free_port()}")  # nothing listens there
    with pytest.raises(redis.exceptions.ConnectionError):
        await state.write_back({"views:0": 2}, {"events": 3})
    state.r = redis_client
    learn(state, EVENTS[3:])
    await state.write_back({"views:0": 4}, {"events": 2})

    stored = await snapshot(redis_client, state.p)
    assert {":user:ann", ":user:bob", ":co:tea", ":co:jam", ":isgd", ":offsets"} <= set(stored)
    assert stored == await snapshot(redis_client, reference.p)
    assert await redis_client.hget(f"{state.p}:offsets", "views:0") == b"4"
    # Resent once: a third write carries nothing from the first.
    await state.write_back({}, {})
    assert await snapshot(redis_client, state.p) == await snapshot(redis_client, reference.p)


async def test_guarded_increments_apply_only_if_their_offsets_did_not_land(redis_client):
    p = uid("guard")
    groups = orjson.dumps([["h", f"{p}:pop:0", ["tea", 1.5]]])
    guard = orjson.dumps([f"{p}:offsets", {"views:0": 7, "clicks:1": 3}])
    await redis_client.hset(f"{p}:offsets", mapping={"views:0": 7, "clicks:1": 2})
    assert await redis_client.eval(APPLY_INCREMENTS, 0, 100, groups, guard) == 1  # 2 < 3
    await redis_client.hset(f"{p}:offsets", "clicks:1", 3)
    assert await redis_client.eval(APPLY_INCREMENTS, 0, 100, groups, guard) == 0  # landed
    assert float(await redis_client.hget(f"{p}:pop:0", "tea")) == 1.5
    no_guard = orjson.dumps([f"{p}:offsets", {}])
    assert await redis_client.eval(APPLY_INCREMENTS, 0, 100, groups, no_guard) == 1
    assert float(await redis_client.hget(f"{p}:pop:0", "tea")) == 3.0


async def test_co_visitation_pairs_land_both_ways_as_the_local_lists_hold_them(redis_client):
    state = SharedState(redis_client, Blend(seed=0), prefix=uid("pairs"))
    learn(state, EVENTS)
    await state.write_back({"views:0": 4}, {"events": 5})
    co, ids = state.co, state.blend.catalog.ids
    assert co.neighbours
    for j, nb in co.neighbours.items():
        idx, w = nb.arrays()
        stored = await redis_client.zrange(f"{state.p}:co:{ids[j]}", 0, -1, withscores=True)
        assert {m.decode(): round(s, 9) for m, s in stored} == \
            {ids[i]: round(x, 9) for i, x in zip(idx.tolist(), w.tolist())}


async def test_the_embedded_redis_keeps_neighbour_lists_as_skip_lists(redis_client):
    # The compact encoding made each ZINCRBY ~2.3x dearer (benchmarks/redis_writeback.py).
    state = SharedState(redis_client, Blend(seed=0), prefix=uid("encoding"))
    learn(state, EVENTS)
    await state.write_back({"views:0": 4}, {"events": 5})
    assert await redis_client.object("encoding", f"{state.p}:co:tea") == b"skiplist"


async def test_pairs_beyond_twice_the_cap_are_trimmed_to_the_strongest(redis_client):
    p = uid("trim")
    pairs = [x for b, w in zip("bcdef", (5.0, 1.0, 4.0, 2.0, 3.0)) for x in ("a", b, w)]
    await redis_client.eval(APPLY_INCREMENTS, 0, 2, orjson.dumps([["p", f"{p}:co:", pairs]]))
    kept = await redis_client.zrevrange(f"{p}:co:a", 0, -1, withscores=True)
    assert kept == [(b"b", 5.0), (b"d", 4.0)]  # 5 neighbours > 2 x 2: the 2 strongest stay
    assert await redis_client.zrange(f"{p}:co:c", 0, -1, withscores=True) == [(b"a", 1.0)]


async def last_commands(r: aioredis.Redis, name: str) -> set[str]:
    """The last command of each connection named ``name`` (other clients, such as the shared
    worker's heartbeats, do not count)."""
    return {c["cmd"] for c in await r.client_list() if c.get("name") == name}


async def test_applied_offsets_are_read_once_per_assignment_and_advanced_locally(
        redis_client, runtime):
    prefix = uid("offsets")
    other = SharedState(redis_client, Blend(seed=0), prefix=prefix)
    own = aioredis.from_url(runtime.redis, client_name=prefix)
    state = SharedState(own, Blend(seed=0), prefix=prefix)
    await other.write_back({"views:0": 10}, {})
    learn(state, EVENTS[:1])
    await state.write_back({}, {})
    assert await state.before_batch(["ann"], ["views:0", "clicks:1"]) == {"views:0": 10}

    # Known users, offsets and neighbour lists: the batch does not wait for Redis at all.
    await own.echo("marker")
    assert await state.before_batch(["ann"], ["views:0", "clicks:1"]) == {"views:0": 10}
    assert await last_commands(redis_client, prefix) == {"echo"}
    await state.write_back({"clicks:1": 3}, {})  # its own progress counts at once
    assert await state.before_batch(["ann"], ["views:0", "clicks:1"]) == {"views:0": 10,
                                                                         "clicks:1": 3}

    # After a rebalance another worker may have moved a partition on: read again.
    await other.write_back({"views:0": 20}, {})
    assert (await state.before_batch(["ann"], ["views:0"]))["views:0"] == 10
    state.forget_owned_state()
    assert (await state.before_batch(["ann"], ["views:0"]))["views:0"] == 20
    await own.aclose()


async def test_an_item_registered_after_a_newer_one_reaches_the_other_workers(redis_client):
    # Uploads are keyed by item, so two workers register items from their own partitions:
    # one with an older event time may land after another worker has read a newer one
    # (a lagging partition, a slow encoding).
    prefix = uid("late")
    reader = SharedState(redis_client, Blend(seed=0), prefix=prefix, worker="reader")
    writer = SharedState(redis_client, Blend(seed=0), prefix=prefix, worker="writer")
    await reader.load()
    await writer.register_items([("new", 2000.0, b"{}")])
    await reader.refresh(force=True)
    await writer.register_items([("late", 1000.0, b"{}"), ("new", 2000.0, b"{}")])
    await reader.refresh(force=True)
    assert {"new", "late"} <= set(reader.blend.catalog.ids)
    assert await redis_client.lrange(f"{prefix}:items:added", 0, -1) == [b"new", b"late"]
    # A worker started now reads them all, at their first-seen times.
    fresh = SharedState(redis_client, Blend(seed=0), prefix=prefix, worker="fresh")
    await fresh.load()
    cat = fresh.blend.catalog
    assert {i: cat.first_seen[cat.index[i]] for i in cat.ids} == {"new": 2000.0, "late": 1000.0}


async def test_the_pass_through_ceiling_writes_what_the_pipeline_writes(redis_client, tmp_path):
    # The ceiling has "the same reads, batching and writes but no model work": the same
    # keys, the same counter and pair increments, a vector for each item and user it touched.
    import time

    from streamrec.config import Settings
    from streamrec.engine.build import build_engine
    from streamrec.engine.engine import Incoming
    from streamrec.records.events import Click, View, encode

    now = time.time()
    batch = [Incoming(encode((Click if clicked else View)(f"e{n}", user, item, now + ts)),
                      "clicks" if clicked else "views", 0, n, now)
             for n, (user, item, ts, clicked) in enumerate(EVENTS)]
    written = {}
    for engine in ("pipeline", "passthrough"):
        prefix = uid(engine)
        eng = build_engine(Settings(redis="unused", app_id=prefix, content=False,
                                    engine=engine, snapshot_dir=str(tmp_path)),
                           redis_client, "test")
        await eng.interactions(batch)
        written[engine] = await snapshot(redis_client, prefix)
    pipe, passthrough = written["pipeline"], written["passthrough"]
    assert set(pipe) == set(passthrough)
    for key, value in pipe.items():
        if key.startswith(":co:") or key.startswith(":pop:") or key in (
                ":item-clicks", ":item-events", ":stats", ":offsets"):
            assert passthrough[key] == value, key
        elif isinstance(value, dict):  # vectors: the same fields, other values (untrained)
            assert set(passthrough[key]) == set(value), key


async def test_a_worker_pulls_only_what_others_changed_since_its_last_pull(redis_client):
    prefix = uid("delta")
    a = SharedState(redis_client, Blend(seed=0), prefix=prefix, worker="a",
                    content_version="test")
    b = SharedState(redis_client, Blend(seed=0), prefix=prefix, worker="b",
                    content_version="test")
    await a.load()  # each says it is alive as it loads: neither is alone
    await b.load()  # the whole state, once
    learn(a, EVENTS)
    await a.write_back({}, {})

    def counts(state: SharedState, item: str) -> tuple[float, float]:
        j = state.blend.catalog.index[item]
        return float(state.counts.clicks_of(j)), float(state.mf.item_factors[j][0])

    b._last_refresh = 0.0  # as if the refresh interval had passed
    await b.refresh()
    for item in ("tea", "cake", "jam"):
        assert counts(b, item) == pytest.approx(counts(a, item)), item
    # A change stamped long before the last pull is not pulled again; stamped now, it is.
    await redis_client.zadd(f"{prefix}:changed", {"tea": time.time() - 3600})
    await redis_client.hset(f"{prefix}:item-clicks", "tea", 99)
    b._last_refresh = 0.0
    await b.refresh()
    assert counts(b, "tea")[0] == counts(a, "tea")[0]
    await redis_client.zadd(f"{prefix}:changed", {"tea": time.time()})
    b._last_refresh = 0.0
    await b.refresh()
    assert counts(b, "tea")[0] == 99
