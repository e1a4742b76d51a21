"""Approximate nearest-neighbour libraries against exact search, on one core: build, add,
update, delete, query cost and recall at 10k, 100k and 1M items.

    python benchmarks/ann.py [--sizes 10000 100000 1000000] [--dim 128] [--repeats 5] [--json]

**Data.** Clustered synthetic vectors, not uniform noise (on which every ANN index is
unrealistically hard): 1,000 centres uniform on the unit sphere, cluster sizes log-normal,
each item its centre plus Gaussian noise of the same norm, normalised (an item's cosine to its
centre is about 0.7, to another item of its cluster about 0.5). Queries are user profiles: the
normalised sum of 3-8 items of one or two clusters plus noise. Similarity is the inner product
of unit vectors (the cosine, as ``EmbeddingIndex`` scores after centring).

**Method.** Every index holds the same items; the last ``--held`` of them are left out of the
bulk build and added afterwards, half one at a time, half in batches of 20 (uploads as they
arrive). Threads are 1 everywhere (OpenBLAS, torch, faiss's OpenMP, and each library's own
``num_threads``/``threads`` argument): the worker runs on one core. Times are CPU seconds
(``time.process_time``), so a process descheduled by others on the shared machine is not
charged; libraries are timed side by side, in an order that alternates from one repeat to the
next, and figures are medians over ``--repeats``. Recall@10 is the share of the exact top 10
among the index's top 10, recall@k that of the exact top k among its k. ``ef`` (``nprobe`` for
IVF) is swept, and the query cost is reported at the smallest value reaching recall@10 >= 0.95
and >= 0.99. Then ``--churn`` items get a new vector (their old one plus noise, as MF and
student vectors drift) and as many are deleted; their cost per item and the recall afterwards
(against exact search over the live items) are measured. Memory: the index's own size (its
serialised bytes, or what it reports) and the growth of the process's RSS while it was built.

The exact candidates: ``exact-numpy`` is ``EmbeddingIndex.search`` (catalogue rows on the left
of one float32 product, then ``argpartition``); ``exact-torch`` the same product through torch
and ``torch.topk``; both take queries in chunks of 100.
"""

from __future__ import annotations

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # as the worker runs (see streamrec/cli.py)

import argparse  # noqa: E402
import gc  # noqa: E402
import importlib.metadata  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)

