"""Teacher vs student: what scoring a candidate costs, and what the student keeps of the
teacher's quality (float32 and int8).

    python benchmarks/student.py [--users 100] [--candidates 200] [--repeats 7] [--json]

Both are trained on the first half of MovieLens-100K (titles and genres through MiniLM) with
the default `TrainConfig`, as `streamrec evaluate` does. A micro-batch is ``--users`` users
with ``--candidates`` candidates each, all items new to the scorer (nothing cached): the cost
per candidate is the whole micro-batch (item towers from their inputs, user towers from the
history, scores) divided by users x candidates. The teacher's inputs are the MiniLM and
EfficientNet-Lite0 features (already extracted) and the item id; the student's, the cached
128-d fused embedding and behaviour. Medians of ``--repeats`` runs, side by side, one thread.
"""

from __future__ import annotations

import os

# One thread, as in the worker (the broker and Redis need the other core).
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from streamrec.models.student_scorer import StudentScorer  # noqa: E402
from streamrec.simulator.movielens import movielens_100k  # noqa: E402
from streamrec.training.distill import TrainConfig, train_models  # noqa: E402
from streamrec.training.training_log import TrainingLog  # noqa: E402


def median_seconds(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--users", type=int, default=100)
    ap.add_argument("--candidates", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    print("training teacher and student on MovieLens-100K (first half) ...", file=sys.stderr)
    log = TrainingLog.from_events(movielens_100k())
    content = log.content()
    trained = train_models(log, content, len(log) // 2, TrainConfig(threads=os.cpu_count()))
    torch.set_num_threads(1)
    teacher, student, w = trained.teacher, trained.student, trained.window

    U, C = args.users, args.candidates
    rng = np.random.default_rng(0)
    cand = np.stack([rng.choice(len(log.item_ids), C, replace=False) for _ in range(U)])
    ex = log.examples(0, w.stop)
    hist, clicked = ex.history[:U], ex.clicked[:U]
    t_clicked = torch.from_numpy(clicked)
    flat = cand.ravel()  # every (user, candidate) pair's item, scored from its inputs
    T = {k: torch.from_numpy(v[flat]) for k, v in (
        ("text", content.text), ("image", content.image), ("has_image", content.has_image),
        ("fused", content.fused))}
    ids = torch.from_numpy(w.id_rows[flat])
    hist_items = np.unique(hist[hist >= 0])
    H = {k: torch.from_numpy(v[hist_items]) for k, v in (
        ("text", content.text), ("image", content.image), ("has_image", content.has_image),
        ("fused", content.fused))}
    h_ids = torch.from_numpy(w.id_rows[hist_items])
    remap = np.full(len(log.item_ids), -1)
    remap[hist_items] = np.arange(len(hist_items))
    h_rows = torch.from_numpy(np.where(hist >= 0, remap[np.maximum(hist, 0)], -1))

    @torch.inference_mode()
    def teacher_batch():
        items = teacher.item_vectors(T["text"], T["image"], T["has_image"], ids, T["fused"])
        users = teacher.user_vectors(teacher.item_vectors(
            H["text"], H["image"], H["has_image"], h_ids, H["fused"]), h_rows, t_clicked)
        return (users.unsqueeze(1) * items.view(U, C, -1)).sum(2)

    t_snap, t_meta = trained.student_snapshot()
    q_snap, q_meta = trained.student_snapshot(quantise=True)
    scorer = StudentScorer(t_snap, t_meta, "float32")
    names = [log.item_ids[j] for j in flat]
    h_names = [log.item_ids[j] for j in hist_items]
    fused_np, h_fused = content.fused[flat], content.fused[hist_items]
    rows, h_rows_np = scorer.rows(names), scorer.rows(h_names)
    h_idx = np.where(hist >= 0, remap[np.maximum(hist, 0)], -1)

    def student_batch(s: StudentScorer):
        def run():
            V, b = s.item_vectors(fused_np, rows)
            users = s.user_vectors(s.item_vectors(h_fused, h_rows_np)[0], h_idx, clicked)
            return np.einsum("ud,ucd->uc", users, V.reshape(U, C, -1)) + b.reshape(U, C)
        return run

    # int8 compute: torch's dynamic quantisation of the student's linear layers (weights int8,
    # activations quantised per batch), beside the same towers in float32.
    s32 = student
    s8 = torch.ao.quantization.quantize_dynamic(student, {torch.nn.Linear}, dtype=torch.qint8)
    beh = torch.from_numpy(w.behaviour[flat])
    h_beh = torch.from_numpy(w.behaviour[hist_items])

    def torch_student(m):
        @torch.inference_mode()
        def run():
            items = m.item_vectors(T["fused"], beh, ids)
            users = m.user_vectors(m.item_vectors(H["fused"], h_beh, h_ids), h_rows, t_clicked)
            return (users.unsqueeze(1) * items.view(U, C, -1)).sum(2) + m.item_bias(ids).view(U, C)
        return run

    pairs = U * C
    us = lambda fn: median_seconds(fn, args.repeats) / pairs * 1e6  # noqa: E731
    res = {
        "teacher_us_per_candidate": us(teacher_batch),
        "student_us_per_candidate": us(student_batch(scorer)),
        "student_int8_us_per_candidate": us(torch_student(s8)),
        "student_torch_float32_us_per_candidate": us(torch_student(s32)),
        "student_int8_snapshot_us_per_candidate": us(student_batch(
            StudentScorer(q_snap, q_meta, "int8"))),
    }
    res["speedup_student_vs_teacher"] = res["teacher_us_per_candidate"] / res[
        "student_us_per_candidate"]
    res["speedup_int8_vs_float32_torch"] = res["student_torch_float32_us_per_candidate"] / res[
        "student_int8_us_per_candidate"]
    res.update({k: v for k, v in trained.scores.items() if "hr" in k})
    res["student_of_teacher_hr"] = res["student_hr_at_10"] / max(res["teacher_hr_at_10"], 1e-12)
    size = lambda d: sum(v.nbytes for v in d.values())  # noqa: E731
    res["snapshot_bytes_float32"], res["snapshot_bytes_int8"] = size(t_snap), size(q_snap)
    res.update(users=U, candidates=C, repeats=args.repeats, threads=1,
               machine=f"{platform.machine()}, {os.cpu_count()} cores, Python "
                       f"{platform.python_version()}, torch {torch.__version__}")
    width = max(map(len, res))
    for k, v in res.items():
        print(f"{k:<{width}}  {v:,.3f}" if isinstance(v, float) else f"{k:<{width}}  {v}")
    if args.json:
        print(json.dumps(res))


if __name__ == "__main__":
    main()
