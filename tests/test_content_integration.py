"""Uploads through the real worker: content is encoded and cached, bad content is
dead-lettered, and a matching user is offered a new item before anyone clicks it."""

from __future__ import annotations

import asyncio
import base64
import io
import time

import numpy as np
import orjson
import pytest
from PIL import Image

from streamrec.content.images import MAX_IMAGE_BYTES
from streamrec.records.events import Click, Upload, View
from streamrec.simulator.render import render_item, to_base64_png

from conftest import ask, send, uid

pytestmark = pytest.mark.integration


async def test_matching_user_is_offered_a_new_item_before_any_click(producer, collector,
                                                                   redis_client):
    now = time.time()
    cooking = np.eye(12)[0] * 0.9 + 0.01
    liked = [uid("cook") for _ in range(3)]
    for n, (item, title) in enumerate(zip(liked, ["Spicy pasta bake", "Garlic bread soup",
                                                  "Chef's noodle dinner"])):
        await send(producer, Upload(uid("e"), item, "chef", now, title, "a recipe from the oven",
                                    ("cooking",), to_base64_png(render_item(cooking, n))))
    user = uid("user")
    for n, item in enumerate(liked):
        await send(producer, View(uid("e"), user, item, now + 1 + n))
        await send(producer, Click(uid("e"), user, item, now + 1.5 + n))
    await producer.flush()
    await collector.wait_for(lambda: len(collector.lists_for(user)) >= 1)
    target = uid("new-cook")
    await send(producer, Upload(uid("e"), target, "chef2", now + 10, "Oven baked garlic pasta",
                                "spicy kitchen recipe", ("cooking",),
                                to_base64_png(render_item(cooking, 99))))
    await send(producer, Upload(uid("e"), uid("space"), "nasa", now + 10, "Rocket launch",
                                "orbit around mars", ("space",)))
    await producer.flush()

    def has_target(answer):
        return any(i["item_id"] == target and "content" in i["sources"] for i in answer["items"])

    answer = await ask(producer, collector, user, now + 11, has_target)
    assert has_target(answer), answer["items"][:10]
    meta = orjson.loads(await redis_client.hget("streamrec:items", target))
    assert meta["embedding"] is True
    keys = [k async for k in redis_client.scan_iter("streamrec:emb:*")]
    assert keys and b"minilm-l6-v2+effnet-lite0" in keys[0], "the key names the encoders"
    assert len(await redis_client.hget(keys[0], target)) == 128 * 2, "float16 x 128"


def _png_b64(size: int) -> str:
    buf = io.BytesIO()
    Image.new("RGB", (size, size), "white").save(buf, "PNG")
    return base64.b64encode(buf.getvalue()).decode()


async def test_bad_upload_content_goes_to_dead_letter(producer, collector, redis_client):
    now = time.time()
    good = _png_b64(16)
    bad = {
        "corrupt image": _png_b64(64)[:120],
        "image too large": base64.b64encode(b"\x89PNG" + b"\0" * (MAX_IMAGE_BYTES + 1)).decode(),
        "empty text": None,
        "image not found": "file:no-such-image.png",
    }
    before = len(collector.dead_letters)
    ok_item = uid("ok")
    for kind, image in bad.items():
        title = "   " if kind == "empty text" else f"bad {kind}"
        await send(producer, Upload(uid("e"), uid("bad"), "c", now, title, image=image))
    await send(producer, Upload(uid("e"), ok_item, "c", now, "A fine item", image=good))
    await producer.flush()
    await collector.wait_for(lambda: len(collector.dead_letters) >= before + len(bad))
    reasons = [r for r, _ in collector.dead_letters[before:]]
    for kind in bad:
        assert any(r.startswith(kind) for r in reasons), (kind, reasons)
    deadline = time.monotonic() + 30
    while (meta := await redis_client.hget("streamrec:items", ok_item)) is None \
            and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    assert meta is not None, ("valid uploads in the same batch keep flowing",
                              [r for r, _ in collector.dead_letters[before:]])
    assert orjson.loads(meta)["embedding"] is True
