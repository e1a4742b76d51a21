"""Several workers in one consumer group: one joins and one leaves mid-stream with every event
learned exactly once, and an item uploaded through one worker is recommended by the other
within the refresh interval."""

from __future__ import annotations

import asyncio
import inspect
import itertools
import os
import signal
import time
from collections import Counter, defaultdict
from pathlib import Path

import orjson
import pytest
import redis.asyncio as aioredis
from aiokafka.partitioner import murmur2

from streamrec.clients import kafka_consumer
from streamrec.config import Settings
from streamrec.embedded import EmbeddedRuntime
from streamrec.engine.build import build_engine
from streamrec.engine.engine import Incoming
from streamrec.engine.host import InLoopHost
from streamrec.engine.shared_state import SharedState, read_stats
from streamrec.models.blend import Blend
from streamrec.processes import Process, assigned_partitions, start_worker, wait_for_assignment
from streamrec.records.events import MAX_K, Click, RecRequest, Upload, View, encode
from streamrec.records.topics import RECOMMENDATIONS, ensure_topics
from streamrec.simulator.publish import publish, start_producer
from streamrec.simulator.world import World, WorldConfig

from conftest import send, uid

pytestmark = pytest.mark.integration

PARTITIONS = 4
#: Workers without the encoder process (uploads are registered with their metadata only):
#: they start faster, and nothing here depends on content. Refresh every second.
ENV = {"STREAMREC_CONTENT": "0", "STREAMREC_REFRESH_S": "1"}


def partition_of(key: str, partitions: int = PARTITIONS) -> int:
    """The partition the producer's default partitioner sends ``key`` to."""
    return (murmur2(key.encode()) & 0x7FFFFFFF) % partitions


def key_on(prefix: str, partitions: set[int]) -> str:
    """A fresh id whose messages land on one of ``partitions``."""
    while (key := uid(prefix)) and partition_of(key) not in partitions:
        pass
    return key


class Lists:
    """Every list published: (arrival time, worker, user, trigger, item ids, request id)."""

    def __init__(self) -> None:
        self.seen: list[tuple[float, str, str, str | None, list[str], str | None]] = []

    async def run(self, rt: EmbeddedRuntime, ready: asyncio.Event) -> None:
        consumer = kafka_consumer(rt.settings(), RECOMMENDATIONS, auto_offset_reset="earliest",
                                  enable_auto_commit=False, fetch_max_wait_ms=10)
        await consumer.start()
        ready.set()
        try:
            while True:
                for records in (await consumer.getmany(timeout_ms=100)).values():
                    now = time.time()
                    for rec in records:
                        d = orjson.loads(rec.value)
                        self.seen.append((now, d["worker"], d["user_id"], d.get("trigger"),
                                          [i["item_id"] for i in d["items"]], d["request_id"]))
        finally:
            await consumer.stop()


async def collecting(rt: EmbeddedRuntime) -> tuple[Lists, asyncio.Task]:
    lists, ready = Lists(), asyncio.Event()
    task = asyncio.create_task(lists.run(rt, ready))
    await ready.wait()
    return lists, task


async def wait_until(check, timeout_s: float, what: str) -> None:
    """Until ``check()`` (a bool, or an awaitable of one) holds."""
    deadline = time.monotonic() + timeout_s
    while True:
        done = check()
        if inspect.isawaitable(done):
            done = await done
        if done:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        await asyncio.sleep(0.1)


def users_without_a_last_list(sent: list, lists: Lists) -> list[str]:
    """Users none of whose last interactions triggered a list. A list names the latest event of
    its user in its micro-batch, in event time across topics, so a view sent just before the
    user's last click may be named: any of the user's events within a second of the last
    counts."""
    named = {(user, trig) for _, _, user, trig, _, _ in lists.seen}
    mine: dict[str, list] = defaultdict(list)
    for e in sent:
        mine[e.user_id].append(e)
    return [user for user, evs in mine.items()
            if not any((user, e.event_id) in named for e in evs if e.ts >= evs[-1].ts - 1.0)]


def no_last_list(sent: list, lists: Lists, joined_at: int, left_at: int) -> str:
    """What a user left without a list for their last interactions went through."""
    lines = []
    for user in users_without_a_last_list(sent, lists)[:5]:
        mine = [(n, e) for n, e in enumerate(sent) if e.user_id == user][-4:]
        lines.append(f"{user} (partition {partition_of(user)}): last events " + ", ".join(
            f"#{n} {e.type} {e.event_id} ts {e.ts:.2f}" for n, e in mine)
            + "; lists: " + ", ".join(f"{w} {trig}" for _, w, u, trig, *_ in lists.seen
                                      if u == user)[-400:])
    return (f"{len(users_without_a_last_list(sent, lists))} users' last interactions got no "
            f"list (joined at event #{joined_at}, left at #{left_at}):\n" + "\n".join(lines))


