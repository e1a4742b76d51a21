"""Fuzz drill: malformed events, mixed with valid ones, against one worker on the embedded runtime.

    python benchmarks/fuzz.py [--malformed 10000] [--seed 0] [--json]

One pipeline worker (default settings, content encoding on) gets ``--malformed`` bad events over
``views``, ``clicks``, ``uploads`` and ``rec-requests``, each labelled with its kind (broken or
non-object JSON, a wrong ``type``, missing fields, wrong field types, bad ids, numbers out of
range, payloads just over each topic's limit, bad tags and titles, unusable images, uploads of
~1 MB...), shuffled with about as many valid ones: uploads, views and clicks on those items
(unique event ids) and rec-requests, all generated from ``--seed``. Once the worker has handled
everything (or nothing moved for ``--idle-seconds``) it reports: the malformed events
dead-lettered with a reason, matched to what was sent by their topic/partition/offset headers,
and the missing by kind; the valid interactions learned, from the ``{app}:item-events`` count
of each item (malformed events name items of their own, so learning one shows as "unexpected");
valid events dead-lettered; agent crashes in the worker's log (Faust's ``Crashed reason=``).

Exit code 0 if every malformed event was dead-lettered with a reason of its own (not ``internal
error``), every valid interaction learned exactly once, no valid event dead-lettered, no agent
crashed and the worker is alive.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import io
import json
import os
import platform
import random
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import orjson
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from streamrec.clients import kafka_consumer, kafka_producer, redis_client  # noqa: E402
from streamrec.config import Settings  # noqa: E402
from streamrec.embedded import EmbeddedRuntime  # noqa: E402
from streamrec.engine.shared_state import read_stats  # noqa: E402
from streamrec.processes import start_worker, wait_for_worker  # noqa: E402
from streamrec.records.dead_letter import REASON, reason_kind  # noqa: E402
from streamrec.records.events import (  # noqa: E402
    MAX_DESCRIPTION,
    MAX_INTERACTION_BYTES,
    MAX_K,
    MAX_TAG,
    MAX_TAGS,
    MAX_TITLE,
    MAX_UPLOAD_BYTES,
)
from streamrec.records.topics import (  # noqa: E402
    CLICKS,
    DEAD_LETTER,
    REC_REQUESTS,
    UPLOADS,
    VIEWS,
    ensure_topics,
)

APP_ID = "fuzz"
#: Fixed event times: a seed gives the same bytes on any day.
BASE_TS = 1_700_000_000
LIMIT = {VIEWS: MAX_INTERACTION_BYTES, CLICKS: MAX_INTERACTION_BYTES,
         REC_REQUESTS: MAX_INTERACTION_BYTES, UPLOADS: MAX_UPLOAD_BYTES}
IDS = {VIEWS: ("event_id", "user_id", "item_id"), CLICKS: ("event_id", "user_id", "item_id"),
       UPLOADS: ("event_id", "item_id", "creator_id"), REC_REQUESTS: ("request_id", "user_id")}
REQUIRED = {t: (*ids, "ts") for t, ids in IDS.items() if t != REC_REQUESTS}
REQUIRED.update({UPLOADS: (*IDS[UPLOADS], "ts", "title"), REC_REQUESTS: IDS[REC_REQUESTS]})
OTHER_TYPE = {VIEWS: "click", CLICKS: "upload", UPLOADS: "rec-request", REC_REQUESTS: "view"}


@dataclass(slots=True)
class Sent:
    topic: str
    key: bytes | None
    value: bytes | None
    kind: str = "valid"  # or the malformed kind
    item: str | None = None  # the item of a valid view or click

    @property
    def valid(self) -> bool:
        return self.kind == "valid"


Mutation = Callable[[str, dict, int], "bytes | None"]
dumps = orjson.dumps


def png(j: int, size: int = 32) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (size, size), (j * 37 % 256, j * 91 % 256, j * 13 % 256)).save(buf, "PNG")
    return buf.getvalue()


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def base(topic: str, i: int) -> dict:
    """A valid event of ``topic`` for a mutation to break, with ids no valid event uses."""
    ts = BASE_TS + i
    if topic == REC_REQUESTS:
        return {"request_id": f"bad-r{i}", "user_id": f"bad-u{i}", "k": 10, "ts": ts}
    if topic == UPLOADS:
        return {"event_id": f"bad-e{i}", "item_id": f"bad-i{i}", "creator_id": f"bad-c{i}",
                "ts": ts, "title": f"Bad item {i}"}
    return {"event_id": f"bad-e{i}", "user_id": f"bad-u{i}", "item_id": f"bad-i{i}", "ts": ts}


def put(**changes) -> Mutation:
    return lambda t, d, i: dumps({**d, **changes})


def set_id(value) -> Mutation:
    """One of the topic's id fields, a different one from event to event, set to ``value``."""
    return lambda t, d, i: dumps({**d, IDS[t][i % len(IDS[t])]: value})


