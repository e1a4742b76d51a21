"""The blend's own cost, in-process: microseconds to learn one event and to compute one list.

    python benchmarks/ranking.py [--batch 30 --batch 160] [--against OTHER_CHECKOUT] [--json]

No broker, no Redis and no Faust: the throughput benchmark's world (5,000 users, 2,000+ items,
the uploads' text and images encoded first), its first two thirds of interactions learnt to
warm the models up, then the last third in micro-batches of ``--batch`` events, a list for
every user each batch touches (as the worker does), timed in CPU seconds. A batch of ~30
events is what a worker takes in at 1,000 events/s, ~160 what it takes in during a drain.

``--against DIR`` loads the ``streamrec`` package of another checkout beside this one (as
``streamrec_against``, from a rewritten copy) and feeds both the same batches, alternating
which goes first: on a shared machine, where one run moves by 10-30% from the next, only
measurements interleaved this finely compare two versions. It also says whether the two
produced the same lists (the same items from the same sources, in the same order).
"""

from __future__ import annotations

import argparse
import importlib
import itertools
import json
import os
import platform
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # as the worker runs (see streamrec/cli.py)

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from streamrec.evaluation.prequential import encode_uploads  # noqa: E402
from streamrec.models.blend import Blend  # noqa: E402
from streamrec.records.events import Upload  # noqa: E402
from streamrec.simulator.world import World, WorldConfig  # noqa: E402


def load_other_blend(checkout: Path, into: Path) -> type:
    """The ``Blend`` class of another checkout, importable beside ours: its package copied to
    ``into/streamrec_against`` with its absolute imports renamed."""
    src = checkout / "streamrec"
    # Either layout: the blend moved from online_models/ to models/.
    package = next((p for p in ("models", "online_models") if (src / p / "blend.py").is_file()),
                   None)
    if package is None:
        raise SystemExit(f"--against {checkout}: no streamrec/models/blend.py there")
    dst = into / "streamrec_against"
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__"))
    for py in dst.rglob("*.py"):
        text = py.read_text()
        text = re.sub(r"\b(from|import) streamrec\b", r"\1 streamrec_against", text)
        py.write_text(re.sub(r"\bstreamrec\.", "streamrec_against.", text))
    sys.path.insert(0, str(into))
    return importlib.import_module(f"streamrec_against.{package}.blend").Blend


def measure(blends: dict, interactions: list, cut: int, batch: int) -> dict:
    """Learn and recommend through every blend, batch by batch, alternating their order;
    CPU seconds per blend for the batches from ``cut`` on."""
    spent = {name: [0.0, 0.0] for name in blends}
    lists = events = 0
    same = True
    for step, a in enumerate(range(0, len(interactions), batch)):
        chunk = interactions[a:a + batch]
        users = list(dict.fromkeys(e.user_id for e in chunk))
        names = list(blends) if step % 2 == 0 else list(blends)[::-1]
        shown = {}
        for name in names:
            blend = blends[name]
            t0 = time.process_time()
            for e in chunk:
                blend.learn_one(e.user_id, e.item_id, e.ts, e.type == "click")
            t1 = time.process_time()
            out = blend.recommend_many(users, 10, chunk[-1].ts)
            t2 = time.process_time()
            if a >= cut:
                spent[name][0] += t1 - t0
                spent[name][1] += t2 - t1
            shown[name] = [[(r.item_id, tuple(r.sources)) for r in recs] for recs in out]
        if a >= cut:
            lists += len(users)
            events += len(chunk)
        same &= all(v == shown[names[0]] for v in shown.values())
    out = {name: {"learn_us_per_event": round(learn / events * 1e6, 1),
                  "recommend_us_per_list": round(rec / lists * 1e6, 1),
                  "model_us_per_event": round((learn + rec) / events * 1e6, 1)}
           for name, (learn, rec) in spent.items()}
    out["lists_per_event"] = round(lists / events, 3)
    if len(blends) > 1:
        out["same_lists"] = same
    return out


def main(args) -> dict:
    def log(*a) -> None:
        print(*a, file=sys.stderr if args.json else sys.stdout, flush=True)

    world = World(WorldConfig(n_users=args.users, n_items=args.items, seed=1))
    events = list(itertools.islice(world.events(time.time() - 3600), args.events))
    t0 = time.monotonic()
    embeddings = encode_uploads(events)
    log(f"encoded {len(embeddings):,} uploads in {time.monotonic() - t0:.1f}s")
    classes = {"this": Blend}
    tmp = None
    if args.against:
        tmp = Path(tempfile.mkdtemp(prefix="ranking-against-"))
        classes["against"] = load_other_blend(Path(args.against).resolve(), tmp)
    try:
        results = {}
        for batch in args.batch:
            blends = {name: cls() for name, cls in classes.items()}
            interactions = []
            for e in events:
                if isinstance(e, Upload):
                    for blend in blends.values():
                        blend.add_item(e.item_id, e.ts, embeddings.get(e.item_id))
                else:
                    interactions.append(e)
            r = results[str(batch)] = measure(blends, interactions, len(interactions) * 2 // 3,
                                              batch)
            for name in blends:
                m = r[name]
                log(f"batches of {batch:>4} events, {name:8s}: learn {m['learn_us_per_event']} "
                    f"us/event, a list {m['recommend_us_per_list']} us "
                    f"({r['lists_per_event']} lists/event): {m['model_us_per_event']} us of "
                    f"model work per event")
            if args.against:
                r["this_vs_against_model_time"] = round(
                    r["this"]["model_us_per_event"] / r["against"]["model_us_per_event"], 3)
                r["this_vs_against_list_time"] = round(
                    r["this"]["recommend_us_per_list"] / r["against"]["recommend_us_per_list"], 3)
                log(f"  this / against: model time {r['this_vs_against_model_time']}, list time "
                    f"{r['this_vs_against_list_time']}; same lists: {r['same_lists']}")
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    return {"events": len(events), "batches": results,
            "machine": f"{platform.machine()}, {os.cpu_count()} cpus, "
                       f"Python {platform.python_version()}"}


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, default=30000)
    ap.add_argument("--users", type=int, default=5000)
    ap.add_argument("--items", type=int, default=2000)
    ap.add_argument("--batch", type=int, action="append",
                    help="events per micro-batch (repeatable; default 30 and 160)")
    ap.add_argument("--against", help="another checkout to compare with, interleaved")
    ap.add_argument("--json", action="store_true", help="End with one JSON line of results")
    args = ap.parse_args()
    args.batch = args.batch or [30, 160]
    summary = main(args)
    if args.json:
        print(json.dumps(summary))
