"""The simple baselines every evaluation reports, on logs small enough to work out by hand."""

from __future__ import annotations

import pytest

from streamrec.evaluation.prequential import default_models
from streamrec.models.baseline_cooccurrence import CoOccurrenceBaseline
from streamrec.models.baseline_tags import TagCountBaseline


def ranked(model, user: str, exclude=()) -> list[tuple[str, float]]:
    return [(r.item_id, round(r.score, 4)) for r in model.recommend(user, 10, exclude, 0.0)]


def test_tag_counts_then_popularity():
    b = TagCountBaseline(popularity_weight=0.1)
    for item, tags in [("a", ["jazz"]), ("b", ["Jazz"]), ("c", ["rock"]), ("d", ["jazz", "rock"]),
                       ("e", ["pop"])]:
        b.add_item(item, 0.0, tags=tags)
    for user, item in [("ann", "a"), ("bob", "c"), ("cid", "c"), ("dan", "e"), ("eve", "e"),
                       ("fay", "e")]:
        b.learn_one(user, item, 0.0)
    b.learn_one("ann", "c", 0.0, clicked=False)  # a view: popularity, not ann's tags
    # ann's counts: jazz 1. Popularity: e 3, c 2.5 (two clicks and a view at 0.5), a 1.
    # b: 1 + 0; d: 1/sqrt(2) + 0; e: 0 + 0.1 * 3/3; c is seen.
    assert ranked(b, "ann", ["a", "c"]) == [("b", 1.0), ("d", 0.7071), ("e", 0.1)]
    # No tag yet: popularity alone (b and d have none: no opinion).
    assert ranked(b, "zed") == [("e", 0.1), ("c", 0.0833), ("a", 0.0333)]


def test_tag_counts_follow_every_click():
    b = TagCountBaseline(popularity_weight=0.0)
    for item, tags in [("a", ["jazz"]), ("b", ["rock"]), ("c", ["jazz"]), ("d", ["rock"]),
                       ("e", ["rock"])]:
        b.add_item(item, 0.0, tags=tags)
    for item in ("a", "b", "d"):  # jazz 1, rock 2
        b.learn_one("ann", item, 0.0)
    assert ranked(b, "ann", ["a", "b", "d"]) == [("e", 0.6667), ("c", 0.3333)]


def test_items_co_clicked_then_popularity():
    b = CoOccurrenceBaseline(popularity_weight=0.1)
    for user, items in {"ann": ["tea", "cake"], "bob": ["tea", "cake"], "cid": ["tea", "jam"],
                        "dan": ["tea", "scone"]}.items():
        for item in items:
            b.learn_one(user, item, 0.0)
    b.learn_one("eve", "tea", 0.0)
    # Pairs: tea-cake 2, tea-jam 1, tea-scone 1. Popularity: tea 5, cake 2, jam 1, scone 1.
    assert ranked(b, "eve", ["tea"]) == [("cake", 2.04), ("jam", 1.02), ("scone", 1.02)]


def test_co_clicks_count_only_within_the_window_and_views_do_not_pair():
    b = CoOccurrenceBaseline(window=2, popularity_weight=0.1)
    for item in ("x1", "x2", "x3", "x4"):  # x4 comes three clicks after x1: too far
        b.learn_one("ann", item, 0.0)
    b.learn_one("ann", "y", 0.0, clicked=False)
    b.learn_one("bob", "x1", 0.0)
    # Pairs of x1: x2 1, x3 1. Popularity: x1 2, x2-x4 1, y 0.5.
    assert ranked(b, "bob", ["x1"]) == [("x2", 1.05), ("x3", 1.05), ("x4", 0.05),
                                        ("y", 0.025)]


@pytest.mark.parametrize("name", ["popularity", "baseline_tags", "baseline_cooccurrence"])
def test_every_evaluation_has_the_baselines(name):
    assert name in default_models()


def test_only_the_blend_without_freshness_leaves_an_unclicked_upload_out():
    models = default_models()
    rows = {n: models[n] for n in ("blend", "blend_no_content", "blend_no_content_no_fresh")}
    assert not {"fresh", "content", "tags"} & rows["blend_no_content_no_fresh"].sources.keys()
    for m in rows.values():
        for j in range(5):
            m.add_item(f"old{j}", ts=0.0)
        for u in range(6):  # the old items earn clicks; "new" is uploaded after them
            m.learn_one(f"u{u}", f"old{u % 5}", ts=1.0 + u)
        m.add_item("new", ts=10.0)
    listed = {n: [r.item_id for r in m.recommend("u9", k=6, now=11.0)] for n, m in rows.items()}
    assert "new" in listed["blend_no_content"]
    assert "new" not in listed["blend_no_content_no_fresh"]
    assert set(listed["blend_no_content_no_fresh"]) == {f"old{j}" for j in range(5)}
