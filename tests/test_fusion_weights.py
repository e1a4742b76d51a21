"""The content fusion's block weights: re-weighting stored vectors is re-fusing them, the
training round learns the block that carries the clicks, snapshots carry the weights (bad ones
refused), and a worker's engine puts them in service with the student (real redis-server)."""

from __future__ import annotations

import time

import numpy as np
import pytest

from streamrec.config import Settings
from streamrec.content.fusion import FIXED, IMAGE, TAGS, TEXT, FixedFusion, FusionWeights
from streamrec.engine.build import build_engine
from streamrec.engine.engine import Incoming
from streamrec.models.content import ContentSource
from streamrec.records.errors import SnapshotError
from streamrec.records.events import Click, Upload, encode
from streamrec.records.topics import MODEL_UPDATES
from streamrec.snapshots.hot_swap import FUSION_WEIGHTS, snapshot_fusion
from streamrec.snapshots.store import SnapshotStore
from streamrec.training.distill import TrainConfig, Window, hit_rate, split_examples
from streamrec.training.fusion_weights import (
    ItemBlocks,
    block_features,
    learn_fusion,
    replay_profiles,
    window_content_source,
)
from streamrec.training.trainer import announcement
from streamrec.training.training_log import ItemContent, TrainingLog

from conftest import tiny_student, uid

# Not the fixed text:image ratio, so items without an image re-weight their text differently.
TAGGY = FusionWeights(text=0.15, image=0.25, tags=0.6)


def features(n: int, seed: int = 0, image_share: float = 0.5):
    """Raw text and image features, tags (every item has one) and which items have an image."""
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(n, 384)), rng.normal(size=(n, 1280)),
            [(f"tag{rng.integers(6)}",) for _ in range(n)], rng.random(n) < image_share)


def exact_source(vectors: np.ndarray, names: list[str]) -> ContentSource:
    """A content source whose centred copy is exactly the catalogue's (no centre tolerance)."""
    cs = ContentSource()
    cs.index.centre_tolerance = 0.0
    cs.set_embeddings(names, vectors)
    return cs


# ---- re-weighting --------------------------------------------------------------------------

@pytest.mark.parametrize("weights", [TAGGY, FusionWeights(0.5, 0.5, 0.0),
                                     FusionWeights(0.0, 0.0, 1.0)])
def test_reweighted_items_and_profiles_score_as_if_fused_with_the_weights(weights):
    text, image, tags, with_image = features(60)
    tags[5] = ()  # an item without tags: normalised over its other blocks
    stored = FixedFusion().fuse(text, image, tags, with_image)
    refused = FixedFusion(weights=weights).fuse(text, image, tags, with_image)
    names = [f"i{n}" for n in range(60)]
    served, reference = exact_source(stored, names), exact_source(refused, names)
    for n, item in enumerate(["i1", "i2", "i3", "i8", "i13", "i21"]):  # with and without image
        for cs in (served, reference):
            cs.learn_one("ann", item, ts=1000.0 * n, clicked=n % 2 == 0)
    assert {with_image[int(i[1:])] for i in ["i1", "i2", "i3", "i8", "i13", "i21"]} == {
        True, False}
    before = served.score_all("ann")
    served.set_fusion(weights)
    assert served.fusion == weights
    # The items the index compares are the re-fused ones, the centre their mean.
    assert np.allclose(served.index.centred[:60], reference.index.centred[:60], atol=1e-5)
    assert np.allclose(served.score_all("ann"), reference.score_all("ann"), atol=1e-5)
    assert not np.allclose(before, served.score_all("ann"), atol=1e-3)
    # Back to the fixed fusion: the scores of before, the vectors never having changed.
    served.set_fusion(None)
    assert np.allclose(served.score_all("ann"), before, atol=1e-5)
    assert np.array_equal(served.index.matrix[:60], stored)


def test_fusion_weights_are_checked_and_normalised():
    assert FusionWeights(0.3001, 0.3, 0.4).text == pytest.approx(0.3001 / 1.0001)
    assert FusionWeights.parse([0.6, 0.3, 0.1]) == FIXED
    for bad, why in [((0.5, 0.5, 0.5), "sum to 1"), ((1.2, -0.1, -0.1), "non-negative"),
                     ((float("nan"), 0.5, 0.5), "finite"), (("a", 0.5, 0.5), "numbers")]:
        with pytest.raises(ValueError, match=why):
            FusionWeights(*bad)
    with pytest.raises(ValueError, match="three numbers"):
        FusionWeights.parse("[0.5, 0.5]")
    with pytest.raises(ValueError, match="exactly text, image and tags"):
        FusionWeights.parse('{"text": 0.5, "image": 0.5}')


