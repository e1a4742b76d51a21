"""Dead letters: the original bytes of a bad event, with the reason in the headers.

The value is the message exactly as it arrived (so nothing is lost and it can be replayed once
fixed); the headers say why it was rejected and where it came from, the convention Kafka
Connect uses for its dead-letter queues.

Every message the worker accepts for validation (uploads up to ``MAX_UPLOAD_BYTES``) goes to
the dead-letter topic intact: the worker's producer allows :data:`MAX_MESSAGE_BYTES`, which
leaves room for the headers. A value larger than that (only an oversized payload can be, and
it is rejected for its size) is cut to its first :data:`TRUNCATED_BYTES`, with its full size
and SHA-256 in the headers, so that the dead letter itself can always be published.

>>> value, hdrs = entry(b"x" * 2_000_000, "oversized payload", "uploads", 0, 7)
>>> len(value), dict(hdrs)["streamrec.original_bytes"]
(65536, b'2000000')
"""

from __future__ import annotations

import hashlib
import time

from streamrec.records.events import MAX_UPLOAD_BYTES

REASON = "streamrec.reason"
#: The worker producer's limit per message: Kafka's default (``message.max.bytes`` is
#: 1,048,588), above the largest accepted upload plus headers.
MAX_MESSAGE_BYTES = 1024 * 1024
#: Larger dead-letter values are cut to this many bytes.
TRUNCATED_BYTES = 64 * 1024


def entry(value: bytes | None, reason: str, topic: str, partition: int,
          offset: int) -> tuple[bytes, list[tuple[str, bytes]]]:
    """The dead letter (value, headers) for one rejected message."""
    value = value or b""
    hdrs = headers(reason, topic, partition, offset)
    if len(value) > MAX_UPLOAD_BYTES:
        hdrs += [("streamrec.truncated", b"1"),
                 ("streamrec.original_bytes", str(len(value)).encode()),
                 ("streamrec.original_sha256", hashlib.sha256(value).hexdigest().encode())]
        value = value[:TRUNCATED_BYTES]
    return value, hdrs


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
