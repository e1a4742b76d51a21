"""Versioned, checksummed model weights: safetensors blobs, a manifest in Redis.

Redis keys (``{p}`` is the app id, ``{kind}`` e.g. ``student``)::

    {p}:snapshots:{kind}            hash version -> JSON manifest entry
    {p}:snapshots:{kind}:seq        counter behind the version numbers
    {p}:snapshots:{kind}:current    the version in service
    {p}:snapshot-blob:{version}     the safetensors bytes of a small snapshot

Snapshots larger than ``blob_limit`` go to ``directory`` instead (shared by the workers, a
volume in docker-compose). Nothing is ever unpickled: a manifest entry is checked against its
signature (:mod:`streamrec.snapshots.signing`), a file location must lie inside
``directory``, a blob is checked against its sha256, then parsed as safetensors (a JSON header
and raw little-endian arrays).
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import struct
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import orjson
import redis.asyncio as aioredis
from safetensors.numpy import load as load_safetensors
from safetensors.numpy import save as save_safetensors

from streamrec.records.errors import SnapshotError
from streamrec.snapshots.signing import KEY_FILE, local_key, sign, verify

log = logging.getLogger(__name__)

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
    #: HMAC-SHA256 of the rest of the entry (signing.py); empty: unsigned.
    signature: str = ""


def parse_entry(kind: str, raw: bytes) -> SnapshotInfo:
    """A manifest entry read from Redis, with a :class:`SnapshotError` for what is not one
    (Redis is not trusted to hold only what the trainer wrote)."""
    try:
        info = SnapshotInfo(**orjson.loads(raw))
    except (TypeError, ValueError) as exc:
        raise SnapshotError(f"malformed {kind} manifest entry: {exc}") from None
    if not isinstance(info.version, str) or not re.fullmatch(rf"{re.escape(kind)}-v\d+",
                                                             info.version):
        raise SnapshotError(f"malformed {kind} manifest entry: version {info.version!r}")
    if not isinstance(info.location, str):
        raise SnapshotError(f"snapshot {info.version}: location {info.location!r} is not a name")
    return info


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
    the one in service. ``key`` signs and verifies manifest entries; None means the key
    generated in ``directory`` (made at first use).
    """

    def __init__(self, redis: aioredis.Redis, prefix: str = "streamrec",
                 directory: str | Path = "runs/snapshots", blob_limit: int = 4 << 20,
                 keep: int = 5, key: bytes | None = None) -> None:
        self.r = redis
        self.p = prefix
        self.directory = Path(directory)
        self.blob_limit = blob_limit
        self.keep = keep
        self._signing_key = key

    def _key(self, kind: str) -> str:
        return f"{self.p}:snapshots:{kind}"

    @property
    def signing_key(self) -> bytes:
        # Lazily: a store that only reads which version is current needs no key file.
        if self._signing_key is None:
            try:
                self._signing_key = local_key(self.directory)
            except (OSError, ValueError) as exc:  # an unwritable folder, an emptied key file
                raise SnapshotError(f"no snapshot key: {exc}") from None
        return self._signing_key

    def verify(self, info: SnapshotInfo) -> None:
        """Raise :class:`SnapshotError` unless ``info`` was signed with this store's key."""
        verify(self.signing_key, self.p, asdict(info))

    def path_of(self, info: SnapshotInfo) -> Path:
        """The file of a snapshot stored in the folder; raises :class:`SnapshotError` when its
        location leaves the folder (absolute, ``..``, a symlink out) or names the key."""
        name = Path(info.location)
        try:
            folder = self.directory.resolve()
            resolved = (self.directory / name).resolve()
        except (OSError, RuntimeError, ValueError) as exc:  # a symlink loop, a NUL byte
            raise SnapshotError(f"snapshot {info.version}: location {info.location!r}: "
                                f"{exc}") from None
        if (name.is_absolute() or ".." in name.parts or not resolved.is_relative_to(folder)
                or resolved in (folder, folder / KEY_FILE)):
            raise SnapshotError(f"snapshot {info.version}: location {info.location!r} is "
                                f"outside the snapshot folder {folder}")
        return self.directory / name

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
        info = replace(info, signature=sign(self.signing_key, self.p, asdict(info)))
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
        """Every stored version of ``kind``, oldest first (malformed entries are skipped)."""
        infos = []
        for field_name, raw in (await self.r.hgetall(self._key(kind))).items():
            try:
                infos.append(self._entry(kind, field_name.decode(errors="replace"), raw))
            except SnapshotError as exc:
                log.warning("%s", exc)
        return sorted(infos, key=lambda i: int(i.version.rsplit("-v", 1)[1]))

    async def info(self, kind: str, version: str) -> SnapshotInfo:
        raw = await self.r.hget(self._key(kind), version)
        if raw is None:
            raise SnapshotError(f"no snapshot {version!r} of kind {kind!r} in the manifest")
        return self._entry(kind, version, raw)

    @staticmethod
    def _entry(kind: str, version: str, raw: bytes) -> SnapshotInfo:
        info = parse_entry(kind, raw)
        if info.version != version:
            raise SnapshotError(f"snapshot {version}: its manifest entry is {info.version}'s")
        return info

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
        path = self.path_of(info)
        try:
            return path.read_bytes()
        except OSError as exc:
            raise SnapshotError(f"snapshot {info.version}: cannot read {path}: {exc}") from None

    async def load(self, kind: str, version: str | None = None
                   ) -> tuple[dict[str, np.ndarray], dict[str, str], SnapshotInfo]:
        """The tensors and metadata of ``version`` (default: the one in service): its manifest
        entry verified against its signature before anything is read, the blob against the
        entry's size and sha256 before anything is parsed."""
        version = version or await self.current(kind)
        if version is None:
            raise SnapshotError(f"no {kind} snapshot has been published")
        info = await self.info(kind, version)
        self.verify(info)
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

    def distrust(self, info: SnapshotInfo) -> str | None:
        """Why ``info`` is not to be trusted (unsigned, badly signed), or None."""
        key = self.signing_key  # no key is an error, not a verdict on the entry
        try:
            verify(key, self.p, asdict(info))
        except SnapshotError as exc:
            return str(exc)
        return None

    async def prune(self, kind: str, keep: int | None = None) -> list[str]:
        """Delete all but the newest ``keep`` signed versions, and every entry not signed with
        the key (never the one in service), so forged entries cannot push the trainer's out.
        A file is deleted only for a signed entry whose location lies inside the folder:
        nothing but the trainer's own snapshot files is ever deleted."""
        keep = self.keep if keep is None else keep
        infos = await self.list(kind)
        current = await self.current(kind)
        forged = {i.version: why for i in infos if (why := self.distrust(i)) is not None}
        signed = [i.version for i in infos if i.version not in forged]
        old = set(signed[:max(len(signed) - keep, 0)]) | forged.keys()
        doomed = [i for i in infos if i.version in old and i.version != current]
        if not doomed:
            return []
        pipe = self.r.pipeline(transaction=True)
        for i in doomed:
            pipe.hdel(self._key(kind), i.version)
            pipe.delete(f"{self.p}:snapshot-blob:{i.version}")
        await pipe.execute()
        for i in doomed:
            if i.location != "redis":
                self._delete_file(i, forged.get(i.version))
        return [i.version for i in doomed]

    def _delete_file(self, info: SnapshotInfo, distrusted: str | None) -> None:
        """Delete a pruned snapshot's file, if its entry is signed and it is in the folder."""
        try:
            if distrusted is not None:
                raise SnapshotError(distrusted)
            path = self.path_of(info)
        except SnapshotError as exc:
            log.warning("pruned %s from the manifest, its file left alone: %s",
                        info.version, exc)
            return
        try:
            path.unlink(missing_ok=True)
        except OSError as exc:
            log.warning("pruned %s, but cannot delete %s: %s", info.version, path, exc)
