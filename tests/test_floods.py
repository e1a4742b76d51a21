"""Floods of new ids against a real redis-server: users' state is written as a delta, expires
when idle, is bounded in the worker's memory and the same after a user has been dropped and read
back; items never uploaded are bounded too."""

from __future__ import annotations

import orjson
import pytest
from test_shared_state import learn

from streamrec.engine.shared_state import SharedState
from streamrec.models.blend import Blend

from conftest import uid

pytestmark = pytest.mark.integration


def long_history(user: str, n: int, start: float = 0.0) -> list[tuple[str, str, float, bool]]:
    """``n`` views of distinct items with long ids, every third one clicked."""
    return [(user, f"item-{'x' * 100}-{k}", start + k, k % 3 == 0) for k in range(n)]


async def test_a_long_history_is_appended_to_not_rewritten(redis_client):
    state = SharedState(redis_client, Blend(seed=0), prefix=uid("delta"))
    learn(state, long_history("ann", 2000))
    await state.write_back({}, {})
    user_key, seen_key = f"{state.p}:user:ann", f"{state.p}:seen:ann"
    assert await redis_client.llen(seen_key) == 2000
    assert b"seen" not in await redis_client.get(user_key)

    # One more event: the whole history does not travel again.
    await redis_client.config_resetstat()
    learn(state, [("ann", "one-more", 5000.0, True)])
    await state.write_back({}, {})
    info = await redis_client.info("stats")
    assert info["total_net_input_bytes"] < 20_000  # the history alone is ~220 KB
    assert await redis_client.llen(seen_key) == 2001
    assert (await redis_client.lrange(seen_key, -1, -1)) == [b"one-more"]
    assert (await redis_client.lrange(f"{state.p}:clicked:ann", -1, -1)) == [b"one-more"]
    # A view of an item seen before adds nothing to the history.
    learn(state, [("ann", "one-more", 5001.0, False)])
    await state.write_back({}, {})
    assert await redis_client.llen(seen_key) == 2001


async def test_the_history_read_back_is_the_one_learned(redis_client):
    prefix = uid("roundtrip")
    writer = SharedState(redis_client, Blend(seed=0), prefix=prefix)
    events = long_history("ann", 300) + [("ann", "item-again", 400.0, False),
                                         ("ann", f"item-{'x' * 100}-7", 401.0, True)]
    learn(writer, events)
    await writer.write_back({}, {})
    reader = SharedState(redis_client, Blend(seed=0), prefix=prefix)
    await reader.before_batch({"ann"}, ())
    ids_w, ids_r = writer.blend.catalog.ids, reader.blend.catalog.ids
    assert [ids_r[j] for j in reader.blend.seen_items("ann")] == \
        [ids_w[j] for j in writer.blend.seen_items("ann")]
    assert {ids_r[j] for j in reader.blend.clicked["ann"]} == \
        {ids_w[j] for j in writer.blend.clicked["ann"]}
    assert reader.blend.activity["ann"] == len(events)


async def test_beyond_twice_max_seen_the_oldest_go_in_redis_and_in_memory(redis_client):
    blend = Blend(seed=0, max_seen=50)
    state = SharedState(redis_client, blend, prefix=uid("trim"))
    learn(state, long_history("ann", 101))
    await state.write_back({}, {})
    ids = blend.catalog.ids
    held = [ids[j] for j in blend.seen_items("ann")]
    assert 50 <= len(held) <= 100 and held[-1].endswith("-100")
    assert len(blend.seen["ann"]) == len(held)
    stored = [m.decode() for m in await redis_client.lrange(f"{state.p}:seen:ann", 0, -1)]
    assert 50 <= len(stored) <= 100 and stored == [f"item-{'x' * 100}-{k}"
                                                   for k in range(101 - len(stored), 101)]
    clicked = [m.decode() for m in await redis_client.lrange(f"{state.p}:clicked:ann", 0, -1)]
    assert 17 <= len(clicked) <= 34  # of the 34 clicks, the latest 17 at least
    assert clicked == [f"item-{'x' * 100}-{k}" for k in range(0, 101, 3)][-len(clicked):]


async def test_idle_users_expire_in_redis(redis_client):
    state = SharedState(redis_client, Blend(seed=0), prefix=uid("ttl"), user_ttl_s=3600)
    learn(state, [("ann", "tea", 1.0, True)])
    await state.write_back({}, {})
    for kind in ("user", "seen", "clicked"):
        assert 3500 < await redis_client.ttl(f"{state.p}:{kind}:ann") <= 3600, kind
    forever = SharedState(redis_client, Blend(seed=0), prefix=uid("ttl0"), user_ttl_s=0)
    learn(forever, [("ann", "tea", 1.0, True)])
    await forever.write_back({}, {})
    assert await redis_client.ttl(f"{forever.p}:user:ann") == -1


