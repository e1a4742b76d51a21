"""Hostile inputs shared by the fuzz tests: images that lie or explode, and a mix of malformed
messages for every input topic, each tagged with the reason kind it must be rejected with."""

from __future__ import annotations

import base64
import io
import random
import struct
import time
import zlib
from collections.abc import Iterator

import orjson
from PIL import Image

from streamrec.records.events import MAX_INTERACTION_BYTES


def chunk(kind: bytes, data: bytes) -> bytes:
    """One PNG chunk with a correct CRC (so only what it says can be wrong)."""
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png(width: int, height: int, pixels: bytes = b"", extra: bytes = b"") -> bytes:
    """An 8-bit RGB PNG declaring ``width`` x ``height`` whatever ``pixels`` (raw scanlines,
    filter bytes included) hold; ``extra`` chunks go before the image data."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + extra
            + chunk(b"IDAT", zlib.compress(pixels, 9)) + chunk(b"IEND", b""))


def blank_scanlines(width: int, height: int) -> bytes:
    return b"\0" * (height * (width * 3 + 1))


def zlib_bomb(width: int, height: int, mib: int) -> bytes:
    """A valid-CRC PNG whose image data inflates to ``mib`` MiB of zeros, far more than its
    declared size needs."""
    comp, parts, zeros = zlib.compressobj(9), [], b"\0" * (1 << 20)
    parts = [comp.compress(zeros) for _ in range(mib)] + [comp.flush()]
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", b"".join(parts))
            + chunk(b"IEND", b""))


def text_bomb(mib: int) -> bytes:
    """A small PNG with a compressed text chunk that inflates to ``mib`` MiB."""
    comp = zlib.compressobj(9)
    body = b"".join(comp.compress(b"A" * (1 << 20)) for _ in range(mib)) + comp.flush()
    return png(8, 8, blank_scanlines(8, 8), chunk(b"zTXt", b"Comment\0\0" + body))


def encoded(size: tuple[int, int], fmt: str) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, (30, 140, 60)).save(buf, fmt)
    return buf.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


#: Image fields that must be refused, with the reason kind (the upload's reason starts so).
BAD_IMAGES: dict[str, str] = {
    "image size out of range": b64(png(50_000, 50_000, b"\0" * 64)),
    "corrupt image": b64(png(64, 64, blank_scanlines(8, 8))),  # header bigger than its data
    "image reference outside the image root": "file:../../etc/passwd",
    "image not found": "file:/etc/passwd",  # names are relative to the image root
}
BAD_IMAGES_MORE: list[tuple[str, str]] = [
    ("corrupt image", b64(encoded((40, 40), "PNG")[:60])),  # truncated
    ("corrupt image", "not base64 at all!"),
    ("image size out of range", b64(png(9000, 20, blank_scanlines(9000, 20)))),
    ("unsupported image format", b64(encoded((8, 8), "TIFF"))),
]


def _valid(kind: str, n: int, now: float) -> dict:
    base = {"event_id": f"fz-{n}", "ts": now}
    if kind == "upload":
        return {**base, "item_id": f"fz-item-{n}", "creator_id": "c1", "title": "a title"}
    if kind == "rec-request":
        return {"request_id": f"fz-r-{n}", "user_id": f"fz-u-{n}", "k": 5, "ts": now}
    return {**base, "user_id": f"fz-u-{n}", "item_id": f"fz-i-{n}"}


TOPICS = {"view": "views", "click": "clicks", "upload": "uploads", "rec-request": "rec-requests"}
NUMERIC = {"view": ("ts", "position", "dwell_ms"), "click": ("ts",), "upload": ("ts",),
           "rec-request": ("k", "ts")}
#: Numbers no field takes, as JSON text (orjson refuses NaN and Infinity, and reads integers
#: beyond 64 bits as floats).
BAD_NUMBERS = ["NaN", "Infinity", "-Infinity", "1e400", "-1e400", str(2**80), str(-2**80),
               "1e300", "-1"]


def malformed(n: int, seed: int = 0) -> Iterator[tuple[str, bytes, str]]:
    """``n`` distinct malformed messages ``(topic, value, reason kind)``, every kind in turn.
    Each value carries its index, so each one can be found again in ``dead-letter``."""
    rng, now = random.Random(seed), time.time()
    kinds = list(TOPICS)
    makers = [_junk_bytes, _bad_utf8, _truncated, _not_object, _duplicate_key, _deep,
              _bad_number, _bad_field, _bad_image, _oversized]
    for i in range(n):
        kind = kinds[i % len(kinds)]
        maker = makers[(i // len(kinds)) % len(makers)]
        topic, value, reason = maker(rng, kind, i, now)
        yield topic, value, reason


def _junk_bytes(rng: random.Random, kind: str, i: int, now: float) -> tuple[str, bytes, str]:
    return TOPICS[kind], b"\xff%d\xfe" % i + rng.randbytes(rng.randrange(0, 200)), \
        "malformed JSON"


def _bad_utf8(rng: random.Random, kind: str, i: int, now: float) -> tuple[str, bytes, str]:
    raw = orjson.dumps(_valid(kind, i, now))
    return TOPICS[kind], raw[:-1] + b', "note": "caf\xe9 \xc0\xaf"}', "malformed JSON"


def _truncated(rng: random.Random, kind: str, i: int, now: float) -> tuple[str, bytes, str]:
    raw = orjson.dumps(_valid(kind, i, now))
    return TOPICS[kind], raw[:rng.randrange(len(raw) // 2, len(raw) - 1)], "malformed JSON"


def _not_object(rng: random.Random, kind: str, i: int, now: float) -> tuple[str, bytes, str]:
    value = rng.choice([[i, "x"], f"event {i}", i + 0.5, [_valid(kind, i, now)]])
    return TOPICS[kind], orjson.dumps(value), "wrong type"


def _duplicate_key(rng: random.Random, kind: str, i: int, now: float) -> tuple[str, bytes, str]:
    d = _valid(kind, i, now)
    name = rng.choice(sorted(d))
    second = orjson.dumps({name: d[name] if rng.random() < 0.5 else "other"})
    return TOPICS[kind], orjson.dumps(d)[:-1] + b"," + second[1:], "duplicate key"


def _deep(rng: random.Random, kind: str, i: int, now: float) -> tuple[str, bytes, str]:
    if kind == "upload" and (i // 40) % 10 == 0:  # 100,000 nested lists: 200 KB, accepted
        # by size
        depth = 100_000
    else:
        depth = rng.randrange(33, 1000 if kind == "upload" else 1300)
    raw = orjson.dumps(_valid(kind, i, now))
    nested = b"[" * depth + b"]" * depth
    value = raw[:-1] + b', "nest": ' + nested + b"}"
    if len(value) > MAX_INTERACTION_BYTES and kind != "upload":
        return TOPICS[kind], value, "oversized payload"
    return TOPICS[kind], value, "too deeply nested"


def _bad_number(rng: random.Random, kind: str, i: int, now: float) -> tuple[str, bytes, str]:
    name, text = rng.choice(NUMERIC[kind]), rng.choice(BAD_NUMBERS)
    d = {**_valid(kind, i, now), name: "@@"}
    value = orjson.dumps(d).replace(b'"@@"', text.encode())
    if text in ("NaN", "Infinity", "-Infinity", "1e400", "-1e400"):
        return TOPICS[kind], value, "malformed JSON"
    return TOPICS[kind], value, "out of range"


def _bad_field(rng: random.Random, kind: str, i: int, now: float) -> tuple[str, bytes, str]:
    d = _valid(kind, i, now)
    name = rng.choice(sorted(n for n in d if n != "ts" and n != "k"))
    change = rng.choice([(None, "missing field"), (7, "wrong type"), ("has space", "bad id"),
                         ("x" * 129, "bad id")])
    if name == "title":
        change = rng.choice([(None, "missing field"), ([], "wrong type"),
                             ("x" * 600, "too long")])
    value, reason = change
    if value is None:
        del d[name]
    else:
        d[name] = value
    d["case"] = i  # two such changes of one field would otherwise repeat a value
    return TOPICS[kind], orjson.dumps(d), reason


def _bad_image(rng: random.Random, kind: str, i: int, now: float) -> tuple[str, bytes, str]:
    if kind != "upload":
        return _bad_field(rng, kind, i, now)
    reason, image = rng.choice([*BAD_IMAGES.items(), *BAD_IMAGES_MORE])
    return TOPICS[kind], orjson.dumps({**_valid(kind, i, now), "image": image}), reason


def _oversized(rng: random.Random, kind: str, i: int, now: float) -> tuple[str, bytes, str]:
    if kind == "upload":  # the whole value goes to dead-letter intact up to the upload limit
        return _duplicate_key(rng, kind, i, now)
    raw = orjson.dumps({**_valid(kind, i, now), "pad": "p" * MAX_INTERACTION_BYTES})
    return TOPICS[kind], raw, "oversized payload"
