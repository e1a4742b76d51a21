"""The engine in its own process: frames, the child against a real redis-server, the
pipelined agent loop (acks only after publishing), and a worker with the engine in-process."""

from __future__ import annotations

import asyncio
import os
import signal
import time

import faust
import orjson
import pytest

from streamrec import metrics
from streamrec.config import Settings
from streamrec.engine import frames
from streamrec.engine.engine import Incoming, Outgoing
from streamrec.engine.model_process import ModelProcess, ModelProcessError
from streamrec.engine.runner import pipelined
from streamrec.engine.shared_state import StateLost
from streamrec.processes import start_worker, wait_for_worker
from streamrec.records import dead_letter
from streamrec.records.events import Click, View, encode
from streamrec.streams.batching import MicroBatches

from conftest import uid


def test_a_reply_round_trips_lists_dead_letters_and_counts():
    out = Outgoing([(b"u1", b'{"items": []}'), (b"u2", b"\x00\xff")],
                   [(b"not json", dead_letter.headers("malformed JSON: x", "views", 1, 5)),
                    (b"", [("reason", b"empty"), ("bytes", b"\x00\x01")])],
                   {"events": 3, "dead_letter": 2})
    head, blobs = frames.decode(frames.reply_frame(7, out, {"counters": {"a": 1.0}}))
    assert head["id"] == 7 and head["counters"] == {"a": 1.0}
    assert frames.outgoing_from(head, blobs) == out


def interactions(n_users: int, items_each: int, topic_of=("views", "clicks")) -> list[Incoming]:
    now = time.time()
    batch, offset = [], 0
    for u in range(n_users):
        user = f"mp-user-{u}"
        for j in range(items_each):
            ev = (Click if j % 3 == 2 else View)(uid("e"), user, f"mp-item-{(u + j) % 7}",
                                                 now + offset)
            batch.append(Incoming(encode(ev), f"{ev.type}s", 0, offset, now))
            offset += 1
    return batch


def child_settings(runtime) -> Settings:
    return Settings(redis=runtime.redis, kafka="unused:9", app_id=uid("mp"), content=False,
                    data_dir=str(runtime.run_dir), snapshot_dir=str(runtime.run_dir / "snapshots"))


@pytest.mark.integration
async def test_the_child_learns_recommends_and_dead_letters_against_real_redis(runtime):
    young_collections = ("streamrec_model_process_gc_pause_seconds_count", {"generation": "0"})
    collected_before = metrics.REGISTRY.get_sample_value(*young_collections) or 0.0
    model = ModelProcess(child_settings(runtime), "test-worker")
    await model.start()
    try:
        batch = interactions(3, 4)
        batch.insert(2, Incoming(b"{not json", "views", 1, 0, time.time()))
        out = await model.submit("interactions", batch)
        assert {k for k, _ in out.recommendations} == {b"mp-user-0", b"mp-user-1", b"mp-user-2"}
        payload = orjson.loads(out.recommendations[0][1])
        assert payload["worker"] == "test-worker" and payload["items"]
        assert out.stats["events"] == 12 and out.stats["learned"] == 12
        [(value, headers)] = out.dead_letters
        assert value == b"{not json" and "malformed JSON" in dead_letter.reason_of(headers)
        # The same batch again (a replay after a rebalance): nothing is learned twice.
        again = await model.submit("interactions", batch[:2])
        assert again.stats["learned"] == 0 and len(again.recommendations) == 1
        await model.call("forget")
        await model.call("refresh_models")
        with pytest.raises(ModelProcessError, match="unknown op"):
            await model.call("no-such-op")
        await model.submit("interactions", interactions(60, 10))  # enough to make it collect
    finally:
        await model.close()
    assert model._proc is None
    # The child's collections reach the worker's /metrics with its replies.
    assert metrics.REGISTRY.get_sample_value(*young_collections) > collected_before


@pytest.mark.integration
async def test_a_dead_child_fails_what_is_in_flight_with_a_clear_error(runtime):
    gone: list[ModelProcessError] = []
    model = ModelProcess(child_settings(runtime), "test-worker", on_gone=gone.append)
    await model.start()
    os.kill(model._proc.pid, signal.SIGSTOP)  # so the batch is surely still in flight
    in_flight = model.submit("interactions", interactions(1, 2))
    os.kill(model._proc.pid, signal.SIGKILL)
    with pytest.raises(ModelProcessError, match="went away"):
        await asyncio.wait_for(in_flight, 10)
    assert len(gone) == 1 and "exit code -9" in str(gone[0])
    with pytest.raises(ModelProcessError, match="went away"):
        model.submit("interactions", interactions(1, 2))
    await model.close()


class RecordingProducer:
    """Where ``publish`` sends to: records each send in a shared log."""

    def __init__(self, log: list) -> None:
        self.log = log

    async def send(self, topic, key, value, partition, timestamp, headers):
        self.log.append(("send", key))


class RecordingBatches(MicroBatches):
    """Micro-batches that log each ack (in the producer's log, to see the order)."""

    def __init__(self, stream, max_size: int, log: list) -> None:
        super().__init__(stream, max_size)
        self.log = log

    async def ack(self, batch) -> None:
        self.log.append(("ack", [e.value for e in batch]))
        await super().ack(batch)


def channel_of(name: str):
    app = faust.App(name, broker="kafka://127.0.0.1:9", store="memory://")
    app.flow_control.resume()  # as a running worker's is; otherwise streams skip events
    return app.channel()