def test_the_layout_is_the_fusions():
    # The blocks tile the vector, and the fixed weights fuse what the encoders always fused.
    assert [b.offset for b in (TEXT, IMAGE, TAGS)] == [0, TEXT.width, TEXT.width + IMAGE.width]
    assert sum(b.weight for b in (TEXT, IMAGE, TAGS)) == pytest.approx(1.0)
    text, image, tags, with_image = features(4)
    v = FixedFusion().fuse(text, image, tags, with_image)
    share = [float(np.sum(v[0, b.columns] ** 2)) for b in (TEXT, IMAGE, TAGS)]
    assert share == pytest.approx([0.6, 0.3, 0.1] if with_image[0] else [0.9, 0.0, 0.1],
                                  abs=1e-5)
    assert FixedFusion(weights=TAGGY).version != FixedFusion().version  # never cached together


# ---- learning them -------------------------------------------------------------------------

def clicks_world(signal: str, images: bool = True, n_items: int = 300, n_users: int = 200,
                 n_topics: int = 60,
                 rounds: int = 20, seed: int = 0) -> tuple[TrainingLog, ItemContent]:
    """Users each keep to a topic (80% of their clicks); only the ``signal`` block of an item
    tells its topic, the other blocks are noise."""
    rng = np.random.default_rng(seed)
    topics = n_topics
    topic = rng.integers(topics, size=n_items)
    text, image = rng.normal(size=(n_items, 384)), rng.normal(size=(n_items, 1280))
    if signal == "text":
        text += rng.normal(size=(topics, 384))[topic]
    if signal == "image":
        image += rng.normal(size=(topics, 1280))[topic]
    tags = [(f"tag{topic[j] if signal == 'tags' else rng.integers(topics)}",)
            for j in range(n_items)]
    events = [Upload(f"u{j}", f"i{j}", "c", 0.0, f"item {j}", tags=tags[j])
              for j in range(n_items)]
    user_topic = rng.integers(topics, size=n_users)
    t = 1.0
    for _ in range(rounds):
        for u in rng.permutation(n_users):
            pool = np.flatnonzero(topic == user_topic[u]) if rng.random() < 0.8 else \
                np.arange(n_items)
            events.append(Click(f"e{t}", f"user{u}", f"i{rng.choice(pool)}", t))
            t += 1
    log = TrainingLog.from_events(events)
    order = [int(i[1:]) for i in log.item_ids]
    has = np.full(n_items, images)
    fused = FixedFusion().fuse(text[order], image[order], [tags[j] for j in order], has)
    return log, ItemContent(text[order].astype(np.float32), image[order].astype(np.float32),
                            has, fused)


def fit(log: TrainingLog, content: ItemContent):
    w = Window(log, content, len(log))
    train, held = split_examples(w, TrainConfig())
    return learn_fusion(log, content.fused, len(log), train, held,
                        lambda scores_for: hit_rate(scores_for, held, w.first_ts))


@pytest.mark.parametrize("signal", ["tags", "text", "image"])
def test_the_learner_weights_the_block_that_explains_the_clicks(signal):
    t0 = time.perf_counter()
    result = fit(*clicks_world(signal))
    assert time.perf_counter() - t0 < 30.0
    learned = result.learned.as_dict()
    assert max(learned, key=learned.get) == signal, learned
    assert learned[signal] > 0.6
    # The content source itself, on the held-out clicks, does better with them: served.
    assert result.learned_hr > result.fixed_hr
    assert result.chosen == result.learned and result.served == "learned"


def test_without_images_text_and_image_keep_their_ratio_and_tags_still_win():
    result = fit(*clicks_world("tags", images=False))
    w = result.learned
    assert w.tags > w.text + w.image
    assert w.text / w.image == pytest.approx(FIXED.text / FIXED.image, rel=1e-4)
    assert "no item has an image" in result.note


def test_weights_not_better_on_held_out_clicks_are_not_served():
    # Noise in every block: whatever the fit finds, the fixed fusion stays unless it is beaten.
    log, content = clicks_world("none")
    result = fit(log, content)
    assert result.chosen == (result.learned if result.learned_hr > result.fixed_hr else FIXED)
    assert result.served == ("learned" if result.chosen != FIXED else "fixed")


def test_block_features_at_the_fixed_weights_are_the_content_sources_cosines():
    log, content = clicks_world("text", rounds=5)
    w = Window(log, content, len(log))
    _, held = split_examples(w, TrainConfig())
    cs = window_content_source(log, content.fused)
    (profiles,) = replay_profiles(cs, log, len(log), [held])
    rows = np.flatnonzero(profiles.weights > 0)[:50]
    items = np.flatnonzero(content.fused.any(axis=1))
    f = block_features(ItemBlocks.of(cs, items), profiles.take(rows), held.positive[rows],
                       np.arange(20))
    for r, row in enumerate(rows):
        key = ("probe", int(row))
        cs.profiles[key] = (profiles.sums[row], float(profiles.weights[row]), 0.0)
        scores = cs.score_many([key])[0]
        expected = np.concatenate([[scores[held.positive[row]]], scores[:20]])
        got = f[r] @ np.array([FIXED.text, FIXED.image, FIXED.tags], np.float32)
        assert np.allclose(got, expected, atol=2e-3)


# ---- snapshots -----------------------------------------------------------------------------

