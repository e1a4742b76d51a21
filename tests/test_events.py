"""Event validation: every bad input gets a reason naming what is wrong."""

import base64
import json

import numpy as np
import orjson
import pytest

from streamrec.records.events import (
    Click,
    InvalidEvent,
    RecRequest,
    Retire,
    Upload,
    View,
    decode,
    decode_item_event,
    encode,
    from_dict,
)

VALID_VIEW = {"event_id": "e1", "user_id": "u1", "item_id": "i1", "ts": 1_700_000_000.5,
              "position": 3, "dwell_ms": 1200}


def test_round_trip_of_every_type():
    events = [
        View("e1", "u1", "i1", 1.0, position=2),
        Click("e2", "u1", "i1", 2.0, request_id="r1"),
        Upload("e3", "i9", "c1", 3.0, "A title", "words", ("tag1", "tag2"), extra={"lang": "en"}),
        RecRequest("r2", "u1", k=5, exclude=("i1",), ts=4.0),
        Retire("e4", "i9", 5.0, "moderation"),
    ]
    for ev in events:
        assert decode(encode(ev), ev.type) == ev
        assert from_dict(orjson.loads(encode(ev))) == ev  # log form carries the type


@pytest.mark.parametrize("change, reason", [
    ({"user_id": None}, "missing field: user_id"),
    ({"user_id": 12}, "wrong type: user_id must be a string, got int"),
    ({"item_id": "has space"}, "bad id: item_id"),
    ({"ts": "yesterday"}, "wrong type: ts must be a number"),
    ({"ts": True}, "wrong type: ts must be a number, got bool"),
    ({"ts": -5}, "out of range: ts"),
    ({"ts": 9e12}, "out of range: ts"),
    ({"ts": float("nan")}, "out of range: ts"),
    ({"position": 1.5}, "wrong type: position must be an integer"),
    ({"position": -1}, "out of range: position"),
    ({"type": "purchase"}, "unknown event type: 'purchase'"),
    ({"type": "click"}, "unknown event type: 'click' does not belong on the view stream"),
])
def test_invalid_views_are_explained(change, reason):
    d = {**VALID_VIEW, **change}
    d = {k: v for k, v in d.items() if v is not None}
    with pytest.raises(InvalidEvent) as exc:
        from_dict(d, "view")
    assert str(exc.value).startswith(reason)


def test_malformed_oversized_and_non_object_payloads():
    with pytest.raises(InvalidEvent, match="malformed JSON"):
        decode(b'{"event_id": "e1",', "view")
    with pytest.raises(InvalidEvent, match="oversized payload: 5000 bytes"):
        decode(b" " * 5000, "click")
    with pytest.raises(InvalidEvent, match="must be a JSON object, got list"):
        decode(b"[1, 2]", "view")
    with pytest.raises(InvalidEvent, match="empty message"):
        decode(None, "view")


def test_upload_and_request_limits():
    up = {"event_id": "e1", "item_id": "i1", "creator_id": "c1", "ts": 1.0, "title": "x" * 600}
    with pytest.raises(InvalidEvent, match="too long: title"):
        from_dict(up, "upload")
    with pytest.raises(InvalidEvent, match="out of range: k=0"):
        from_dict({"request_id": "r1", "user_id": "u1", "k": 0}, "rec-request")
    with pytest.raises(InvalidEvent, match="missing field: type"):
        from_dict({"event_id": "e1"})


def test_the_uploads_topic_carries_uploads_and_retirements():
    up = Upload("e1", "i9", "c1", 3.0, "A title")
    assert decode_item_event(encode(up)) == up
    retire = Retire("e2", "i9", 4.0)
    assert decode_item_event(encode(retire)) == retire
    assert b'"type":"retire"' in encode(retire)
    # Without its type, a retirement reads as an upload and lacks an upload's fields.
    with pytest.raises(InvalidEvent, match="missing field: creator_id"):
        decode_item_event(b'{"event_id": "e2", "item_id": "i9", "ts": 4}')
    with pytest.raises(InvalidEvent, match="too long: reason has 201 characters"):
        decode_item_event(encode(Retire("e2", "i9", 4.0, "x" * 201)))
    with pytest.raises(InvalidEvent, match="oversized payload: .* limit 4096"):
        decode_item_event(orjson.dumps({**orjson.loads(encode(retire)), "pad": "y" * 5000}))
    with pytest.raises(InvalidEvent, match="missing field: item_id"):
        decode_item_event(b'{"type": "retire", "event_id": "e2", "ts": 4}')
    for bad, reason in ((None, "empty message"), (b"{", "malformed JSON"),
                        (b" " * 1_100_000, "oversized payload")):
        with pytest.raises(InvalidEvent, match=reason):
            decode_item_event(bad)
    # A retirement belongs on uploads only.
    with pytest.raises(InvalidEvent, match="'retire' does not belong on the view stream"):
        decode(encode(retire), "view")


