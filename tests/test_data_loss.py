"""Faults that once lost accepted events or stopped a worker, each against real parts: a bad
field in a batch of good events, dead letters near the size limit, compressed batches, a
worker started in an empty folder, a broker whose offsets went back, Redis losing or
restarting under a worker."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
from pathlib import Path

import orjson
import pytest
import redis.asyncio as aioredis
from aiokafka import AIOKafkaProducer

from streamrec import metrics
from streamrec.config import Settings
from streamrec.embedded import EmbeddedRuntime
from streamrec.engine.build import build_engine
from streamrec.engine.engine import Incoming
from streamrec.engine.shared_state import StateLost, read_stats
from streamrec.processes import start_worker, wait_for_worker
from streamrec.records.dead_letter import TRUNCATED_BYTES
from streamrec.records.errors import WorkerMustStop
from streamrec.records.events import MAX_UPLOAD_BYTES, View, encode
from streamrec.records.topics import ensure_topics

from conftest import send, uid

pytestmark = pytest.mark.integration


async def item_events(r: aioredis.Redis, prefix: str, items: list[str]) -> list[int]:
    """How many views and clicks of each item the workers have learned."""
    return [int(v or 0) for v in await r.hmget(f"{prefix}:item-events", items)]


async def wait_until(check, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not await check():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met in time")
        await asyncio.sleep(0.1)


# ---- through the shared worker ---------------------------------------------------------------

async def test_a_bad_type_field_in_a_batch_loses_no_valid_event(producer, collector,
                                                                 redis_client, worker):
    # On one partition (one key), so that all of them share micro-batches.
    user, now = uid("user"), time.time()
    items = [uid("item") for _ in range(10)]
    bad = [orjson.dumps({"type": t, "event_id": uid("e"), "user_id": user, "item_id": "x",
                         "ts": now}) for t in ([], {}, ["view"], {"view": 1})]
    for n, item in enumerate(items):
        topic = "views" if n % 2 else "clicks"
        if n % 3 == 0:
            await producer.send(topic, bad[n // 3], key=user.encode())
        await producer.send(topic, encode(View(uid("e"), user, item, now)) if topic == "views"
                            else orjson.dumps({"event_id": uid("e"), "user_id": user,
                                               "item_id": item, "ts": now}), key=user.encode())
    await producer.flush()
    await collector.wait_for(lambda: sum(v in bad for _, v in collector.dead_letters) == 4)
    await wait_until(lambda: _learned_by(redis_client, "streamrec", items))
    reasons = {r for r, v in collector.dead_letters if v in bad}
    assert reasons == {"wrong type: type must be a string, got list",
                       "wrong type: type must be a string, got dict"}
    assert worker.proc.poll() is None


async def test_uploads_near_the_size_limit_are_dead_lettered(runtime, collector, worker):
    def upload(size: int) -> bytes:
        # Valid but for creator_id; padded with a field the worker keeps as extra.
        head = orjson.dumps({"event_id": uid("e"), "item_id": uid("i"), "creator_id": 5,
                             "ts": time.time(), "title": "big", "pad": ""})
        return head[:-2] + b"x" * (size - len(head)) + b'"}'

    at_limit, over = upload(MAX_UPLOAD_BYTES), upload(MAX_UPLOAD_BYTES + 20_000)
    assert len(at_limit) == MAX_UPLOAD_BYTES
    big = AIOKafkaProducer(bootstrap_servers=runtime.kafka, max_request_size=2 * len(over))
    await big.start()
    try:
        for value in (at_limit, over):
            await big.send_and_wait("uploads", value)
    finally:
        await big.stop()
    got: dict[bytes, tuple[str, bytes]] = {}
    await collector.wait_for(lambda: got.update(
        {v[:64]: (r, v) for r, v in collector.dead_letters}) or
        {at_limit[:64], over[:64]} <= set(got), 60)
    reason, value = got[at_limit[:64]]
    assert value == at_limit and reason.startswith("wrong type: creator_id")
    reason, value = got[over[:64]]
    assert reason.startswith("oversized payload") and value == over[:TRUNCATED_BYTES]
    assert worker.proc.poll() is None


async def test_the_dead_letter_of_an_oversized_value_says_what_was_cut(runtime, collector,
                                                                       worker):
    from aiokafka import AIOKafkaConsumer

    value = b"{" + b" " * (MAX_UPLOAD_BYTES + 50_000) + b"}"
    p = AIOKafkaProducer(bootstrap_servers=runtime.kafka, max_request_size=2 * len(value))
    await p.start()
    await p.send_and_wait("uploads", value)
    await p.stop()
    c = AIOKafkaConsumer("dead-letter", bootstrap_servers=runtime.kafka,
                         auto_offset_reset="earliest")
    await c.start()
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            msg = await asyncio.wait_for(c.getone(), 60)
            headers = dict(msg.headers)
            if headers.get("streamrec.original_sha256") == \
                    hashlib.sha256(value).hexdigest().encode():
                assert headers["streamrec.original_bytes"] == str(len(value)).encode()
                assert msg.value == value[:TRUNCATED_BYTES]
                return
        pytest.fail("no dead letter for the oversized upload")
    finally:
        await c.stop()


@pytest.mark.parametrize("codec", ["snappy", "lz4", "zstd", "gzip"])
async def test_compressed_batches_are_consumed(runtime, redis_client, worker, codec):
    p = AIOKafkaProducer(bootstrap_servers=runtime.kafka, compression_type=codec, linger_ms=20)
    await p.start()
    user, items = uid("user"), [uid("item") for _ in range(20)]
    try:
        for item in items:  # lingering: several per compressed batch
            await p.send("views", encode(View(uid("e"), user, item, time.time())),
                         key=user.encode())
        await p.flush()
    finally:
        await p.stop()
    await wait_until(lambda: _learned_by(redis_client, "streamrec", items))
    assert worker.proc.poll() is None


async def test_unusable_image_references_are_dead_lettered(producer, collector, worker):
    from streamrec.records.events import Upload

    uploads = {"data:image/png;base64": "corrupt image: data URL without a comma",
               "file:a\x00b.png": "bad image reference: NUL byte"}
    sent = {}
    for image, reason in uploads.items():
        up = Upload(uid("e"), uid("item"), "c1", time.time(), "a title", image=image)
        await send(producer, up)
        sent[encode(up)] = reason
    await producer.flush()
    await collector.wait_for(lambda: sum(v in sent for _, v in collector.dead_letters) == 2, 60)
    for reason, value in collector.dead_letters:
        if value in sent:
            assert reason.startswith(sent[value])


# ---- the engine against real Redis -------------------------------------------------------------

def engine_for(redis_client, tmp_path, prefix: str, policy: str = "relearn"):
    return build_engine(Settings(redis="unused", app_id=prefix, content=False,
                                 on_offset_reset=policy, snapshot_dir=str(tmp_path)),
                        redis_client, "test")


def views(offsets: range, log_end: int) -> list[Incoming]:
    now = time.time()
    return [Incoming(encode(View(uid("e"), uid("user"), uid("item"), now)), "views", 0, off,
                     now, None, log_end) for off in offsets]


async def test_a_log_behind_the_applied_offsets_is_relearned(redis_client, tmp_path):
    prefix = uid("reset")
    first = engine_for(redis_client, tmp_path, prefix)
    await first.state.load()
    assert (await first.interactions(views(range(0, 10), 10))).stats["learned"] == 10
    resets = metrics.REGISTRY.get_sample_value("streamrec_offset_resets_total",
                                               {"partition": "views:0"}) or 0.0
    # A restarted worker on a recreated topic: the log ends below the applied offset 9.
    second = engine_for(redis_client, tmp_path, prefix)
    await second.state.load()
    assert (await second.interactions(views(range(0, 5), 5))).stats["learned"] == 5
    assert await redis_client.hget(f"{prefix}:offsets", "views:0") == b"4"
    assert (await second.interactions(views(range(5, 10), 10))).stats["learned"] == 5
    # Recreated again under the same worker, the new log already past the old end.
    assert (await second.interactions(views(range(0, 20), 20))).stats["learned"] == 20
    assert metrics.REGISTRY.get_sample_value("streamrec_offset_resets_total",
                                             {"partition": "views:0"}) == resets + 2
    # A replay after a rebalance is not a reset: only the new offsets are learned.
    third = engine_for(redis_client, tmp_path, prefix)
    await third.state.load()
    assert (await third.interactions(views(range(15, 25), 25))).stats["learned"] == 5


async def test_a_log_behind_the_applied_offsets_stops_the_worker_if_asked(redis_client,
                                                                           tmp_path):
    prefix = uid("reset")
    first = engine_for(redis_client, tmp_path, prefix, "stop")
    await first.state.load()
    await first.interactions(views(range(0, 10), 10))
    with pytest.raises(WorkerMustStop, match="views:0: its log ends at offset 3"):
        await first.interactions(views(range(0, 3), 3))
    assert await redis_client.hget(f"{prefix}:offsets", "views:0") == b"9"


async def test_shared_state_gone_from_redis_is_noticed(redis_client, tmp_path):
    prefix = uid("lost")
    engine = engine_for(redis_client, tmp_path, prefix)
    await engine.state.load()
    await engine.interactions(views(range(0, 3), 3))
    await engine.refresh_models()
    await redis_client.delete(*await redis_client.keys(f"{prefix}:*"))  # a FLUSHALL, for us
    with pytest.raises(StateLost, match="shared state in Redis is gone"):
        await engine.refresh_models()
    with pytest.raises(StateLost):
        await engine.interactions(views(range(3, 6), 6))


# ---- workers of their own ---------------------------------------------------------------------

@pytest.mark.slow
async def test_a_worker_starts_in_an_empty_folder_and_stops_when_its_state_is_lost(
        runtime, producer, redis_client, tmp_path):
    app_id = uid("lost")
    proc = start_worker(runtime, app_id=app_id, cwd=tmp_path,
                        extra_env={"STREAMREC_CONTENT": "0", "STREAMREC_DATA_DIR": "runs"})
    try:
        await wait_for_worker(runtime.settings(), proc, app_id=app_id)
        assert (tmp_path / "runs" / f"faust-{app_id}").is_dir()
        user, item = uid("user"), uid("item")
        await producer.send("views", encode(View(uid("e"), user, item, time.time())),
                            key=user.encode())
        await producer.flush()
        await wait_until(lambda: _learned_by(redis_client, app_id, [item]))
        await redis_client.delete(*await redis_client.keys(f"{app_id}:*"))
        await producer.send("views", encode(View(uid("e"), user, uid("item"), time.time())),
                            key=user.encode())
        await producer.flush()
        code = await asyncio.get_running_loop().run_in_executor(None, proc.proc.wait, 60)
        assert code != 0
        assert "shared state in Redis is gone" in proc.log.read_text()
    finally:
        proc.stop()


async def _learned_by(r, prefix: str, items: list[str]) -> bool:
    return await item_events(r, prefix, items) == [1] * len(items)


async def _publish_views(kafka: str, items: list[str]) -> None:
    p = AIOKafkaProducer(bootstrap_servers=kafka, linger_ms=5)
    await p.start()
    try:
        for n, item in enumerate(items):
            user = f"user-{n % 37}"
            await p.send("views", encode(View(uid("e"), user, item, time.time())),
                         key=user.encode())
            if n % 50 == 0:
                await asyncio.sleep(0.02)  # a stream, not one burst
    finally:
        await p.stop()


@contextlib.asynccontextmanager
async def own_runtime(run_dir: Path):
    """A broker, a redis-server and one worker (no content path) of the test's own."""
    with EmbeddedRuntime(run_dir=run_dir) as rt:
        await ensure_topics(rt.settings(), 2)
        proc = start_worker(rt, partitions=2, extra_env={"STREAMREC_CONTENT": "0"})
        r = aioredis.from_url(rt.redis)
        try:
            await wait_for_worker(rt.settings(), proc)
            yield rt, proc, r
        finally:
            proc.stop()
            await r.aclose()


