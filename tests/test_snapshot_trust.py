"""Trust boundaries of snapshots (real redis-server): only manifest entries signed with the
trainer's key are served, a location must lie inside the snapshot folder both to be read and
to be pruned, and a worker's engine keeps its student when a new one is refused."""

from __future__ import annotations

import hashlib
import logging
import os
import stat
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import orjson
import pytest
from safetensors.numpy import save as save_safetensors

from streamrec import metrics
from streamrec.config import Settings
from streamrec.engine.build import build_engine
from streamrec.engine.engine import Incoming
from streamrec.records.errors import SnapshotError
from streamrec.records.topics import MODEL_UPDATES
from streamrec.snapshots.signing import KEY_FILE, configured_key, local_key, sign
from streamrec.snapshots.store import SnapshotInfo, SnapshotStore
from streamrec.training.trainer import announcement

from conftest import tiny_student, uid

pytestmark = pytest.mark.integration

KEY = b"k" * 32
OTHER_KEY = b"o" * 32


def blob_of(version: str, seed: int = 0) -> bytes:
    """A valid snapshot blob (what an attacker can make as easily as the trainer)."""
    w = np.random.default_rng(seed).normal(size=(4, 3)).astype(np.float32)
    return save_safetensors({"w": w}, {"kind": "student", "version": version})


async def plant(store: SnapshotStore, version: str, location: str, blob: bytes,
                key: bytes | None, current: bool = True) -> SnapshotInfo:
    """Write a manifest entry straight into Redis, as anyone with write access can, signed
    with ``key`` (None: unsigned), and put it in service."""
    info = SnapshotInfo(version, "student", hashlib.sha256(blob).hexdigest(), len(blob),
                        time.time(), location=location)
    if key is not None:
        info = replace(info, signature=sign(key, store.p, asdict(info)))
    if location == "redis":
        await store.r.set(f"{store.p}:snapshot-blob:{version}", blob)
    await store.r.hset(f"{store.p}:snapshots:student", version, orjson.dumps(asdict(info)))
    if current:
        await store.r.set(f"{store.p}:snapshots:student:current", version)
    return info


# ---- the store -----------------------------------------------------------------------------

async def test_a_snapshot_signed_with_another_key_is_refused(redis_client, tmp_path):
    prefix = uid("trust")
    trainer = SnapshotStore(redis_client, prefix, tmp_path, key=OTHER_KEY)
    await trainer.publish("student", {"w": np.ones(3, np.float32)})
    with pytest.raises(SnapshotError, match="bad signature"):
        await SnapshotStore(redis_client, prefix, tmp_path, key=KEY).load("student")
    # The same key, or the same folder's generated key, verifies.
    await SnapshotStore(redis_client, prefix, tmp_path, key=OTHER_KEY).load("student")
    await SnapshotStore(redis_client, prefix, tmp_path).publish("student", {"w": np.ones(2)})
    _, _, info = await SnapshotStore(redis_client, prefix, tmp_path).load("student")
    assert info.version == "student-v2" and len(info.signature) == 64


async def test_a_manifest_rewritten_in_redis_is_refused(redis_client, tmp_path):
    prefix = uid("trust")
    store = SnapshotStore(redis_client, prefix, tmp_path, key=KEY)
    genuine = await store.publish("student", {"w": np.ones(3, np.float32)})
    entries = f"{prefix}:snapshots:student"
    # Another blob, with the entry's sha256 and size rewritten to match it.
    forged = blob_of(genuine.version, seed=1)
    await redis_client.set(f"{prefix}:snapshot-blob:{genuine.version}", forged)
    await redis_client.hset(entries, genuine.version, orjson.dumps(asdict(replace(
        genuine, sha256=hashlib.sha256(forged).hexdigest(), size=len(forged)))))
    with pytest.raises(SnapshotError, match="bad signature"):
        await store.load("student")
    # The location rewritten to a file of the attacker's in the folder.
    (tmp_path / "mine.safetensors").write_bytes(forged)
    await redis_client.hset(entries, genuine.version, orjson.dumps(asdict(replace(
        genuine, sha256=hashlib.sha256(forged).hexdigest(), size=len(forged),
        location="mine.safetensors"))))
    with pytest.raises(SnapshotError, match="bad signature"):
        await store.load("student")
    # A whole new entry, unsigned or signed with a key of the attacker's.
    await plant(store, "student-v7", "redis", blob_of("student-v7"), None)
    with pytest.raises(SnapshotError, match="unsigned"):
        await store.load("student")
    await plant(store, "student-v8", "redis", blob_of("student-v8"), OTHER_KEY)
    with pytest.raises(SnapshotError, match="bad signature"):
        await store.load("student")
    # Garbage in the manifest is a refusal too, not a crash.
    await redis_client.hset(entries, "student-v9", b'{"version": "student-v9", "evil": 1}')
    await redis_client.set(f"{entries}:current", "student-v9")
    with pytest.raises(SnapshotError, match="malformed"):
        await store.load("student")
    await plant(store, "student-v10", "redis", blob_of("student-v10"), KEY)
    await store.load("student")  # the same steps with the key go through


