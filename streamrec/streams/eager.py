"""Running a coroutine eagerly: up to its first suspension now, in a task only if it suspends.

Python 3.12's ``asyncio.eager_task_factory`` does this for every task of a loop; this is the
same idea for one call site on 3.11 (see :mod:`streamrec.streams.transport` for where it
pays).
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any


def start_eagerly(coro: Coroutine) -> tuple[bool, Any]:
    """Run ``coro`` until it finishes or first suspends.

    Returns ``(True, its result)`` if it finished (its exception, if it raised, propagates
    from here), else ``(False, rest)``, where ``rest`` is a coroutine that carries on from
    the suspension when awaited (or run as a task) and returns the result. Cancelling ``rest``
    cancels what ``coro`` was waiting for, as cancelling a task of ``coro`` would.

    >>> async def plain():
    ...     return 1
    >>> start_eagerly(plain())
    (True, 1)
    >>> async def waits():
    ...     await asyncio.sleep(0)
    ...     return 2
    >>> done, rest = start_eagerly(waits())
    >>> done, asyncio.run(rest)
    (False, 2)
    """
    try:
        yielded = coro.send(None)
    except StopIteration as stop:
        return True, stop.value
    return False, _carry_on(coro, yielded)


async def _carry_on(coro: Coroutine, yielded: Any) -> Any:
    """Drive ``coro`` as a task's step would, from ``yielded`` (what it last suspended on: a
    future, or None for a bare yield to the loop)."""
    while True:
        raised: BaseException | None = None
        try:
            if yielded is None:
                await asyncio.sleep(0)
            else:
                # A task's step clears this flag before waiting; awaiting a future that
                # still has it set is refused ("await wasn't used with future").
                yielded._asyncio_future_blocking = False
                await yielded
        except BaseException as exc:  # noqa: BLE001 - handed to the coroutine below
            raised = exc
        try:
            if raised is None or _own_outcome(yielded, raised):
                # Resuming lets the coroutine's own ``await`` read the future's outcome.
                yielded = coro.send(None)
            else:  # we were cancelled (or interrupted) on a future that had finished
                yielded = coro.throw(raised)
        except StopIteration as stop:
            return stop.value


def _own_outcome(fut: Any, exc: BaseException) -> bool:
    """Whether ``exc`` is ``fut``'s own outcome (so resuming the coroutine re-raises it)."""
    if fut is None or not fut.done():
        return False
    return fut.cancelled() or fut.exception() is exc
