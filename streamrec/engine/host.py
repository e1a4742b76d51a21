"""Where an engine runs: in the worker's own event loop (:class:`InLoopHost`) or in a child
process (:class:`~streamrec.engine.model_process.ModelProcess`). Both offer the same calls,
so the Faust app drives either the same way."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

from streamrec.engine.interface import OPS, Incoming, Outgoing
from streamrec.engine.runner import run_step

if TYPE_CHECKING:  # annotations only: the worker imports this module, not the models
    from streamrec.engine.engine import Engine


class EngineHost(Protocol):
    async def start(self) -> None:
        """Ready the engine (load the shared state); before the first batch."""

    def submit(self, op: str, batch: Sequence[Incoming]) -> asyncio.Future[Outgoing]:
        """Start ``op`` on ``batch``; each op's batches run one at a time, in order."""

    async def forget(self) -> None:
        """After a rebalance, behind the batches already submitted: drop owned state."""

    async def refresh_models(self) -> None:
        """Periodic upkeep (:meth:`Engine.refresh_models`)."""

    async def close(self) -> None:
        """Save what only this worker holds and stop."""


class InLoopHost:
    """The engine in the worker's loop: one batch of each op at a time, in order, with the
    retries and isolation of a bad message of :func:`run_step`."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._turns = {op: asyncio.Lock() for op in OPS}

    async def start(self) -> None:
        await self.engine.start()

    def submit(self, op: str, batch: Sequence[Incoming]) -> asyncio.Future[Outgoing]:
        return asyncio.ensure_future(self._run(op, list(batch)))

    async def _run(self, op: str, batch: list[Incoming]) -> Outgoing:
        async with self._turns[op]:
            out = await run_step(self.engine.step(op), batch, op)
            if op == "interactions":
                await self.engine.state.refresh()
            return out

    async def forget(self) -> None:
        async with self._turns["interactions"]:
            self.engine.forget_owned_state()

    async def refresh_models(self) -> None:
        async with self._turns["interactions"]:  # the pulls go between two batches
            await self.engine.refresh_models()

    async def close(self) -> None:
        await self.engine.close()
