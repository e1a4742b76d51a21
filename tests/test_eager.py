"""Eager start of a coroutine: it behaves as the same coroutine run as a task would."""

import asyncio

import pytest

from streamrec.streams.eager import start_eagerly


def test_finishes_without_a_task_when_nothing_suspends():
    steps = []

    async def deliver():
        steps.append("ran")
        return 42

    done, value = start_eagerly(deliver())
    assert (done, value, steps) == (True, 42, ["ran"])


def test_an_exception_before_any_suspension_propagates_at_once():
    async def broken():
        raise ValueError("bad")

    with pytest.raises(ValueError, match="bad"):
        start_eagerly(broken())


def test_the_rest_waits_for_what_the_coroutine_waits_for():
    async def main():
        q: asyncio.Queue[int] = asyncio.Queue()

        async def consume():
            first = await q.get()
            await asyncio.sleep(0)  # a bare yield to the loop on the way
            return first + await q.get()

        done, rest = start_eagerly(consume())
        assert not done
        task = asyncio.ensure_future(rest)
        await asyncio.sleep(0.01)
        assert not task.done()
        q.put_nowait(1)
        q.put_nowait(2)
        return await asyncio.wait_for(task, 1.0)

    assert asyncio.run(main()) == 3


def test_a_failing_future_raises_inside_the_coroutine():
    async def main():
        fut = asyncio.get_running_loop().create_future()

        async def wait_and_recover():
            try:
                await fut
            except KeyError:
                return "recovered"

        done, rest = start_eagerly(wait_and_recover())
        task = asyncio.ensure_future(rest)
        await asyncio.sleep(0)
        fut.set_exception(KeyError("x"))
        return await task

    assert asyncio.run(main()) == "recovered"


def test_cancelling_the_rest_cancels_what_it_waits_for():
    async def main():
        event = asyncio.Event()
        seen = []

        async def blocked():
            try:
                await event.wait()
            except asyncio.CancelledError:
                seen.append("cancelled inside")
                raise

        done, rest = start_eagerly(blocked())
        task = asyncio.ensure_future(rest)
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return seen

    assert asyncio.run(main()) == ["cancelled inside"]
