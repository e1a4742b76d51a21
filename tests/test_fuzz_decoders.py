"""Hostile input against every decoder, generated (hypothesis) and hand-made: arbitrary bytes and
JSON values on each topic, valid events mutated field by field, duplicate keys, deep nesting,
numbers no field takes, and upload images that explode, lie about their size or point outside
the image root. The only outcomes allowed: a valid event, or an InvalidEvent with a reason."""

from __future__ import annotations

import io
import json
import os
import pickle
import time
from pathlib import Path

import numpy as np
import orjson
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from PIL import Image

from streamrec.content.images import KEPT_SIDE, load_image
from streamrec.records.events import (
    MAX_DEPTH,
    MAX_EMBEDDING_NORM,
    MAX_EMBEDDING_VALUES,
    MIN_EMBEDDING_NORM,
    Event,
    InvalidEvent,
    Upload,
    decode,
    decode_model_update,
    encode,
)

from hostile import (
    BAD_IMAGES,
    BAD_IMAGES_MORE,
    BAD_NUMBERS,
    NUMERIC,
    b64,
    blank_scanlines,
    encoded,
    malformed,
    png,
    text_bomb,
    zlib_bomb,
)

pytestmark = pytest.mark.timeout(300)

KINDS = ["view", "click", "upload", "rec-request"]
#: Every reason kind a decoder may give (docs/events.md, "Reasons").
REASON_KINDS = {
    "empty message", "oversized payload", "malformed JSON", "wrong type", "missing field",
    "bad id", "out of range", "too long", "unknown event type", "malformed event",
    "duplicate key", "too deeply nested", "empty text", "corrupt image", "image too large",
    "image size out of range", "unsupported image format", "image not found",
    "image reference outside the image root", "bad image reference", "image unreadable",
    "image reference not allowed", "invalid model update", "bad embedding model",
    "unsupported embedding dtype", "corrupt embedding", "embedding not finite",
    "embedding norm out of range",
}
#: Modest, so that this file stays in the fast lane; no deadline (the machine is shared).
FAST = settings(max_examples=150, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
FEW = settings(FAST, max_examples=40)
#: A decode that takes longer than this is a hang, as far as a worker is concerned.
SLOW_S = 5.0


def check_reason(exc: InvalidEvent) -> str:
    reason = str(exc)
    assert reason and reason.split(":", 1)[0] in REASON_KINDS, reason
    return reason


def refused_in_time(decoder, *args):
    """``decoder(*args)``, or the reason it refused them with (checked), within ``SLOW_S``;
    any other exception fails the test."""
    started = time.monotonic()
    try:
        return decoder(*args)
    except InvalidEvent as exc:
        return check_reason(exc)
    finally:
        assert time.monotonic() - started < SLOW_S


def outcome(raw: bytes | None, kind: str | None) -> Event | str:
    """The event ``raw`` decodes to, or its reason. A decoded event must stay usable: it
    re-encodes to itself and pickles (it travels to the encoder process)."""
    ev = refused_in_time(decode, raw, kind)
    if isinstance(ev, str):
        return ev
    assert kind is None or ev.type == kind
    assert decode(encode(ev), ev.type) == ev
    pickle.loads(pickle.dumps(ev))
    return ev


def image_outcome(image: str, root: Path | None = None) -> Image.Image | str:
    im = refused_in_time(load_image, image, root)
    if isinstance(im, str):
        return im
    assert max(im.size) <= KEPT_SIDE and im.mode == "RGB"
    return im


# ---- strategies ------------------------------------------------------------------------------

ids = st.from_regex(r"[A-Za-z0-9_.:/-]{1,128}", fullmatch=True)
now = time.time()
ts = st.floats(0, now, allow_nan=False) | st.integers(0, int(now))


def valid_events(kind: str) -> st.SearchStrategy[dict]:
    """JSON objects that are valid events of ``kind``."""
    if kind in ("view", "click"):
        base = {"event_id": ids, "user_id": ids, "item_id": ids, "ts": ts}
        extra = {"request_id": ids}
        if kind == "view":
            extra |= {"position": st.integers(0, 100_000),
                      "dwell_ms": st.floats(0, 86_400_000) | st.integers(0, 86_400_000)}
    elif kind == "upload":
        base = {"event_id": ids, "item_id": ids, "creator_id": ids, "ts": ts,
                "title": st.text(min_size=1, max_size=40).filter(str.strip)}
        extra = {"description": st.text(max_size=80),
                 "tags": st.lists(st.text(min_size=1, max_size=64), max_size=5),
                 "lang": st.sampled_from(["en", "fr"])}
    else:
        base = {"request_id": ids, "user_id": ids}
        extra = {"k": st.integers(1, 200), "exclude": st.lists(ids, max_size=5), "ts": ts}
    return st.fixed_dictionaries(base, optional=extra)


#: Integers well past 64 bits; JSON text of more than 4,300 digits is out of Python's reach.
json_scalars = (st.none() | st.booleans() | st.integers(-2**200, 2**200)
                | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=30))
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=4),
    max_leaves=20)


