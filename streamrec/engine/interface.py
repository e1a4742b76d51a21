"""What a worker and its engine exchange, with nothing of the models: the messages of a
batch, what a batch produced, the batch operations, the worker's name.

The worker's own process needs only this side of the engine (its model process owns the
models); keeping it apart from :mod:`streamrec.engine.engine` keeps torch, river and scipy out
of the worker's start, which a restarted worker would otherwise spend seconds importing.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass

from streamrec.records import dead_letter
from streamrec.records.events import Event, InvalidEvent, decode
from streamrec.records.topics import EVENT_TYPE

#: The batch operations, each a method of the engine taking a batch of messages.
OPS = ("interactions", "uploads", "requests", "model_updates")


@dataclass(slots=True)
class Incoming:
    """One consumed message."""

    value: bytes | None
    topic: str
    partition: int
    offset: int
    timestamp: float  # producer time, seconds
    #: The event already decoded from ``value``, or why it cannot be (the worker decodes
    #: interactions before handing them to its model process); None: decode here.
    decoded: Event | InvalidEvent | None = None
    #: The partition's log end offset as the consumer last saw it (None: unknown).
    highwater: int | None = None


@dataclass(slots=True)
class Outgoing:
    """What a batch produced: lists to publish, dead letters, counts."""

    recommendations: list[tuple[bytes, bytes]]
    dead_letters: list[tuple[bytes, list[tuple[str, bytes]]]]
    stats: dict[str, int]


def reject(msg: Incoming, reason: str, out: Outgoing) -> None:
    out.dead_letters.append(dead_letter.entry(msg.value, reason, msg.topic, msg.partition,
                                              msg.offset))
    out.stats["dead_letter"] = out.stats.get("dead_letter", 0) + 1


def decode_one(msg: Incoming, expected: str | None = None) -> Event | InvalidEvent:
    """``msg``'s event, or the :class:`InvalidEvent` saying why there is none."""
    try:
        return decode(msg.value, expected or EVENT_TYPE.get(msg.topic, "view"))
    except InvalidEvent as exc:
        return exc


def worker_id() -> str:
    """This process's name in the worker group: host and pid."""
    return f"{socket.gethostname()}-{os.getpid()}"
