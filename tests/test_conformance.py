"""Every candidate source and the blend keep one contract (streamrec/models/checks.py); the blend's
state written to Redis and read back by a second worker gives the same lists."""

from __future__ import annotations

import json

import numpy as np
import pytest

from streamrec.engine.shared_state import SharedState
from streamrec.models import checks
from streamrec.models.base import CandidateSource
from streamrec.models.baseline_cooccurrence import CoOccurrenceBaseline
from streamrec.models.baseline_tags import TagCountBaseline
from streamrec.models.blend import Blend
from streamrec.models.content import ContentSource
from streamrec.models.covisitation import CoVisitation
from streamrec.models.freshness import Freshness
from streamrec.models.isgd import ISGD
from streamrec.models.popularity import DecayedPopularity
from streamrec.models.river_mf import RiverBiasedMF
from streamrec.models.student import StudentSource
from streamrec.models.student_scorer import StudentScorer
from streamrec.models.tag_profile import TagProfile
from streamrec.models.trending import Trending

from conftest import uid


def student(seed: int) -> StudentSource:
    """A student in service: identity towers over 2-d content (as in its docstring)."""
    t = {"ids.weight": np.zeros((3, 2)), "bias.weight": np.zeros((3, 1)),
         "behaviour": np.zeros((3, 3)), "item1.weight": np.eye(4, 7),
         "item1.bias": np.zeros(4), "item2.weight": np.eye(4), "item2.bias": np.zeros(4),
         "recency": np.zeros(2), "user.weight": np.eye(4), "user.bias": np.zeros(4),
         "prior.weight": np.zeros((4, 2)), "kind_weight": np.zeros(2)}
    src = StudentSource(content_dim=2)
    src.swap(StudentScorer(t, {"config": "{}", "item_ids": json.dumps(["a", "b"])}, "v1"))
    return src


MODELS = {
    "popularity": lambda seed: DecayedPopularity(half_life_s=600.0),
    "covisitation": lambda seed: CoVisitation(),
    "isgd": lambda seed: ISGD(seed=seed),
    "freshness": lambda seed: Freshness(half_life_s=600.0),
    "content": lambda seed: ContentSource(),
    "river_biasedmf": lambda seed: RiverBiasedMF(seed=seed),
    "student": student,
    "blend": lambda seed: Blend(seed=seed),
    "tags": lambda seed: TagProfile(),
    "trending": lambda seed: Trending(half_life_s=600.0),
    "baseline_tags": lambda seed: TagCountBaseline(),
    "baseline_cooccurrence": lambda seed: CoOccurrenceBaseline(),
}


@pytest.mark.parametrize("check", checks.CHECKS, ids=lambda c: c.__name__)
@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_model_keeps_the_contract(name, check):
    check(MODELS[name])


def test_the_blend_never_proposes_what_a_user_has_seen():
    blend = Blend(seed=0)
    history = checks.feed(blend)
    for user, items in history.items():
        got = {r.item_id for r in blend.recommend(user, 20, (), checks.NOW)}
        assert not got & set(items), user


def test_a_check_fails_a_model_that_breaks_the_contract():
    class Repeats(DecayedPopularity):
        """Proposes its best item twice, excluded or not."""

        def recommend(self, user, k=10, exclude=(), now=0.0):
            recs = super().recommend(user, k, (), now)
            return recs[:1] * 2

    with pytest.raises(AssertionError, match="seen items proposed"):
        checks.check_excluded_items_are_never_proposed(lambda seed: Repeats())
    with pytest.raises(AssertionError, match="an item twice"):
        checks.check_lists_are_well_formed(lambda seed: Repeats())

    class Remembers(CoVisitation):
        """Keeps a user's recent items after being told to forget them."""

        def forget_user(self, user):
            pass

    with pytest.raises(AssertionError, match="still known after forget_user"):
        checks.check_a_forgotten_user_is_a_new_user(lambda seed: Remembers())

    class Ignores(DecayedPopularity):
        """Neither bans nor forgets a retired item."""

        def forget_item(self, item):
            pass

    with pytest.raises(AssertionError, match="still proposed"):
        checks.check_a_forgotten_item_is_never_proposed_again(lambda seed: Ignores())

    class Hoards(DecayedPopularity):
        """Bans a retired item through the catalogue but keeps its counts."""

        def forget_item(self, item):
            CandidateSource.forget_item(self, item)

    with pytest.raises(AssertionError, match="still scored"):
        checks.check_a_forgotten_item_is_never_proposed_again(lambda seed: Hoards())


def test_a_retired_item_stays_out_of_the_blend_whatever_reaches_it():
    """Its later clicks are not learned, and neighbour lists read from elsewhere (another
    worker's, not yet swept) lose it, so no user's list holds it."""
    blend = Blend(seed=0)
    history = checks.feed(blend)
    gone = "item3"
    blend.forget_item(gone, ts=checks.NOW)
    co = blend.sources["covisitation"]
    j = blend.catalog.index[gone]
    assert all(j not in nb.pos for nb in co.neighbours.values())
    for user in history:  # a burst of clicks on it from stale pages
        blend.learn_one(user, gone, checks.NOW + 1, True)
    assert blend.item_counts.clicks_of(np.array([j]))[0] == 0
    assert all(j not in nb.pos for nb in co.neighbours.values())
    other = blend.catalog.index["item4"]
    co.set_neighbours(other, np.array([j, 5]), np.array([9.0, 1.0]))  # as loaded from Redis
    assert j not in co.neighbours[other].pos
    for user in history:
        assert gone not in {r.item_id for r in blend.recommend(user, 30, (), checks.NOW + 2)}


@pytest.mark.integration
async def test_the_blend_written_to_redis_and_read_back_gives_the_same_lists(redis_client):
    prefix = uid("conformance")
    writer = SharedState(redis_client, Blend(seed=0), prefix=prefix, worker="a",
                         content_version="test")
    await writer.load()
    history: dict[str, list[str]] = {}
    for kind, args in checks.stream(1):
        if kind == "upload":
            item, ts, vector, tags = args
            writer.blend.add_item(item, ts, vector, tags)
            await writer.cache.put_many([item], vector[None, :])
            await writer.register_items([(item, ts, json.dumps({"tags": tags}).encode())])
        else:
            writer.blend.learn_one(*args)
            writer.touched_users.add(args[0])
            history.setdefault(args[0], []).append(args[1])
    await writer.write_back({}, {})
    await writer.save_ranker()

    reader = SharedState(redis_client, Blend(seed=0), prefix=prefix, worker="b",
                         content_version="test")
    await reader.load()
    await reader.before_batch(list(history), ())
    for user in history:
        mine = writer.blend.recommend(user, 10, (), checks.NOW)
        theirs = reader.blend.recommend(user, 10, (), checks.NOW)
        assert [r.item_id for r in theirs] == [r.item_id for r in mine], user
        # The users' profiles and the items' tags travelled (embeddings as float16).
        for name, tolerance in (("tags", 1e-6), ("content", 5e-3)):
            assert by_item(reader.blend.sources[name], user) == pytest.approx(
                by_item(writer.blend.sources[name], user), abs=tolerance), (name, user)


def by_item(source, user: str) -> dict[str, float]:
    """A source's scores for ``user``, by item id (catalogue indices differ between workers)."""
    scores = source.score_all(user, checks.NOW)
    return {i: float(v) for i, v in zip(source.catalog.ids, scores) if np.isfinite(v)}