def dumps(value: object) -> bytes:
    """JSON text as any producer might write it: NaN and Infinity literals, huge integers."""
    return json.dumps(value).encode()


# ---- the event decoders ----------------------------------------------------------------------

@FAST
@given(raw=st.binary(max_size=5000), kind=st.sampled_from([*KINDS, None]))
@example(raw=b"", kind="view")
@example(raw=b"\xef\xbb\xbf{}", kind="click")
@example(raw=b'"\\ud800"', kind="upload")
def test_arbitrary_bytes_are_events_or_reasons(raw, kind):
    outcome(raw, kind)


@FAST
@given(value=json_values, kind=st.sampled_from([*KINDS, None]))
def test_arbitrary_json_values_are_events_or_reasons(value, kind):
    outcome(dumps(value), kind)


@FAST
@given(data=st.data(), kind=st.sampled_from(KINDS))
def test_valid_events_decode_to_what_was_sent(data, kind):
    d = data.draw(valid_events(kind))
    ev = outcome(orjson.dumps(d), kind)
    assert not isinstance(ev, str), ev
    assert ev.type == kind


@FAST
@given(data=st.data(), kind=st.sampled_from(KINDS), odd=json_values)
def test_valid_events_mutated_field_by_field(data, kind, odd):
    d = data.draw(valid_events(kind))
    name = data.draw(st.sampled_from([*d, "type", "image", "extra", "k", "position"]))
    how = data.draw(st.sampled_from(["replace", "delete", "number"]))
    if how == "delete":
        d.pop(name, None)
        raw = dumps(d)
    elif how == "number":  # numbers no field takes, written as text
        d[name] = "@@"
        raw = dumps(d).replace(b'"@@"', data.draw(st.sampled_from(BAD_NUMBERS)).encode())
    else:
        d[name] = odd
        raw = dumps(d)
    outcome(raw, kind)


@FAST
@given(data=st.data(), kind=st.sampled_from(KINDS))
def test_valid_events_mutated_byte_by_byte(data, kind):
    raw = bytearray(orjson.dumps(data.draw(valid_events(kind))))
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(0, len(raw) - 1))
        op = data.draw(st.sampled_from(["flip", "insert", "delete", "cut"]))
        if op == "flip":
            raw[at] = data.draw(st.integers(0, 255))
        elif op == "insert":
            raw[at:at] = data.draw(st.binary(min_size=1, max_size=4))
        elif op == "delete" and len(raw) > 1:
            del raw[at]
        elif op == "cut":
            del raw[at:]
        if not raw:
            break
    outcome(bytes(raw), kind)


# ---- supplied embeddings ----------------------------------------------------------------------

SPACE = "minilm-l6-v2+effnet-lite0+tags:fixed-v1:128"
UPLOAD = {"event_id": "e1", "item_id": "i1", "creator_id": "c1", "ts": 1, "title": "t"}
#: Vectors whose norm is inside the bounds (floats at any scale a producer might use).
vectors = st.lists(st.floats(-100, 100, width=32), min_size=1, max_size=300).filter(
    lambda v: MIN_EMBEDDING_NORM * 1.01 < np.linalg.norm(v) < MAX_EMBEDDING_NORM * 0.99)