CHUNK = 100  # queries per exact product: bounds the score matrix (100 x 1M floats: 400 MB)
TARGETS = (0.95, 0.99)
EFS = (10, 16, 25, 32, 48, 64, 100, 128, 192, 256, 384, 512, 768, 1024)
NPROBES = (1, 2, 4, 8, 16, 32, 64, 128, 256)


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def clustered(n: int, dim: int, clusters: int, rng) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``n`` unit vectors around ``clusters`` centres, their labels, and the centres."""
    centres = unit(rng.normal(size=(clusters, dim)))
    share = rng.lognormal(0.0, 1.0, clusters)
    labels = rng.choice(clusters, n, p=share / share.sum())
    x = np.empty((n, dim), np.float32)
    for a in range(0, n, 100_000):
        lab = labels[a:a + 100_000]
        x[a:a + len(lab)] = unit(centres[lab] + unit(rng.normal(size=(len(lab), dim))))
    return x, labels, centres


def profiles(x: np.ndarray, labels: np.ndarray, n: int, rng) -> np.ndarray:
    """``n`` user profiles: the sum of 3-8 items of one or two clusters, plus noise."""
    order = np.argsort(labels, kind="stable")
    starts = np.searchsorted(labels[order], np.arange(labels.max() + 2))
    present = np.flatnonzero(np.diff(starts) > 0)
    out = np.empty((n, x.shape[1]), np.float32)
    for i in range(n):
        chosen = rng.choice(present, rng.integers(1, 3), replace=False)
        rows = [order[starts[c] + rng.integers(0, starts[c + 1] - starts[c],
                                               rng.integers(3, 9) // len(chosen) + 1)]
                for c in chosen]
        taste = unit(x[np.concatenate(rows)].sum(axis=0))
        out[i] = taste + 0.5 * unit(rng.normal(size=x.shape[1]))
    return unit(out)


# ---------------------------------------------------------------- candidates


class Exact:
    """A growable matrix and a mask, as ``EmbeddingIndex``: -inf added to missing rows."""

    kind = "exact"
    knob = None
    grid: tuple = ()

    def __init__(self, dim: int, capacity: int, use_torch: bool) -> None:
        self.matrix = np.zeros((capacity, dim), np.float32)
        self.missing = np.full(capacity, -np.inf, np.float32)
        self.use_torch = use_torch
        self.name = "exact-torch" if use_torch else "exact-numpy"

    def params(self) -> dict:
        return {"chunk": CHUNK}

    def add(self, x, ids) -> None:
        self.matrix[ids] = x
        self.missing[ids] = 0.0

    build = add
    replace = add

    def delete(self, ids) -> bool:
        self.missing[ids] = -np.inf
        return True

    def set_knob(self, value) -> None:
        pass

    def search(self, q: np.ndarray, k: int) -> np.ndarray:
        out = []
        for a in range(0, len(q), CHUNK):
            if self.use_torch:
                S = torch.from_numpy(self.matrix) @ torch.from_numpy(q[a:a + CHUNK]).T
                S = S.T.contiguous() + torch.from_numpy(self.missing)
                out.append(torch.topk(S, k, dim=1, sorted=True).indices.numpy())
            else:
                S = np.ascontiguousarray((self.matrix @ q[a:a + CHUNK].T).T)
                S += self.missing
                top = np.argpartition(-S, k - 1, axis=1)[:, :k]
                order = np.argsort(-np.take_along_axis(S, top, axis=1), axis=1)
                out.append(np.take_along_axis(top, order, axis=1))
        return np.concatenate(out)

    def nbytes(self) -> int:
        return self.matrix.nbytes + self.missing.nbytes


class Hnswlib:
    name = "hnswlib"
    kind = "ann"
    knob = "ef"
    grid = EFS

    def __init__(self, dim: int, capacity: int, M: int, efc: int) -> None:
        import hnswlib
        self.index = hnswlib.Index(space="ip", dim=dim)
        self.index.init_index(max_elements=capacity, M=M, ef_construction=efc, random_seed=1,
                              allow_replace_deleted=True)
        self.index.set_num_threads(1)
        self.M, self.efc = M, efc

    def params(self) -> dict:
        return {"space": "ip", "M": self.M, "ef_construction": self.efc}

    def build(self, x, ids) -> None:
        self.index.add_items(x, ids, num_threads=1)

    add = replace = build  # an existing label's vector is updated in place, links repaired

    def delete(self, ids) -> bool:
        for i in ids:
            self.index.mark_deleted(int(i))  # skipped in results, still walked through
        return True

    def set_knob(self, value) -> None:
        self.index.set_ef(value)

    def search(self, q, k):
        return self.index.knn_query(q, k=k, num_threads=1)[0].astype(np.int64)

    def nbytes(self) -> int:
        import tempfile
        with tempfile.NamedTemporaryFile(suffix=".bin") as f:
            self.index.save_index(f.name)
            return os.path.getsize(f.name)


class FaissIndex:
    """What faiss's indexes share: the search call and the size of the serialised index."""

    index: Any
    faiss: Any

    def search(self, q, k):
        return self.index.search(q, k)[1]

    def nbytes(self) -> int:
        return self.faiss.serialize_index(self.index).nbytes


class FaissHNSW(FaissIndex):
    name = "faiss-hnsw"
    kind = "ann"
    knob = "ef"
    grid = EFS

    def __init__(self, dim: int, capacity: int, M: int, efc: int) -> None:
        import faiss
        faiss.omp_set_num_threads(1)
        self.faiss = faiss
        self.index = faiss.IndexHNSWFlat(dim, M, faiss.METRIC_INNER_PRODUCT)
        self.index.hnsw.efConstruction = efc
        self.M, self.efc = M, efc

    def params(self) -> dict:
        return {"index": "IndexHNSWFlat", "M": self.M, "ef_construction": self.efc}

    def build(self, x, ids) -> None:
        # Ids are positions: they must arrive in order (IndexIDMap would map them, but it cannot
        # remove from an HNSW graph either).
        assert ids[0] == self.index.ntotal and np.all(np.diff(ids) == 1)
        self.index.add(x)

    add = build

    def replace(self, x, ids) -> bool:
        return False  # no removal or update: HNSW graphs in faiss are add-only

    def delete(self, ids) -> bool:
        return False

    def set_knob(self, value) -> None:
        self.index.hnsw.efSearch = value


