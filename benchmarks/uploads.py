"""Uploads on the embedded runtime: upload -> recommendable latency at a steady rate, and the
uploads/s one worker sustains when it does nothing else, for uploads it encodes and for
uploads that supply their own embedding; plus the decoder, encoder and index costs.

    python benchmarks/uploads.py [--rate 50] [--seconds 20] [--backlog 600]
                                 [--supplied 20000] [--json]

Every encoded upload carries a title, description, tags and a rendered PNG (the synthetic
world's); a supplied one the same text and a 128-d vector of its topics instead of the image
(``WorldConfig.embeddings``), so nothing is encoded. "Recommendable" is the moment the worker
has added the item to its models and registered it in Redis (``indexed_ts`` in
``{app}:items``); the latency is that minus the time the upload was produced. Encoders:
milliseconds per item, one at a time vs batched (torch inference mode, the serving choice).
Index: exact float32 search at 10k, 100k and 1M items.
"""

from __future__ import annotations

import os

# One thread each for BLAS and torch, as in the worker: the broker and Redis need the other core.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse  # noqa: E402
import asyncio  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import sys
import time
from pathlib import Path

import numpy as np  # noqa: E402
import orjson  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from streamrec.clients import redis_client  # noqa: E402
from streamrec.config import Settings  # noqa: E402
from streamrec.content.item_encoder import ItemEncoder  # noqa: E402
from streamrec.embedded import EmbeddedRuntime  # noqa: E402
from streamrec.engine.build import build_engine  # noqa: E402
from streamrec.engine.interface import Incoming  # noqa: E402
from streamrec.engine.shared_state import read_stats  # noqa: E402
from streamrec.models.index import EmbeddingIndex  # noqa: E402
from streamrec.processes import start_worker, wait_for_worker  # noqa: E402
from streamrec.records.events import decode, encode  # noqa: E402
from streamrec.records.topics import ensure_topics  # noqa: E402
from streamrec.simulator.publish import publish  # noqa: E402
from streamrec.simulator.world import World, WorldConfig  # noqa: E402


def uploads(world: World, n: int, ts: float) -> list:
    return [world.new_item(ts) for _ in range(n)]


def pct(a, q) -> float:
    return round(float(np.percentile(np.asarray(a), q)), 2)


async def latencies(r, app_id: str, items: list[str]) -> list[float]:
    raw = await r.hmget(f"{app_id}:items", items)
    out = []
    for m in raw:
        if m is not None:
            d = orjson.loads(m)
            out.append((d["indexed_ts"] - d["produced_ts"]) * 1000.0)
    return out


async def worker_figures(args, log) -> dict:
    world = World(WorldConfig(n_users=10, n_items=0, seed=3))
    app_id = "bench-uploads"
    with EmbeddedRuntime(run_dir=Path("runs") / f"bench-uploads-{time.strftime('%Y%m%d-%H%M%S')}") as rt:
        await ensure_topics(rt.settings(), 4)
        proc = start_worker(rt, partitions=4, app_id=app_id)
        r = redis_client(rt.settings())
        try:
            await wait_for_worker(rt.settings(), proc, app_id=app_id, min_partitions=1)
            # Warm-up: the first batch loads the image model.
            warm = uploads(world, 4, time.time())
            await publish(warm, rt.settings())
            while (await read_stats(r, app_id)).get("events_upload", 0) < len(warm):
                await asyncio.sleep(0.05)
            paced = uploads(world, int(args.rate * args.seconds), time.time())
            await publish(paced, rt.settings(), rate=args.rate)
            await asyncio.sleep(1.0)
            lat = await latencies(r, app_id, [u.item_id for u in paced])
            log(f"{len(lat)}/{len(paced)} uploads at {args.rate:g}/s: upload -> recommendable "
                f"p50 {pct(lat, 50)} ms, p99 {pct(lat, 99)} ms")
            rate, _ = await drain(r, app_id, rt, uploads(world, args.backlog, time.time()))
            log(f"backlog of {args.backlog} encoded uploads: {rate:,.0f} uploads/s sustained")
            supplied = uploads(World(WorldConfig(n_users=10, n_items=0, seed=5,
                                                 embeddings=True)), args.supplied, time.time())
            supplied_rate, sent_rate = await drain(r, app_id, rt, supplied)
            log(f"backlog of {args.supplied:,} uploads with supplied embeddings: "
                f"{supplied_rate:,.0f} uploads/s sustained (published at {sent_rate:,.0f}/s)")
            proc.stop()
            engine = await engine_figures(r, rt.run_dir, args.supplied, log)
        finally:
            await r.aclose()
            proc.stop()
    return {"upload_to_recommendable_p50_ms": pct(lat, 50),
            "upload_to_recommendable_p99_ms": pct(lat, 99), "paced_rate": args.rate,
            "paced_uploads": len(paced), "measured": len(lat), "uploads_per_s": round(rate, 1),
            "supplied_uploads": args.supplied,
            "supplied_uploads_per_s": round(supplied_rate, 1),
            "supplied_published_per_s": round(sent_rate, 1), **engine}