async def test_memory_holds_at_most_max_users_and_a_dropped_user_comes_back_whole(redis_client):
    prefix = uid("evict")
    state = SharedState(redis_client, Blend(seed=0), prefix=prefix, max_users=20)
    reference = Blend(seed=0)  # never drops anyone
    t = 0.0
    for batch in range(30):
        users = {f"u{batch * 10 + n}" for n in range(10)} | {"ann"}
        await state.before_batch(users, ())
        for u in sorted(users):
            for item in (f"i{int(t) % 37}", f"i{int(t * 7) % 41}"):
                state.blend.learn_one(u, item, t, clicked=int(t) % 2 == 0)
                reference.learn_one(u, item, t, clicked=int(t) % 2 == 0)
                t += 1
            state.touched_users.add(u)
        await state.write_back({}, {})
        b = state.blend
        for held in (state.loaded_users, b.seen, b.activity, b.sources["covisitation"].recent,
                     b.sources["isgd"].user_factors):
            assert len(held) <= 20, (batch, len(held))
    assert "ann" in state.loaded_users  # active in every batch: never dropped
    gone = "u5"
    assert gone not in state.loaded_users and gone not in state.blend.seen
    await state.before_batch({gone}, ())
    ids, ref_ids = state.blend.catalog.ids, reference.catalog.ids
    assert [ids[j] for j in state.blend.seen_items(gone)] == \
        [ref_ids[j] for j in reference.seen_items(gone)]
    assert state.blend.activity[gone] == reference.activity[gone]
    assert list(state.blend.sources["covisitation"].recent[gone]) == \
        [state.blend.catalog.index[ref_ids[j]]
         for j in reference.sources["covisitation"].recent[gone]]


async def test_a_user_of_the_current_batch_or_with_unsaved_changes_is_never_dropped(
        redis_client):
    state = SharedState(redis_client, Blend(seed=0), prefix=uid("keep"), max_users=1)
    await state.before_batch({"ann"}, ())
    learn(state, [("ann", "tea", 1.0, True)])  # not yet written
    await state.before_batch({"bob", "cid"}, ())
    assert {"bob", "cid"} <= set(state.loaded_users)
    assert "ann" in state.blend.seen
    await state.write_back({}, {})
    await state.before_batch({"dan"}, ())
    assert list(state.loaded_users) == ["dan"] and "ann" not in state.blend.seen


async def test_a_state_written_whole_before_is_read_and_moved_to_the_seen_keys(redis_client):
    prefix = uid("legacy")
    await redis_client.set(f"{prefix}:user:ann", orjson.dumps(
        {"seen": ["tea", "jam"], "clicked": ["jam"], "recent": ["tea", "jam"], "n": 2}))
    state = SharedState(redis_client, Blend(seed=0), prefix=prefix)
    await state.before_batch({"ann"}, ())
    ids = state.blend.catalog.ids
    assert [ids[j] for j in state.blend.seen_items("ann")] == ["tea", "jam"]
    assert {ids[j] for j in state.blend.clicked["ann"]} == {"jam"}
    await state.write_back({}, {})
    assert await redis_client.lrange(f"{prefix}:seen:ann", 0, -1) == [b"tea", b"jam"]
    assert await redis_client.lrange(f"{prefix}:clicked:ann", 0, -1) == [b"jam"]
    assert b"seen" not in await redis_client.get(f"{prefix}:user:ann")


async def test_items_never_uploaded_are_capped_and_the_rest_dead_lettered(redis_client, tmp_path):
    import time

    from streamrec.config import Settings
    from streamrec.engine.build import build_engine
    from streamrec.engine.engine import Incoming
    from streamrec.records.events import View, encode

    prefix = uid("unknown")
    eng = build_engine(Settings(redis="unused", app_id=prefix, content=False,
                                snapshot_dir=str(tmp_path), max_unknown_items=3),
                       redis_client, "test")
    now = time.time()
    eng.blend.add_item("uploaded", now)
    items = ["uploaded", "a", "b", "a", "c", "d", "e", "uploaded", "b"]
    batch = [Incoming(encode(View(f"e{n}", f"u{n}", item, now + n)), "views", 0, n, now)
             for n, item in enumerate(items)]
    out = await eng.interactions(batch)
    assert out.stats["learned"] == 7 and out.stats["dead_letter"] == 2
    reasons = [dict(h)["streamrec.reason"].decode() for _, h in out.dead_letters]
    assert all(r.startswith("unknown item: ") for r in reasons)
    assert [r.split()[2] for r in reasons] == ["d", "e"]
    assert eng.blend.catalog.never_uploaded == 3
    # Every valid event's user still gets a list, the refused ones' users too are untouched.
    assert {k.decode() for k, _ in out.recommendations} == \
        {f"u{n}" for n, item in enumerate(items) if item not in ("d", "e")}


def test_clicks_waiting_for_an_embedding_are_bounded():
    import numpy as np

    from streamrec.models.content import ContentSource

    src = ContentSource(max_pending=100)
    for n in range(1000):  # items never uploaded: their embeddings never come
        src.learn_one(f"u{n}", f"item{n % 300}", float(n))
    waiting = sum(len(v) for v in src._pending.values())
    assert waiting == src._n_pending <= 100
    src.set_embedding("item99", np.ones(src.dim, np.float32) / np.sqrt(src.dim), ts=1000.0)
    assert set(src.profiles) == {"u999"}  # the latest click waited; older ones were dropped
    assert src._n_pending == waiting - 1