class FaissIVF(FaissIndex):
    name = "faiss-ivf"
    kind = "ann"
    knob = "nprobe"
    grid = NPROBES

    def __init__(self, dim: int, capacity: int, train: np.ndarray) -> None:
        import faiss
        faiss.omp_set_num_threads(1)
        self.faiss = faiss
        self.nlist = int(4 * np.sqrt(capacity))
        self.quantizer = faiss.IndexFlatIP(dim)
        self.index = self._inverted_file(dim)
        self.trained_on = min(50 * self.nlist, len(train))
        t0 = time.process_time()
        self.index.train(train[: self.trained_on])
        self.train_s = time.process_time() - t0
        self.index.set_direct_map_type(faiss.DirectMap.Hashtable)

    def _inverted_file(self, dim: int):
        return self.faiss.IndexIVFFlat(self.quantizer, dim, self.nlist,
                                       self.faiss.METRIC_INNER_PRODUCT)

    def params(self) -> dict:
        return {"index": type(self.index).__name__, "nlist": self.nlist,
                "trained_on": self.trained_on,
                "train_cpu_s": round(self.train_s, 2)}

    def build(self, x, ids) -> None:
        self.index.add_with_ids(x, np.asarray(ids, np.int64))

    add = build

    def replace(self, x, ids) -> bool:
        self.delete(ids)
        self.build(x, ids)
        return True

    def delete(self, ids) -> bool:
        self.index.remove_ids(self.faiss.IDSelectorArray(np.asarray(ids, np.int64)))
        return True

    def set_knob(self, value) -> None:
        self.index.nprobe = value


class FaissIVFfp16(FaissIVF):
    """The inverted file with its rows stored in float16 (what the worker uses)."""

    name = "faiss-ivf-fp16"

    def _inverted_file(self, dim: int):
        return self.faiss.IndexIVFScalarQuantizer(self.quantizer, dim, self.nlist,
                                                  self.faiss.ScalarQuantizer.QT_fp16,
                                                  self.faiss.METRIC_INNER_PRODUCT)


class Usearch:
    name = "usearch"
    kind = "ann"
    knob = "ef"
    grid = EFS

    def __init__(self, dim: int, capacity: int, M: int, efc: int) -> None:
        from usearch.index import Index
        self.index = Index(ndim=dim, metric="ip", dtype="f32", connectivity=M,
                           expansion_add=efc)
        self.M, self.efc = M, efc

    def params(self) -> dict:
        return {"metric": "ip", "dtype": "f32", "connectivity": self.M,
                "expansion_add": self.efc, "simd": self.index.hardware_acceleration}

    def build(self, x, ids) -> None:
        self.index.add(np.asarray(ids, np.uint64), x, threads=1)

    add = build

    def replace(self, x, ids) -> bool:
        self.index.remove(np.asarray(ids, np.uint64))  # a key cannot be added twice
        self.build(x, ids)
        return True

    def delete(self, ids) -> bool:
        self.index.remove(np.asarray(ids, np.uint64))
        return True

    def set_knob(self, value) -> None:
        self.index.expansion_search = value

    def search(self, q, k):
        keys = self.index.search(q, k, threads=1).keys
        return np.atleast_2d(keys).astype(np.int64)

    def nbytes(self) -> int:
        return int(self.index.memory_usage)


class Voyager:
    name = "voyager"
    kind = "ann"
    knob = "ef"
    grid = EFS

    def __init__(self, dim: int, capacity: int, M: int, efc: int) -> None:
        import voyager
        self.index = voyager.Index(voyager.Space.Cosine, num_dimensions=dim, M=M,
                                   ef_construction=efc, random_seed=1, max_elements=capacity,
                                   storage_data_type=voyager.StorageDataType.Float32)
        self.M, self.efc, self.ef = M, efc, 10

    def params(self) -> dict:
        return {"space": "Cosine", "storage": "Float32", "M": self.M,
                "ef_construction": self.efc}

    def build(self, x, ids) -> None:
        self.index.add_items(x, np.asarray(ids, np.int64), num_threads=1)

    add = replace = build  # an existing id's vector is updated in place (hnswlib's code)

    def delete(self, ids) -> bool:
        for i in ids:
            self.index.mark_deleted(int(i))
        return True

    def set_knob(self, value) -> None:
        self.ef = value

    def search(self, q, k):
        return self.index.query(q, k=k, num_threads=1, query_ef=max(self.ef, k))[0].astype(
            np.int64)

    def nbytes(self) -> int:
        return len(self.index.as_bytes())