@pytest.mark.parametrize("declared", [[], {}, ["view"], {"a": 1}, 7, True])
def test_a_type_that_is_not_a_string_is_an_invalid_event(declared):
    for expected in ("view", "click", "upload", "rec-request", None):
        with pytest.raises(InvalidEvent, match="wrong type: type must be a string"):
            from_dict({**VALID_VIEW, "type": declared}, expected)


#: Odd JSON values put in place of each field: every shape must be a reason, never a crash.
ODD_VALUES = [None, [], {}, [[]], [{}], {"a": []}, 0, -1, 2**70, -2**70, 1.5e308, True, "",
              "x" * 200, "\x00", "é", [1, "a"], ["a"] * 100, {"type": "view"}]
VALID = {
    "view": VALID_VIEW,
    "click": {k: v for k, v in VALID_VIEW.items() if k in ("event_id", "user_id", "item_id",
                                                           "ts")},
    "upload": {"event_id": "e1", "item_id": "i1", "creator_id": "c1", "ts": 1.0, "title": "t",
               "description": "d", "tags": ["a"], "image": "data:image/png;base64,AA=="},
    "rec-request": {"request_id": "r1", "user_id": "u1", "k": 5, "exclude": ["i1"], "ts": 1.0},
    "retire": {"event_id": "e1", "item_id": "i1", "ts": 1.0, "reason": "spam"},
}


@pytest.mark.parametrize("kind", sorted(VALID))
def test_any_value_in_any_field_decodes_or_is_an_invalid_event(kind):
    valid = VALID[kind]
    for name in [*valid, "type", "extra"]:
        for odd in ODD_VALUES:
            raw = json.dumps({**valid, name: odd}).encode()  # json: ints beyond 64 bits too
            try:
                decode(raw, kind)
            except InvalidEvent:
                pass  # any other exception fails the test


def test_an_error_no_check_foresaw_is_still_an_invalid_event(monkeypatch):
    # The decoder's last line of defence: a parser raising anything becomes a reason.
    from streamrec.records import events

    def parse_badly(d):
        return {}["missing"]

    monkeypatch.setitem(events._PARSERS, "view", parse_badly)
    with pytest.raises(InvalidEvent, match="^malformed event: KeyError"):
        decode(b'{"event_id": "e1"}', "view")


# ---- uploads that supply their own embedding ------------------------------------------------

SPACE = "minilm-l6-v2+effnet-lite0+tags:fixed-v1:128"
VALID_UPLOAD = {"event_id": "e1", "item_id": "i1", "creator_id": "c1", "ts": 1_700_000_000,
                "title": "A title"}


def _b64(values, dtype: str = "<f4") -> str:
    return base64.b64encode(np.asarray(values, dtype).tobytes()).decode()


def _floats(ev: Upload) -> list[float]:
    return np.frombuffer(ev.embedding, "<f4").tolist()


@pytest.mark.parametrize("fields", [
    {"embedding": [0.5, -1, 2.25]},
    {"embedding": _b64([0.5, -1, 2.25])},
    {"embedding": _b64([0.5, -1, 2.25]), "embedding_dtype": "float32"},
    {"embedding": _b64([0.5, -1, 2.25], "<f2"), "embedding_dtype": "float16"},
])
def test_a_supplied_embedding_is_read_as_float32_whatever_its_form(fields):
    ev = from_dict({**VALID_UPLOAD, **fields, "embedding_model": SPACE}, "upload")
    assert _floats(ev) == [0.5, -1.0, 2.25]
    assert ev.embedding_dim == 3 and ev.embedding_model == SPACE
    assert not ev.extra, "the embedding's fields are not kept as extra metadata"
    assert decode(encode(ev), "upload") == ev


def test_float16_base64_is_half_the_size_of_float32_and_reads_the_same_values():
    v = np.random.default_rng(0).normal(size=128)
    f16 = from_dict({**VALID_UPLOAD, "embedding": _b64(v, "<f2"), "embedding_dtype": "float16",
                     "embedding_model": SPACE}, "upload")
    assert np.array_equal(np.frombuffer(f16.embedding, "<f4"), v.astype(np.float16))
    assert len(_b64(v, "<f2")) * 2 == len(_b64(v)) + 4  # 344 vs 684 characters: padding


