"""The contract every candidate source and the blend keep, as checks a new model must pass
(in the spirit of river's ``check_estimator``): ``tests/test_conformance.py`` runs them over
every model, so one that breaks the contract fails the suite.

A model here is built by a factory taking a seed, learns with ``learn_one(user, item, ts,
clicked)``, takes uploads with ``add_item(item, ts, embedding, tags)``, drops a user with
``forget_user(user)`` and a retired item with ``forget_item(item)``, and answers
``recommend(user, k, exclude, now)`` with a list of
:class:`~streamrec.models.base.Recommendation`.

>>> from streamrec.models.popularity import DecayedPopularity
>>> check_model(lambda seed: DecayedPopularity())
"""

from __future__ import annotations

import inspect
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from streamrec.models.base import Recommendation

Factory = Callable[[int], Any]

#: Dimension of the content vectors the checks upload items with.
CONTENT_DIM = 128


def stream(seed: int = 0, n_users: int = 12, n_items: int = 30, n_events: int = 400,
           dim: int = CONTENT_DIM) -> Iterator[tuple[str, tuple]]:
    """A small deterministic log: uploads (with unit content vectors and a topic tag) then
    views and clicks with some taste structure; ``("upload", (item, ts, vector, tags))`` or
    ``("event", (user, item, ts, clicked))``."""
    rng = np.random.default_rng(seed)
    topics = rng.integers(0, 3, n_items)
    centres = rng.normal(size=(3, dim))
    for j in range(n_items):
        v = centres[topics[j]] + 0.3 * rng.normal(size=dim)
        yield "upload", (f"item{j}", float(j), (v / np.linalg.norm(v)).astype(np.float32),
                         (f"topic{topics[j]}",))
    taste = rng.integers(0, 3, n_users)
    for n in range(n_events):
        u = int(rng.integers(n_users))
        mine = np.flatnonzero(topics == taste[u])
        j = int(rng.choice(mine)) if rng.random() < 0.8 else int(rng.integers(n_items))
        yield "event", (f"user{u}", f"item{j}", float(n_items + n), bool(rng.random() < 0.3))


def feed(model: Any, seed: int = 0) -> dict[str, list[str]]:
    """Run :func:`stream` through ``model`` (content vectors of its ``content_dim``, if it has
    one); returns each user's items in order."""
    history: dict[str, list[str]] = {}
    for kind, args in stream(seed, dim=getattr(model, "content_dim", CONTENT_DIM)):
        if kind == "upload":
            model.add_item(*args)
        else:
            model.learn_one(*args)
            history.setdefault(args[0], []).append(args[1])
    return history


NOW = 1_000.0


def check_unseen_users_and_items(make: Factory) -> None:
    """An empty model and a user or item it never saw get answers, not errors."""
    empty = make(0)
    assert empty.recommend("nobody", 5, (), NOW) == [], "an empty catalogue has no list"
    model = make(0)
    feed(model)
    for rec in model.recommend("a-new-user", 5, (), NOW):
        assert isinstance(rec, Recommendation)
    model.learn_one("a-new-user", "an-unseen-item", NOW, True)
    model.add_item("another-unseen-item", NOW, None)
    model.recommend("a-new-user", 5, (), NOW)


def check_lists_are_well_formed(make: Factory) -> None:
    """At most ``k`` distinct known items, best first, each with the sources that proposed it."""
    model = make(0)
    history = feed(model)
    for user in history:
        recs = model.recommend(user, 7, (), NOW)
        assert len(recs) <= 7
        ids = [r.item_id for r in recs]
        assert len(set(ids)) == len(ids), f"{user}: an item twice"
        assert all(r.sources and all(isinstance(s, str) for s in r.sources) for r in recs)
        assert all(np.isfinite(r.score) for r in recs)


def check_excluded_items_are_never_proposed(make: Factory) -> None:
    """Items the caller excludes (those the user has seen) never appear."""
    model = make(0)
    history = feed(model)
    for user, items in history.items():
        seen = set(items)
        got = {r.item_id for r in model.recommend(user, 20, seen, NOW)}
        assert not got & seen, f"{user}: seen items proposed: {sorted(got & seen)}"


def check_deterministic_under_a_seed(make: Factory) -> None:
    """Two models from the same seed, fed the same log, give the same lists."""
    a, b = make(3), make(3)
    history = feed(a)
    feed(b)
    for user in history:
        assert a.recommend(user, 10, (), NOW) == b.recommend(user, 10, (), NOW), user


def check_a_forgotten_user_is_a_new_user(make: Factory) -> None:
    """After ``forget_user`` (a worker dropping an idle user from memory), the user gets the
    list a user never seen gets, and nobody else's list changes."""
    model = make(0)
    history = feed(model)
    gone, *others = sorted(history)
    before = {u: model.recommend(u, 10, (), NOW) for u in others}
    model.forget_user(gone)
    model.forget_user("somebody-never-seen")
    assert model.recommend(gone, 10, (), NOW) == model.recommend("a-new-user", 10, (), NOW), \
        f"{gone} is still known after forget_user"
    assert {u: model.recommend(u, 10, (), NOW) for u in others} == before


