"""Faust's aiokafka transport: bounded fetch and records waits, eager message delivery.

- Faust hard-codes ``fetch_max_wait_ms=1500`` for its worker consumer. A Kafka broker answers
  a fetch as soon as records arrive, but the embedded Tansu broker reads the partitions once
  and sleeps out the rest of the wait, so a record that lands meanwhile waits for a later
  fetch (about 450 ms on every list at 1500 ms). The wait is ``App.fetch_max_wait_ms``, from
  ``STREAMREC_FETCH_MAX_WAIT_MS`` (default 10; raise it on Kafka, where it costs nothing and
  saves an idle worker's empty fetches). See docs/decisions/0006-fetch-wait-10-ms.md.
- Faust hands each fetched message to the streams with ``wait_first(deliver(message),
  suspend_flow.wait())``, so that a rebalance can interrupt a delivery blocked on a full
  buffer: four tasks and an ``asyncio.wait`` per message. Deliveries nearly always finish
  without waiting, so :class:`_Consumer` runs each one eagerly and falls back to Faust's path,
  with the rest of the delivery, only when it suspends.
- Faust runs its aiokafka consumer in a thread with its own event loop, and every fetch,
  commit and seek crosses between the loops through a method queue; on two cores that thread
  competes with the worker's loop for the GIL. :class:`_InLoopConsumerThread` runs the same
  service as tasks of the worker's loop instead (aiokafka is asyncio-native). See
  docs/decisions/0005-consumer-in-the-worker-loop.md.
- Faust's table manager sleeps a second when it starts, so that tables defined late are still
  registered, and the consumer subscribes (joins its group) only after it. Our app defines its
  agents before the worker starts and has no tables: :class:`TableManager` goes on at once,
  a second earlier in every start and restart.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import faust
from faust.tables import TableManager as _FaustTableManager
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


class TableManager(_FaustTableManager):
    """Faust's table manager without the second it waits at start (module docstring)."""

    async def on_start(self) -> None:
        if not self.should_stop:
            await self._update_channels()
            await self.recovery.start()


class Transport(faust_aiokafka.Transport):
    Consumer = _Consumer


class App(faust.App):
    """A Faust app whose consumer uses :class:`Transport`."""

    #: The worker consumer's fetch wait: how long Tansu sleeps on a fetch (module docstring).
    fetch_max_wait_ms: int = DEFAULT_FETCH_MAX_WAIT_MS

    def _new_transport(self):
        return Transport(self.conf.broker_consumer, self)
