"""Retrieval for catalogues too large to score whole: the banned items kept as keys, the faiss
inverted file against exact search as vectors change and leave, and the incremental orders
of popularity and freshness against sorting the catalogue again."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from streamrec.models import candidates
from streamrec.models.blend import Blend
from streamrec.models.candidates import Banned, SharedScores
from streamrec.models.checks import stream
from streamrec.models.freshness import Freshness
from streamrec.models.popularity import DecayedPopularity
from streamrec.models.vector_search import VectorScores, VectorSearch


@pytest.mark.parametrize("seed", range(20))
def test_banned_keys_answer_as_the_mask_does(seed, monkeypatch):
    rng = np.random.default_rng(seed)
    n, users = int(rng.integers(5, 80)), int(rng.integers(1, 7))
    per_user = [rng.choice(n, int(rng.integers(0, n)), replace=False) for _ in range(users)]
    dense = Banned(n, per_user)
    monkeypatch.setattr(candidates, "DENSE_CELLS", 0)
    keys = Banned(n, per_user)
    assert dense.dense is not None and keys.dense is None
    items = rng.choice(n, int(rng.integers(1, n)), replace=False)
    assert (keys.block(items) == dense.block(items)).all()
    rows, cols = rng.integers(0, users, 50), rng.integers(0, n, 50)
    assert (keys.contains(rows, cols) == dense.contains(rows, cols)).all()
    assert keys.most == dense.most == max(map(len, per_user))
    retired = rng.choice(n, 3, replace=False)  # nobody's
    monkeypatch.setattr(candidates, "DENSE_CELLS", 4_000_000)
    dense = Banned(n, per_user, everyone=retired)
    monkeypatch.setattr(candidates, "DENSE_CELLS", 0)
    keys = Banned(n, per_user, everyone=retired)
    assert (keys.block(items) == dense.block(items)).all()
    assert dense.block(retired).all() and keys.contains(rows * 0, retired[cols % 3]).all()


def clustered(n: int, dim: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(max(1, n // 50), dim))
    x = centres[rng.integers(0, len(centres), n)] + 0.5 * rng.normal(size=(n, dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def exact_top(matrix: np.ndarray, valid: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    S = queries @ matrix.T
    S[:, ~valid] = -np.inf
    return np.argsort(-S, axis=1, kind="stable")[:, :k]


def recall_at_10(found: np.ndarray, matrix: np.ndarray, valid: np.ndarray,
                 queries: np.ndarray) -> float:
    exact = exact_top(matrix, valid, queries, 10)
    return float(np.mean([len(set(f[:10]) & set(e)) / 10 for f, e in zip(found, exact)]))


def move_and_retire(search: VectorSearch, matrix: np.ndarray,
                    valid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows 0-999 moved and 1000-1499 retired, reported as a worker's sources report them."""
    moved = np.arange(0, 1000)
    matrix[moved] = clustered(1000, matrix.shape[1], seed=2)
    search.changed(moved.tolist())
    gone = np.arange(1000, 1500)
    valid[gone] = False
    search.removed(gone.tolist())
    return moved, gone


def test_inverted_file_follows_changed_new_and_removed_vectors():
    n, dim = 20_000, 32
    matrix = clustered(n + 2_000, dim)
    valid = np.zeros(len(matrix), bool)
    valid[:n] = True
    search = VectorSearch(dim, nprobe=32)
    queries = matrix[np.random.default_rng(1).choice(n, 200)] + 0.1
    first = search.search(matrix, valid, n, queries, 10)
    assert search.built and recall_at_10(first, matrix[:n], valid[:n], queries) >= 0.9
    # New items, moved vectors and removed ones.
    valid[n:] = True
    _, gone = move_and_retire(search, matrix, valid)
    m = len(matrix)
    after = search.search(matrix, valid, m, queries, 10)
    assert not np.isin(after, gone).any()
    assert recall_at_10(after, matrix, valid, queries) >= 0.9


def test_lists_built_in_the_background_take_over_with_what_changed_meanwhile():
    n, dim = 20_000, 32
    matrix = clustered(4 * n + 2_000, dim)
    valid = np.zeros(len(matrix), bool)
    valid[:n] = True
    search = VectorSearch(dim, nprobe=32, background_from=0)
    queries = matrix[np.random.default_rng(1).choice(n, 200)] + 0.1
    # The first lists: searches score every row until they are ready.
    first = search.search(matrix, valid, n, queries, 10)
    assert search.rebuilding and not search.built
    assert (first == exact_top(matrix[:n], valid[:n], queries, 10)).all()
    # Rows moved, added and removed while the lists were being built reach them.
    moved, gone = move_and_retire(search, matrix, valid)
    valid[n:n + 2_000] = True
    search.wait()
    after = search.search(matrix, valid, n + 2_000, queries, 10)
    assert search.built and not search.rebuilding and search.build_s > 0
    assert not np.isin(after, gone).any()
    assert recall_at_10(after, matrix[:n + 2_000], valid[:n + 2_000], queries) >= 0.9
    moved_queries = matrix[moved[:200]] + 0.05
    assert recall_at_10(search.search(matrix, valid, n + 2_000, moved_queries, 10),
                        matrix[:n + 2_000], valid[:n + 2_000], moved_queries) >= 0.9
    # Grown fourfold: new lists are trained in the background, the old ones serve meanwhile
    # (with the new rows in them) and a row retired meanwhile stays gone.
    valid[:] = True
    valid[gone] = False
    old = search._built
    during = search.search(matrix, valid, len(matrix), queries, 10)
    assert search.rebuilding and search._built is old
    assert recall_at_10(during, matrix, valid, queries) >= 0.85
    search.removed([7])
    valid[7] = False
    search.wait()
    final = search.search(matrix, valid, len(matrix), queries, 10)
    assert search._built is not old and search._built.trained_for == len(matrix) - len(gone)
    assert not np.isin(final, [*gone, 7]).any()
    assert recall_at_10(final, matrix, valid, queries) >= 0.9


