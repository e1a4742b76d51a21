"""The benchmark's deliberately naive pipeline: what one writes first, measured to show why
the real one batches.

One event at a time; river's ``reco.BiasedMF`` ranks every item with ``predict_one``; every
read and write is its own Redis round trip; every list is sent as its own message.
"""

from __future__ import annotations

import time

import orjson
import redis.asyncio as aioredis
from river import reco

from streamrec.records import dead_letter
from streamrec.records.events import Click, InvalidEvent, decode
from streamrec.records.topics import DEAD_LETTER, EVENT_TYPE, RECOMMENDATIONS


class NaivePipeline:
    def __init__(self, redis: aioredis.Redis, prefix: str, top_k: int = 10) -> None:
        self.r = redis
        self.p = prefix
        self.top_k = top_k
        self.model = reco.BiasedMF(n_factors=16, seed=0)
        self.items: list[str] = []
        self.known: set[str] = set()

    async def handle(self, producer, msg) -> None:
        try:
            ev = decode(msg.value, EVENT_TYPE.get(msg.topic, "view"))
        except InvalidEvent as exc:
            value, hdrs = dead_letter.entry(msg.value, str(exc), msg.topic, msg.partition,
                                            msg.offset)
            await producer.send(DEAD_LETTER, None, value, None, None, hdrs)
            await self.r.hincrby(f"{self.p}:stats", "dead_letter", 1)
            return
        if ev.type == "upload":
            if ev.item_id not in self.known:
                self.known.add(ev.item_id)
                self.items.append(ev.item_id)
            await self.r.hset(f"{self.p}:items", ev.item_id, orjson.dumps({"title": ev.title}))
            await self.r.hincrby(f"{self.p}:stats", "events", 1)
            return
        raw = await self.r.get(f"{self.p}:user:{ev.user_id}")
        seen = set(orjson.loads(raw)["seen"]) if raw else set()
        if ev.item_id not in self.known:
            self.known.add(ev.item_id)
            self.items.append(ev.item_id)
        self.model.learn_one(ev.user_id, ev.item_id, 1.0 if isinstance(ev, Click) else 0.0)
        seen.add(ev.item_id)
        scored = sorted(((self.model.predict_one(ev.user_id, i), i) for i in self.items
                         if i not in seen), reverse=True)[: self.top_k]
        await self.r.set(f"{self.p}:user:{ev.user_id}", orjson.dumps({"seen": sorted(seen)}))
        await self.r.hincrbyfloat(f"{self.p}:pop:naive", ev.item_id, 1.0)
        now = time.time()
        await producer.send(RECOMMENDATIONS, ev.user_id.encode(), orjson.dumps({
            "user_id": ev.user_id, "trigger": ev.event_id, "ts": now, "event_ts": msg.timestamp,
            "items": [{"item_id": i, "score": s, "sources": ["river_biasedmf"]} for s, i in scored],
            "latency_ms": (now - msg.timestamp) * 1000.0}), None, None, None)
        await self.r.hincrby(f"{self.p}:stats", "events", 1)
        await self.r.hincrby(f"{self.p}:stats", "recommendations", 1)