def embedding_form(v: list[float], form: str) -> dict:
    if form == "list":
        return {"embedding": v}
    dtype = "<f2" if form == "float16" else "<f4"
    d = {"embedding": b64(np.asarray(v, dtype).tobytes())}
    return d if form == "default" else {**d, "embedding_dtype": form}


@FAST
@given(v=vectors, form=st.sampled_from(["list", "default", "float32", "float16"]))
def test_valid_embeddings_decode_to_their_float32_values(v, form):
    ev = outcome(orjson.dumps({**UPLOAD, **embedding_form(v, form), "embedding_model": SPACE}),
                 "upload")
    if form == "float16" and isinstance(ev, str):  # values float16 rounds to zero or beyond
        assert ev.startswith(("embedding norm out of range", "embedding not finite")), ev
        return
    assert not isinstance(ev, str), ev
    want = np.asarray(v, np.float16 if form == "float16" else np.float32).astype(np.float32)
    assert np.array_equal(np.frombuffer(ev.embedding, "<f4"), want)


embedding_values = (json_values | st.binary(max_size=600).map(b64)
                    | st.lists(st.floats(allow_nan=True, allow_infinity=True, width=32),
                               max_size=50).map(lambda v: b64(np.asarray(v, "<f4").tobytes()))
                    | st.lists(st.floats(allow_nan=True, allow_infinity=True) | st.integers(),
                               max_size=50))


@FAST
@given(embedding=embedding_values,
       dtype=st.sampled_from([None, "float32", "float16"]) | json_scalars,
       model=st.sampled_from([None, SPACE]) | json_scalars)
def test_arbitrary_embedding_fields_are_usable_vectors_or_reasons(embedding, dtype, model):
    d = {**UPLOAD, "embedding": embedding, "embedding_dtype": dtype, "embedding_model": model}
    ev = outcome(dumps({k: v for k, v in d.items() if v is not None}), "upload")
    if isinstance(ev, str) or ev.embedding is None:
        return
    x = np.frombuffer(ev.embedding, "<f4")
    assert 0 < len(x) <= MAX_EMBEDDING_VALUES and np.isfinite(x).all()
    assert MIN_EMBEDDING_NORM <= np.linalg.norm(x.astype(np.float64)) <= MAX_EMBEDDING_NORM
    assert isinstance(ev.embedding_model, str)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("text", BAD_NUMBERS)
def test_no_numeric_field_takes_nan_infinity_or_huge_numbers(kind, text):
    for name in NUMERIC[kind]:
        d = {"event_id": "e1", "user_id": "u1", "item_id": "i1", "ts": 1.0, "request_id": "r1",
             "creator_id": "c1", "title": "t", name: "@@"}
        reason = outcome(orjson.dumps(d).replace(b'"@@"', text.encode()), kind)
        assert isinstance(reason, str), (name, text)
        if text in ("NaN", "Infinity", "-Infinity", "1e400", "-1e400"):
            assert reason.startswith("malformed JSON"), reason
        else:  # 2**80 arrives as a float: still out of range, not "must be an integer"
            assert reason.startswith(f"out of range: {name}="), reason


def test_python_integers_beyond_floats_are_out_of_range():
    from streamrec.records.events import from_dict

    for value in (10**400, -10**5000):
        for name, kind in (("ts", "click"), ("dwell_ms", "view"), ("position", "view"),
                           ("k", "rec-request")):
            d = {"event_id": "e", "user_id": "u", "item_id": "i", "ts": 1, "request_id": "r",
                 name: value}
            with pytest.raises(InvalidEvent, match=f"^out of range: {name}=<integer of"):
                from_dict(d, kind)


@pytest.mark.parametrize("kind", KINDS)
def test_non_utf8_bytes_are_malformed_json(kind):
    for bad in (b"\xff", b"\xc0\xaf", b"\xed\xa0\x80", b"\xf8\x88\x80\x80\x80", b"caf\xe9"):
        raw = b'{"event_id": "e1", "user_id": "u1", "title": "' + bad + b'", "ts": 1}'
        assert outcome(raw, kind).startswith("malformed JSON")
    assert outcome(b'{"event_id": "\\udc80"}', kind).startswith("malformed JSON")