def test_a_failed_background_build_raises_in_the_search_that_takes_it_and_is_tried_again():
    matrix = clustered(3_000, 8)
    valid = np.ones(len(matrix), bool)

    class ReadableInTheSearchOnly:
        """Rows as the searching thread reads them; the build's thread cannot."""

        fail = True

        def __getitem__(self, rows):
            if self.fail and threading.current_thread() is not threading.main_thread():
                raise MemoryError("no room for the training sample")
            return matrix[rows]

    rows = ReadableInTheSearchOnly()
    search = VectorSearch(8, background_from=0)
    exact = search.search(rows, valid, len(matrix), matrix[:2], 1)  # served while it builds
    assert exact.tolist() == [[0], [1]]
    search.wait()
    with pytest.raises(MemoryError, match="training sample"):
        search.search(rows, valid, len(matrix), matrix[:2], 1)
    rows.fail = False
    search.search(rows, valid, len(matrix), matrix[:2], 1)
    search.wait()
    assert search.search(rows, valid, len(matrix), matrix[:2], 1).tolist() == [[0], [1]]
    assert search.built


def test_changed_rows_are_synced_a_bounded_number_per_search():
    matrix = clustered(5_000, 16)
    valid = np.ones(len(matrix), bool)
    search = VectorSearch(16, sync_per_search=100)
    search.search(matrix, valid, len(matrix), matrix[:1], 1)
    search.changed(range(250))
    for left in (150, 50, 0):
        search.search(matrix, valid, len(matrix), matrix[:1], 1)
        assert len(search._dirty) == left


def test_vector_scores_rank_candidates_with_current_vectors():
    matrix = clustered(3_000, 16)
    valid = np.ones(len(matrix), bool)
    queries = matrix[:4].copy()
    has_query = np.array([True, True, True, False])
    scores = VectorScores(queries, matrix, valid, len(matrix), VectorSearch(16, nprobe=64),
                          has_query)
    banned = Banned(len(matrix), [np.array([0]), np.array([], np.int64),
                                  np.array([], np.int64), np.array([], np.int64)])
    rows, items = scores.top(5, banned)
    assert set(rows.tolist()) == {0, 1, 2}  # the user without a query gets no proposal
    assert 0 not in items[rows == 0] and items[rows == 1][0] == 1
    got = scores.pairs(rows, items)
    assert np.allclose(got, np.einsum("ij,ij->i", queries[rows], matrix[items]), atol=1e-5)
    assert np.isneginf(scores.pairs(np.array([3]), np.array([7]))).all()


def test_popularity_head_follows_learning_without_sorting_again():
    rng = np.random.default_rng(0)
    pop = DecayedPopularity()
    pop.exact_below = 0
    n = 20_000
    for j in range(n):
        pop.catalog.add(f"i{j}", 0.0)
    for step in range(30):
        for j in rng.zipf(1.3, 500) % n:
            pop.learn_one("u", f"i{j}", ts=step * 600.0)
        now = step * 600.0
        scores, head = pop.ranked_all(now)
        full = np.argsort(-scores, kind="stable")[: len(head)]
        positive = scores[full] > 0
        assert (head[positive] == full[positive]).all(), step
    shared = SharedScores(scores, head, 0.0, users=1)
    rows, items = shared.top(5, Banned(n, [full[:3]]))
    assert items.tolist() == full[3:8].tolist()


def test_freshness_order_merges_new_items_as_a_sort_would():
    rng = np.random.default_rng(0)
    fresh = Freshness()
    for _ in range(20):
        for _ in range(int(rng.integers(1, 50))):
            fresh.catalog.add(f"i{len(fresh.catalog)}", float(rng.integers(0, 100)))
        _, order = fresh.ranked_all(now=1e9)
        assert (order == np.argsort(-fresh.catalog.first_seen, kind="stable")).all()
    fresh.exact_below = 0  # scores of the items asked only
    scores, _ = fresh.ranked_all(now=90.0)
    items = np.arange(len(fresh.catalog))
    assert np.allclose(scores[items], fresh.score_all(None, now=90.0))


@pytest.mark.slow
def test_a_blend_over_an_index_keeps_its_hits():
    """The same log through a blend scoring the whole catalogue and one proposing through
    indexes (``search_exactly_below(0)``): each list is asked before the click it is judged
    on, and the two hit about as often."""
    hits = {}
    for mode in ("whole", "index"):
        blend = Blend(seed=0)
        if mode == "index":
            blend.search_exactly_below(0)
        hit = tried = 0
        for kind, args in stream(seed=5, n_users=150, n_items=1_500, n_events=8_000):
            if kind == "upload":
                blend.add_item(*args)
                continue
            user, item, ts, clicked = args
            if clicked:
                hit += item in {r.item_id for r in blend.recommend(user, 10, now=ts)}
                tried += 1
            blend.learn_one(user, item, ts, clicked)
        hits[mode] = hit / tried
    assert hits["whole"] > 0.01 and hits["index"] >= 0.8 * hits["whole"], hits
