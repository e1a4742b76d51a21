"""Faust's aiokafka transport: bounded fetch and records waits, eager message delivery.

Faust hard-codes ``fetch_max_wait_ms=1500`` for its worker consumer. A Kafka broker answers a
fetch as soon as ``fetch_min_bytes`` arrive, but the embedded Tansu broker reads the partitions
once and then sleeps out the rest of the wait (tansu-broker ``fetch.rs``), so a record that
lands meanwhile waits for a later fetch. That put ~450 ms on every recommendation (p50 388 ms
at 1500 ms); with a plain consumer at 1,000 events/s, produce -> consume took p50 55 / 33 / 13
ms at 200 / 100 / 20 ms waits. The wait is ``App.fetch_max_wait_ms`` (the worker sets it from
``STREAMREC_FETCH_MAX_WAIT_MS``, default 10): paced at 1,000 events/s, six alternating pairs on
fresh runtimes (two with the driver lingering 2 ms, not 5) gave p99 median 37 ms (32.7-40.5) at
10 ms against 41 ms (34.6-56.6) at 20, and p50 lower in five of six; 5 ms was no better than 20
(p99 50.0 and 41.6 ms in the first two pairs). A short wait costs an idle worker more empty
fetches: 6.7-7.1% of a core for the worker and 14.0-14.3% for Tansu at 10 ms, against 4.1-4.3%
and 12.3-12.6% at 20 (sampled over 20 s, two each). It buys nothing on a Kafka broker, which
answers as soon as records arrive: raise it there.

Faust hands each fetched message to the streams with ``wait_first(deliver(message),
suspend_flow.wait())``, so that a rebalance can interrupt a delivery blocked on a full
buffer. That builds four tasks and an ``asyncio.wait`` per message: 23 us with uvloop
(measured), a sixth of what the pass-through worker spends per event. Deliveries nearly always
finish without waiting, so :class:`_Consumer` runs each one eagerly and falls back to Faust's
path, with the rest of the delivery, only when it suspends.

Faust runs its aiokafka consumer in a thread with its own event loop, and every fetch, commit
and seek crosses between the loops through a method queue. On two cores that thread competes
with the worker's loop for the GIL while the loop ranks, and each hand-over waits for the
other loop's turn. :class:`_InLoopConsumerThread` runs the same service as tasks of the
worker's loop instead (aiokafka is asyncio-native; the thread bought nothing but isolation
from a blocked loop, which our agents never block for long). Paced at 1,000 events/s, each on a
fresh runtime: p99 50-65 ms in-loop against 58-91 ms threaded; throughput unchanged.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import faust
from faust.transport.drivers import aiokafka as faust_aiokafka
from mode.services import WaitResults
from mode.utils.futures import maybe_async

from streamrec.config import DEFAULT_FETCH_MAX_WAIT_MS
from streamrec.streams.eager import start_eagerly

#: Longest a worker's consumer waits for records before asking again (see ``_Consumer._getmany``).
GETMANY_TIMEOUT_S = 0.05


class _InLoopConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    """Faust's consumer "thread", run as tasks of the worker's own event loop.

    mode's ``ServiceThread`` starts ``_serve`` in a new thread and forwards calls to it;
    here ``_serve`` is a task of the parent loop and calls are plain awaits. Stopping works
    unchanged: mode's thread-safe hand-offs (``call_soon_threadsafe``) work within one loop.
    """

    def __init__(self, consumer: Any, *, loop: asyncio.AbstractEventLoop, **kwargs: Any) -> None:
        super().__init__(consumer, loop=loop, thread_loop=loop, **kwargs)

    async def start(self) -> None:
        self._thread_started.set()
        self._thread_running = self.parent_loop.create_future()
        # Held: the loop keeps only a weak reference to a task.
        self._serving = self.parent_loop.create_task(self._serve())
        try:
            await self._thread_running
        finally:
            self._thread_running = None

    async def call_thread(self, fun: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return await maybe_async(fun(*args, **kwargs))

    async def _gather_remaining_tasks(self) -> None:
        pass  # the loop is the worker's: its tasks are not ours to cancel

    def _create_worker_consumer(self, transport):
        consumer = super()._create_worker_consumer(transport)
        consumer._fetch_max_wait_ms = self.app.fetch_max_wait_ms  # read when it starts
        return consumer


class _Delivery:
    """One message's delivery to the streams (Faust's ``Conductor.on_message``), marked so
    that :meth:`_Consumer.wait_first` knows it may run it eagerly."""

    __slots__ = ("coro",)

    def __init__(self, coro: Coroutine) -> None:
        self.coro = coro

    def __await__(self):
        return self.coro.__await__()


class _Consumer(faust_aiokafka.Consumer):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        deliver: Callable[[Any], Coroutine] = self.callback
        self.callback = lambda message: _Delivery(deliver(message))

    def _new_consumer_thread(self):
        return _InLoopConsumerThread(self, loop=self.loop, beacon=self.beacon)

    async def _getmany(self, active_partitions: Any, timeout: float) -> Any:
        # Faust waits up to 1 s for records of the partitions active when it asks. A partition
        # set aside while its stream's buffer was full comes back meanwhile with its records
        # already fetched, and nothing wakes the wait for them: the rest of a backlog waited
        # ~0.85 s at the end of most drains. A short wait picks it up at the next call.
        return await super()._getmany(active_partitions, min(timeout, GETMANY_TIMEOUT_S))

    async def wait_first(self, *coros: Awaitable | Any, timeout: Any = None) -> WaitResults:
        first = coros[0] if coros else None
        if isinstance(first, _Delivery) and not (
                self.suspend_flow.is_set() or self._stopped.is_set() or self._crashed.is_set()):
            try:
                done, value = start_eagerly(first.coro)
            except BaseException:
                _close(coros[1:])
                raise
            if done:
                _close(coros[1:])
                return WaitResults([first], [value], False)
            coros = (value, *coros[1:])  # the rest of the delivery, interruptible as before
        return await super().wait_first(*coros, timeout=timeout)


def _close(coros) -> None:
    """Close the coroutines a finished delivery left unstarted, so they do not warn."""
    for coro in coros:
        if isinstance(coro, Coroutine):
            coro.close()


class Transport(faust_aiokafka.Transport):
    Consumer = _Consumer


class App(faust.App):
    """A Faust app whose consumer uses :class:`Transport`."""

    #: The worker consumer's fetch wait: how long Tansu sleeps on a fetch (module docstring).
    fetch_max_wait_ms: int = DEFAULT_FETCH_MAX_WAIT_MS

    def _new_transport(self):
        return Transport(self.conf.broker_consumer, self)
