"""Following the output topic, for operators."""

from __future__ import annotations

import sys

import orjson

from streamrec.clients import kafka_consumer
from streamrec.config import Settings
from streamrec.records import dead_letter


def render(value: bytes) -> str:
    """One recommendation list as one readable line."""
    d = orjson.loads(value)
    items = ", ".join(f"{i['item_id']}({'+'.join(s[:3] for s in i['sources'])})"
                      for i in d.get("items", [])[:10])
    return f"{d.get('user_id')}  [{d.get('latency_ms', 0):6.1f} ms]  {items}"


async def follow(settings: Settings, topic: str, as_json: bool, from_beginning: bool,
                 limit: int | None) -> None:
    consumer = kafka_consumer(settings, topic,
                              auto_offset_reset="earliest" if from_beginning else "latest",
                              enable_auto_commit=False)
    await consumer.start()
    n = 0
    try:
        async for msg in consumer:
            if topic == "dead-letter":
                reason = dead_letter.reason_of(msg.headers)
                line = (orjson.dumps({"reason": reason, "value": msg.value.decode("utf-8", "replace")})
                        .decode() if as_json else f"{reason}  <- {msg.value[:120]!r}")
            else:
                line = msg.value.decode() if as_json else render(msg.value)
            sys.stdout.write(line + "\n")
            sys.stdout.flush()
            n += 1
            if limit and n >= limit:
                break
    finally:
        await consumer.stop()