# ---- duplicate keys --------------------------------------------------------------------------

def has_duplicates(raw: bytes) -> bool:
    """The reference: the standard parser shows every key."""
    found = False

    def pairs(items):
        nonlocal found
        keys = [k for k, _ in items]
        found |= len(keys) != len(set(keys))
        return {}
    json.loads(raw, object_pairs_hook=pairs)
    return found


def escaped(key: str) -> str:
    """``key`` with every character as a \\u escape: the same key to a parser."""
    return "".join(f"\\u{ord(c):04x}" for c in key)


@FAST
@given(data=st.data(), kind=st.sampled_from(KINDS))
def test_a_key_given_twice_is_refused_wherever_it_is(data, kind):
    d = data.draw(valid_events(kind))
    pairs = [(json.dumps(k), json.dumps(v)) for k, v in d.items()]
    name = data.draw(st.sampled_from(sorted(d)))
    key = json.dumps(name) if data.draw(st.booleans()) else f'"{escaped(name)}"'
    value = data.draw(st.sampled_from([json.dumps(d[name]), '"x:y"', "1", '"\\u003a"']))
    pairs.insert(data.draw(st.integers(0, len(pairs))), (key, value))
    raw = ("{" + ", ".join(f"{k}: {v}" for k, v in pairs) + "}").encode()
    assert outcome(raw, kind) == f"duplicate key: {name[:40]!r}"


#: JSON objects written pair by pair, keys possibly repeated, with colons and escapes about.
keys = st.sampled_from(["a", "b", "a:b", ":", "\\u0061", "\\u003a", "x\\u003ay", "c"])
texts = st.sampled_from(['"a"', '":"', '"\\u003a"', '"a:b:c"', '""', "1", "null", "[]"])
raw_objects = st.recursive(
    texts,
    lambda inner: st.lists(st.tuples(keys, inner), max_size=4).map(
        lambda kv: "{" + ",".join(f'"{k}": {v}' for k, v in kv) + "}")
    | st.lists(inner, max_size=3).map(lambda xs: "[" + ", ".join(xs) + "]"),
    max_leaves=12)


@FAST
@given(body=raw_objects)
def test_duplicate_keys_are_found_exactly_at_any_depth(body):
    # The fast check counts colons; it must agree with a parser that sees every key, even
    # when escapes spell keys or colons.
    raw = ('{"event_id": "e1", "item_id": "i1", "creator_id": "c", "ts": 1, "title": "t", '
           f'"meta": {body}}}').encode()
    got = outcome(raw, "upload")
    refused = isinstance(got, str) and got.startswith("duplicate key")
    assert refused == has_duplicates(raw), got


def test_duplicate_keys_cost_little_on_the_decode_path():
    # The choice to refuse them: measured here, the check adds about a microsecond to a
    # view's decode (orjson parses, then writes the value back to count its colons).
    raw = orjson.dumps({"type": "view", "event_id": "e-app-81733", "user_id": "u53",
                        "item_id": "i332", "ts": 1796461948.558, "position": 3,
                        "dwell_ms": 1200})
    n = 20_000
    started = time.perf_counter()
    for _ in range(n):
        decode(raw, "view")
    per_event_us = (time.perf_counter() - started) / n * 1e6
    print(f"decode of a view: {per_event_us:.1f} us")
    assert per_event_us < 200  # a generous bound: the machine is shared


# ---- nesting ---------------------------------------------------------------------------------

UPLOAD = {"event_id": "e1", "item_id": "i1", "creator_id": "c1", "ts": 1, "title": "t"}


def nested(depth: int, open_: str = "[", close: str = "]") -> bytes:
    return (open_ * depth + close * depth).encode()