@pytest.mark.slow
async def test_a_redis_restart_mid_stream_keeps_exact_counts(tmp_path):
    async with own_runtime(tmp_path) as (rt, proc, r):
        items = [f"item-{n}" for n in range(1500)]
        sending = asyncio.create_task(_publish_views(rt.kafka, items))
        await wait_until(lambda: _some_learned(r, 200))
        await asyncio.get_running_loop().run_in_executor(
            None, lambda: rt.restart("redis", kill=True))  # SIGKILL, mid-stream
        await sending
        await wait_until(lambda: _learned_by(r, "streamrec", items), 180)
        stats = await read_stats(r)
        assert stats["learned"] == len(items)
        assert proc.proc.poll() is None


async def _some_learned(r, n: int) -> bool:
    return (await read_stats(r)).get("learned", 0) >= n


@pytest.mark.slow
async def test_a_broker_that_lost_its_log_is_detected_and_its_new_events_learned(tmp_path):
    async with own_runtime(tmp_path) as (rt, proc, r):
        before = [f"old-{n}" for n in range(400)]
        await _publish_views(rt.kafka, before)
        await wait_until(lambda: _learned_by(r, "streamrec", before), 120)
        await asyncio.get_running_loop().run_in_executor(None, rt.restart, "broker")
        await ensure_topics(rt.settings(), 2)
        after = [f"new-{n}" for n in range(300)]  # fewer: the new log ends below the old
        await _publish_views(rt.kafka, after)
        await wait_until(lambda: _learned_by(r, "streamrec", after), 180)
        assert "the topic was recreated or the broker lost its data" in proc.log.read_text()
        assert proc.proc.poll() is None