async def engine_figures(r, run_dir: Path, n: int, log) -> dict:
    """Uploads/s of the engine alone (decode, checks, models, Redis; no broker, no worker),
    in batches of 500: ``n`` that supply their vector, and 96 that are encoded (the encoder
    process warmed up first)."""
    out = {}
    for name, count, content, embeddings in (("supplied", n, False, True),
                                             ("encoded", 96, True, False)):
        world = World(WorldConfig(n_users=10, n_items=0, seed=8, embeddings=embeddings))
        msgs = [encode(world.new_item(time.time())) for _ in range(count)]
        engine = build_engine(Settings(app_id=f"bench-engine-{name}", content=content,
                                       snapshot_dir=str(run_dir / "snapshots")), r)
        await engine.start()
        try:
            if engine.content is not None:
                await asyncio.to_thread(engine.content.wait_ready)
                await engine.uploads(incoming([encode(world.new_item(time.time()))
                                               for _ in range(4)]))
            t0 = time.perf_counter()
            for a in range(0, count, 500):
                await engine.uploads(incoming(msgs[a:a + 500], a))
            out[f"engine_{name}_uploads_per_s"] = round(count / (time.perf_counter() - t0), 1)
        finally:
            await engine.close()
    log(f"engine alone, batches of 500: {out['engine_supplied_uploads_per_s']:,.0f} uploads/s "
        f"with supplied embeddings, {out['engine_encoded_uploads_per_s']:,.0f} encoded")
    return out


def incoming(values: list[bytes], first: int = 0) -> list[Incoming]:
    return [Incoming(v, "uploads", 0, first + i, time.time()) for i, v in enumerate(values)]


async def drain(r, app_id: str, rt, backlog: list) -> tuple[float, float]:
    """Publish ``backlog`` as fast as possible; the uploads/s the worker registered them at
    (from its first registered batch to the last) and the uploads/s they were published at."""
    base = (await read_stats(r, app_id)).get("events_upload", 0)
    t0 = time.monotonic()
    sending = asyncio.ensure_future(publish(backlog, rt.settings()))
    t_first = None
    while time.monotonic() - t0 < 600:
        n = (await read_stats(r, app_id)).get("events_upload", 0) - base
        if n and t_first is None:
            t_first, n_first = time.monotonic(), n
        if n >= len(backlog):
            break
        await asyncio.sleep(0.02)
    stats = await sending
    return (n - n_first) / (time.monotonic() - t_first), stats.events / stats.seconds