@pytest.mark.parametrize("fields, reason", [
    ({"embedding": [1.0] * 4}, "missing field: embedding_model"),
    ({"embedding_model": SPACE}, "missing field: embedding (embedding_model is given"),
    ({"embedding_dtype": "float16"}, "missing field: embedding (embedding_dtype is given"),
    ({"embedding": [1.0], "embedding_model": 7}, "wrong type: embedding_model must be a string"),
    ({"embedding": [1.0], "embedding_model": "has space"}, "bad embedding model: 'has space'"),
    ({"embedding": {"x": 1}, "embedding_model": SPACE},
     "wrong type: embedding must be a list of numbers or a base64 string, got dict"),
    ({"embedding": 1.5, "embedding_model": SPACE}, "wrong type: embedding must be a list"),
    ({"embedding": [1.0, "2"], "embedding_model": SPACE},
     "wrong type: embedding values must be numbers, got str"),
    ({"embedding": [1.0, True], "embedding_model": SPACE},
     "wrong type: embedding values must be numbers, got bool"),
    ({"embedding": [1.0, [2.0]], "embedding_model": SPACE},
     "wrong type: embedding values must be numbers, got list"),
    ({"embedding": [1.0], "embedding_model": SPACE, "embedding_dtype": "float32"},
     "wrong type: embedding_dtype describes a base64 embedding, this one is a list"),
    ({"embedding": _b64([1.0]), "embedding_model": SPACE, "embedding_dtype": "float64"},
     "unsupported embedding dtype: 'float64' (float32 or float16)"),
    ({"embedding": _b64([1.0]), "embedding_model": SPACE, "embedding_dtype": 32},
     "wrong type: embedding_dtype must be a string, got int"),
    ({"embedding": [], "embedding_model": SPACE}, "corrupt embedding: no values"),
    ({"embedding": "", "embedding_model": SPACE}, "corrupt embedding: 0 bytes"),
    ({"embedding": "AAAA*AAA", "embedding_model": SPACE}, "corrupt embedding: not valid base64"),
    ({"embedding": "AAAAAA", "embedding_model": SPACE}, "corrupt embedding: not valid base64"),
    ({"embedding": "AAAAAAA=", "embedding_model": SPACE},
     "corrupt embedding: 5 bytes is not a whole number of float32 values"),
    ({"embedding": "ü" * 8, "embedding_model": SPACE}, "corrupt embedding: not valid base64"),
    ({"embedding": [1.0] * 4097, "embedding_model": SPACE},
     "too long: embedding has 4097 values, limit 4096"),
    ({"embedding": _b64([1.0] * 4097), "embedding_model": SPACE}, "too long: embedding has"),
    ({"embedding": _b64([1.0, np.nan]), "embedding_model": SPACE},
     "embedding not finite: value 1 is nan"),
    ({"embedding": _b64([np.inf, 1.0], "<f2"), "embedding_model": SPACE,
      "embedding_dtype": "float16"}, "embedding not finite: value 0 is inf"),
    ({"embedding": [1.0, 1e39], "embedding_model": SPACE},
     "embedding not finite: value 1 (1e+39) overflows float32"),
    ({"embedding": [0, 0.0, 0], "embedding_model": SPACE},
     "embedding norm out of range: 0 not in [0.001, 10000]"),
    ({"embedding": _b64([0.0] * 128), "embedding_model": SPACE},
     "embedding norm out of range: 0 not in"),
    ({"embedding": [1e-4, 1e-4], "embedding_model": SPACE}, "embedding norm out of range"),
    ({"embedding": [3e4, 1.0], "embedding_model": SPACE},
     "embedding norm out of range: 30000 not in [0.001, 10000]"),
])
def test_bad_supplied_embeddings_are_explained(fields, reason):
    with pytest.raises(InvalidEvent) as exc:
        from_dict({**VALID_UPLOAD, **fields}, "upload")
    assert str(exc.value).startswith(reason), str(exc.value)


def test_a_null_embedding_is_no_embedding():
    ev = from_dict({**VALID_UPLOAD, "embedding": None}, "upload")
    assert ev.embedding is None and ev.embedding_model is None and ev.embedding_dim == 0


def test_an_upload_with_a_128_d_embedding_stays_small():
    ev = from_dict({**VALID_UPLOAD, "embedding": [0.1] * 128, "embedding_model": SPACE}, "upload")
    assert len(encode(ev)) < 1000  # base64 float32 on the way out: 684 characters
