"""Item embeddings in Redis: compact float16 bytes under a key that names the encoder and
fusion version, batched reads and writes, and a bounded local copy.

Key: ``{prefix}:emb:{version}`` is a hash item -> ``dim`` float16 values (256 bytes at 128-d).
A new fusion version reads and writes a new hash, so old and new vectors never mix.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import numpy as np
import redis.asyncio as aioredis


class EmbeddingCache:
    """Batched get/put of item vectors, with an LRU of ``local_size`` items in the worker."""

    def __init__(self, redis: aioredis.Redis, version: str, dim: int, prefix: str = "streamrec",
                 local_size: int = 200_000) -> None:
        self.r = redis
        self.dim = dim
        self.key = f"{prefix}:emb:{version}"
        self.local: OrderedDict[str, np.ndarray] = OrderedDict()
        self.local_size = local_size

    @staticmethod
    def to_bytes(v: np.ndarray) -> bytes:
        return np.asarray(v, np.float16).tobytes()

    def from_bytes(self, raw: bytes) -> np.ndarray:
        v = np.frombuffer(raw, np.float16)
        if v.size != self.dim:
            raise ValueError(f"cached vector has {v.size} values, expected {self.dim}")
        return v.astype(np.float32)

    def _remember(self, item: str, v: np.ndarray) -> None:
        self.local[item] = v
        self.local.move_to_end(item)
        if len(self.local) > self.local_size:
            self.local.popitem(last=False)

    async def put_many(self, items: Sequence[str], vectors: np.ndarray) -> None:
        if not len(items):
            return
        await self.r.hset(self.key, mapping={i: self.to_bytes(v) for i, v in zip(items, vectors)})
        for i, v in zip(items, vectors):
            # Keep what a reader would get back: float16 precision.
            self._remember(i, np.asarray(v, np.float16).astype(np.float32))

    async def get_many(self, items: Sequence[str]) -> dict[str, np.ndarray]:
        """Vectors of the ``items`` that have one (local copy first, then one HMGET)."""
        out, missing = {}, []
        for i in items:
            v = self.local.get(i)
            if v is None:
                missing.append(i)
            else:
                out[i] = v
        if missing:
            for i, raw in zip(missing, await self.r.hmget(self.key, missing)):
                if raw is not None:
                    out[i] = self.from_bytes(raw)
                    self._remember(i, out[i])
        return out

    async def get_raw(self, items: Sequence[str]) -> list[bytes | None]:
        """The stored bytes, untouched (for checks and exports)."""
        return await self.r.hmget(self.key, list(items))