def decoder_figures(log) -> dict:
    """Decoding (validation included) of one upload message: the encoded world's (text and a
    PNG) vs one supplying a 128-d vector as base64 float32, float16 or a JSON list."""
    import base64

    world = World(WorldConfig(n_users=10, n_items=0, seed=6, embeddings=True))
    with_vec = [world.new_item(0.0) for _ in range(200)]
    forms = {"base64_f32": [encode(u) for u in with_vec]}
    as_json = [orjson.loads(m) for m in forms["base64_f32"]]
    for d in as_json:
        v = np.frombuffer(base64.b64decode(d["embedding"]), "<f4")
        d["embedding"] = v.tolist()
    forms["list"] = [orjson.dumps(d) for d in as_json]
    for d in as_json:
        d["embedding"] = base64.b64encode(np.asarray(d["embedding"], "<f2").tobytes()).decode()
        d["embedding_dtype"] = "float16"
    forms["base64_f16"] = [orjson.dumps(d) for d in as_json]
    plain = World(WorldConfig(n_users=10, n_items=0, seed=6, embeddings=False))
    forms["image_png"] = [encode(plain.new_item(0.0)) for _ in range(200)]
    out = {}
    for name, msgs in forms.items():
        reps = 5
        t0 = time.perf_counter()
        for _ in range(reps):
            for m in msgs:
                decode(m, "upload")
        out[f"decode_us_{name}"] = round((time.perf_counter() - t0) * 1e6 / reps / len(msgs), 1)
        out[f"message_bytes_{name}"] = int(np.mean([len(m) for m in msgs]))
    log("decode one upload, us (message bytes): " + ", ".join(
        f"{n} {out[f'decode_us_{n}']} ({out[f'message_bytes_{n}']:,})" for n in forms))
    return out


def encoder_figures(log) -> dict:
    world = World(WorldConfig(n_users=10, n_items=0, seed=4))
    items = uploads(world, 64, 0.0)
    enc = ItemEncoder()
    enc.encode(items[:2])  # load both models
    out = {}
    for batch in (1, 8, 32):
        t0 = time.perf_counter()
        for a in range(0, len(items), batch):
            enc.encode(items[a:a + batch])
        out[f"encode_ms_per_item_batch_{batch}"] = round(
            (time.perf_counter() - t0) * 1000 / len(items), 2)
    log("encode (text + image + fusion), ms per item: " + ", ".join(
        f"batch {b}: {out[f'encode_ms_per_item_batch_{b}']}" for b in (1, 8, 32)))
    return out


def index_figures(log) -> dict:
    rng = np.random.default_rng(0)
    out = {}
    for n in (10_000, 100_000, 1_000_000):
        idx = EmbeddingIndex(128)
        idx.matrix = rng.normal(size=(n, 128)).astype(np.float32)
        idx.has = np.ones(n, bool)
        for users in (1, 100):
            q = rng.normal(size=(users, 128)).astype(np.float32)
            idx.search(q, 25, n)
            reps = 3 if n >= 1_000_000 else 10
            t0 = time.perf_counter()
            for _ in range(reps):
                idx.search(q, 25, n)
            out[f"search_ms_{n}_items_{users}_users"] = round(
                (time.perf_counter() - t0) * 1000 / reps, 2)
        log(f"exact top-25 over {n:,} items: 1 user {out[f'search_ms_{n}_items_1_users']} ms, "
            f"100 users {out[f'search_ms_{n}_items_100_users']} ms")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rate", type=float, default=50.0, help="Paced uploads per second")
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--backlog", type=int, default=600, help="Uploads drained as fast as possible")
    ap.add_argument("--supplied", type=int, default=20_000,
                    help="Uploads with supplied embeddings drained as fast as possible")
    ap.add_argument("--json", action="store_true", help="End with one JSON line of results")
    args = ap.parse_args()
    log = lambda *a: print(*a, file=sys.stderr if args.json else sys.stdout, flush=True)  # noqa
    summary = asyncio.run(worker_figures(args, log))
    summary.update(decoder_figures(log))
    summary.update(encoder_figures(log))
    summary.update(index_figures(log))
    summary["machine"] = f"{platform.machine()}, {os.cpu_count()} cpus, Python {platform.python_version()}"
    if args.json:
        print(json.dumps(summary))


if __name__ == "__main__":
    main()
