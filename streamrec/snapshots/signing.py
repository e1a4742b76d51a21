"""The key that snapshots are signed with, and the signatures (HMAC-SHA256).

Redis is not trusted with what a worker serves: anyone who can write to it could rewrite a
manifest entry, sha256 and all. The trainer signs each entry with a key Redis never sees,
and workers refuse entries whose signature does not verify with theirs.

The key is ``STREAMREC_SNAPSHOT_KEY``, or the contents of ``STREAMREC_SNAPSHOT_KEY_FILE``;
with neither, a random key generated once in the snapshot folder (:data:`KEY_FILE`, mode
0600), which the trainer and the workers of one machine or one shared volume read alike.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets
import stat
from pathlib import Path

import orjson

from streamrec.config import Settings
from streamrec.records.errors import SnapshotError

log = logging.getLogger(__name__)

#: The generated key's file in the snapshot folder (never a snapshot location).
KEY_FILE = ".snapshot-key"
#: Shorter keys are refused: an HMAC is only as strong as its key.
MIN_KEY_BYTES = 16


def configured_key(settings: Settings) -> bytes | None:
    """The key the settings give, or None to use the snapshot folder's generated key; raises
    ValueError for a key that is too short, unreadable, or given twice."""
    if settings.snapshot_key and settings.snapshot_key_file:
        raise ValueError("set STREAMREC_SNAPSHOT_KEY or STREAMREC_SNAPSHOT_KEY_FILE, not both")
    if settings.snapshot_key:
        return _checked(settings.snapshot_key.encode(), "STREAMREC_SNAPSHOT_KEY")
    if settings.snapshot_key_file:
        try:
            return read_key(Path(settings.snapshot_key_file))
        except OSError as exc:
            raise ValueError(f"cannot read the snapshot key file: {exc}") from None
    return None


def read_key(path: Path) -> bytes:
    """The key in ``path`` (surrounding whitespace ignored); warns when others may read it."""
    mode = path.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        log.warning("snapshot key file %s is accessible to other users (mode %o): "
                    "chmod 600 it", path, stat.S_IMODE(mode))
    return _checked(path.read_bytes().strip(), str(path))


def _checked(key: bytes, where: str) -> bytes:
    if len(key) < MIN_KEY_BYTES:
        raise ValueError(f"snapshot key from {where} is {len(key)} bytes, at least "
                         f"{MIN_KEY_BYTES} are needed")
    return key


def local_key(directory: Path) -> bytes:
    """The key generated in ``directory``, made now if there is none. Created whole under a
    temporary name and linked into place, so a trainer and a worker starting together agree
    on one key and neither reads half of it."""
    path = directory / KEY_FILE
    if not path.exists():
        directory.mkdir(parents=True, exist_ok=True)
        tmp = directory / f"{KEY_FILE}.{secrets.token_hex(4)}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(secrets.token_hex(32).encode())
        try:
            os.link(tmp, path)
            log.info("generated the snapshot signing key %s", path)
        except FileExistsError:
            pass  # another process made it first: use theirs
        finally:
            tmp.unlink()
    return read_key(path)


def signed_bytes(prefix: str, entry: dict) -> bytes:
    """What is signed: the app id and the manifest entry (all but its signature), as
    canonical JSON. The entry's sha256 covers the whole blob, so the tensors and the header's
    metadata (kind, version, config, item ids, fusion weights) are signed through it."""
    body = {k: v for k, v in entry.items() if k != "signature"}
    return orjson.dumps({"app": prefix, "entry": body}, option=orjson.OPT_SORT_KEYS)


def sign(key: bytes, prefix: str, entry: dict) -> str:
    """The hex HMAC-SHA256 of ``entry`` under ``key``."""
    return hmac.new(key, signed_bytes(prefix, entry), hashlib.sha256).hexdigest()


def verify(key: bytes, prefix: str, entry: dict) -> None:
    """Raise :class:`SnapshotError` unless ``entry`` carries a signature made with ``key``."""
    version = entry.get("version")
    given = entry.get("signature")
    if not isinstance(given, str) or not given:
        raise SnapshotError(f"snapshot {version}: unsigned manifest entry (not published by a "
                            f"trainer holding the snapshot key)")
    if not hmac.compare_digest(given.encode(), sign(key, prefix, entry).encode()):
        raise SnapshotError(f"snapshot {version}: bad signature (forged or altered manifest "
                            f"entry, or signed with another key: the trainer and the workers "
                            f"must share STREAMREC_SNAPSHOT_KEY)")