@pytest.mark.slow
def test_a_worker_joins_and_another_leaves_mid_stream_learning_every_event_once(tmp_path: Path):
    world = World(WorldConfig(n_users=400, n_items=150, images=False, seed=11))
    events = list(itertools.islice(world.events(time.time() - 3600), 30000))

    async def scenario() -> None:
        settings = rt.settings()
        r = aioredis.from_url(rt.redis)
        lists, reader = await collecting(rt)
        w1 = start_worker(rt, PARTITIONS, extra_env=ENV, log_name="worker-1.log")
        w2: Process | None = None
        sent: list = []
        stop_sending = asyncio.Event()

        async def sender() -> None:
            producer = await start_producer(settings)
            try:
                await publish(itertools.takewhile(lambda _: not stop_sending.is_set(), events),
                              settings, rate=400.0, producer=producer,
                              on_event=lambda ev, _: sent.append(ev))
            finally:
                await producer.stop()

        def lists_by(worker: Process, after: int) -> bool:
            return any(w == worker.name for _, w, *_ in lists.seen[after:])

        try:
            await wait_for_assignment(settings, w1, partitions=PARTITIONS)
            sending = asyncio.create_task(sender())
            await wait_until(lambda: len(sent) >= 1500, 30, "sending")
            # A second worker joins: the group rebalances, half the partitions move to it.
            w2 = start_worker(rt, PARTITIONS, extra_env=ENV, log_name="worker-2.log")
            await wait_for_assignment(settings, w2, partitions=PARTITIONS // 2)
            n = len(lists.seen)
            await wait_until(lambda: lists_by(w2, n), 60, "lists from the joined worker")
            n = len(lists.seen)
            await wait_until(lambda: lists_by(w1, n), 60,
                             "lists from the first worker after the join")
            joined_at = len(sent)
            # The first one leaves (SIGTERM to its main process, as a supervisor stops it):
            # its partitions go back to the second, which carries on from the commits.
            os.kill(w1.proc.pid, signal.SIGTERM)
            await asyncio.to_thread(w1.proc.wait, 60)
            left_at = len(sent)
            await wait_for_assignment(settings, w2, partitions=PARTITIONS)
            n = len(sent)
            await wait_until(lambda: len(sent) >= n + 2000, 60,
                             "sending after the leave")
            stop_sending.set()
            await sending
            inter = [e for e in sent if isinstance(e, (View, Click))]

            async def drained() -> bool:
                return (await read_stats(r)).get("learned", 0) >= len(inter)

            await wait_until(drained, 90, "the workers learned every event")
            await asyncio.sleep(1.5)  # anything learned twice would land meanwhile
            stats = await read_stats(r)
            got_events = {k.decode(): int(v) for k, v in
                          (await r.hgetall("streamrec:item-events")).items()}
            got_clicks = {k.decode(): int(v) for k, v in
                          (await r.hgetall("streamrec:item-clicks")).items()}
            seen = {u: {i.decode() for i in await r.lrange(f"streamrec:seen:{u}", 0, -1)}
                    for u in {e.user_id for e in inter}}
            try:
                await wait_until(lambda: not users_without_a_last_list(inter, lists), 30, "")
            except TimeoutError:
                raise AssertionError(no_last_list(inter, lists, joined_at, left_at)) from None
            final = await assigned_partitions(r, w2)
        finally:
            stop_sending.set()
            reader.cancel()
            for w in (w1, w2):
                if w is not None:
                    w.stop()
            await r.aclose()

        assert 1500 <= joined_at < left_at < len(sent), "joined and left mid-stream"
        assert w1.proc.returncode == 0, "the leaving worker stopped cleanly"
        assert {p for p in final if p.startswith("views:")} == {f"views:{p}" for p in
                                                                  range(PARTITIONS)}
        assert stats["learned"] == len(inter)
        assert got_events == dict(Counter(e.item_id for e in inter))
        assert got_clicks == dict(Counter(e.item_id for e in inter if isinstance(e, Click)))
        want_seen: dict[str, set[str]] = defaultdict(set)
        for e in inter:
            want_seen[e.user_id].add(e.item_id)
        assert seen == want_seen
        assert stats.get("dead_letter", 0) == 0

    with EmbeddedRuntime(run_dir=tmp_path) as rt:
        asyncio.run(ensure_topics(rt.settings(), PARTITIONS))
        asyncio.run(scenario())


@pytest.mark.slow
def test_an_item_uploaded_through_one_worker_is_recommended_by_the_other(tmp_path: Path):
    refresh_s = float(ENV["STREAMREC_REFRESH_S"])

    async def scenario() -> list[float]:
        settings = rt.settings()
        r = aioredis.from_url(rt.redis)
        lists, reader = await collecting(rt)
        producer = await start_producer(settings)
        a = start_worker(rt, PARTITIONS, extra_env=ENV, log_name="worker-a.log")
        b = start_worker(rt, PARTITIONS, extra_env=ENV, log_name="worker-b.log")
        try:
            await wait_for_assignment(settings, a, partitions=PARTITIONS // 2)
            await wait_for_assignment(settings, b, partitions=PARTITIONS // 2)
            own = {}
            for w in (a, b):
                got = await assigned_partitions(r, w)
                own[w.name] = {t: {int(p.split(":")[1]) for p in got if p.startswith(t + ":")}
                               for t in ("uploads", "rec-requests")}
            user = key_on("user", own[a.name]["rec-requests"])

            async def ask(item: str, timeout_s: float) -> float:
                """Ask for ``user``'s list (answered by ``a``) until it holds ``item``; the
                time from the item's registration by ``b`` to that answer."""
                deadline = time.monotonic() + timeout_s
                while time.monotonic() < deadline:
                    request = uid("req")
                    await send(producer, RecRequest(request, user, k=MAX_K, ts=time.time()))
                    await producer.flush()
                    answered = time.monotonic() + 20  # the first one waits for the model process
                    while not (answers := [x for x in lists.seen if x[5] == request]) \
                            and time.monotonic() < answered:
                        await asyncio.sleep(0.02)
                    assert answers and answers[0][1] == a.name, "a answers its user's requests"
                    if item in answers[0][4]:
                        meta = orjson.loads(await r.hget("streamrec:items", item))
                        return answers[0][0] - meta["indexed_ts"]
                    await asyncio.sleep(0.1)
                raise AssertionError(f"{item}, uploaded through the other worker, was never "
                                     f"recommended by this one")

            delays = []
            # An item a registers itself, then b's: one with the current time, one whose
            # event time is older than a's item (published late, or encoded slowly).
            now = time.time()
            mine = key_on("item", own[a.name]["uploads"])
            await send(producer, Upload(uid("e"), mine, "c1", now, "a's own"))
            await ask(mine, 30)
            for ts in (time.time(), now - 30.0):
                theirs = key_on("item", own[b.name]["uploads"])
                await send(producer, Upload(uid("e"), theirs, "c2", ts, "b's"))
                await producer.flush()
                await wait_until(lambda i=theirs: r.hexists("streamrec:items", i), 30,
                                 "b registers the upload")
                delays.append(await ask(theirs, 5 * refresh_s + 10))
            return delays
        finally:
            reader.cancel()
            await producer.stop()
            a.stop()
            b.stop()
            await r.aclose()

    with EmbeddedRuntime(run_dir=tmp_path) as rt:
        asyncio.run(ensure_topics(rt.settings(), PARTITIONS))
        delays = asyncio.run(scenario())
    # Within one refresh interval, give or take a batch and the request's round trip: on a
    # loaded 2-core machine running both workers' four processes the timer and the answer
    # can each be a second late.
    assert all(0 <= d <= 2 * refresh_s + 2.0 for d in delays), delays


async def test_a_worker_without_interactions_still_pulls_the_items_of_the_others(
        redis_client, tmp_path):
    # Its partitions carry only requests for a while: the periodic upkeep pulls what other
    # workers registered, as a batch of interactions would.
    prefix = uid("idle")
    engine = build_engine(Settings(redis="unused", app_id=prefix, content=False, refresh_s=0.2,
                                   snapshot_dir=str(tmp_path)), redis_client, "idle")
    host = InLoopHost(engine)
    await host.start()
    other = SharedState(redis_client, Blend(seed=0), prefix=prefix, worker="other")
    await other.load()  # its heartbeat: the idle worker is not alone
    await other.register_items([("theirs", time.time(), b"{}")])
    await asyncio.sleep(0.2)
    await host.refresh_models()
    await host.close()
    assert "theirs" in engine.blend.catalog


async def test_a_list_names_its_users_latest_event_when_older_ones_follow_in_the_batch(
        redis_client, tmp_path):
    # A batch can hold two fetches: after a rebalance the views partition may replay events
    # older than a click already fetched from the clicks partition.
    engine = build_engine(Settings(redis="unused", app_id=uid("trigger"), content=False,
                                   snapshot_dir=str(tmp_path)), redis_client, "test")
    await engine.start()
    now = time.time()
    user = uid("user")
    click = Click(uid("e"), user, "a", now)
    old_view = View(uid("e"), user, "b", now - 30)
    out = await engine.interactions([
        Incoming(encode(click), "clicks", 0, 5, now, None, 6),
        Incoming(encode(old_view), "views", 0, 3, now - 30, None, 4)])
    await engine.close()
    (_, payload), = out.recommendations
    assert orjson.loads(payload)["trigger"] == click.event_id