def outside_locations(tmp_path: Path) -> tuple[Path, dict[str, Path]]:
    """A snapshot folder, and locations (with the file each points to) outside it: one via
    ``..``, an absolute path, and a symlink in the folder to a file elsewhere."""
    folder, elsewhere = tmp_path / "snapshots", tmp_path / "elsewhere"
    folder.mkdir()
    elsewhere.mkdir()
    (folder / "link.safetensors").symlink_to(elsewhere / "linked")
    return folder, {"../elsewhere/dotdot": elsewhere / "dotdot",
                    str(elsewhere / "absolute"): elsewhere / "absolute",
                    "link.safetensors": elsewhere / "linked"}


async def test_a_location_outside_the_folder_is_refused_on_read(redis_client, tmp_path):
    folder, locations = outside_locations(tmp_path)
    store = SnapshotStore(redis_client, uid("trust"), folder, key=KEY)
    for n, (location, target) in enumerate(locations.items(), 1):
        version = f"student-v{n}"
        blob = blob_of(version)
        target.write_bytes(blob)
        # Signed with the right key, with the right sha256: only the location is wrong.
        await plant(store, version, location, blob, KEY)
        with pytest.raises(SnapshotError, match="outside the snapshot folder"):
            await store.load("student")
    await plant(store, "student-v9", KEY_FILE, b"", KEY)
    with pytest.raises(SnapshotError, match="outside the snapshot folder"):
        await store.load("student")
    (folder / "sub").mkdir()
    blob = blob_of("student-v10")
    (folder / "sub" / "inside.safetensors").write_bytes(blob)
    await plant(store, "student-v10", "sub/inside.safetensors", blob, KEY)
    await store.load("student")


async def test_prune_never_deletes_outside_the_folder_nor_for_unsigned_entries(redis_client,
                                                                               tmp_path):
    folder, locations = outside_locations(tmp_path)
    store = SnapshotStore(redis_client, uid("trust"), folder, blob_limit=0, keep=1, key=KEY)
    for n, (location, target) in enumerate(locations.items(), 1):
        target.write_bytes(b"not yours to delete")
        await plant(store, f"student-v{n}", location, b"x", KEY)
    # Unsigned entries pointing at files inside the folder, the key file among them.
    (folder / "other.safetensors").write_bytes(b"someone else's")
    await plant(store, "student-v4", "other.safetensors", b"x", None)
    (folder / KEY_FILE).write_bytes(KEY)
    await plant(store, "student-v5", KEY_FILE, b"x", None)
    await redis_client.incr(f"{store.p}:snapshots:student:seq", 5)
    # Two publications: each prunes all but the newest (the first one's file goes).
    first = await store.publish("student", {"w": np.ones(3, np.float32)})
    second = await store.publish("student", {"w": np.zeros(3, np.float32)})
    assert [i.version for i in await store.list("student")] == [second.version]
    assert not (folder / first.location).exists() and (folder / second.location).is_file()
    for target in locations.values():
        assert target.read_bytes() == b"not yours to delete"
    assert (folder / "link.safetensors").is_symlink()
    assert (folder / "other.safetensors").is_file() and (folder / KEY_FILE).is_file()


