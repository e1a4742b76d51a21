"""Uploads that bring their own item vector: used instead of encoding, recommended through
the content source at once, and dead-lettered with their reason when the vector is unusable
(the rest of the batch flows on). Through the real worker, and through the engine with one
batch of good and bad uploads."""

from __future__ import annotations

import asyncio
import base64
import time
from pathlib import Path

import numpy as np
import orjson
import pytest

from streamrec.config import BUILTIN_EMBEDDING_MODEL, Settings
from streamrec.content.fusion import FixedFusion
from streamrec.engine.build import build_engine
from streamrec.engine.interface import Incoming
from streamrec.records.events import Click, Upload, View, encode
from streamrec.records.topics import UPLOADS
from streamrec.simulator.embeddings import embedding_fields, upload_with_embedding

from conftest import ask, send, uid

pytestmark = pytest.mark.integration

SPACE = BUILTIN_EMBEDDING_MODEL


def unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)


def near(direction: np.ndarray, rng: np.random.Generator, noise: float = 0.2) -> np.ndarray:
    return unit(direction) + noise * rng.normal(size=len(direction)) / np.sqrt(len(direction))


def raw_upload(item: str, **fields) -> bytes:
    return orjson.dumps({"event_id": uid("e"), "item_id": item, "creator_id": "c",
                         "ts": time.time(), "title": "", **fields})


#: Uploads whose supplied vector is unusable, with the reason each must be dead-lettered with.
BAD = {
    "embedding dimension mismatch: 64 values": dict(embedding_fields(np.ones(64))),
    "embedding model mismatch: 'clip-vit-b32'": dict(embedding_fields(np.ones(128),
                                                                      model="clip-vit-b32")),
    "embedding not finite: value 3 is nan": {
        "embedding": base64.b64encode(np.r_[np.ones(3), np.nan, np.ones(124)]
                                      .astype("<f4").tobytes()).decode(),
        "embedding_model": SPACE},
    "embedding norm out of range: 0": {"embedding": [0.0] * 128, "embedding_model": SPACE},
    "missing field: embedding_model": {"embedding": [0.1] * 128},
    "corrupt embedding: not valid base64": {"embedding": "not base64!", "embedding_model": SPACE},
}


def test_the_built_in_space_is_named_as_the_fusion_names_it():
    assert FixedFusion().version == BUILTIN_EMBEDDING_MODEL == Settings().embedding_model


async def test_a_supplied_embedding_is_recommended_through_content_at_once(
        producer, collector, redis_client):
    rng = np.random.default_rng(7)
    taste = rng.normal(size=128)
    now = time.time()
    # Blank titles: the encoders would refuse these uploads ("empty text"), so they are
    # registered only if the supplied vectors are used instead of encoding.
    liked = [uid("liked") for _ in range(3)]
    others = [uid("other") for _ in range(8)]
    for item in liked:
        await send(producer, upload_with_embedding(item, near(taste, rng), ts=now))
    for item in others:
        await send(producer, upload_with_embedding(item, rng.normal(size=128), ts=now))
    user = uid("user")
    for n, item in enumerate(liked):
        await send(producer, View(uid("e"), user, item, now + 1 + n))
        await send(producer, Click(uid("e"), user, item, now + 1.5 + n))
    await producer.flush()
    await collector.wait_for(lambda: len(collector.lists_for(user)) >= 1)

    target, vector = uid("target"), near(taste, rng) * 7.5  # any norm: stored as a unit vector
    await send(producer, upload_with_embedding(target, vector, ts=now + 10))
    await send(producer, upload_with_embedding(uid("away"), -taste, ts=now + 10))
    await producer.flush()

    def has_target(answer):
        return any(i["item_id"] == target and "content" in i["sources"] for i in answer["items"])

    answer = await ask(producer, collector, user, now + 11, has_target)
    assert has_target(answer), answer["items"][:10]
    meta = orjson.loads(await redis_client.hget("streamrec:items", target))
    assert meta["embedding"] is True and meta["embedding_supplied"] is True
    cached = await redis_client.hget(f"streamrec:emb:{SPACE}", target)
    assert np.array_equal(np.frombuffer(cached, np.float16),
                          unit(vector.astype(np.float32)).astype(np.float16))


async def test_bad_supplied_embeddings_go_to_dead_letter_and_the_rest_flows(
        producer, collector, redis_client):
    before = len(collector.dead_letters)
    good = uid("good")
    # One partition, sent together: one fetch, so (almost always) one batch; the engine test
    # below holds them in one batch for certain.
    for fields in BAD.values():
        await producer.send(UPLOADS, raw_upload(uid("bad"), **fields), partition=0)
    await producer.send(UPLOADS, encode(upload_with_embedding(good, np.ones(128))), partition=0)
    await producer.flush()
    await collector.wait_for(lambda: len(collector.dead_letters) >= before + len(BAD))
    reasons = [r for r, _ in collector.dead_letters[before:]]
    for reason in BAD:
        assert any(r.startswith(reason) for r in reasons), (reason, reasons)
    deadline = time.monotonic() + 30
    while (meta := await redis_client.hget("streamrec:items", good)) is None \
            and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    assert meta is not None, ("a good upload of the same batch is registered", reasons)
    assert orjson.loads(meta)["embedding_supplied"] is True