def make(name: str, dim: int, n: int, args, train: np.ndarray):
    if name == "exact-numpy":
        return Exact(dim, n, use_torch=False)
    if name == "exact-torch":
        return Exact(dim, n, use_torch=True)
    if name == "faiss-ivf":
        return FaissIVF(dim, n, train)
    if name == "faiss-ivf-fp16":
        return FaissIVFfp16(dim, n, train)
    cls = {"hnswlib": Hnswlib, "faiss-hnsw": FaissHNSW, "usearch": Usearch,
           "voyager": Voyager}[name]
    return cls(dim, n, args.M, args.ef_construction)


# ---------------------------------------------------------------- measurements


def recall(found: np.ndarray, truth: np.ndarray, at: int) -> float:
    hits = sum(len(np.intersect1d(f[:at], t[:at], assume_unique=True))
               for f, t in zip(found, truth))
    return hits / (at * len(truth))


def timed(fn, *a):
    c0, w0 = time.process_time(), time.perf_counter()
    out = fn(*a)
    return out, time.process_time() - c0, time.perf_counter() - w0


def query_cost(index, q: np.ndarray, k: int, batch: int, singles: int) -> tuple[float, float]:
    """CPU and wall microseconds per user, ``q`` (or its first ``singles`` for batch 1) in
    batches of ``batch``."""
    qs = q[:singles] if batch == 1 else q
    c0, w0 = time.process_time(), time.perf_counter()
    for a in range(0, len(qs), batch):
        index.search(qs[a:a + batch], k)
    return ((time.process_time() - c0) * 1e6 / len(qs),
            (time.perf_counter() - w0) * 1e6 / len(qs))


def cpu_probe() -> float:
    """Milliseconds for a fixed piece of numpy work (lower is faster): the machine's phase."""
    a = np.random.default_rng(0).normal(size=(256, 256)).astype(np.float32)
    t0 = time.process_time()
    for _ in range(200):
        a = np.tanh(a @ a.T * 0.01)
    return round((time.process_time() - t0) * 1000, 1)


