"""A/B buckets in the engine: each user's list made by their bucket's policy, and named."""

from __future__ import annotations

import time

import orjson

from streamrec.config import Settings
from streamrec.engine.buckets import Buckets
from streamrec.engine.build import build_engine
from streamrec.engine.engine import Incoming
from streamrec.records.events import Click, View, encode

from conftest import uid

SPEC = ("a=blend:1,b=blend_no_content:1,c=blend_no_student:1,d=popularity:1,e=random:1,"
        "f=oracle:1")


def batch(now: float) -> list[Incoming]:
    """60 users, each viewing three of 40 items and clicking one; items 0-9 the busiest."""
    out = []
    for u in range(60):
        for n, item in enumerate((u % 10, 10 + u % 30, (3 * u) % 40)):
            ev = (Click if n == 0 else View)(f"e{u}-{n}", f"u{u}", f"i{item}", now + u + n / 10)
            out.append(Incoming(encode(ev), "clicks" if n == 0 else "views", 0, len(out), now))
    return out


async def test_every_list_names_its_bucket_and_is_made_by_its_policy(redis_client, tmp_path):
    buckets = Buckets.parse(SPEC)
    eng = build_engine(Settings(redis="unused", app_id=uid("buckets"), content=False,
                                buckets=SPEC, snapshot_dir=str(tmp_path)), redis_client, "test")
    now = time.time()
    out = await eng.interactions(batch(now))
    lists = [orjson.loads(v) for _, v in out.recommendations]
    assert len(lists) == 60
    by_policy: dict[str, list[dict]] = {}
    for d in lists:
        bucket = buckets.of(d["user_id"])
        assert (d["bucket"], d["policy"]) == (bucket.name, bucket.policy)
        by_policy.setdefault(d["policy"], []).append(d)
    assert set(by_policy) == {b.policy for b in buckets.buckets}  # 60 users fill 6 buckets
    sources = {p: {s for d in ds for i in d["items"] for s in i["sources"]}
               for p, ds in by_policy.items()}
    assert sources["random"] == {"random"}
    assert sources["popularity"] == {"popularity"}
    assert sources["oracle"] == set()  # the app serves these users: an empty list
    for policy in ("blend", "blend_no_content", "blend_no_student"):
        assert sources[policy] and not sources[policy] & {"random", "student"}
    for d in by_policy["popularity"]:
        scores = [i["score"] for i in d["items"]]
        assert scores == sorted(scores, reverse=True) and len(scores) == 10
    # No policy recommends what the user has seen.
    seen: dict[str, set[str]] = {}
    for m in batch(now):
        ev = orjson.loads(m.value)
        seen.setdefault(ev["user_id"], set()).add(ev["item_id"])
    for d in lists:
        assert not {i["item_id"] for i in d["items"]} & seen[d["user_id"]]
    # A random list is reproducible for the same user and time, and another time draws anew.
    user = by_policy["random"][0]["user_id"]
    first = eng.recommend_many([user], now=now + 100)
    assert first == eng.recommend_many([user], now=now + 100)
    assert first != eng.recommend_many([user], now=now + 101)
    # The blend's lists for the same user differ from the random ones.
    assert eng.blend.recommend_many([user], 10, now + 100) != first


async def test_one_default_bucket_still_names_itself(redis_client, tmp_path):
    eng = build_engine(Settings(redis="unused", app_id=uid("bucket"), content=False,
                                snapshot_dir=str(tmp_path)), redis_client, "test")
    out = await eng.interactions(batch(time.time()))
    assert {(d["bucket"], d["policy"]) for d in (orjson.loads(v) for _, v in out.recommendations)} \
        == {("blend", "blend")}
