"""`streamrec experiment`: the simulated app in a closed loop with a worker serving A/B
buckets, on a real broker and Redis (its own embedded runtime, so no other test's worker
consumes its events)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console

from streamrec.config import Settings
from streamrec.embedded import EmbeddedRuntime
from streamrec.engine.buckets import Buckets
from streamrec.experiment import DEFAULT_BUCKETS, ExperimentConfig, run_experiment
from streamrec.processes import start_worker, wait_for_worker
from streamrec.records.topics import ensure_topics

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def closed_loop(tmp_path_factory) -> dict:
    """One closed-loop run of a small world: 300 users, 200 items, 9,000 events."""
    cfg = ExperimentConfig(users=300, items=200, events=9000, rate=300.0, seed=5)
    console = Console(stderr=True, quiet=True)
    return run_experiment(cfg, console, quiet=True, settings=Settings(kafka="", redis=""))


def test_every_bucket_gets_lists_from_its_policy(closed_loop):
    buckets = Buckets.parse(DEFAULT_BUCKETS)
    lists = closed_loop["lists"]
    assert closed_loop["misfiled_lists"] == 0  # the app and the worker hash users alike
    assert set(lists) == {b.name for b in buckets.buckets}
    for b in buckets.buckets:
        assert lists[b.name]["policies"] == {b.policy: lists[b.name]["count"]}
    sources = {name: set(v["sources"]) for name, v in lists.items()}
    assert sources["random"] == {"random"}
    assert sources["popularity"] == {"popularity"}
    assert sources["oracle"] == sources["organic"] == set()  # served by the app
    assert not sources["blend_no_content"] & {"content", "tags", "student", "random"}
    assert "content" in sources["blend"] and "random" not in sources["blend"]
    # Every bucket's users saw lists and clicked.
    for name, r in closed_loop["buckets"].items():
        assert r["impressions"] > 100 and r["clicks"] > 0, name


def test_the_oracle_beats_random_beyond_the_intervals(closed_loop):
    r = closed_loop["buckets"]
    assert r["oracle"]["ctr_ci95"][0] > r["random"]["ctr_ci95"][1]
    assert r["oracle"]["clicks_per_session_ci95"][0] > r["random"]["clicks_per_session_ci95"][1]
    assert r["random"]["coverage"] > r["popularity"]["coverage"]


def test_a_run_against_a_deployment_reads_the_lists_of_its_running_worker(tmp_path: Path):
    # A deployment: broker, Redis and a worker already running with the operators' buckets;
    # the command finds them through STREAMREC_KAFKA / STREAMREC_REDIS / STREAMREC_BUCKETS.
    spec = "blend:1,random:1,organic:1"
    with EmbeddedRuntime(run_dir=tmp_path) as rt:
        env = {**rt.env(), "STREAMREC_BUCKETS": spec}
        asyncio.run(ensure_topics(rt.settings(), 4))
        worker = start_worker(rt, extra_env=env)
        try:
            asyncio.run(wait_for_worker(rt.settings(), worker))
            run = subprocess.run(
                [sys.executable, "-m", "streamrec.cli", "experiment", "--seed", "3",
                 "--users", "150", "--items", "100", "--warmup", "1000", "--events", "3000",
                 "--rate", "300", "--json"],
                env={**os.environ, **env}, capture_output=True, text=True, timeout=600)
        finally:
            worker.stop()
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert result["misfiled_lists"] == 0
    assert result["training"] is None  # a deployment trains on its own schedule
    assert set(result["buckets"]) == {"blend", "random", "organic"}
    lists = result["lists"]
    for name in ("blend", "random"):
        assert lists[name]["count"] > 0 and lists[name]["policies"] == {
            name: lists[name]["count"]}
    assert set(lists["random"]["sources"]) == {"random"}
    assert "content" in lists["blend"]["sources"]
    for name, r in result["buckets"].items():
        assert r["impressions"] > 50 and r["clicks"] > 0, name