def raw_ts(text: bytes) -> Mutation:
    """``ts`` as literal JSON text that orjson would not write (NaN, overflow)."""
    return lambda t, d, i: dumps({**d, "ts": 0}).replace(b'"ts":0', b'"ts":' + text, 1)


def append(text: bytes) -> Mutation:
    """Raw bytes added as the object's last member."""
    return lambda t, d, i: dumps(d)[:-1] + b"," + text + b"}"


def sized(size: int, **changes) -> Mutation:
    """``changes`` plus a padding field that brings the payload to exactly ``size`` bytes
    (``size`` < 0: that far over the topic's limit)."""
    def mutate(t: str, d: dict, i: int) -> bytes:
        want = size if size > 0 else LIMIT[t] - size
        head = len(dumps({**d, **changes, "pad": ""}))
        return dumps({**d, **changes, "pad": "p" * (want - head)})
    return mutate


COMMON: dict[str, Mutation] = {
    "not_json": lambda t, d, i: b"not json %d" % i, "empty_value": lambda t, d, i: None,
    "truncated_json": lambda t, d, i: dumps(d)[: len(dumps(d)) // 2],
    "empty_bytes": lambda t, d, i: b"", "whitespace_only": lambda t, d, i: b"   \n",
    "json_list": lambda t, d, i: dumps([d]), "json_number": lambda t, d, i: b"%d" % i,
    "json_string": lambda t, d, i: dumps(f"event {i}"), "json_null": lambda t, d, i: b"null",
    "json_bool": lambda t, d, i: b"true", "trailing_garbage": lambda t, d, i: dumps(d) + b" x",
    "bom_prefix": lambda t, d, i: b"\xef\xbb\xbf" + dumps(d),
    "deep_nesting": lambda t, d, i: b"[" * 1500 + b"]" * 1500,  # past orjson's depth limit
    "invalid_utf8": append(b'"note":"\xff\xfe\xfd"'), "lone_surrogate": append(b'"note":"\\ud800"'),
    "raw_control_char": append(b'"note":"a\x01b"'),
    "duplicate_key_bad_last": append(b'"ts":"dup"'),  # orjson keeps the last
    "type_list": put(type=[]), "type_object": put(type={}), "type_number": put(type=7),
    "type_bool": put(type=True), "type_unknown": put(type="purchase"),
    "type_other_topic": lambda t, d, i: dumps({**d, "type": OTHER_TYPE[t]}),
    "missing_field": lambda t, d, i: dumps({k: v for k, v in d.items()
                                            if k != REQUIRED[t][i % len(REQUIRED[t])]}),
    "id_int": set_id(12345), "id_float": set_id(1.5), "id_bool": set_id(True),
    "id_object": set_id({"id": "x"}), "id_list": set_id(["x"]), "id_too_long": set_id("x" * 129),
    "id_deeply_nested": set_id(orjson.loads(b"[" * 200 + b'"x"' + b"]" * 200)),
    "id_bad_chars": set_id("has space!"), "id_empty": set_id(""),
    "id_unicode": set_id("u-\u00fc\U0001f600"), "id_newline": set_id("a\nb"),
    "ts_string": put(ts="yesterday"), "ts_bool": put(ts=True), "ts_object": put(ts={"s": 1}),
    "ts_negative": put(ts=-1), "ts_nan_text": raw_ts(b"NaN"), "ts_overflow_text": raw_ts(b"1e999"),
    "ts_far_future": put(ts=4_000_000_000), "ts_huge": put(ts=1e308),
    "just_over_limit": sized(-1),
}
PER_TOPIC: dict[str, dict[str, Mutation]] = {
    VIEWS: {"position_negative": put(position=-1), "position_float": put(position=1.5),
            "position_too_big": put(position=10 ** 6), "position_string": put(position="3"),
            "position_bigint": append(b'"position":' + b"9" * 30),  # no 64-bit int: a float
            "dwell_negative": put(dwell_ms=-5), "dwell_too_big": put(dwell_ms=1e12),
            "dwell_string": put(dwell_ms="long"),
            "request_id_bad": put(request_id="bad id!")},
    CLICKS: {"request_id_int": put(request_id=5), "request_id_bad": put(request_id="bad id!")},
    REC_REQUESTS: {
        "k_zero": put(k=0), "k_too_big": put(k=MAX_K + 1), "k_float": put(k=2.5),
        "k_bool": put(k=True), "k_string": put(k="10"), "exclude_not_list": put(exclude="i1"),
        "exclude_non_string": put(exclude=[1, None]),
        "exclude_too_many": lambda t, d, i: dumps({"request_id": d["request_id"], "user_id": "u",
                                                   "exclude": ["a"] * 1001})},
    UPLOADS: {
        "title_too_long": put(title="x" * (MAX_TITLE + 1)), "title_blank": put(title="   "),
        "title_number": put(title=42),
        "description_too_long": put(description="d" * (MAX_DESCRIPTION + 1)),
        "tags_not_list": put(tags="music,jazz"), "tags_non_string": put(tags=["ok", 5, None]),
        "tags_too_many": put(tags=[f"t{n}" for n in range(MAX_TAGS + 1)]),
        "tag_too_long": put(tags=["x" * (MAX_TAG + 1)]), "tag_empty": put(tags=[""]),
        "image_number": put(image=5), "image_data_url_no_comma": put(image="data:image/png;base64"),
        "image_file_nul": put(image="file:a\u0000b"),
        "image_file_outside_root": put(image="file:../../etc/passwd"),
        "image_file_missing": lambda t, d, i: dumps({**d, "image": f"file:missing-{i}.png"}),
        "image_not_base64": put(image="%%% not base64 %%%"),
        "image_not_an_image": put(image=b64(b"plain text, not an image")),
        "image_data_url_not_an_image": put(image="data:image/png;base64," + b64(b"GIF89a junk")),
        "image_truncated_png": put(image=b64(png(1)[:60])),
        "image_object_wrong_shape": put(image={"url": 5, "bytes": [1, 2]})},
}
#: ~1 MB each: a few per run rather than one in every few hundred malformed events.
HEAVY: dict[str, Mutation] = {
    "just_over_limit": COMMON["just_over_limit"],
    "image_too_large": sized(960_000, image="A" * 958_000),  # > 700 KiB decoded; fields valid
    "near_limit_bad_field": sized(1_020_000, creator_id=7, image="A" * 1_000_000),
}


def malformed_events(n: int) -> list[Sent]:
    """``n`` malformed events, cycling over every (topic, kind) so that each appears."""
    light = [(t, k, m) for t in LIMIT for k, m in {**COMMON, **PER_TOPIC[t]}.items()
             if not (t == UPLOADS and k == "just_over_limit")]
    heavy = [(UPLOADS, k, m) for k, m in HEAVY.items()]
    each_heavy = max(2, n // 2000)
    kinds = [heavy[j % len(heavy)] for j in range(each_heavy * len(heavy))]
    kinds += [light[j % len(light)] for j in range(n - len(kinds))]
    out = []
    for i, (topic, kind, mutate) in enumerate(kinds):
        d = base(topic, i)
        value = mutate(topic, d, i)
        key = d[IDS[topic][1]].encode() if i % 2 or value is None else None  # None: no key
        out.append(Sent(topic, key, value, kind))
    return out


def valid_events(rng: random.Random, n: int) -> list[Sent]:
    """Uploads of a set of items, then views, clicks (on those items) and rec-requests."""
    items = [f"fz-item-{j}" for j in range(max(5, min(60, n // 100)))]
    users = [f"fz-user-{j}" for j in range(max(10, n // 20))]
    out = []
    for j, item in enumerate(items):
        d = {"event_id": f"fz-up-{j}", "item_id": item, "creator_id": f"fz-creator-{j % 7}",
             "ts": BASE_TS + j, "title": f"Fuzz item {j}", "description": "A valid upload.",
             "tags": ["fuzz", f"t{j % 5}"], **({"image": b64(png(j))} if j % 4 == 0 else {})}
        out.append(Sent(UPLOADS, item.encode(), dumps(d)))
    for j in range(n - len(items)):
        user, ts = rng.choice(users), BASE_TS + 1000 + j / 100
        typed = j % 4 < 2  # with and without the optional type field
        if j % 10 == 9:
            d = {"request_id": f"fz-req-{j}", "user_id": user, "k": rng.randint(1, MAX_K), "ts": ts}
            d.update({"type": "rec-request"} if typed else {})
            out.append(Sent(REC_REQUESTS, user.encode(), dumps(d)))
            continue
        item, topic = rng.choice(items), VIEWS if j % 3 else CLICKS
        d = {"event_id": f"fz-ev-{j}", "user_id": user, "item_id": item, "ts": ts}
        if topic == VIEWS and j % 4 == 0:
            d.update(position=rng.randint(0, 50), dwell_ms=rng.uniform(0, 60_000))
        d.update({"type": "view" if topic == VIEWS else "click"} if typed else {})
        out.append(Sent(topic, user.encode(), dumps(d), item=item))
    return out


async def publish_all(settings: Settings, events: list[Sent], log) -> dict[tuple[str, int, int], Sent]:
    """Send ``events`` in order; each by where it landed (what a dead letter's headers say)."""
    producer = kafka_producer(settings, linger_ms=5,
                              max_request_size=2_000_000)  # the ~1 MB uploads
    await producer.start()
    try:
        futures = []
        for n, ev in enumerate(events, 1):
            futures.append(await producer.send(ev.topic, ev.value, key=ev.key))
            if n % 5000 == 0 or n == len(events):
                log(f"  queued {n:,} of {len(events):,}")
        landed = await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return {(m.topic, m.partition, m.offset): ev for m, ev in zip(landed, events)}


async def collect(settings: Settings, into: list[tuple[dict[str, bytes], bytes]]) -> None:
    """Every dead letter from the beginning, as (headers, value), until cancelled."""
    consumer = kafka_consumer(settings, DEAD_LETTER, auto_offset_reset="earliest",
                              enable_auto_commit=False, max_partition_fetch_bytes=4 << 20,
                              fetch_max_bytes=16 << 20)
    await consumer.start()
    try:
        while True:
            for msgs in (await consumer.getmany(timeout_ms=200)).values():
                into.extend((dict(m.headers), m.value) for m in msgs)
    finally:
        await consumer.stop()


async def settle(r, dead: list, want_dead: int, want_events: int, args, log) -> dict[str, int]:
    """Wait until the worker has handled every event (or stopped moving); its counters."""
    t0 = still_since = last_log = time.monotonic()
    last = None
    while True:
        await asyncio.sleep(0.5)
        stats, now = await read_stats(r, APP_ID), time.monotonic()
        state = (tuple(sorted(stats.items())), len(dead))
        if state != last:
            last, still_since = state, now
        done = len(dead) >= want_dead and stats.get("events", 0) >= want_events
        if now - last_log > 10:
            log(f"  {now - t0:4.0f}s: {stats.get('events', 0):,} valid events handled, "
                f"{len(dead):,} dead letters")
            last_log = now
        # Once everything is in, a moment more for anything handled twice.
        if (done and now - still_since > 3) or now - still_since > args.idle_seconds \
                or now - t0 > args.max_seconds:
            return stats


def intact(value: bytes, headers: dict[str, bytes], original: bytes) -> bool:
    """The dead letter holds ``original``: as it was, or cut with its size and hash."""
    if headers.get("streamrec.truncated") == b"1":
        return (original.startswith(value)
                and headers.get("streamrec.original_bytes") == str(len(original)).encode()
                and headers.get("streamrec.original_sha256")
                == hashlib.sha256(original).hexdigest().encode())
    return value == original


def match(sent: dict[tuple[str, int, int], Sent], dead: list) -> dict:
    """Each dead letter against what was sent at its topic/partition/offset."""
    reasons: dict[tuple[str, int, int], str] = {}
    valid, unmatched, altered, twice = [], 0, 0, 0
    for headers, value in dead:
        key = (headers.get("streamrec.topic", b"").decode(),
               int(headers.get("streamrec.partition", b"-1")),
               int(headers.get("streamrec.offset", b"-1")))
        reason, ev = headers.get(REASON, b"").decode(), sent.get(key)
        if ev is None:
            unmatched += 1
            continue
        altered += not intact(value, headers, ev.value or b"")
        if ev.valid:
            valid.append(f"{ev.topic} {ev.value[:80]!r}: {reason}")
        else:
            twice += key in reasons
            reasons[key] = reasons.get(key) or reason
    malformed = {k: ev for k, ev in sent.items() if not ev.valid}
    missing = Counter(f"{ev.topic}/{ev.kind}" for k, ev in malformed.items() if not reasons.get(k))
    # Dead-lettered, but by the catch-all for unexpected exceptions rather than validation.
    internal = Counter(f"{malformed[k].topic}/{malformed[k].kind}" for k, r in reasons.items()
                       if reason_kind(r) == "internal error")
    return {"malformed_sent": len(malformed),
            "malformed_dead_lettered": sum(1 for r in reasons.values() if r),
            "missing_by_kind": dict(sorted(missing.items())),
            "internal_error_by_kind": dict(sorted(internal.items())),
            "reasons": dict(Counter(reason_kind(r) for r in reasons.values()).most_common()),
            "valid_dead_lettered": len(valid), "valid_dead_letter_samples": valid[:5],
            "dead_letters_unmatched": unmatched, "dead_letters_altered": altered,
            "dead_lettered_twice": twice}


async def learned(r, sent: dict) -> dict:
    """The worker's per-item view and click counts against the valid ones sent."""
    expected = Counter(ev.item for ev in sent.values() if ev.valid and ev.item)
    raw = await r.hgetall(f"{APP_ID}:item-events")
    got = {k.decode(): round(float(v)) for k, v in raw.items()}
    return {"valid_interactions_sent": sum(expected.values()),
            "valid_learned": sum(min(got.get(i, 0), n) for i, n in expected.items()),
            "learned_twice": sum(max(0, got.get(i, 0) - n) for i, n in expected.items()),
            "learned_unexpected": sum(n for i, n in got.items() if i not in expected)}


def crashes(log_path: Path) -> dict[str, int]:
    """Faust logs ``Crashed reason=...`` with the traceback when an agent raises; the model
    process logs ``internal error on`` for a message it isolated and dead-lettered."""
    text = log_path.read_text(errors="replace")
    return {"agent_crashes": text.count("Crashed reason="),
            "internal_errors_logged": text.count("internal error on"),
            "tracebacks": text.count("Traceback (most recent call last)")}


async def main(args) -> dict:
    def log(*a) -> None:
        print(*a, file=sys.stderr if args.json else sys.stdout, flush=True)

    rng = random.Random(args.seed)
    events = malformed_events(args.malformed) + valid_events(rng, args.malformed)
    rng.shuffle(events)
    with EmbeddedRuntime(run_dir=Path("runs") / f"fuzz-{time.strftime('%Y%m%d-%H%M%S')}") as rt:
        await ensure_topics(rt.settings(), 4)
        proc = start_worker(rt, partitions=4, app_id=APP_ID)
        r = redis_client(rt.settings())
        dead: list = []
        collector = asyncio.create_task(collect(rt.settings(), dead))
        try:
            await wait_for_worker(rt.settings(), proc, app_id=APP_ID)
            t0 = time.monotonic()
            log(f"sending {len(events):,} events ({args.malformed:,} malformed)")
            sent = await publish_all(rt.settings(), events, log)
            n_valid = sum(ev.valid for ev in events)
            stats = await settle(r, dead, len(events) - n_valid, n_valid, args, log)
            if collector.done():  # it failed: its error, not counts missing what it did not read
                collector.result()
            seconds = time.monotonic() - t0
            out = {**match(sent, dead), **await learned(r, sent), **crashes(proc.log),
                   "worker_alive": proc.proc.poll() is None, "stats": stats,
                   "dead_letters": len(dead), "seconds": round(seconds, 1),
                   **{f"valid_{name}_sent": sum(ev.valid and ev.topic == t for ev in events)
                      for name, t in (("uploads", UPLOADS), ("requests", REC_REQUESTS))}}
        finally:
            collector.cancel()
            await asyncio.gather(collector, return_exceptions=True)
            await r.aclose()
            proc.stop()
    out["machine"] = (f"{platform.machine()}, {os.cpu_count()} cpus, "
                      f"Python {platform.python_version()}")
    out["passed"] = (out["malformed_dead_lettered"] == out["malformed_sent"]
                     and out["valid_learned"] == out["valid_interactions_sent"]
                     and not out["learned_twice"] and not out["learned_unexpected"]
                     and not out["internal_error_by_kind"]  # each a reason of its own
                     and not out["dead_letters_altered"] and not out["dead_letters_unmatched"]
                     and not out["valid_dead_lettered"] and not out["agent_crashes"]
                     and out["worker_alive"])
    report(out, Counter(f"{ev.topic}/{ev.kind}" for ev in events if not ev.valid), log)
    return out


def report(out: dict, sent: Counter, log, top: int = 25) -> None:
    def row(name: str, value: int, note: str = "") -> None:
        log(f"{name:34s}{value:>10,}{note}")

    log("")
    row("malformed sent", out["malformed_sent"])
    row("  dead-lettered with a reason", out["malformed_dead_lettered"])
    missing = out["missing_by_kind"]
    lost, of = Counter(), Counter()
    for kind, n in sent.items():
        of[kind.split("/")[0]] += n
        lost[kind.split("/")[0]] += missing.get(kind, 0)
    log("  missing by topic: " + ", ".join(f"{t} {lost[t]:,} of {of[t]:,}" for t in LIMIT))
    # Kinds of the topics only partly lost, worst first (a lost batch takes every kind in it).
    worst = sorted((k for k in missing if lost[k.split("/")[0]] < of[k.split("/")[0]]),
                   key=lambda k: (-missing[k] / sent[k], -missing[k], k))
    for kind in worst[:top]:
        log(f"    missing {kind:38s}{missing[kind]:>6,} of {sent[kind]:,}")
    if len(worst) > top:
        log(f"    ... and {sum(missing[k] for k in worst[top:]):,} more "
            f"in {len(worst) - top} kinds")
    log(f"  reasons: {', '.join(f'{k} {n}' for k, n in out['reasons'].items())}")
    for kind, n in out["internal_error_by_kind"].items():
        log(f"    internal error {kind:31s}{n:>6,} of {sent[kind]:,}")
    # The worker counts a dead letter when its batch is done, before publishing it.
    row("dead letters received", out["dead_letters"],
        f" (the worker counted {out['stats'].get('dead_letter', 0):,})")
    for name in ("valid_interactions_sent", "valid_learned", "learned_twice",
                 "learned_unexpected", "valid_dead_lettered", "dead_letters_unmatched",
                 "dead_letters_altered", "dead_lettered_twice", "agent_crashes",
                 "internal_errors_logged", "tracebacks"):
        row(name.replace("_", " "), out[name])
    for sample in out["valid_dead_letter_samples"]:
        log(f"    {sample}")
    for name, topic in (("uploads", "upload"), ("requests", "rec-request")):
        row(f"valid {name} handled", out["stats"].get(f"events_{topic}", 0),
            f" of {out[f'valid_{name}_sent']:,}")
    log(f"{'worker alive':34s}{out['worker_alive']!s:>10s}")
    log(f"{'seconds, send to settled':34s}{out['seconds']:>10,.1f}")
    log("PASS" if out["passed"] else "FAIL")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--malformed", type=int, default=10000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--idle-seconds", type=float, default=20.0,
                    help="Stop waiting once neither the counters nor the dead letters "
                         "have moved this long")
    ap.add_argument("--max-seconds", type=float, default=300.0,
                    help="The longest wait for the worker after the last event is sent")
    ap.add_argument("--json", action="store_true", help="End with one JSON line of results")
    args = ap.parse_args()
    summary = asyncio.run(main(args))
    if args.json:
        print(json.dumps(summary))
    sys.exit(0 if summary["passed"] else 1)
