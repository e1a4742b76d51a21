"""Redis over TLS with an ACL user: a real redis-server (TLS port only, the default user
disabled) and streamrec's clients built from the settings."""

from __future__ import annotations

import asyncio
import socket
import ssl
import subprocess
from pathlib import Path

import aiohttp
import numpy as np
import orjson
import pytest
from redis.exceptions import AuthenticationError
from redis.exceptions import ConnectionError as RedisConnectionError

from streamrec.clients import redis_client
from streamrec.config import Settings
from streamrec.embedded import (
    EmbeddedRuntime,
    RuntimeStartError,
    free_port,
    redis_binary,
    spawn,
    wait_ready,
)
from streamrec.processes import start_worker, wait_for_worker
from streamrec.records.topics import ensure_topics
from streamrec.security import plaintext
from streamrec.snapshots.store import SnapshotStore

from certs import Certs, make_certs
from conftest import uid

PASSWORD = "alice-s3cret"
TOKEN = "metrics-token-0123456789"


class TlsRedis:
    def __init__(self, certs: Certs, port: int, proc: subprocess.Popen) -> None:
        self.certs, self.port, self.proc = certs, port, proc

    def settings(self, **changes) -> Settings:
        """Settings reaching this server as alice, checking its certificate against the CA."""
        base = {"redis": f"rediss://127.0.0.1:{self.port}/0", "redis_username": "alice",
                "redis_password": PASSWORD, "redis_ssl_ca": str(self.certs.ca)}
        return plaintext(Settings(), **{**base, **changes})


def _answers_over_tls(port: int, ca: Path) -> bool:
    ctx = ssl.create_default_context(cafile=str(ca))
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as raw, \
                ctx.wrap_socket(raw, server_hostname="127.0.0.1") as s:
            s.sendall(b"PING\r\n")
            return s.recv(64).startswith((b"+PONG", b"-NOAUTH"))
    except (OSError, ssl.SSLError):
        return False


@pytest.fixture(scope="module")
def tls_redis(tmp_path_factory) -> TlsRedis:
    d = tmp_path_factory.mktemp("tls-redis")
    certs = make_certs(d / "certs")
    port = free_port()
    log = d / "redis.log"
    proc = spawn([
        redis_binary(), "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1",
        "--tls-cert-file", str(certs.server_cert), "--tls-key-file", str(certs.server_key),
        "--tls-ca-cert-file", str(certs.ca), "--tls-auth-clients", "optional",
        # As docker-compose.secure.yml grants: everything but the dangerous commands.
        "--user", "default", "off",
        "--user", "alice", "on", f">{PASSWORD}", "~*", "+@all", "-@dangerous",
        "--save", "", "--appendonly", "no", "--dir", str(d)], log)
    try:
        wait_ready("redis-server (TLS)", proc, lambda: _answers_over_tls(port, certs.ca), 15.0)
    except RuntimeStartError as exc:
        proc.kill()
        proc.wait()
        text = log.read_text(errors="replace").lower()
        if "tls" in text and ("not supported" in text or "bad directive" in text):
            pytest.skip(f"{redis_binary()} is built without TLS")
        raise AssertionError(f"{exc}: {text[-2000:]}") from None
    yield TlsRedis(certs, port, proc)
    proc.terminate()
    proc.wait(10)


async def test_shared_state_round_trips_over_tls_as_an_acl_user(tls_redis, tmp_path):
    r = redis_client(tls_redis.settings())
    try:
        assert await r.execute_command("ACL", "WHOAMI") == b"alice"
        store = SnapshotStore(r, uid("tls"), tmp_path)
        tensors = {"w": np.arange(12, dtype=np.float32).reshape(3, 4)}
        info = await store.publish("student", tensors, {"note": "over tls"})
        loaded, meta, got = await store.load("student")
        assert got.version == info.version and meta["note"] == "over tls"
        assert np.array_equal(loaded["w"], tensors["w"])
    finally:
        await r.aclose()


async def test_a_client_certificate_is_accepted(tls_redis):
    certs = tls_redis.certs
    r = redis_client(tls_redis.settings(redis_ssl_certfile=str(certs.client_cert),
                                        redis_ssl_keyfile=str(certs.client_key)))
    try:
        assert await r.ping()
    finally:
        await r.aclose()


async def test_a_wrong_password_fails_with_a_clear_error(tls_redis):
    r = redis_client(tls_redis.settings(redis_password="not-the-password"))
    try:
        with pytest.raises(AuthenticationError, match="invalid username-password pair"):
            await r.ping()
    finally:
        await r.aclose()


async def test_no_password_is_refused(tls_redis):
    r = redis_client(tls_redis.settings(redis_username="", redis_password=""))
    try:
        with pytest.raises(AuthenticationError):
            await r.ping()  # the default user is off: nothing without credentials
    finally:
        await r.aclose()


async def test_plaintext_and_unverified_servers_are_refused(tls_redis):
    # The server has no plaintext port; speaking plaintext to its TLS port gets nowhere.
    r = redis_client(tls_redis.settings(redis=f"redis://127.0.0.1:{tls_redis.port}/0",
                                        redis_ssl_ca=""), socket_timeout=3)
    try:
        with pytest.raises((RedisConnectionError, asyncio.TimeoutError)):
            await r.ping()
    finally:
        await r.aclose()
    # Without the CA the server's certificate does not verify, and the client stops there.
    r = redis_client(tls_redis.settings(redis_ssl_ca=""))
    try:
        with pytest.raises(RedisConnectionError, match="certificate verify failed"):
            await r.ping()
    finally:
        await r.aclose()


@pytest.mark.slow
@pytest.mark.integration
async def test_a_worker_runs_on_tls_redis_with_its_metrics_behind_a_token(tls_redis, tmp_path):
    """The worker's, its model process's and the readiness probe's Redis clients all reach a
    TLS-only Redis as alice; its web server, open to other hosts, wants the token."""
    app_id = uid("tlsapp")
    s = tls_redis.settings()
    with EmbeddedRuntime(run_dir=tmp_path / "run") as rt:
        await ensure_topics(rt.settings(), 2)
        proc = start_worker(rt, partitions=2, app_id=app_id, extra_env={
            "STREAMREC_CONTENT": "0", "STREAMREC_REDIS": s.redis,
            "STREAMREC_REDIS_USERNAME": "alice", "STREAMREC_REDIS_PASSWORD": PASSWORD,
            "STREAMREC_REDIS_SSL_CA": s.redis_ssl_ca, "STREAMREC_WEB_HOST": "0.0.0.0",
            "STREAMREC_WEB_TOKEN": TOKEN, "STREAMREC_SNAPSHOT_DIR": str(tmp_path / "snap")})
        try:
            await wait_for_worker(s, proc, app_id=app_id, timeout_s=120)
            r = redis_client(s)
            try:
                entry = orjson.loads(next(iter((await r.hgetall(f"{app_id}:workers")).values())))
            finally:
                await r.aclose()
            port = entry["web"].rsplit(":", 1)[1]
            url = f"http://127.0.0.1:{port}/metrics"
            async with aiohttp.ClientSession() as http:
                async with http.get(url) as resp:
                    assert resp.status == 401
                async with http.get(url, headers={"Authorization": "Bearer nope"}) as resp:
                    assert resp.status == 401
                async with http.get(url, headers={"Authorization": f"Bearer {TOKEN}"}) as resp:
                    assert resp.status == 200
                    assert "streamrec_events_total" in await resp.text()
            assert proc.proc.poll() is None, proc.log.read_text()[-3000:]
        finally:
            proc.stop()
