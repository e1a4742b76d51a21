"""The pipeline against a real broker (Tansu) and a real redis-server, with a real worker."""

from __future__ import annotations

import time

import orjson
import pytest

from streamrec.engine.shared_state import read_stats
from streamrec.records.events import Click, RecRequest, Upload, View

from conftest import send, uid

pytestmark = pytest.mark.integration


async def test_events_in_recommendations_out_for_the_right_users(producer, collector):
    now = time.time()
    users = [uid("user") for _ in range(5)]
    items = [uid("item") for _ in range(20)]
    for n, item in enumerate(items):
        await send(producer, Upload(uid("e"), item, "c1", now, f"title {n}"))
    for n, user in enumerate(users):
        for item in items[n: n + 4]:
            await send(producer, View(uid("e"), user, item, now + n))
        await send(producer, Click(uid("e"), user, items[n], now + n + 0.5))
    await producer.flush()
    await collector.wait_for(lambda: all(collector.lists_for(u) for u in users))
    for n, user in enumerate(users):
        latest = collector.lists_for(user)[-1]
        got = [i["item_id"] for i in latest["items"]]
        assert got, f"empty list for {user}"
        assert not set(got) & set(items[n: n + 4]), "seen items must be filtered"
        assert all(i["sources"] for i in latest["items"])
        assert latest["latency_ms"] >= 0 and latest["model_version"]["blend"] == "online"
    assert {r["user_id"] for r in collector.recommendations} >= set(users)


async def test_an_upload_is_recommendable_within_one_batch(producer, collector):
    now = time.time()
    item = uid("fresh-item")
    await send(producer, Upload(uid("e"), item, "c9", now, "Brand new"))
    await producer.flush()
    user, request = uid("user"), uid("req")
    # Ask until the upload has been processed: the first answer that can contain it must.
    deadline = time.monotonic() + 30
    while True:
        await send(producer, RecRequest(request, user, k=100, ts=now + 1))
        await producer.flush()
        await collector.wait_for(lambda request=request: any(r["request_id"] == request
                                             for r in collector.recommendations))
        answer = [r for r in collector.recommendations if r["request_id"] == request][-1]
        found = [i for i in answer["items"] if i["item_id"] == item]
        if found or time.monotonic() > deadline:
            break
        request = uid("req")
    assert found, "the uploaded item never became recommendable"
    assert "fresh" in found[0]["sources"]


BAD = {
    "malformed JSON": b'{"event_id": "x", "user_id": ',
    "missing field": b'{"event_id": "x2", "item_id": "i1", "ts": 1700000000}',
    "wrong type": b'{"event_id": "x3", "user_id": ["u"], "item_id": "i1", "ts": 1700000000}',
    "oversized payload": b'{"event_id": "x4", "pad": "' + b"y" * 6000 + b'"}',
    "unknown event type": b'{"event_id": "x5", "type": "like", "user_id": "u", "item_id": "i", "ts": 1}',
}


async def test_bad_events_go_to_dead_letter_while_valid_ones_flow(producer, collector, redis_client):
    marker = uid("dlq")
    now = time.time()
    users = [uid("user") for _ in range(len(BAD))]
    before = len(collector.dead_letters)
    for raw, user in zip(BAD.values(), users):
        await producer.send("views", raw.replace(b'"x', f'"{marker}'.encode()), key=b"bad")
        await send(producer, View(uid("e"), user, uid("item"), now))
    await producer.send("clicks", b"\xff\xfe not json", key=b"bad")
    await producer.flush()
    await collector.wait_for(lambda: len(collector.dead_letters) >= before + len(BAD) + 1
                             and all(collector.lists_for(u) for u in users))
    reasons = [r for r, _ in collector.dead_letters[before:]]
    for kind in BAD:
        assert any(r.startswith(kind) for r in reasons), (kind, reasons)
    originals = [v for _, v in collector.dead_letters[before:]]
    assert b"\xff\xfe not json" in originals, "the original bytes are kept"
    stats = await read_stats(redis_client)
    assert stats["dead_letter"] >= len(BAD) + 1


async def test_worker_serves_prometheus_metrics(worker, collector, redis_client):
    import urllib.request

    await collector.wait_for(lambda: collector.recommendations)
    raw = await redis_client.hgetall("streamrec:workers")
    assert raw, "the worker registers itself with its web address"
    web = orjson.loads(next(iter(raw.values())))["web"]
    assert web.startswith("http://127.0.0.1:"), "bound to loopback by default"
    body = urllib.request.urlopen(f"{web}/metrics", timeout=5).read().decode()
    lines = [line for line in body.splitlines()
             if line.startswith("streamrec_recommendations_total ")]
    assert lines and float(lines[0].split()[1]) > 0
