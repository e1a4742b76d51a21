"""Frames between a worker and its model process: a JSON head and raw byte blobs, no pickle.

A frame is two little-endian lengths (head, body), the head (JSON, with the blob sizes) and
the blobs back to back. Message values, keys and header values travel as blobs, untouched.

>>> head, blobs = decode(encode({"op": "x"}, [b"ab", b"", b"c"]))
>>> head, blobs
({'op': 'x'}, [b'ab', b'', b'c'])
>>> batch = [Incoming(b'{"a": 1}', "views", 2, 7, 1.5, None, 8),
...          Incoming(None, "clicks", 0, 3, 2.0),
...          Incoming(b"{}", "clicks", 1, 4, 2.5, Click("e1", "u1", "i1", 2.0)),
...          Incoming(b"[", "views", 1, 9, 3.0, InvalidEvent("malformed JSON: x"))]
>>> again = batch_from(*decode(batch_frame(1, "interactions", batch)))
>>> again[:3] == batch[:3], again[3].decoded.args
(True, ('malformed JSON: x',))

Events decoded already travel as their fields (they were validated where they were decoded),
so the receiver rebuilds them without validating again.
"""

from __future__ import annotations

import asyncio
import operator
import struct
from collections.abc import Sequence

import orjson

from streamrec.engine.interface import Incoming, Outgoing
from streamrec.records.events import Click, Event, InvalidEvent, View

#: Events that may travel decoded (the interactions, all flat fields), and the getter of
#: their fields in constructor order.
EVENT_CLASSES = {"view": View, "click": Click}
EVENT_FIELDS = {name: operator.attrgetter(*cls.__slots__) for name, cls in EVENT_CLASSES.items()}

#: Lengths of the head and the body that follow.
HEADER = struct.Struct("<II")


def encode(head: dict, blobs: Sequence[bytes] = ()) -> bytes:
    """One frame: header, JSON head (plus the blob sizes), blobs."""
    h = orjson.dumps({**head, "sizes": [len(b) for b in blobs]})
    body = b"".join(blobs)
    return HEADER.pack(len(h), len(body)) + h + body


def decode(frame: bytes) -> tuple[dict, list[bytes]]:
    """The head and blobs of a whole frame."""
    n_head, _ = HEADER.unpack_from(frame)
    return _split(frame[HEADER.size:], n_head)


def _split(rest: bytes, n_head: int) -> tuple[dict, list[bytes]]:
    head = orjson.loads(rest[:n_head])
    blobs, at = [], n_head
    for size in head.pop("sizes"):
        blobs.append(rest[at:at + size])
        at += size
    return head, blobs


async def read(reader: asyncio.StreamReader) -> tuple[dict, list[bytes]]:
    """The next frame's head and blobs (``IncompleteReadError`` once the peer has gone)."""
    n_head, n_body = HEADER.unpack(await reader.readexactly(HEADER.size))
    return _split(await reader.readexactly(n_head + n_body), n_head)


def batch_frame(request: int, op: str, batch: Sequence[Incoming]) -> bytes:
    """A request to run ``op`` over ``batch``."""
    return encode({"id": request, "op": op,
                   "msgs": [(m.topic, m.partition, m.offset, m.timestamp, m.value is None,
                             _fields(m.decoded), m.highwater) for m in batch]},
                  [m.value or b"" for m in batch])


def _fields(ev: Event | InvalidEvent | None) -> list | None:
    if ev is None:
        return None
    if isinstance(ev, InvalidEvent):
        return ["invalid", str(ev)]
    fields = EVENT_FIELDS.get(ev.type)
    if fields is None:
        raise ValueError(f"{ev.type} events travel as their bytes, not decoded")
    return [ev.type, fields(ev)]


def _event(fields: list | None) -> Event | InvalidEvent | None:
    if fields is None:
        return None
    kind, values = fields
    if kind == "invalid":
        return InvalidEvent(values)
    return EVENT_CLASSES[kind](*values)


def batch_from(head: dict, blobs: list[bytes]) -> list[Incoming]:
    return [Incoming(None if none else value, topic, partition, offset, ts, _event(fields), end)
            for (topic, partition, offset, ts, none, fields, end), value
            in zip(head["msgs"], blobs)]


def reply_frame(request: int, out: Outgoing, extra: dict | None = None) -> bytes:
    """What a step produced: lists (key, value), dead letters (value, headers), counts."""
    blobs: list[bytes] = []
    for key, value in out.recommendations:
        blobs += (key, value)
    dead = []
    for value, headers in out.dead_letters:
        blobs.append(value)
        blobs += (v for _, v in headers)
        dead.append([k for k, _ in headers])
    return encode({"id": request, "recs": len(out.recommendations), "dead": dead,
                   "stats": out.stats, **(extra or {})}, blobs)


def outgoing_from(head: dict, blobs: list[bytes]) -> Outgoing:
    n = head["recs"]
    recs = list(zip(blobs[0:2 * n:2], blobs[1:2 * n:2]))
    dead, at = [], 2 * n
    for names in head["dead"]:
        value, values = blobs[at], blobs[at + 1:at + 1 + len(names)]
        dead.append((value, list(zip(names, values))))
        at += 1 + len(names)
    return Outgoing(recs, dead, head["stats"])
