"""A worker killed mid-stream: its successor carries on from the committed offsets, and no
event is lost or learned twice (state lives in Redis with the offsets it reflects)."""

from __future__ import annotations

import asyncio
import itertools
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from streamrec.config import Settings
from streamrec.embedded import EmbeddedRuntime
from streamrec.engine.shared_state import read_stats
from streamrec.processes import start_worker, wait_for_worker
from streamrec.records.topics import ensure_topics
from streamrec.simulator.publish import publish
from streamrec.simulator.world import World, WorldConfig
from streamrec.streams.app import create_app
from streamrec.streams.transport import TableManager

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[1]


async def stats(r) -> dict[str, int]:
    return await read_stats(r)


async def wait_stats(r, key: str, at_least: int, timeout_s: float = 120.0) -> dict[str, int]:
    deadline = time.monotonic() + timeout_s
    while True:
        s = await stats(r)
        if s.get(key, 0) >= at_least or time.monotonic() > deadline:
            return s
        await asyncio.sleep(0.2)


@pytest.mark.slow
def test_restarted_worker_carries_on_without_loss_or_double_counting(tmp_path: Path):
    with EmbeddedRuntime(run_dir=tmp_path) as rt:
        asyncio.run(ensure_topics(rt.settings(), 2))
        world = World(WorldConfig(n_users=200, n_items=100, seed=7))
        events = list(itertools.islice(world.events(time.time() - 3600), 6000))
        interactions = [e for e in events if e.type in ("view", "click")]
        first, second = events[:3000], events[3000:]

        async def scenario():
            r = aioredis.from_url(rt.redis)
            w1 = start_worker(rt, partitions=2)
            await wait_for_worker(rt.settings(), w1)
            await publish(first, rt.settings())
            # Kill hard while it is mid-stream: whatever it had not committed is replayed.
            await wait_stats(r, "learned", 500)
            w1.kill()
            mid = await stats(r)
            await publish(second, rt.settings())
            w2 = start_worker(rt, partitions=2)
            try:
                final = await wait_stats(r, "learned", len(interactions), timeout_s=180)
            finally:
                w2.stop()
            pop_total = 0.0
            for key in await r.keys("streamrec:pop:*"):
                pop_total += sum(float(v) for v in (await r.hgetall(key)).values())
            users = await r.keys("streamrec:user:*")
            await r.aclose()
            return mid, final, pop_total, len(users)

        mid, final, pop_total, n_users = asyncio.run(scenario())
        assert mid.get("learned", 0) < len(interactions), "the first worker was stopped mid-stream"
        # Every interaction learned exactly once, although some were delivered twice: those the
        # first worker applied after its last commit reached the second one again.
        assert final["learned"] == len(interactions)
        delivered = final["events_view"] + final["events_click"]
        assert delivered > len(interactions), "no interaction was delivered twice"
        assert n_users == len({e.user_id for e in interactions})
        assert pop_total > 0


def test_a_worker_joins_its_group_under_its_instance_id(tmp_path: Path):
    settings = Settings(kafka="127.0.0.1:9", redis="redis://127.0.0.1:9", data_dir=str(tmp_path),
                        instance_id="worker-2", session_timeout_s=9.0)
    conf = create_app(settings).conf
    assert conf.consumer_group_instance_id == "worker-2"
    assert (conf.broker_session_timeout, conf.broker_heartbeat_interval) == (9.0, 3.0)
    dynamic = create_app(Settings(kafka="127.0.0.1:9", redis="redis://127.0.0.1:9",
                                  data_dir=str(tmp_path / "b"))).conf
    assert dynamic.consumer_group_instance_id is None


#: What only the model process needs: a worker importing them spends seconds on it at every
#: restart before it even asks to rejoin its group.
MODEL_LIBRARIES = ("torch", "river", "scipy", "sklearn", "PIL")


def test_the_worker_process_imports_no_model_library(tmp_path: Path):
    # A fresh interpreter: this test session has imported the models already. It goes the
    # way `streamrec worker` goes, up to the Faust app being built.
    code = f"""
import sys
from streamrec.cli import _check_snapshot_key, _settings
from streamrec.streams.app import create_app
from streamrec.streams.transport import TableManager
from streamrec.streams.worker import run_worker

settings = _settings("127.0.0.1:9", "redis://127.0.0.1:9")
settings.data_dir = {str(tmp_path)!r}
assert settings.model_process and settings.engine == "pipeline"
_check_snapshot_key(settings)
create_app(settings)
print(sorted({{m.split(".")[0] for m in sys.modules if m.split(".")[0] in {MODEL_LIBRARIES!r}}}
             | {{m for m in sys.modules if m.startswith(("streamrec.models", "streamrec.content",
                                                        "streamrec.engine.engine",
                                                        "streamrec.engine.build"))}}))
"""
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip() == "[]", out.stdout


def test_the_worker_joins_its_group_without_waiting_for_tables(tmp_path: Path):
    # Faust's own table manager waits a second before the consumer may subscribe.
    app = create_app(Settings(kafka="127.0.0.1:9", redis="redis://127.0.0.1:9",
                              data_dir=str(tmp_path)))
    assert isinstance(app.tables, TableManager)
    assert not app.tables.data  # it may skip the wait only while there is no table
