"""Snapshots, teacher and student: the store (on a real redis-server), the student's checks,
distillation quality, quantisation and device selection."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from streamrec.models.student import StudentSource
from streamrec.models.student_scorer import StudentScorer, quantise_int8
from streamrec.records.errors import SnapshotError
from streamrec.simulator.movielens import movielens_100k
from streamrec.snapshots.store import SnapshotStore
from streamrec.training import teacher as teacher_module
from streamrec.training.distill import (
    TrainConfig,
    Window,
    split_examples,
    train_models,
    train_teacher,
)
from streamrec.training.training_log import TrainingLog

from conftest import uid

SMALL = TrainConfig(teacher_epochs=2, student_epochs=(1, 1), batch=128, negatives=127)


@pytest.fixture(scope="module")
def movielens_log() -> TrainingLog:
    events = list(movielens_100k())
    return TrainingLog.from_events(events[:30_000])


@pytest.fixture(scope="module")
def trained(movielens_log):
    # No encoders here (ids and behaviour only), to keep the test quick; content is covered
    # by `streamrec evaluate` in test_evaluate_movielens.
    return train_models(movielens_log, movielens_log.content_placeholder(), cfg=SMALL)


def tensors(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"w": rng.normal(size=(64, 8)).astype(np.float32), "b": np.arange(3, dtype=np.int8)}


async def test_store_round_trips_lists_and_prunes(redis_client, tmp_path):
    store = SnapshotStore(redis_client, uid("snap"), tmp_path, blob_limit=1024, keep=2)
    small = await store.publish("student", {"b": np.arange(3, dtype=np.int8)}, {"note": "x"},
                                {"from_ts": 1.0, "to_ts": 2.0, "events": 10}, {"hr_at_10": 0.2})
    assert small.location == "redis" and small.version == "student-v1"
    big = await store.publish("student", tensors(), scores={"hr_at_10": 0.3})
    assert big.location == "student-v2.safetensors" and (tmp_path / big.location).is_file()
    loaded, meta, info = await store.load("student")  # the one in service: the newest
    assert info.version == "student-v2" and meta["version"] == "student-v2"
    for k, v in tensors().items():
        assert loaded[k].dtype == v.dtype and np.array_equal(loaded[k], v)
    _, meta1, info1 = await store.load("student", "student-v1")
    assert meta1["note"] == "x" and info1.data_range["events"] == 10
    await store.set_current("student", "student-v1")  # a rollback
    await store.publish("student", tensors(1), make_current=False)
    await store.publish("student", tensors(2), make_current=False)
    # keep=2: the newest two stay, and v1 because it is in service; v2 goes, file and all.
    assert [i.version for i in await store.list("student")] == ["student-v1", "student-v3",
                                                                "student-v4"]
    assert not (tmp_path / "student-v2.safetensors").exists()
    assert await store.current("student") == "student-v1"


async def test_store_rejects_corrupt_and_truncated_snapshots(redis_client, tmp_path):
    prefix = uid("snap")
    store = SnapshotStore(redis_client, prefix, tmp_path)
    info = await store.publish("student", tensors())
    key = f"{prefix}:snapshot-blob:{info.version}"
    blob = await redis_client.get(key)
    await redis_client.set(key, blob[: len(blob) // 2])
    with pytest.raises(SnapshotError, match="truncated"):
        await store.load("student")
    flipped = bytearray(blob)
    flipped[-5] ^= 0xFF
    await redis_client.set(key, bytes(flipped))
    with pytest.raises(SnapshotError, match="sha256"):
        await store.load("student")
    await redis_client.delete(key)
    with pytest.raises(SnapshotError, match="missing"):
        await store.load("student")
    with pytest.raises(SnapshotError, match="no snapshot"):
        await store.load("student", "student-v99")


@pytest.mark.slow
def test_a_student_snapshot_with_a_missing_or_misshapen_tensor_is_refused(trained):
    t, meta = trained.student_snapshot()
    StudentScorer(t, meta, "ok")
    with pytest.raises(SnapshotError, match="missing tensors"):
        StudentScorer({k: v for k, v in t.items() if k != "user.weight"}, meta, "v")
    bad = dict(t, **{"item2.weight": t["item2.weight"][:, :-1]})
    with pytest.raises(SnapshotError, match="item2.weight"):
        StudentScorer(bad, meta, "v")
    with pytest.raises(SnapshotError, match="bad metadata"):
        StudentScorer(t, {"config": "{}"}, "v")


@pytest.mark.slow
def test_student_reaches_most_of_the_teacher_and_both_beat_chance(trained, movielens_log):
    s = trained.scores
    chance = 10 / len(movielens_log.item_ids)
    assert s["teacher_hr_at_10"] > 5 * chance
    assert s["student_hr_at_10"] >= 0.8 * s["teacher_hr_at_10"]
    assert abs(s["student_int8_hr_at_10"] - s["student_hr_at_10"]) < 0.02


@pytest.mark.slow
def test_served_student_matches_the_trained_towers(trained):
    """The numpy scorer computes what the torch student computes."""
    w = trained.window
    t, meta = trained.student_snapshot()
    scorer = StudentScorer(t, meta, "v")
    rows = w.id_rows[:50]
    fused = w.content.fused[:50]
    V, b = scorer.item_vectors(fused, scorer.rows([w.log.item_ids[j] for j in range(50)]))
    with torch.no_grad():
        V_t = trained.student.item_vectors(torch.from_numpy(fused), torch.from_numpy(
            w.behaviour[:50]), torch.from_numpy(rows)).numpy()
    assert np.allclose(V, V_t, atol=1e-4)


@pytest.mark.slow
def test_int8_snapshot_is_smaller_and_close(trained):
    t, _ = trained.student_snapshot()
    q, meta = trained.student_snapshot(quantise=True)
    assert meta["quantised"] == "int8"
    size = lambda d: sum(v.nbytes for v in d.values())  # noqa: E731
    assert size(q) < 0.5 * size(t)
    deq = StudentScorer(q, meta, "q").t["item1.weight"]
    assert np.abs(deq - t["item1.weight"]).max() <= np.abs(t["item1.weight"]).max() / 127 + 1e-6
    assert quantise_int8({"x": np.ones(2)})["x"].dtype != np.int8  # only the listed matrices


@pytest.mark.slow
def test_student_source_scores_with_the_blend_history(trained):
    w = trained.window
    src = StudentSource()
    assert not src.active and src.recommend("u1") == []
    src.swap(StudentScorer(*trained.student_snapshot(), "student-v7"))
    for j in range(len(w.log.item_ids)):
        src.set_embedding(w.log.item_ids[j], w.content.fused[j])
    users = w.log.users[: w.stop]
    first_user_items = w.log.items[: w.stop][users == users[0]][:5]
    for j in first_user_items:
        src.learn_one("alice", w.log.item_ids[j], ts=0.0)
    recs = src.recommend("alice", k=10, exclude=[w.log.item_ids[j] for j in first_user_items])
    assert len(recs) == 10 and src.version == "student-v7"
    assert not {r.item_id for r in recs} & {w.log.item_ids[j] for j in first_user_items}


def test_the_trainer_uses_cuda_when_present(monkeypatch, movielens_log):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert teacher_module.pick_device().type == "cuda"
    assert teacher_module.pick_device("cpu").type == "cpu"  # an explicit choice wins
    w = Window(movielens_log, movielens_log.content_placeholder(), len(movielens_log))
    train, _ = split_examples(w, SMALL)
    # This torch has no CUDA: the attempt to move the model there is what proves the choice.
    with pytest.raises((AssertionError, RuntimeError), match="CUDA|cuda"):
        train_teacher(w, train, SMALL)


@pytest.mark.slow
def test_window_metadata_is_json(trained):
    _, meta = trained.student_snapshot()
    ids = json.loads(meta["item_ids"])
    assert len(ids) == trained.window.n_ids and ids[0] in trained.window.log.item_ids
