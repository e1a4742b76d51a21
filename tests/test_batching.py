"""Micro-batches are cut when the intake runs dry (or full), not by a timer."""

import asyncio

import faust
import pytest

from streamrec.streams.batching import MicroBatches, micro_batches


@pytest.fixture
def channel():
    app = faust.App("batching-test", broker="kafka://127.0.0.1:9", store="memory://")
    app.flow_control.resume()  # as a running worker's is; otherwise streams skip events
    # A stream sees what is sent once it exists: make the stream before sending.
    return app.channel()


async def send(channel, *values):
    for v in values:
        await channel.send(value=v)


def values(batch):
    return [e.value for e in batch]


async def test_queued_events_come_in_batches_of_at_most_max_size_then_what_is_left(channel):
    batches = micro_batches(channel.stream(), 3)
    await send(channel, *range(7))
    assert [values(await anext(batches)) for _ in range(3)] == [[0, 1, 2], [3, 4, 5], [6]]
    # Later arrivals make the next batch, however few.
    await send(channel, 7, 8)
    assert values(await anext(batches)) == [7, 8]
    await batches.aclose()


async def test_a_batch_is_acknowledged_only_when_the_next_one_is_asked_for(channel):
    batches = micro_batches(channel.stream(), 2)
    await send(channel, *range(4))
    first = await anext(batches)
    assert not any(e.message.acked for e in first)
    second = await anext(batches)
    assert all(e.message.acked for e in first)
    # Stopped before asking for more (a crash, a shutdown mid-batch): the batch stays unacked,
    # so its offsets are not committed and a restarted worker processes it again.
    await batches.aclose()
    assert not any(e.message.acked for e in second)


async def later(channel, value, delay_s=0.01):
    await asyncio.sleep(delay_s)
    await send(channel, value)


async def test_without_linger_a_batch_does_not_wait_for_company(channel):
    batches = micro_batches(channel.stream(), 10)
    await send(channel, 0)
    arriving = asyncio.create_task(later(channel, 1))
    assert values(await anext(batches)) == [0]
    assert values(await anext(batches)) == [1]
    await arriving
    await batches.aclose()


async def test_with_linger_a_batch_that_ran_dry_waits_for_more(channel):
    batches = micro_batches(channel.stream(), 10, linger_s=0.1)
    await send(channel, 0)
    arriving = asyncio.create_task(later(channel, 1))
    assert values(await anext(batches)) == [0, 1]
    await arriving
    await batches.aclose()


async def test_max_size_must_be_positive(channel):
    with pytest.raises(ValueError, match="max_size"):
        await anext(micro_batches(channel.stream(), 0))


async def test_a_rebalance_or_stop_drops_the_batch_being_gathered(channel):
    # Faust clears its buffers when partitions are revoked or the worker stops, then waits
    # for every event taken from them to be acknowledged: a batch still being gathered would
    # hold it forever. Its events are dropped with the buffers (fetched again from the
    # committed offsets), and the batches go on with what comes after.
    batches = MicroBatches(channel.stream(), 10)
    it = batches.__aiter__()
    await send(channel, *range(5))
    first = asyncio.ensure_future(anext(it))
    for _ in range(3):
        await asyncio.sleep(0)
    assert not first.done(), "some taken, more queued"
    channel.app.flow_control.suspend()
    channel.app.flow_control.clear()
    channel.app.flow_control.resume()
    await send(channel, 5)
    assert values(await asyncio.wait_for(first, 5)) == [5]
    await it.aclose()
