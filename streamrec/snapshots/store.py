"""Versioned, checksummed model weights: safetensors blobs, a manifest in Redis.

Redis keys (``{p}`` is the app id, ``{kind}`` e.g. ``student``)::

    {p}:snapshots:{kind}            hash version -> JSON manifest entry
    {p}:snapshots:{kind}:seq        counter behind the version numbers
    {p}:snapshots:{kind}:current    the version in service
    {p}:snapshot-blob:{version}     the safetensors bytes of a small snapshot

Snapshots larger than ``blob_limit`` go to ``directory`` instead (shared by the workers, a
volume in docker-compose). Nothing is ever unpickled: a blob is checked against its sha256,
then parsed as safetensors (a JSON header and raw little-endian arrays).
"""

from __future__ import annotations

import hashlib
import json
import struct
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import orjson
import redis.asyncio as aioredis
from safetensors.numpy import load as load_safetensors
from safetensors.numpy import save as save_safetensors

from streamrec.records.errors import SnapshotError

#: The kind of snapshot the workers serve: the distilled student.
STUDENT = "student"


@dataclass(frozen=True)
class SnapshotInfo:
    """One manifest entry."""

    version: str
    kind: str
    sha256: str
    size: int
    created: float
    #: What it was trained on: {"from_ts", "to_ts", "events"}.
    data_range: dict = field(default_factory=dict)
    #: Held-out evaluation, e.g. {"hr_at_10": 0.21, "in_service_hr_at_10": 0.19}.
    scores: dict = field(default_factory=dict)
    #: ``redis`` or a file name under the store's directory.
    location: str = "redis"


def read_header(blob: bytes) -> dict:
    """The JSON header of a safetensors blob, with clear errors for what is not one.

    >>> read_header(save_safetensors({"w": np.zeros(2, np.float32)}, {"kind": "x"}))["__metadata__"]
    {'kind': 'x'}
    """
    if len(blob) < 8:
        raise SnapshotError(f"not a safetensors blob: {len(blob)} bytes, no header")
    (n,) = struct.unpack("<Q", blob[:8])
    if n > len(blob) - 8:
        raise SnapshotError(f"truncated safetensors blob: header of {n} bytes, "
                            f"{len(blob) - 8} present")
    try:
        header = json.loads(blob[8:8 + n])
    except ValueError as exc:
        raise SnapshotError(f"not a safetensors blob: header is not JSON ({exc})") from None
    if not isinstance(header, dict):
        raise SnapshotError("not a safetensors blob: header is not an object")
    return header


