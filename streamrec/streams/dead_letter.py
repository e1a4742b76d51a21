"""Dead letters: the original bytes of a bad event, with the reason in the headers.

The value is the message exactly as it arrived (so nothing is lost and it can be replayed once
fixed); the headers say why it was rejected and where it came from, the convention Kafka
Connect uses for its dead-letter queues.
"""

from __future__ import annotations

import time

REASON = "streamrec.reason"


def headers(reason: str, topic: str, partition: int, offset: int) -> list[tuple[str, bytes]]:
    return [
        (REASON, reason.encode()[:1000]),
        ("streamrec.topic", topic.encode()),
        ("streamrec.partition", str(partition).encode()),
        ("streamrec.offset", str(offset).encode()),
        ("streamrec.rejected_at", repr(time.time()).encode()),
    ]


def reason_of(message_headers) -> str:
    """The reason header of a dead-letter message (aiokafka or Faust headers)."""
    for k, v in message_headers or ():
        if k == REASON:
            return v.decode()
    return ""


def reason_kind(reason: str) -> str:
    """The label before the colon (``malformed JSON``, ``missing field``...), for metrics."""
    return reason.split(":", 1)[0]
