"""The online models alone, without Kafka or Redis."""

import numpy as np
import pytest
import torch

from streamrec.evaluation.prequential import prequential
from streamrec.models.base import Recommendation
from streamrec.models.blend import Blend
from streamrec.models.candidates import head_by_score, smallest_per_row
from streamrec.models.catalog import Catalog
from streamrec.models.content import ContentSource
from streamrec.models.covisitation import CoVisitation
from streamrec.models.freshness import Freshness
from streamrec.models.index import EmbeddingIndex
from streamrec.models.isgd import ISGD
from streamrec.models.popularity import EPOCH_HALF_LIVES, DecayedPopularity
from streamrec.models.river_mf import RiverBiasedMF
from streamrec.records.events import Click, Retire, Upload, View


def test_popularity_halves_per_half_life_and_survives_epoch_changes():
    pop = DecayedPopularity(half_life_s=10.0)
    pop.learn_one("u", "a", ts=0.0)
    assert pop.score_all(None, now=10.0)[0] == pytest.approx(0.5)
    far = 10.0 * EPOCH_HALF_LIVES * 1.5  # crosses an epoch boundary
    pop.learn_one("u", "b", ts=far)
    s = pop.score_all(None, now=far)
    assert s[1] == pytest.approx(1.0) and s[0] < 1e-100
    assert np.isfinite(s).all()


def test_covisitation_neighbour_lists_stay_bounded():
    cv = CoVisitation(max_neighbours=5, window=50)
    for t in range(200):
        cv.learn_one("u", f"i{t}", ts=float(t))
    assert max(len(nb) for nb in cv.neighbours.values()) <= 10  # pruned at 2x, to 1x


def test_river_mf_scores_equal_predict_one_for_every_item():
    mf = RiverBiasedMF(n_factors=4)
    rng = np.random.default_rng(0)
    for _ in range(300):
        mf.learn_one(f"u{rng.integers(5)}", f"i{rng.integers(20)}", 0.0, bool(rng.random() < 0.5))
    s = mf.score_all("u1")
    for j, item in enumerate(mf.catalog.ids):
        assert s[j] == pytest.approx(mf.model.predict_one("u1", item))


def test_isgd_pulls_co_consumed_items_together():
    mf = ISGD(n_factors=8, seed=3)
    for _ in range(50):
        for u in range(10):
            group = "ab" if u < 5 else "xy"
            for item in group:
                mf.learn_one(f"u{u}", item, 0.0)
    for _ in range(20):
        mf.learn_one("new", "a", 0.0)
    best = mf.recommend("new", k=1, exclude=["a"])[0][0]
    assert best == "b"


def test_blend_never_recommends_seen_items_and_names_sources():
    blend = Blend(Catalog())
    for t in range(60):
        blend.learn_one(f"u{t % 3}", f"i{t % 40}", float(t), clicked=t % 2 == 0)
    recs = blend.recommend("u0", k=10, now=60.0)
    seen = {blend.catalog.ids[j] for j in blend.seen["u0"]}
    assert recs and not {r.item_id for r in recs} & seen
    assert all(r.sources for r in recs)


class Leaker:
    """Cheats: recommends the last item it learned, ignoring exclusions. If the protocol
    scored a click against a list computed after the view of the same item, it would hit."""

    last = None

    def learn_one(self, user, item, ts, clicked=True):
        self.last = item

    def recommend(self, user, k, exclude, now):
        return [Recommendation(self.last, 1.0, ("leaker",))] if self.last else []


def test_prequential_scores_a_click_against_the_list_before_its_view():
    log = [View("e1", "u", "x", 1.0), Click("e2", "u", "x", 2.0),
           View("e3", "v", "y", 3.0), Click("e4", "w", "y", 4.0)]
    res = prequential(log, {"leaker": Leaker()})
    assert res["clicks"] == 2
    # u's click on x is scored before u's view of x (a miss); w never viewed y, so w's click is
    # scored just before it, when the leaker names y (a fair hit: v's view of y came first).
    assert res["models"]["leaker"]["hr_at_10"] == 0.5


class Oracle:
    """Recommends the item it is told will be clicked next."""

    def __init__(self, answers):
        self.answers = answers

    def learn_one(self, user, item, ts, clicked=True):
        pass

    def recommend(self, user, k, exclude, now):
        return [Recommendation(self.answers[user], 1.0, ("oracle",))]

    def add_item(self, item, ts, embedding=None, tags=()):
        pass