def batch_of(values: list[bytes]) -> list[Incoming]:
    return [Incoming(v, UPLOADS, 0, n, time.time()) for n, v in enumerate(values)]


async def engine_for(redis_client, tmp_path: Path, **settings):
    engine = build_engine(Settings(app_id=uid("byo"), snapshot_dir=str(tmp_path), **settings),
                          redis_client)
    await engine.start()
    return engine


async def test_one_batch_keeps_its_good_uploads_and_dead_letters_its_bad_vectors(
        redis_client, tmp_path):
    engine = await engine_for(redis_client, tmp_path, content=False)
    try:
        good = [uid("good"), uid("good")]
        plain = uid("plain")
        values = [raw_upload(uid("bad"), **fields) for fields in BAD.values()]
        values.insert(2, encode(upload_with_embedding(good[0], np.arange(1.0, 129.0))))
        values.append(raw_upload(good[1], **embedding_fields(np.ones(128), dtype="float16")))
        values.append(raw_upload(plain, title="no vector"))
        out = await engine.uploads(batch_of(values))
        reasons = [dict(h)["streamrec.reason"].decode() for _, h in out.dead_letters]
        assert len(reasons) == len(BAD)
        for want in BAD:
            assert any(r.startswith(want) for r in reasons), (want, reasons)
        assert out.stats["events_upload"] == 3 and out.stats["embeddings_supplied"] == 2
        content = engine.blend.sources["content"]
        assert all(content.has_embedding(i) for i in good) and not content.has_embedding(plain)
        stored = content.index.matrix[engine.blend.catalog.index[good[0]]]
        assert np.allclose(stored, unit(np.arange(1.0, 129.0)), atol=1e-3)
        assert set(await redis_client.hkeys(f"{engine.state.p}:emb:{SPACE}")) == \
            {i.encode() for i in good}
        metas = await redis_client.hmget(f"{engine.state.p}:items", [*good, plain])
        assert [orjson.loads(m)["embedding_supplied"] for m in metas] == [True, True, False]
    finally:
        await engine.close()


async def test_a_worker_serving_another_space_takes_only_that_space(redis_client, tmp_path):
    space = "clip-vit-b32:128"
    engine = await engine_for(redis_client, tmp_path, embedding_model=space)
    try:
        assert engine.content is None, "the built-in encoders make no vectors of this space"
        assert engine.students is None, "a student reads vectors of the built-in space"
        ours, builtin, plain = uid("ours"), uid("builtin"), uid("plain")
        out = await engine.uploads(batch_of([
            encode(upload_with_embedding(ours, np.ones(128), model=space)),
            encode(upload_with_embedding(builtin, np.ones(128))),
            raw_upload(plain, title="Registered, without a vector"),
        ]))
        reasons = [dict(h)["streamrec.reason"].decode() for _, h in out.dead_letters]
        assert reasons == [f"embedding model mismatch: {SPACE!r}, this worker serves "
                           f"{space!r} (STREAMREC_EMBEDDING_MODEL)"]
        assert await redis_client.hkeys(f"{engine.state.p}:emb:{space}") == [ours.encode()]
        assert await redis_client.hexists(f"{engine.state.p}:items", plain)
        assert not engine.blend.sources["content"].has_embedding(plain)
    finally:
        await engine.close()


def test_a_malformed_space_setting_is_refused_at_start(tmp_path):
    with pytest.raises(ValueError, match="STREAMREC_EMBEDDING_MODEL='has space'"):
        build_engine(Settings(embedding_model="has space", snapshot_dir=str(tmp_path)), None)


def test_the_trainer_takes_supplied_vectors_as_they_are_served_and_encodes_the_rest():
    from streamrec.training.training_log import TrainingLog

    v = np.arange(1.0, 129.0)
    log = TrainingLog.from_events([
        upload_with_embedding("supplied", v, ts=1.0),  # blank title: not encodable
        upload_with_embedding("elsewhere", v, model="clip-vit-b32:128", ts=1.0),
        Upload("e2", "plain", "c", 1.0, "Jazz night in the old harbour"),
        View("e3", "ann", "supplied", 2.0), Click("e4", "ann", "plain", 3.0),
    ])
    content = log.content()
    rows = log.index
    assert np.allclose(content.fused[rows["supplied"]], unit(v), atol=1e-6)
    assert not content.text[rows["supplied"]].any(), "its text was not encoded"
    assert not content.fused[rows["elsewhere"]].any(), "another space stands in for nothing"
    assert content.text[rows["plain"]].any() and content.fused[rows["plain"]].any()


def test_the_evaluation_takes_supplied_vectors_as_the_worker_does():
    from streamrec.evaluation.prequential import encode_uploads

    v = np.arange(1.0, 129.0)
    out = encode_uploads([upload_with_embedding("supplied", v, ts=1.0),
                          upload_with_embedding("elsewhere", v, model="clip-vit-b32:128"),
                          Upload("e2", "plain", "c", 1.0, "Jazz night in the old harbour")])
    assert sorted(out) == ["plain", "supplied"]
    assert np.allclose(out["supplied"], unit(v), atol=1e-6)
