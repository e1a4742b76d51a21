"""Every model and simple baseline on every synthetic world and on MovieLens-100K, with the
ratios the project holds itself to.

    python benchmarks/quality.py [--worlds default,tags,...] [--no-movielens] [--events 60000]
                                 [--held-out] [--json]

Each row is one `streamrec evaluate` run (a teacher and student trained on the first half of
the interactions, every model scored on the rest), the command printed beside it. The held-out
world (``--held-out``) is a generator and seed no test and no tuning ever used: 600 users,
1,500 items with one topical tag each, seed 7 of the ``tags`` world.

For each run it prints HR@10 of the baselines (popularity, tag counts, co-clicks), of the
blend and its ablations, of the teacher and student, and three ratios: blend / best baseline
(bar 1.1), student / teacher (bar 0.9) and blend / blend without the student (bar > 1).
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time

BASELINES = ("popularity", "baseline_tags", "baseline_cooccurrence")
SHOWN = BASELINES + ("covisitation", "tags", "content", "teacher", "student",
                     "blend_no_content", "blend_no_student", "blend")
HELD_OUT = ["--world", "tags", "--world-seed", "7", "--users", "600", "--items", "1500"]


def run(args: list[str]) -> dict:
    cmd = [sys.executable, "-m", "streamrec.cli", "evaluate", *args, "--json"]
    print("$ streamrec evaluate " + " ".join(args) + " --json", file=sys.stderr, flush=True)
    t0 = time.monotonic()
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"evaluate failed ({out.returncode}):\n{out.stderr[-2000:]}")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result["seconds"] = time.monotonic() - t0
    return result


def ratios(models: dict) -> dict[str, float]:
    hr = {k: v["hr_at_10"] for k, v in models.items()}
    best = max(hr[b] for b in BASELINES)
    return {"blend_over_best_baseline": hr["blend"] / best if best else float("inf"),
            "student_over_teacher": hr["student"] / hr["teacher"] if hr["teacher"] else 0.0,
            "blend_over_blend_no_student": (hr["blend"] / hr["blend_no_student"]
                                            if hr["blend_no_student"] else float("inf"))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--worlds", default="default,tags,sessions,trends,drift,sparse,images")
    ap.add_argument("--events", type=int, default=60_000)
    ap.add_argument("--no-movielens", action="store_true")
    ap.add_argument("--held-out", action="store_true", help="also the held-out world")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    runs: dict[str, list[str]] = {}
    if not args.no_movielens:
        runs["movielens-100k"] = ["--dataset", "movielens-100k"]
    for w in filter(None, args.worlds.split(",")):
        runs[w] = ["--world", w, "--events", str(args.events)]
    if args.held_out:
        runs["held-out"] = HELD_OUT + ["--events", str(args.events)]
    table = {}
    for name, a in runs.items():
        r = run(a)
        table[name] = {"command": "streamrec evaluate " + " ".join(a),
                       "clicks": r["clicks"], "seconds": round(r["seconds"], 1),
                       "hr_at_10": {m: round(r["models"][m]["hr_at_10"], 4)
                                    for m in SHOWN if m in r["models"]},
                       **{k: round(v, 3) for k, v in ratios(r["models"]).items()}}
        row = table[name]
        print(f"{name:16s} clicks {row['clicks']:6d}  " + "  ".join(
            f"{m} {v:.4f}" for m, v in row["hr_at_10"].items()), flush=True)
        print(f"{'':16s} blend/best baseline {row['blend_over_best_baseline']:.2f}  "
              f"student/teacher {row['student_over_teacher']:.2f}  "
              f"blend/blend_no_student {row['blend_over_blend_no_student']:.3f}", flush=True)
    print(f"machine: {platform.machine()}, {platform.python_version()}", file=sys.stderr)
    if args.json:
        print(json.dumps({"runs": table}))


if __name__ == "__main__":
    main()