def test_prequential_tells_clicks_on_new_items_from_other_cold_clicks():
    # Over a 1,000 s log, "new" means uploaded at most 10 s before the first click on it.
    log = [Upload("e0", "old", "c", 0.0, "old item"), Click("e1", "u", "old", 500.0),
           Upload("e2", "fresh", "c", 995.0, "fresh item"), Click("e3", "v", "fresh", 1000.0),
           Click("e4", "w", "fresh", 1000.0)]
    res = prequential(log, {"oracle": Oracle({"u": "nothing", "v": "fresh", "w": "fresh"})})
    assert res["new_item_window_s"] == 10.0
    assert (res["clicks"], res["cold_clicks"], res["new_item_clicks"]) == (3, 2, 1)
    m = res["models"]["oracle"]
    assert m["cold_hr_at_10"] == 0.5  # u's first click on "old" missed, v's on "fresh" hit
    assert m["new_item_hr_at_10"] == 1.0  # only v's click counts: w's item was clicked before


def test_prequential_retires_items_as_a_worker_does():
    # "hit" is popular, then retired: the popularity source forgets it, and the clicks on it
    # that follow (stale pages) are neither learned nor scored.
    log = [Upload("e0", "hit", "c", 0.0, "hit"), Upload("e1", "other", "c", 0.0, "other")]
    log += [Click(f"c{n}", f"fan{n}", "hit", 1.0 + n) for n in range(5)]
    log += [Click("c9", "fan9", "other", 7.0), Retire("r", "hit", 8.0)]
    log += [Click("c10", "late", "hit", 9.0), Click("c11", "u", "other", 10.0)]
    pop = DecayedPopularity()
    res = prequential(log, {"popularity": pop})
    assert res["clicks"] == 7  # c10 is not scored
    assert pop.score_all(None, 10.0)[pop.catalog.index["hit"]] == 0.0
    assert [r.item_id for r in pop.recommend("anyone", 5, (), 10.0)] == ["other"]


def test_blend_proposes_content_matches_nobody_has_clicked_beside_warm_ones():
    catalog = Catalog()
    content = ContentSource(catalog, dim=2)
    blend = Blend(catalog, sources=[content], per_source=2, cold_per_source=1)
    for n, angle in enumerate([0.0, 0.05, 0.1]):  # warm items right on the user's taste
        blend.add_item(f"warm{n}", 0.0, np.array([np.cos(angle), np.sin(angle)]))
        blend.learn_one(f"fan{n}", f"warm{n}", 1.0)
    blend.add_item("cold", 2.0, np.array([np.cos(0.3), np.sin(0.3)]))  # near, never clicked
    blend.add_item("far", 2.0, np.array([-1.0, 0.0]))
    blend.learn_one("ann", "warm2", 3.0)
    recs = {r.item_id: r.sources for r in blend.recommend("ann", k=10, now=3.0)}
    # The content source's top two are the warm items; the cold one comes as its cold proposal.
    assert recs == {"warm0": ("content",), "warm1": ("content",), "cold": ("content",)}
    blend.cold_per_source = 0
    assert {r.item_id for r in blend.recommend("ann", k=10, now=3.0)} == {"warm0", "warm1"}


def test_content_similarity_ignores_a_direction_every_item_shares():
    # Encoder outputs share a large common component, and raw cosines reward it; the index
    # centres on the catalogue's mean, so shifting every vector by one offset changes nothing.
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(50, 16))
    offset = 4.0 * rng.normal(size=16)
    plain, shifted = EmbeddingIndex(16, prior_items=0), EmbeddingIndex(16, prior_items=0)
    for j, v in enumerate(vectors):
        plain.add(j, v)
        shifted.add(j, v + offset)
    order = plain.search(vectors[7], k=50)
    assert order[0, 0] == 7
    assert (shifted.search(vectors[7] + offset, k=50) == order).all()
    raw = (vectors + offset) @ (vectors[7] + offset) / np.linalg.norm(vectors + offset, axis=1)
    assert (np.argsort(-raw) != order[0]).any()  # what the raw cosine would have ranked


@pytest.mark.parametrize("threads", [1, 2])
def test_each_rows_smallest_match_a_partition_whichever_library_selects(threads):
    rng = np.random.default_rng(5)
    a = rng.permutation(40 * 2600).reshape(40, 2600).astype(np.float32)  # no ties
    a[:, rng.choice(2600, 300, replace=False)] = np.inf  # banned items
    a[3] = np.inf  # a user with every item banned: any k columns will do
    was = torch.get_num_threads()
    torch.set_num_threads(threads)  # one thread: torch.topk; more: numpy (see the function)
    try:
        for k in (1, 25, 2600):
            got = smallest_per_row(a, k)
            assert got.shape == (40, k)
            expected = np.sort(np.partition(a, k - 1, axis=1)[:, :k], axis=1)
            assert (np.sort(np.take_along_axis(a, got, axis=1), axis=1) == expected).all()
            assert all(len(set(row)) == k for row in got.tolist())
    finally:
        torch.set_num_threads(was)