def decode(blob: bytes) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Tensors and metadata of a safetensors blob (raises :class:`SnapshotError`)."""
    meta = read_header(blob).get("__metadata__") or {}
    try:
        tensors = load_safetensors(blob)
    except Exception as exc:  # safetensors raises its own SafetensorError
        raise SnapshotError(f"corrupt safetensors blob: {exc}") from None
    return tensors, dict(meta)


class SnapshotStore:
    """Publishes, lists, loads (verified), promotes and prunes snapshots.

    ``keep`` snapshots per kind are kept; older ones are pruned at each publication, except
    the one in service.
    """

    def __init__(self, redis: aioredis.Redis, prefix: str = "streamrec",
                 directory: str | Path = "runs/snapshots", blob_limit: int = 4 << 20,
                 keep: int = 5) -> None:
        self.r = redis
        self.p = prefix
        self.directory = Path(directory)
        self.blob_limit = blob_limit
        self.keep = keep

    def _key(self, kind: str) -> str:
        return f"{self.p}:snapshots:{kind}"

    async def publish(self, kind: str, tensors: dict[str, np.ndarray],
                      metadata: dict[str, str] | None = None, data_range: dict | None = None,
                      scores: dict | None = None, make_current: bool = True) -> SnapshotInfo:
        """Store ``tensors`` as a new version of ``kind``; with ``make_current`` it becomes the
        one in service (announcing it on a topic is the caller's job)."""
        seq = await self.r.incr(f"{self._key(kind)}:seq")
        version = f"{kind}-v{seq}"
        meta = {"kind": kind, "version": version, **(metadata or {})}
        blob = save_safetensors({k: np.ascontiguousarray(v) for k, v in tensors.items()}, meta)
        location = "redis"
        if len(blob) > self.blob_limit:
            self.directory.mkdir(parents=True, exist_ok=True)
            location = f"{version}.safetensors"
            tmp = self.directory / f".{location}.tmp"
            tmp.write_bytes(blob)
            tmp.replace(self.directory / location)  # readers never see half a file
        info = SnapshotInfo(version, kind, hashlib.sha256(blob).hexdigest(), len(blob),
                            time.time(), data_range or {}, scores or {}, location)
        pipe = self.r.pipeline(transaction=True)
        if location == "redis":
            pipe.set(f"{self.p}:snapshot-blob:{version}", blob)
        pipe.hset(self._key(kind), version, orjson.dumps(asdict(info)))
        if make_current:
            pipe.set(f"{self._key(kind)}:current", version)
        await pipe.execute()
        await self.prune(kind)
        return info

    async def list(self, kind: str) -> list[SnapshotInfo]:
        """Every stored version of ``kind``, oldest first."""
        raw = await self.r.hgetall(self._key(kind))
        infos = [SnapshotInfo(**orjson.loads(v)) for v in raw.values()]
        return sorted(infos, key=lambda i: int(i.version.rsplit("-v", 1)[1]))

    async def info(self, kind: str, version: str) -> SnapshotInfo:
        raw = await self.r.hget(self._key(kind), version)
        if raw is None:
            raise SnapshotError(f"no snapshot {version!r} of kind {kind!r} in the manifest")
        return SnapshotInfo(**orjson.loads(raw))

    async def current(self, kind: str) -> str | None:
        v = await self.r.get(f"{self._key(kind)}:current")
        return v.decode() if v is not None else None

    async def set_current(self, kind: str, version: str) -> None:
        """Put ``version`` in service (a rollback is this, with an older version)."""
        await self.info(kind, version)
        await self.r.set(f"{self._key(kind)}:current", version)

    async def read_blob(self, info: SnapshotInfo) -> bytes:
        if info.location == "redis":
            blob = await self.r.get(f"{self.p}:snapshot-blob:{info.version}")
            if blob is None:
                raise SnapshotError(f"snapshot {info.version}: blob missing from Redis")
            return blob
        path = self.directory / info.location
        try:
            return path.read_bytes()
        except OSError as exc:
            raise SnapshotError(f"snapshot {info.version}: cannot read {path}: {exc}") from None

    async def load(self, kind: str, version: str | None = None
                   ) -> tuple[dict[str, np.ndarray], dict[str, str], SnapshotInfo]:
        """The tensors and metadata of ``version`` (default: the one in service), verified
        against the manifest's size and sha256 before anything is parsed."""
        version = version or await self.current(kind)
        if version is None:
            raise SnapshotError(f"no {kind} snapshot has been published")
        info = await self.info(kind, version)
        blob = await self.read_blob(info)
        if len(blob) != info.size:
            raise SnapshotError(f"snapshot {version}: {len(blob)} bytes, manifest says "
                                f"{info.size} (truncated or replaced)")
        digest = hashlib.sha256(blob).hexdigest()
        if digest != info.sha256:
            raise SnapshotError(f"snapshot {version}: sha256 {digest[:12]}... does not match "
                                f"the manifest's {info.sha256[:12]}... (corrupt)")
        tensors, meta = decode(blob)
        if meta.get("version") != version:
            raise SnapshotError(f"snapshot {version}: its header says version "
                                f"{meta.get('version')!r}")
        return tensors, meta, info

    async def prune(self, kind: str, keep: int | None = None) -> list[str]:
        """Delete all but the newest ``keep`` versions (never the one in service)."""
        keep = self.keep if keep is None else keep
        infos = await self.list(kind)
        current = await self.current(kind)
        doomed = [i for i in infos[:max(len(infos) - keep, 0)] if i.version != current]
        if not doomed:
            return []
        pipe = self.r.pipeline(transaction=True)
        for i in doomed:
            pipe.hdel(self._key(kind), i.version)
            pipe.delete(f"{self.p}:snapshot-blob:{i.version}")
        await pipe.execute()
        for i in doomed:
            if i.location != "redis":
                (self.directory / i.location).unlink(missing_ok=True)
        return [i.version for i in doomed]