async def test_pipelined_takes_the_next_batch_in_while_one_is_in_flight_and_acks_after_publishing():
    channel = channel_of("pipelined-test")
    log: list = []
    batches = RecordingBatches(channel.stream(), 2, log)
    submitted: list[asyncio.Future] = []

    def submit(batch):
        submitted.append(asyncio.get_running_loop().create_future())
        return submitted[-1]

    task = asyncio.create_task(pipelined(batches, submit, RecordingProducer(log), "test",
                                         depth=2))
    for v in range(4):
        await channel.send(value=v)
    for _ in range(100):
        await asyncio.sleep(0.01)
        if len(submitted) == 2:
            break
    # Both batches handed on though neither is finished: the second was taken in meanwhile.
    assert len(submitted) == 2 and log == []
    # The second finishes first, but lists go out in batch order, each batch acked after.
    submitted[1].set_result(Outgoing([(b"second", b"{}")], [], {}))
    await asyncio.sleep(0.05)
    assert log == []
    submitted[0].set_result(Outgoing([(b"first", b"{}")], [], {}))
    await asyncio.sleep(0.05)
    assert log == [("send", b"first"), ("ack", [0, 1]), ("send", b"second"), ("ack", [2, 3])]
    task.cancel()


async def test_pipelined_raises_what_the_work_raised():
    channel = channel_of("pipelined-error")
    batches = MicroBatches(channel.stream(), 1)

    def submit(batch):
        fut = asyncio.get_running_loop().create_future()
        fut.set_exception(ModelProcessError("gone"))
        return fut

    task = asyncio.create_task(pipelined(batches, submit, RecordingProducer([]), "test",
                                         depth=1))
    for v in range(3):
        await channel.send(value=v)
    with pytest.raises(ModelProcessError, match="gone"):
        await asyncio.wait_for(task, 5)


@pytest.mark.integration
@pytest.mark.slow
async def test_a_worker_with_the_engine_in_process_still_serves(runtime, producer, collector):
    app_id = uid("inproc")
    proc = start_worker(runtime, partitions=4, app_id=app_id,
                        extra_env={"STREAMREC_MODEL_PROCESS": "0", "STREAMREC_CONTENT": "0"})
    try:
        await wait_for_worker(runtime.settings(), proc, app_id=app_id)
        user = uid("user")
        seen = []
        for n in range(3):
            ev = View(uid("e"), user, uid("item"), time.time() + n)
            seen.append(ev.item_id)
            await producer.send("views", encode(ev), key=user.encode())
        await producer.flush()
        # Two workers (two consumer groups) answer; this one names itself in its lists.
        def mine() -> list[dict]:
            return [r for r in collector.lists_for(user)
                    if r["worker"].endswith(f"-{proc.proc.pid}")]

        await collector.wait_for(lambda: bool(mine()), timeout_s=60)
        assert not {i["item_id"] for i in mine()[-1]["items"]} & set(seen)
    finally:
        proc.stop()


def children(pid: int) -> list[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        return [int(c) for c in f.read().split()]


@pytest.mark.integration
@pytest.mark.slow
async def test_a_worker_whose_model_process_dies_stops_with_an_error(runtime, producer):
    app_id = uid("dies")
    proc = start_worker(runtime, partitions=4, app_id=app_id,
                        extra_env={"STREAMREC_CONTENT": "0"})
    try:
        await wait_for_worker(runtime.settings(), proc, app_id=app_id)
        deadline = time.monotonic() + 30
        while not children(proc.proc.pid) and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        [child] = children(proc.proc.pid)
        os.kill(child, signal.SIGSTOP)  # a batch is surely in flight when it dies
        user = uid("user")
        await producer.send("views", encode(View(uid("e"), user, uid("item"), time.time())),
                            key=user.encode())
        await producer.flush()
        await asyncio.sleep(2.0)
        os.kill(child, signal.SIGKILL)
        # Not carrying on without its models: it exits, with an error, for a restart from the
        # committed offsets, though its graceful stop waits for acks the batch can't give.
        code = await asyncio.get_running_loop().run_in_executor(None, proc.proc.wait, 60)
        assert code != 0
        assert "model process went away" in proc.log.read_text()
    finally:
        proc.stop()


@pytest.mark.integration
async def test_the_childs_offset_resets_and_a_lost_state_reach_the_worker(runtime, redis_client):
    settings = child_settings(runtime)
    gone: list[Exception] = []
    model = ModelProcess(settings, "test-worker", on_gone=gone.append)
    await model.start()
    resets = ("streamrec_offset_resets_total", {"partition": "views:0"})
    before = metrics.REGISTRY.get_sample_value(*resets) or 0.0
    try:
        now = time.time()

        def views(offsets: range, log_end: int) -> list[Incoming]:
            return [Incoming(encode(View(uid("e"), "u1", uid("item"), now)), "views", 0, off,
                             now, None, log_end) for off in offsets]

        await model.submit("interactions", views(range(0, 10), 10))
        out = await model.submit("interactions", views(range(0, 3), 3))  # the log went back
        assert out.stats["learned"] == 3
        assert metrics.REGISTRY.get_sample_value(*resets) == before + 1
        await redis_client.delete(*await redis_client.keys(f"{settings.app_id}:*"))
        with pytest.raises(ModelProcessError, match="shared state in Redis is gone"):
            await model.call("refresh_models")
        assert len(gone) == 1 and isinstance(gone[0], StateLost)
    finally:
        await model.close()
