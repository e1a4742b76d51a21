"""The encoders in a process of their own, so a batch of uploads never stalls the event loop.

A thread was tried first: torch releases the GIL inside each operator, but the Python between
operators (about 100 modules per image) takes it back every few hundred microseconds, and the
interactions agent, whose numpy calls release the GIL just as often, then waited up to the
5 ms switch interval each time: the pipeline fell from ~4,500 to 350-1,200 events/s while a
backlog of uploads was encoded. In a child process the encoders use the other core instead.

The child is started with ``spawn`` (the worker already runs threads, which ``fork`` would
copy in a broken state), loads both models once, runs at a lower CPU priority, and dies with
its parent.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

from streamrec.content.fusion import FixedFusion
from streamrec.content.item_encoder import Encoded, ItemEncoder
from streamrec.records.events import Upload

_encoder: ItemEncoder | None = None
NICENESS = 10


def _start_child(image_root: str | None) -> None:
    global _encoder
    from streamrec.embedded import die_with_parent

    die_with_parent()
    # Below the event loop, the broker and Redis: an upload may take 100 ms to become
    # recommendable, a list should take a fraction of that (measured at 1,000 events/s with
    # 20 uploads/s: list p99 60 ms at equal priority).
    os.nice(NICENESS)
    _encoder = ItemEncoder(image_root)
    _ = _encoder.image  # load both models before the first upload arrives


def _encode(uploads: Sequence[Upload]) -> Encoded:
    assert _encoder is not None
    return _encoder.encode(uploads)


class EncoderDied(RuntimeError):
    """The encoder process died during a batch (killed, out of memory); a new one is started."""


class EncoderProcess:
    """:class:`ItemEncoder` behind an ``async encode``; same version and dimension.

    A child that dies (an out-of-memory kill, a crash in a decoder) is replaced at once: the
    batch it was encoding fails with :class:`EncoderDied`, which the caller retries one
    upload at a time, and :attr:`restarts` counts the replacements."""

    def __init__(self, image_root: str | Path | None = None) -> None:
        fusion = FixedFusion()
        self.version, self.dim = fusion.version, fusion.dim
        self._root = str(image_root) if image_root is not None else None
        self.restarts = 0
        self._pool = self._start()

    def _start(self) -> ProcessPoolExecutor:
        pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"),
                                   initializer=_start_child, initargs=(self._root,))
        pool.submit(_encode, [])  # start the child (and its models) now, not on demand
        return pool

    async def encode(self, uploads: Sequence[Upload]) -> Encoded:
        pool = self._pool
        try:
            return await asyncio.get_running_loop().run_in_executor(pool, _encode, list(uploads))
        except BrokenProcessPool as exc:
            if pool is self._pool:  # the first of the waiting batches to notice replaces it
                pool.shutdown(wait=False, cancel_futures=True)
                self._pool = self._start()
                self.restarts += 1
            raise EncoderDied(f"encoder process died, restarted: {exc}") from None

    def wait_ready(self) -> None:
        """Block until the child has loaded its models (tests and benchmarks)."""
        self._pool.submit(_encode, []).result()

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