@pytest.mark.parametrize("kind", KINDS)
def test_deep_nesting_is_refused_by_depth_or_size(kind):
    for depth in (MAX_DEPTH, 1000, 1025, 100_000):
        raw = orjson.dumps(UPLOAD)[:-1] + b', "extra": ' + nested(depth) + b"}"
        reason = outcome(raw, kind)
        assert isinstance(reason, str)
        if len(raw) > 4096 and kind != "upload":
            assert reason.startswith("oversized payload")
        else:
            assert reason.startswith("too deeply nested"), reason
    top = outcome(nested(100_000), kind)
    assert top.startswith("too deeply nested" if kind == "upload" else "oversized payload")


def test_the_depth_limit_is_exact_for_lists_and_objects():
    for depth in (MAX_DEPTH - 1, MAX_DEPTH):
        for value in (nested(depth), b'{"a": ' * depth + b"1" + b"}" * depth):
            raw = orjson.dumps(UPLOAD)[:-1] + b', "meta": ' + value + b"}"
            # the event is one level: `depth` more is one too many
            reason = outcome(raw, "upload")
            assert isinstance(reason, Upload) == (depth < MAX_DEPTH), reason


# ---- other topics ----------------------------------------------------------------------------

@FAST
@given(raw=st.binary(max_size=300) | json_values.map(dumps))
@example(raw=b'{"kind": "student", "version": "v1", "kind": "x"}')
def test_model_update_announcements_are_valid_or_reasons(raw):
    try:
        d = decode_model_update(raw)
    except InvalidEvent as exc:
        assert check_reason(exc).startswith("invalid model update: ")
    else:
        assert isinstance(d["kind"], str) and isinstance(d["version"], str)


def test_the_hostile_mix_is_refused_with_the_reasons_it_names():
    # The end-to-end fuzz sends these through a worker; here each is decoded alone. Image
    # reasons come later in the upload path, in load_image.
    n = 0
    for topic, value, kind in malformed(2000, seed=1):
        expected = {"views": "view", "clicks": "click", "uploads": "upload",
                    "rec-requests": "rec-request"}[topic]
        got = outcome(value, expected)
        if isinstance(got, Upload):
            got = image_outcome(got.image or "", Path("no-such-root"))
        assert isinstance(got, str) and got.startswith(kind), (kind, got, value[:120])
        n += 1
    assert n == 2000


# ---- upload images ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def image_root(tmp_path_factory) -> Path:
    """An image root with one good image, and ways out of it: symlinks to a file, a folder
    and a device outside, a symlink loop, a FIFO, a folder."""
    base = tmp_path_factory.mktemp("images")
    root = base / "root"
    (root / "sub").mkdir(parents=True)
    Image.new("RGB", (16, 16), (0, 200, 0)).save(root / "ok.png")
    Image.new("RGB", (16, 16), (200, 0, 0)).save(base / "secret.png")
    os.symlink(base / "secret.png", root / "to-secret.png")
    os.symlink(base, root / "to-outside")
    os.symlink("/dev/zero", root / "zero")
    os.symlink(root / "loop", root / "loop")
    os.symlink(root / "ok.png", root / "sub" / "ok-link.png")  # inside: allowed
    os.mkfifo(root / "fifo")
    return root


@pytest.mark.parametrize("ref, reason", [
    ("file:../../etc/passwd", "image reference outside the image root"),
    ("file:../secret.png", "image reference outside the image root"),
    ("file:sub/../../secret.png", "image reference outside the image root"),
    ("file:to-secret.png", "image reference outside the image root"),
    ("file:to-outside/secret.png", "image reference outside the image root"),
    ("file:zero", "image reference outside the image root"),
    ("file:/etc/passwd", "image not found"),  # relative to the root, like every name
    ("file://etc/passwd", "image not found"),
    ("file:", "image reference outside the image root"),
    ("file:.", "image reference outside the image root"),
    ("file:loop", "bad image reference"),
    ("file:fifo", "image unreadable"),
    ("file:sub", "image unreadable"),
    ("file:" + "a" * 5000, "image unreadable"),
    ("file:ok\x00.png", "bad image reference: NUL byte"),
])
def test_file_references_stay_inside_the_image_root(image_root, ref, reason):
    got = image_outcome(ref, image_root)
    assert isinstance(got, str) and got.startswith(reason), got
    assert str(image_root) not in got, "a reason names no path of the worker's"