def run_size(n: int, args, log) -> dict:
    rng = np.random.default_rng(args.seed)
    t0 = time.monotonic()
    x, labels, _ = clustered(n, args.dim, args.clusters, rng)
    q = profiles(x, labels, args.queries, rng)
    held = min(args.held, n // 10)
    bulk = n - held
    names = [m for m in args.libs if not (m == "exact-numpy" and "exact-torch" in args.libs
                                          and n > args.numpy_up_to)]
    log(f"\n== {n:,} items x {args.dim} d ({len(q)} profiles; data in "
        f"{time.monotonic() - t0:.1f}s) ==")
    indexes, built = {}, {}
    order = names[n % len(names):] + names[: n % len(names)]  # rotate who builds first
    for name in order:
        gc.collect()
        r0 = rss()
        index = make(name, args.dim, n, args, x)
        _, cpu, wall = timed(index.build, x[:bulk], np.arange(bulk))
        cpu += getattr(index, "train_s", 0.0)  # IVF: its k-means is part of the build
        r1 = rss()
        # Uploads as they arrive: one at a time, then in batches of 20.
        half = held // 2
        c0 = time.process_time()
        for i in range(bulk, bulk + half):
            index.add(x[i:i + 1], np.array([i]))
        one = time.process_time() - c0
        c0 = time.process_time()
        for a in range(bulk + half, n, 20):
            index.add(x[a:min(a + 20, n)], np.arange(a, min(a + 20, n)))
        twenty = time.process_time() - c0
        indexes[name] = index
        built[name] = {"params": index.params(), "build_cpu_s": round(cpu, 2),
                       "build_wall_s": round(wall, 2), "build_items": bulk,
                       "build_items_per_s": round(bulk / cpu),
                       "add_one_items_per_s": round(half / one),
                       "add_batch20_items_per_s": round((held - half) / twenty),
                       "index_mb": round(index.nbytes() / 2**20, 1),
                       "rss_build_mb": round((r1 - r0) / 2**20, 1)}
        b = built[name]
        log(f"  {name:12s} built {bulk:,} in {cpu:.1f} CPU s ({b['build_items_per_s']:,}/s), "
            f"adds {b['add_one_items_per_s']:,}/s one at a time, "
            f"{b['add_batch20_items_per_s']:,}/s in 20s; index {b['index_mb']} MB, "
            f"RSS +{b['rss_build_mb']} MB")
    exact = indexes.get("exact-torch") or indexes.get("exact-numpy") or Exact(args.dim, n, True)
    if exact not in indexes.values():
        exact.add(x, np.arange(n))
    truth = {k: exact.search(q, k) for k in args.k}

    # Sweep ef / nprobe: recall, and a rough cost at batch 100.
    sweep: dict = {name: {} for name in names}
    for k in args.k:
        for name in names:
            index = indexes[name]
            values = [v for v in index.grid if index.knob == "nprobe" or v >= k] or [None]
            if index.kind == "exact":
                values = [None]
            for v in values:
                index.set_knob(v)
                found = index.search(q, k)
                cost, _ = query_cost(index, q, k, 100, 0)
                row = {"knob": v, "recall@10": round(recall(found, truth[k], 10), 4),
                       f"recall@{k}": round(recall(found, truth[k], k), 4),
                       "us_per_user_batch100": round(cost, 1)}
                sweep[name].setdefault(str(k), []).append(row)
                if row["recall@10"] >= 0.999 and row[f"recall@{k}"] >= 0.995:
                    break

    # Operating points: the smallest knob reaching each recall@10 target; timed side by side.
    points: dict = {name: {} for name in names}
    for k in args.k:
        for target in TARGETS:
            for name in names:
                rows = sweep[name][str(k)]
                ok = [r for r in rows if r["recall@10"] >= target]
                points[name][f"k{k}@{target}"] = dict(ok[0] if ok else rows[-1], reached=bool(ok))
    timings: dict = {name: {} for name in names}
    for rep in range(args.repeats):
        for k in args.k:
            for target in TARGETS:
                key = f"k{k}@{target}"
                for batch in args.batches:
                    for name in (names if rep % 2 == 0 else names[::-1]):
                        if indexes[name].kind == "exact" and target != TARGETS[0]:
                            continue  # exact does not depend on the target
                        indexes[name].set_knob(points[name][key]["knob"])
                        singles = args.singles if indexes[name].kind == "ann" else max(
                            10, args.singles * 10_000 // n)
                        cpu, wall = query_cost(indexes[name], q, k, batch, singles)
                        timings[name].setdefault(f"{key}/b{batch}", []).append((cpu, wall))
    for name in names:
        for key in list(points[name]):
            for batch in args.batches:
                got = timings[name].get(f"{key}/b{batch}") or timings[name][
                    f"{key.split('@')[0]}@{TARGETS[0]}/b{batch}"]
                points[name][key][f"us_per_user_batch{batch}"] = round(
                    statistics.median(c for c, _ in got), 1)
                points[name][key][f"wall_us_per_user_batch{batch}"] = round(
                    statistics.median(w for _, w in got), 1)

    # Churn: new vectors for some items, others deleted; cost per item and recall after.
    live = np.ones(n, bool)
    y = x.copy()
    crng = np.random.default_rng(args.seed + 1)
    changed = crng.choice(n, args.churn, replace=False)
    gone = crng.choice(np.setdiff1d(np.arange(n), changed), args.churn, replace=False)
    y[changed] = unit(x[changed] + 0.5 * unit(crng.normal(size=(len(changed), args.dim))))
    live[gone] = False
    ref = Exact(args.dim, n, use_torch=True)
    ref.add(y[live], np.flatnonzero(live))
    k = max(args.k)
    truth_after = ref.search(q, k)
    churn: dict = {}
    for name in names:
        index = indexes[name]
        c0 = time.process_time()
        ok = all(index.replace(y[i:i + 1], np.array([i])) is not False for i in changed)
        rep_s = time.process_time() - c0
        c0 = time.process_time()
        ok_del = index.delete(gone)
        del_s = time.process_time() - c0
        c = churn[name] = {"replace_us_per_item": round(rep_s / len(changed) * 1e6, 1)
                           if ok else None,
                           "delete_us_per_item": round(del_s / len(gone) * 1e6, 1)
                           if ok_del else None}
        if ok and ok_del:
            index.set_knob(points[name][f"k{k}@{TARGETS[0]}"]["knob"])
            found = index.search(q, k)
            c["recall@10_after"] = round(recall(found, truth_after, 10), 4)
            c[f"recall@{k}_after"] = round(recall(found, truth_after, k), 4)
    del indexes, exact
    gc.collect()
    return {"items": n, "held_out_then_added": held, "built": built, "sweep": sweep,
            "points": points, "churn": {"items_changed": len(changed),
                                        "items_deleted": len(gone), **churn}}


def table(res: dict, args, log) -> None:
    for k in args.k:
        log(f"\n{res['items']:,} items, k={k}: CPU us per user at batch sizes "
            f"{'/'.join(map(str, args.batches))}, at the smallest ef/nprobe with recall@10 "
            ">= 0.95 | >= 0.99")
        log(f"  {'':12s} {'knob':>11s} {'recall@10':>11s} {f'recall@{k}':>11s} "
            + " ".join(f"{'b' + str(b):>15s}" for b in args.batches))
        for name, pts in res["points"].items():
            a, b = pts[f"k{k}@{TARGETS[0]}"], pts[f"k{k}@{TARGETS[1]}"]
            knob = "-" if a["knob"] is None else f"{a['knob']}|{b['knob']}"
            log(f"  {name:12s} {knob:>11s} {a['recall@10']:>5}|{b['recall@10']:<5} "
                f"{a[f'recall@{k}']:>5}|{b[f'recall@{k}']:<5} " + " ".join(
                    f"{a[f'us_per_user_batch{bt}']:>7}|{b[f'us_per_user_batch{bt}']:<7}"
                    for bt in args.batches))
    c = res["churn"]
    log(f"  churn ({c['items_changed']} vectors replaced, {c['items_deleted']} deleted), "
        f"us per item, recall at the 0.95 point after:")
    for name in res["points"]:
        ch = c[name]
        after = (f"recall@10 {ch['recall@10_after']}" if "recall@10_after" in ch
                 else "not supported")
        log(f"  {name:12s} replace {ch['replace_us_per_item']}, delete "
            f"{ch['delete_us_per_item']}; {after}")


def versions() -> dict:
    out = {}
    for dist in ("numpy", "torch", "hnswlib", "faiss-cpu", "usearch", "voyager"):
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            pass
    return out


def main(args) -> dict:
    def log(*a) -> None:
        print(*a, file=sys.stderr if args.json else sys.stdout, flush=True)

    probe = [cpu_probe()]
    log(f"CPU probe {probe[0]} ms; {versions()}")
    results = []
    for n in args.sizes:
        res = run_size(n, args, log)
        table(res, args, log)
        results.append(res)
    probe.append(cpu_probe())
    log(f"\nCPU probe {probe[0]} -> {probe[1]} ms")
    return {"dim": args.dim, "clusters": args.clusters, "queries": args.queries,
            "repeats": args.repeats, "sizes": results, "cpu_probe_ms": probe,
            "versions": versions(),
            "machine": f"{platform.machine()}, {os.cpu_count()} cpus, "
                       f"Python {platform.python_version()}"}


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000],
                    help="catalogue sizes (1000000 too for the 1M figures: half an hour of builds)")
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--clusters", type=int, default=1000)
    ap.add_argument("--queries", type=int, default=500, help="user profiles")
    ap.add_argument("--singles", type=int, default=200,
                    help="profiles queried one at a time (for batch 1; exact: fewer at 1M)")
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 100, 500])
    ap.add_argument("--k", type=int, nargs="+", default=[25, 100])
    ap.add_argument("--M", type=int, default=16, help="graph degree of every HNSW index")
    ap.add_argument("--ef-construction", type=int, default=128)
    ap.add_argument("--held", type=int, default=2000, help="items added after the build")
    ap.add_argument("--churn", type=int, default=1000, help="items replaced, and deleted")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--libs", nargs="+", default=["exact-numpy", "exact-torch", "hnswlib",
                                                   "faiss-hnsw", "faiss-ivf", "faiss-ivf-fp16",
                                                   "usearch", "voyager"])
    ap.add_argument("--numpy-up-to", type=int, default=10**9,
                    help="skip exact-numpy above this size when exact-torch runs")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--json", action="store_true", help="end with one JSON line of results")
    args = ap.parse_args()
    out = main(args)
    if args.json:
        print(json.dumps(out))
