"""Worker processes: started in their own session, stopped together with their children,
and waited for until they report assigned partitions."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import orjson

from streamrec.clients import redis_client
from streamrec.config import Settings
from streamrec.embedded import EmbeddedRuntime, spawn


class Process:
    """A worker subprocess in its own session, so it and its children stop together."""

    def __init__(self, argv: list[str], env: dict[str, str], log: Path,
                 cwd: Path | None = None) -> None:
        self.log = log
        self.proc = spawn(argv, log, env, cwd)

    @property
    def name(self) -> str:
        """The worker's name in its group (``engine.interface.worker_id``): host and pid."""
        return f"{socket.gethostname()}-{self.proc.pid}"

    def kill(self) -> None:
        """SIGKILL: no graceful shutdown, no final commit (a crash)."""
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait()

    def stop(self, timeout: float = 15.0) -> None:
        if self.proc.poll() is not None:
            return
        for sig, wait in ((signal.SIGINT, timeout), (signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                return
            try:
                self.proc.wait(wait)
                return
            except subprocess.TimeoutExpired:
                continue


def start_worker(rt: EmbeddedRuntime, partitions: int = 4, engine: str = "pipeline",
                 app_id: str = "streamrec", extra_env: dict[str, str] | None = None,
                 cwd: Path | None = None, log_name: str | None = None) -> Process:
    env = {**rt.env(),
           "STREAMREC_PARTITIONS": str(partitions), "STREAMREC_APP_ID": app_id,
           "STREAMREC_DATA_DIR": str(rt.run_dir), **(extra_env or {})}
    return Process([sys.executable, "-m", "streamrec.cli", "worker", "--engine", engine,
                    "--loglevel", "info"], env,
                   rt.run_dir / (log_name or f"worker-{app_id}.log"), cwd)


def start_trainer(rt: EmbeddedRuntime, snapshot_dir: Path) -> Process:
    """One `streamrec train` round (3 epochs) against ``rt``, its last line JSON."""
    env = {**rt.env(), "STREAMREC_SNAPSHOT_DIR": str(snapshot_dir)}
    # nice: the worker's lists come first on a small machine.
    return Process(["nice", "-n", "10", sys.executable, "-m", "streamrec.cli", "train",
                    "--epochs", "3", "--json"], env, rt.run_dir / "trainer.log")


async def wait_for_worker(settings: Settings, proc: Process, app_id: str = "streamrec",
                          timeout_s: float = 90.0, min_partitions: int = 1) -> None:
    """Until a worker reports assigned partitions in Redis (Faust writes it on assignment)."""
    r = redis_client(settings)
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            if proc.proc.poll() is not None:
                raise RuntimeError(f"worker exited with {proc.proc.returncode}; see {proc.log}")
            for raw in (await r.hgetall(f"{app_id}:workers")).values():
                if len(orjson.loads(raw)["partitions"]) >= min_partitions:
                    return
            await asyncio.sleep(0.2)
        raise TimeoutError(f"worker not ready after {timeout_s:.0f}s; see {proc.log}")
    finally:
        await r.aclose()


async def assigned_partitions(redis, proc: Process, app_id: str = "streamrec") -> list[str]:
    """The partitions ("topic:partition") ``proc`` reported at its latest assignment (none
    before its first)."""
    raw = await redis.hget(f"{app_id}:workers", proc.name)
    return orjson.loads(raw)["partitions"] if raw else []


async def wait_for_assignment(settings: Settings, proc: Process, app_id: str = "streamrec",
                              partitions: int = 1, timeout_s: float = 90.0) -> list[str]:
    """Until ``proc`` itself reports at least ``partitions`` partitions of ``views``, and then
    all it was assigned (:func:`wait_for_worker` is satisfied by any worker of the group)."""
    r = redis_client(settings)
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            if proc.proc.poll() is not None:
                raise RuntimeError(f"worker exited with {proc.proc.returncode}; see {proc.log}")
            got = await assigned_partitions(r, proc, app_id)
            if sum(p.startswith("views:") for p in got) >= partitions:
                return got
            await asyncio.sleep(0.1)
        raise TimeoutError(f"worker not assigned {partitions} partitions after {timeout_s:.0f}s;"
                           f" see {proc.log}")
    finally:
        await r.aclose()