def test_file_references_inside_the_root_load(image_root):
    for ref in ("file:ok.png", "file:/ok.png", "file:sub/../ok.png", "file:sub/ok-link.png"):
        assert image_outcome(ref, image_root).getpixel((0, 0)) == (0, 200, 0)
    assert image_outcome("file:ok.png", None).startswith("image reference not allowed")


@FEW
@given(parts=st.lists(st.sampled_from(["..", ".", "", "sub", "to-outside", "to-secret.png",
                                       "secret.png", "ok.png", "root", "/"]), max_size=6))
def test_no_reference_reads_a_file_outside_the_root(image_root, parts):
    got = image_outcome("file:" + "/".join(parts), image_root)
    if not isinstance(got, str):
        assert got.getpixel((0, 0)) == (0, 200, 0), "only the image inside the root loads"


@pytest.mark.parametrize("name, image, reason", [
    ("50000 x 50000 PNG", b64(png(50_000, 50_000, b"\0" * 64)), "image size out of range"),
    ("2**31-1 wide PNG", b64(png(2**31 - 1, 1)), "image size out of range"),
    ("5000 x 1 PNG", b64(png(5000, 1, blank_scanlines(5000, 1))), "image size out of range"),
    ("0 x 10 PNG", b64(png(0, 10)), "corrupt image"),
    ("header 64 x 64, data 8 x 8", b64(png(64, 64, blank_scanlines(8, 8))), "corrupt image"),
    ("text chunk inflating to 64 MiB", b64(text_bomb(64)), "corrupt image"),
    *((f"hostile mix: {reason}", image, reason)
      for reason, image in [*BAD_IMAGES.items(), *BAD_IMAGES_MORE] if "file:" not in image),
])
def test_images_that_lie_or_explode_are_refused(name, image, reason):
    got = image_outcome(image)
    assert isinstance(got, str) and got.startswith(reason), (name, got)


def test_image_data_beyond_the_declared_size_is_ignored():
    # The decoder stops at the declared size: a small header over a huge stream is cheap.
    for data in (png(8, 8, blank_scanlines(64, 64)), zlib_bomb(64, 64, 128),
                 zlib_bomb(4096, 4096, 64)):
        assert len(data) < 700 * 1024
        im = image_outcome(b64(data))
        assert not isinstance(im, str), im


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "GIF", "BMP", "WEBP"])
@FEW
@given(data=st.data())
def test_truncated_and_corrupted_images_are_images_or_reasons(fmt, data):
    raw = bytearray(encoded((data.draw(st.integers(1, 64)), data.draw(st.integers(1, 64))), fmt))
    if data.draw(st.booleans()):
        del raw[data.draw(st.integers(0, len(raw) - 1)):]
    for _ in range(data.draw(st.integers(0, 6))):
        if raw:
            raw[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 255))
    prefix = data.draw(st.sampled_from(["", "data:image/png;base64,"]))
    image_outcome(prefix + b64(bytes(raw)))


@FAST
@given(image=st.text(max_size=200) | st.binary(max_size=400).map(b64))
@example(image="data:")
@example(image="data:,")
@example(image="file:")
def test_arbitrary_image_fields_are_images_or_reasons(image):
    image_outcome(image)


@FEW
@given(data=st.data())
def test_uploads_with_hostile_images_decode_then_load_or_give_reasons(data, image_root):
    # The whole upload path: the message, then its image.
    image = data.draw(st.sampled_from([*BAD_IMAGES.values(), *(i for _, i in BAD_IMAGES_MORE),
                                       "file:ok.png", b64(encoded((20, 10), "PNG"))]))
    up = {**data.draw(valid_events("upload")), "image": image}
    ev = outcome(orjson.dumps(up), "upload")
    assert isinstance(ev, Upload)
    image_outcome(ev.image, image_root)


def test_a_kept_image_is_small_whatever_it_declared():
    buf = io.BytesIO()
    Image.new("RGB", (4096, 4096), "white").save(buf, "JPEG", quality=10)
    assert image_outcome(b64(buf.getvalue())).size == (KEPT_SIDE, KEPT_SIDE)