BAD = [('{"text": 0.5, "image": 0.5, "tags": 0.5}', "sum to 1"),
       ('{"text": 1.1, "image": -0.1, "tags": 0.0}', "non-negative"),
       ('{"text": NaN, "image": 0.5, "tags": 0.5}', "finite"),
       ('[0.5, 0.5]', "three numbers"),
       ("text=0.5", "not readable")]


@pytest.mark.parametrize(("raw", "why"), BAD)
def test_bad_fusion_weights_in_a_snapshot_are_a_snapshot_error(raw, why):
    with pytest.raises(SnapshotError, match=f"student student-v7: bad fusion weights: .*{why}"):
        snapshot_fusion({FUSION_WEIGHTS: raw}, "student-v7")
    assert snapshot_fusion({"config": "{}"}, "student-v1") == FIXED  # none: the fixed ones


def test_the_trained_snapshot_carries_the_chosen_weights():
    from streamrec.training.distill import train_models

    log, content = clicks_world("tags", rounds=8)
    cfg = TrainConfig(teacher_epochs=1, student_epochs=(1, 0), batch=64, negatives=63)
    trained = train_models(log, content, cfg=cfg)
    _, meta = trained.student_snapshot()
    assert snapshot_fusion(meta, "x") == trained.fusion.chosen
    assert trained.scores["content_learned_hr_at_10"] == trained.fusion.learned_hr
    assert trained.scores["content_fixed_hr_at_10"] == trained.fusion.fixed_hr


# ---- served by a worker's engine (real redis-server) ---------------------------------------

def click(user: str, item: str, ts: float, offset: int) -> Incoming:
    return Incoming(encode(Click(uid("e"), user, item, ts)), "clicks", 0, offset, time.time())


@pytest.mark.integration
async def test_the_engine_puts_a_snapshots_fusion_in_service_with_its_student(redis_client,
                                                                              tmp_path):
    prefix = uid("fusion")
    settings = Settings(redis="unused", app_id=prefix, content=False,
                        snapshot_dir=str(tmp_path))
    engine = build_engine(settings, redis_client, "test")
    await engine.start()
    content = engine.blend.sources["content"]
    text, image, tags, with_image = features(40, seed=3)
    stored = FixedFusion().fuse(text, image, tags, with_image)
    names = [uid("item") for _ in range(40)]
    for name, v in zip(names, stored):
        engine.blend.add_item(name, 0.0, v)
    history = [names[n] for n in (0, 1, 2, 3, 5, 8)]
    assert {bool(with_image[n]) for n in (0, 1, 2, 3, 5, 8)} == {True, False}
    user, offset = uid("user"), 0
    for n, item in enumerate(history):
        await engine.interactions([click(user, item, 100.0 * n, offset)])
        offset += 1

    def reference(weights: FusionWeights) -> np.ndarray:
        """The user's scores from items encoded with ``weights`` in the first place."""
        cs = ContentSource()
        cs.set_embeddings(names, FixedFusion(weights=weights).fuse(text, image, tags,
                                                                   with_image))
        for n, item in enumerate(history):
            cs.learn_one(user, item, 100.0 * n)
        return cs.score_many([user])[0]

    store = SnapshotStore(redis_client, prefix, tmp_path)

    async def publish(meta_extra: dict) -> str:
        tensors, meta = tiny_student(names)
        info = await store.publish("student", tensors, {**meta, **meta_extra})
        await engine.model_updates([Incoming(announcement(info), MODEL_UPDATES, 0, 0,
                                             time.time())])
        return info.version

    # Weights in the snapshot: fetched at the announcement, in service from the next batch,
    # with the student.
    v1 = await publish({FUSION_WEIGHTS: TAGGY.to_json()})
    assert content.fusion == FIXED and engine.students.version is None
    await engine.interactions([click(uid("other"), names[30], 700.0, offset)])
    offset += 1
    assert engine.students.version == v1 and content.fusion == TAGGY
    got = content.score_many([user])[0]
    assert np.allclose(got, reference(TAGGY), atol=1e-5)
    assert not np.allclose(got, reference(FIXED), atol=1e-3)

    # A profile read back from Redis keeps the text of its items without an image apart.
    other = build_engine(settings, redis_client, "test-2")
    await other.start()
    await other.state.before_batch([user], [])
    assert np.allclose(other.blend.sources["content"].imageless[user], content.imageless[user])

    # Bad weights: the whole snapshot is refused, with the reason; student and weights stay.
    bad = await publish({FUSION_WEIGHTS: '{"text": 0.9, "image": 0.9, "tags": -0.8}'})
    await engine.interactions([click(uid("other"), names[31], 800.0, offset)])
    offset += 1
    assert "bad fusion weights" in engine.students.rejected[bad]
    assert engine.students.version == v1 and content.fusion == TAGGY

    # A snapshot without weights: the fixed fusion, and the scores of before.
    v3 = await publish({})
    await engine.interactions([click(uid("other"), names[32], 900.0, offset)])
    assert engine.students.version == v3 and content.fusion == FIXED
    assert np.allclose(content.score_many([user])[0], reference(FIXED), atol=1e-5)