async def test_forged_entries_do_not_push_the_trainers_snapshots_out(redis_client, tmp_path):
    store = SnapshotStore(redis_client, uid("trust"), tmp_path, keep=2, key=KEY)
    for _ in range(2):
        await store.publish("student", {"w": np.ones(3, np.float32)})
    for n in (3, 4, 5):
        await plant(store, f"student-v{n}", "redis", blob_of(f"student-v{n}"), OTHER_KEY,
                    current=False)
    await redis_client.incr(f"{store.p}:snapshots:student:seq", 3)
    await store.publish("student", {"w": np.zeros(3, np.float32)})
    assert [i.version for i in await store.list("student")] == ["student-v2", "student-v6"]


# ---- the key -------------------------------------------------------------------------------

def test_the_generated_key_is_made_once_private_and_shared(tmp_path):
    folder = tmp_path / "snapshots"
    key = local_key(folder)
    assert len(key) >= 32 and local_key(folder) == key
    assert stat.S_IMODE((folder / KEY_FILE).stat().st_mode) == 0o600
    assert [p.name for p in folder.iterdir()] == [KEY_FILE]  # no temporary file left
    assert local_key(tmp_path / "another") != key


def test_the_key_comes_from_the_settings(tmp_path, monkeypatch):
    monkeypatch.setenv("STREAMREC_SNAPSHOT_KEY", "s" * 20)
    s = Settings()
    assert configured_key(s) == b"s" * 20 and "s" * 20 not in repr(s)
    path = tmp_path / "key"
    path.write_text("f" * 40 + "\n")
    os.chmod(path, 0o600)
    assert configured_key(Settings(snapshot_key="", snapshot_key_file=str(path))) == b"f" * 40
    assert configured_key(Settings(snapshot_key="", snapshot_key_file="")) is None
    with pytest.raises(ValueError, match="not both"):
        configured_key(Settings(snapshot_key_file=str(path)))
    with pytest.raises(ValueError, match="at least 16"):
        configured_key(Settings(snapshot_key="short"))
    with pytest.raises(ValueError, match="cannot read"):
        configured_key(Settings(snapshot_key="", snapshot_key_file=str(tmp_path / "none")))


# ---- a worker's engine ---------------------------------------------------------------------

async def test_the_engine_keeps_its_student_when_a_new_one_is_not_signed_with_its_key(
        redis_client, tmp_path, caplog):
    prefix = uid("trust")
    settings = Settings(redis="unused", app_id=prefix, content=False,
                        snapshot_dir=str(tmp_path), snapshot_key=KEY.decode())
    engine = build_engine(settings, redis_client, "test")
    await engine.start()
    names = [uid("item") for _ in range(10)]

    async def publish(key: bytes) -> str:
        store = SnapshotStore(redis_client, prefix, tmp_path, key=key)
        info = await store.publish("student", *tiny_student(names))
        await engine.model_updates([Incoming(announcement(info), MODEL_UPDATES, 0, 0,
                                             time.time())])
        await engine.interactions([])  # a batch: the fetched student goes into service
        return info.version

    def refused() -> float:
        return metrics.REGISTRY.get_sample_value("streamrec_student_rejected_total")

    v1 = await publish(KEY)
    assert engine.students.version == v1
    before = refused()
    with caplog.at_level(logging.ERROR, logger="streamrec.snapshots.hot_swap"):
        v2 = await publish(OTHER_KEY)
    assert engine.students.version == v1 and "bad signature" in engine.students.rejected[v2]
    assert f"student {v2} rejected, {v1} stays in service" in caplog.text
    assert refused() == before + 1

    # The manifest entry of a genuine snapshot, rewritten for another blob: refused too.
    store = SnapshotStore(redis_client, prefix, tmp_path, key=KEY)
    genuine = await store.publish("student", *tiny_student(names), make_current=False)
    tensors, meta = tiny_student(names)
    forged = save_safetensors({k: v + 1 for k, v in tensors.items()},
                              {**meta, "kind": "student", "version": genuine.version})
    await redis_client.set(f"{prefix}:snapshot-blob:{genuine.version}", forged)
    await redis_client.hset(f"{prefix}:snapshots:student", genuine.version, orjson.dumps(asdict(
        replace(genuine, sha256=hashlib.sha256(forged).hexdigest(), size=len(forged)))))
    await store.set_current("student", genuine.version)
    await engine.check_student()
    await engine.interactions([])
    assert engine.students.version == v1 and genuine.version in engine.students.rejected
    assert refused() == before + 2

    v4 = await publish(KEY)  # the next good one goes into service
    assert engine.students.version == v4 and engine.model_version["student"] == v4