def test_shortcuts_to_the_shared_sources_order_match_a_full_stable_sort():
    rng = np.random.default_rng(3)
    scores = np.round(rng.random(500), 2)  # many ties
    scores[rng.choice(500, 100, replace=False)] = 0.0
    full = np.argsort(-scores, kind="stable")
    for h in (1, 25, 137, 500):
        head = head_by_score(scores, h)
        # Equal up to ties at the cut, where any tied item may fill the last places.
        cut = scores[full[h - 1]]
        assert (scores[head] == scores[full[:h]]).all()
        assert (head[scores[head] > cut] == full[:h][scores[full[:h]] > cut]).all()
    cat = Catalog()
    fresh = Freshness(cat, half_life_s=60.0, max_age_s=600.0)
    for j, ts in enumerate(rng.choice([0.0, 50.0, 100.0, 300.0, 1000.0, 1200.0], 200)):
        fresh.add_item(f"item{j}", float(ts))
    for now in (100.0, 1000.0, 5000.0):
        v, order = fresh.ranked_all(now)
        expected = np.argsort(-v, kind="stable")
        scored = v[expected] > 0  # the order of items too old to score does not matter
        assert (order[: scored.sum()] == expected[scored]).all()
    fresh.add_item("late", 2000.0)  # a new item: the cached order is rebuilt
    assert cat.ids[fresh.ranked_all(1500.0)[1][0]] == "late"


def test_content_profile_halves_per_half_life_in_clicks_and_ignores_views_by_default():
    def weight(cs):
        return cs.profiles["ann"][1]

    cs = ContentSource(dim=2, half_life_s=1e12, half_life_clicks=2.0)
    cs.set_embedding("a", np.array([1.0, 0.0]))
    cs.set_embedding("b", np.array([0.0, 1.0]))
    cs.learn_one("ann", "a", ts=0.0)
    cs.learn_one("ann", "b", ts=1.0, clicked=False)  # a view: no weight, no decay
    assert weight(cs) == pytest.approx(1.0)
    cs.learn_one("ann", "b", ts=2.0)
    cs.learn_one("ann", "b", ts=3.0)
    assert weight(cs) == pytest.approx(0.5 + 2 ** -0.5 + 1.0)  # a: two clicks ago, halved
    # A click whose embedding lands late counts as of its own click, however late it lands.
    late = ContentSource(dim=2, half_life_s=1e12, half_life_clicks=2.0)
    late.set_embedding("b", np.array([0.0, 1.0]))
    late.learn_one("ann", "a", ts=0.0)  # "a" not encoded yet
    late.learn_one("ann", "b", ts=2.0)
    late.learn_one("ann", "b", ts=3.0)
    late.set_embedding("a", np.array([1.0, 0.0]), ts=4.0)
    assert weight(late) == pytest.approx(weight(cs))
    assert np.allclose(late.profiles["ann"][0], cs.profiles["ann"][0])
    # half_life_clicks=None: time alone decays, as views weigh view_weight.
    plain = ContentSource(dim=2, half_life_s=1e12, half_life_clicks=None, view_weight=0.3)
    plain.set_embedding("a", np.array([1.0, 0.0]))
    for ts in range(3):
        plain.learn_one("ann", "a", ts=float(ts))
    plain.learn_one("ann", "a", ts=3.0, clicked=False)
    assert weight(plain) == pytest.approx(3.3)


def test_a_click_ranks_the_views_waiting_for_their_label_below_it_at_once():
    def blend_learning(on_click: bool):
        catalog = Catalog()
        blend = Blend(catalog, sources=[Freshness(catalog)], per_source=5, new_item_slots=0,
                      view_negatives_on_click=on_click)
        for n in range(5):
            blend.add_item(f"i{n}", float(n))
        blend.recommend("ann", k=5, now=5.0)
        pairs = []
        blend.ranker.learn_pair = lambda better, worse, weight=1.0: pairs.append(weight)
        blend.learn_one("ann", "i4", 6.0, clicked=False)
        blend.learn_one("ann", "i3", 7.0, clicked=False)
        blend.learn_one("ann", "i2", 8.0, clicked=False)
        blend.learn_one("ann", "i2", 9.0)  # the clicked item's own view is no negative
        return blend, pairs

    blend, pairs = blend_learning(True)
    # 4 random other candidates, then the two views passed over, at the views' weight.
    assert pairs == [1.0] * 4 + [blend.view_negative_weight] * 2
    assert not blend._pending and not blend._pending_of
    blend.learn_one("ann", "i0", 1e6, clicked=False)  # the window expires: nothing twice
    assert len(pairs) == 6
    blend, pairs = blend_learning(False)
    assert pairs == [1.0] * 4 and len(blend._pending) == 2