def check_a_forgotten_item_is_never_proposed_again(make: Factory) -> None:
    """After ``forget_item`` (a retired item), no list holds the item, neither at once nor
    after more learning, and a model that scores the catalogue has no opinion on it (its
    state is gone, not merely filtered); forgetting an item never seen changes no list."""
    model = make(0)
    history = feed(model)
    users = sorted(history)
    before = {u: model.recommend(u, 10, (), NOW) for u in users}
    model.forget_item("an-item-never-seen")
    assert {u: model.recommend(u, 10, (), NOW) for u in users} == before, \
        "forgetting an unknown item changed lists"
    proposed = Counter(r.item_id for recs in before.values() for r in recs)
    assert proposed, "nothing to forget: no list holds an item"
    gone = proposed.most_common(1)[0][0]
    model.forget_item(gone)

    def assert_gone(when: str) -> None:
        for user in [*users, "a-new-user"]:
            got = [r.item_id for r in model.recommend(user, 30, (), NOW)]
            assert gone not in got, f"{gone} still proposed to {user} {when} forget_item"
        if hasattr(model, "score_many") and hasattr(model, "floor"):
            s = np.asarray(model.score_many(users, NOW), np.float64)[:, model.catalog.index[gone]]
            assert np.all(~np.isfinite(s) | (s <= model.floor)), \
                f"{gone} still scored {when} forget_item: {s.max()}"

    assert_gone("right after")
    model.forget_item(gone)  # twice: no error
    for kind, args in stream(1, dim=getattr(model, "content_dim", CONTENT_DIM)):
        if kind == "event" and args[1] != gone:  # the engine drops a retired item's events
            model.learn_one(*args)
    assert_gone("after learning more since")


def check_retrieval_agrees_with_whole_catalogue(make: Factory) -> None:
    """Scored as if the catalogue were too large to score whole (``exact_below`` 0: indexes,
    sparse and incremental paths), a source gives every pair the score the whole-catalogue
    path gives it and proposes the same best items (the check's catalogue is small enough
    for its index to be exact), and a blend gives the same lists."""
    model = make(0)
    history = feed(model)
    users = sorted(history) + ["a-new-user"]
    if hasattr(model, "search_exactly_below"):
        before = [model.recommend(u, 10, (), NOW) for u in users]
        model.search_exactly_below(0)
        after = [model.recommend(u, 10, (), NOW) for u in users]
        same = np.mean([len({r.item_id for r in a} & {r.item_id for r in b}) / max(len(a), 1)
                        for a, b in zip(before, after)])
        assert same >= 0.9, f"retrieval lists share {same:.0%} of the whole-catalogue lists"
        return
    if not hasattr(model, "scores_for") or not model.active:
        return
    from streamrec.models.candidates import Banned

    n = len(model.catalog)
    whole = model.scores_for(users, NOW)
    model.exact_below = 0
    large = model.scores_for(users, NOW)
    rows = np.repeat(np.arange(len(users)), n)
    items = np.tile(np.arange(n), len(users))
    expected = np.asarray(whole.pairs(rows, items), np.float64)
    got = np.asarray(large.pairs(rows, items), np.float64)
    assert np.allclose(np.where(np.isfinite(expected), expected, -1e9),
                       np.where(np.isfinite(got), got, -1e9), rtol=1e-4, atol=1e-5), model.name
    nothing = Banned(n, [np.empty(0, np.int64)] * len(users))
    # An index may store its rows in float16: a near tie can then go either way, so the items
    # proposed must be as good as the exact ones up to that precision, not the same ones.
    for k in (1, 5):
        for sc in (whole, large):
            r, t = sc.top(k, nothing)
            best = [sorted(expected.reshape(len(users), n)[u][t[r == u]].tolist())
                    for u in range(len(users))]
            if sc is whole:
                want = best
        assert all(len(b) == len(w) and np.allclose(b, w, rtol=0, atol=2e-3)
                   for b, w in zip(best, want)), f"{model.name} proposes other items at k={k}"


def check_docstring_example(make: Factory) -> None:
    """The model's class documents itself with an example (run by the doctests)."""
    cls = type(make(0))
    doc = inspect.getdoc(cls) or ""
    module_doc = inspect.getdoc(inspect.getmodule(cls)) or ""
    assert ">>>" in doc or ">>>" in module_doc, f"{cls.__name__} has no docstring example"


CHECKS = [check_unseen_users_and_items, check_lists_are_well_formed,
          check_excluded_items_are_never_proposed, check_deterministic_under_a_seed,
          check_a_forgotten_user_is_a_new_user, check_a_forgotten_item_is_never_proposed_again,
          check_retrieval_agrees_with_whole_catalogue,
          check_docstring_example]


def check_model(make: Factory) -> None:
    """Run every check of the contract on the models ``make(seed)`` builds."""
    for check in CHECKS:
        check(make)
