"""Event validation: every bad input gets a reason naming what is wrong."""

import json

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
