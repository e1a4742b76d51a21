"""Security settings: what they become in every client, the errors for settings that cannot
work, and the worker's web token.

The embedded broker speaks neither SASL nor TLS, so Kafka security is checked two ways: the
options of clients built from the settings, and what those clients actually send on the wire
to a listener that speaks just enough Kafka to hear their handshake (ApiVersions, then
SaslHandshake), in the clear or inside real TLS with a throwaway CA."""

from __future__ import annotations

import asyncio
import os
import re
import ssl
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer
from aiokafka.errors import KafkaError
from faust.auth import SASLCredentials, SSLCredentials
from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth
from redis.asyncio.connection import SSLConnection

from streamrec.clients import kafka_admin, kafka_consumer, kafka_producer, redis_client
from streamrec.config import Settings
from streamrec.records.topics import ensure_topics
from streamrec.security import (
    SecurityConfigError,
    check,
    kafka_options,
    plaintext,
    redis_options,
)
from streamrec.simulator.publish import start_producer
from streamrec.simulator.tail import follow
from streamrec.streams.app import create_app
from streamrec.streams.credentials import broker_credentials
from streamrec.training.log_reader import read_log

from certs import KEY_PASSWORD, Certs, make_certs

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "t0ken-for-the-metrics-page"
MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")


@pytest.fixture(scope="module")
def certs(tmp_path_factory) -> Certs:
    return make_certs(tmp_path_factory.mktemp("certs"))


def settings(**changes) -> Settings:
    """Settings independent of the environment's security variables."""
    base = {"kafka": "127.0.0.1:9", "redis": "redis://127.0.0.1:9/0", "web_host": "127.0.0.1",
            "web_token": "", "web_public": False}
    return plaintext(Settings(), **{**base, **changes})


def sasl(protocol: str, mechanism: str, certs: Certs | None = None, **more) -> Settings:
    tls = {"kafka_ssl_cafile": str(certs.ca)} if certs else {}
    return settings(**{"kafka_security_protocol": protocol, "kafka_sasl_mechanism": mechanism,
                       "kafka_username": "alice", "kafka_password": "s3cret", **tls, **more})


def ca_names(ctx: ssl.SSLContext) -> list[str]:
    return [v for c in ctx.get_ca_certs() for rdn in c["subject"] for k, v in rdn
            if k == "commonName"]


# --- what the settings become -----------------------------------------------------------------

def test_plaintext_is_the_default():
    s = settings()
    assert kafka_options(s) == {"security_protocol": "PLAINTEXT"}
    assert broker_credentials(s) is None
    assert redis_options(s) == {}


@pytest.mark.parametrize("mechanism", MECHANISMS)
@pytest.mark.parametrize("protocol", ["SASL_PLAINTEXT", "SASL_SSL"])
def test_sasl_options_and_faust_credentials_agree(protocol, mechanism, certs):
    s = sasl(protocol, mechanism.lower(), certs if protocol == "SASL_SSL" else None)
    options = kafka_options(s)
    assert options["security_protocol"] == protocol
    assert options["sasl_mechanism"] == mechanism  # given in lower case, sent as Kafka names it
    assert options["sasl_plain_username"] == "alice"
    assert options["sasl_plain_password"] == "s3cret"
    if protocol == "SASL_SSL":
        ctx = options["ssl_context"]
        assert ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname
        assert ca_names(ctx) == ["streamrec test CA"]
    else:
        assert "ssl_context" not in options
    creds = broker_credentials(s)
    assert isinstance(creds, SASLCredentials)
    # What Faust hands its own consumer, producer and admin client: the same as ours.
    faust_options = credentials_to_aiokafka_auth(creds)
    assert {k: v for k, v in faust_options.items() if k != "ssl_context"} == {
        k: v for k, v in options.items() if k != "ssl_context"}
    if protocol == "SASL_SSL":
        assert ca_names(faust_options["ssl_context"]) == ["streamrec test CA"]
    else:
        assert faust_options["ssl_context"] is None


def test_ssl_with_a_client_certificate_and_an_encrypted_key(certs):
    s = settings(kafka_security_protocol="ssl", kafka_ssl_cafile=str(certs.ca),
                 kafka_ssl_certfile=str(certs.client_cert),
                 kafka_ssl_keyfile=str(certs.client_key_encrypted),
                 kafka_ssl_key_password=KEY_PASSWORD)
    options = kafka_options(s)
    assert set(options) == {"security_protocol", "ssl_context"}
    assert options["security_protocol"] == "SSL"
    creds = broker_credentials(s)
    assert isinstance(creds, SSLCredentials)
    assert credentials_to_aiokafka_auth(creds)["security_protocol"] == "SSL"
    wrong = settings(**{**{k: getattr(s, k) for k in (
        "kafka_security_protocol", "kafka_ssl_cafile", "kafka_ssl_certfile",
        "kafka_ssl_keyfile")}, "kafka_ssl_key_password": "not-it"})
    with pytest.raises(SecurityConfigError, match="Kafka TLS files do not load"):
        kafka_options(wrong)


def test_passwords_stay_out_of_the_settings_repr():
    s = settings(kafka_password="kafka-pw", redis_password="redis-pw", web_token=TOKEN,
                 kafka_ssl_key_password="key-pw", snapshot_key="k" * 16)
    for secret in ("kafka-pw", "redis-pw", TOKEN, "key-pw", "k" * 16):
        assert secret not in repr(s)
    assert repr(broker_credentials(sasl("SASL_PLAINTEXT", "PLAIN"))).count("s3cret") == 0


def test_redis_options_carry_the_acl_user_and_tls_files(certs):
    s = settings(redis="rediss://cache:6380/0", redis_username="alice",
                 redis_password="pw", redis_ssl_ca=str(certs.ca),
                 redis_ssl_certfile=str(certs.client_cert), redis_ssl_keyfile=str(certs.client_key))
    assert redis_options(s) == {
        "username": "alice", "password": "pw", "ssl_cert_reqs": "required",
        "ssl_ca_certs": str(certs.ca), "ssl_certfile": str(certs.client_cert),
        "ssl_keyfile": str(certs.client_key)}
    # A rediss:// URL alone: TLS verified against the system's CAs.
    assert redis_options(settings(redis="rediss://cache:6380/0")) == {"ssl_cert_reqs": "required"}


# --- settings that cannot work ----------------------------------------------------------------

BAD = {
    "unknown protocol": ({"kafka_security_protocol": "SASL"}, "is not one of PLAINTEXT, SSL"),
    "SASL without a username": ({"kafka_security_protocol": "SASL_SSL",
                                 "kafka_password": "pw"}, "SASL_SSL needs STREAMREC_KAFKA_USERNAME"),
    "SASL without a password": ({"kafka_security_protocol": "SASL_PLAINTEXT",
                                 "kafka_username": "u"}, "STREAMREC_KAFKA_PASSWORD"),
    "mechanism not allowed": ({"kafka_security_protocol": "SASL_PLAINTEXT",
                               "kafka_sasl_mechanism": "GSSAPI", "kafka_username": "u",
                               "kafka_password": "p"}, "'GSSAPI' is not one of PLAIN"),
    "credentials without SASL": ({"kafka_username": "u", "kafka_password": "p"},
                                 "set but STREAMREC_KAFKA_SECURITY_PROTOCOL is PLAINTEXT"),
    "TLS files without TLS": ({"kafka_security_protocol": "SASL_PLAINTEXT",
                               "kafka_sasl_mechanism": "PLAIN", "kafka_username": "u",
                               "kafka_password": "p", "kafka_ssl_cafile": "/etc/hosts"},
                              "STREAMREC_KAFKA_SSL_CAFILE set but"),
    "CA file missing": ({"kafka_security_protocol": "SSL",
                         "kafka_ssl_cafile": "/nonexistent/ca.pem"},
                        "STREAMREC_KAFKA_SSL_CAFILE /nonexistent/ca.pem is not a file"),
    "key without cert": ({"kafka_security_protocol": "SSL", "kafka_ssl_keyfile": "/etc/hosts"},
                         "STREAMREC_KAFKA_SSL_KEYFILE needs STREAMREC_KAFKA_SSL_CERTFILE"),
    "Redis TLS files with redis://": ({"redis_ssl_ca": "/etc/hosts"}, "use rediss://"),
    "Redis user without password": ({"redis_username": "alice"},
                                    "STREAMREC_REDIS_USERNAME needs STREAMREC_REDIS_PASSWORD"),
    "Redis password twice": ({"redis": "redis://:a@h:6379/0", "redis_password": "b"},
                             "give it in one place"),
    "Redis key without cert": ({"redis": "rediss://h:6380/0", "redis_ssl_keyfile": "/etc/hosts"},
                               "STREAMREC_REDIS_SSL_KEYFILE needs"),
    "open web host": ({"web_host": "0.0.0.0"}, "set STREAMREC_WEB_TOKEN"),
    "short web token": ({"web_token": "short"}, "at least 16 characters"),
}


@pytest.mark.parametrize("case", BAD, ids=list(BAD))
def test_inconsistent_settings_are_refused_with_the_reason(case):
    changes, message = BAD[case]
    with pytest.raises(SecurityConfigError) as err:
        check(settings(**changes), web=True)
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_every_problem_is_named_at_once_and_no_client_is_built_from_them():
    bad = settings(kafka_security_protocol="SASL_SSL", redis_username="alice")
    with pytest.raises(SecurityConfigError) as err:
        check(bad)
    assert "STREAMREC_KAFKA_USERNAME" in str(err.value)
    assert "STREAMREC_REDIS_USERNAME" in str(err.value)
    with pytest.raises(SecurityConfigError):
        kafka_admin(bad)
    with pytest.raises(SecurityConfigError):
        redis_client(bad)


def test_open_web_host_allowed_with_a_token_or_explicitly_public():
    check(settings(web_host="0.0.0.0", web_token=TOKEN), web=True)
    check(settings(web_host="0.0.0.0", web_public=True), web=True)
    check(settings(web_host="::1"), web=True)
    check(settings(web_host="localhost"), web=True)
    with pytest.raises(SecurityConfigError):
        check(settings(web_host="metrics.internal"), web=True)


def _cli(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("STREAMREC_")}
    return subprocess.run([sys.executable, "-m", "streamrec.cli", *args], cwd=tmp_path,
                          env={**clean, **env}, capture_output=True, text=True, timeout=120)


def test_cli_exits_2_with_one_line_for_bad_kafka_security(tmp_path):
    out = _cli(tmp_path, "tail", "--kafka", "127.0.0.1:9",
               STREAMREC_KAFKA_SECURITY_PROTOCOL="SASL_SSL",
               STREAMREC_KAFKA_SASL_MECHANISM="SCRAM-SHA-512")
    assert out.returncode == 2, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert "SASL_SSL needs STREAMREC_KAFKA_USERNAME and STREAMREC_KAFKA_PASSWORD" in lines[0]


def test_cli_worker_refuses_an_open_web_host_without_a_token(tmp_path):
    out = _cli(tmp_path, "worker", STREAMREC_KAFKA="127.0.0.1:9",
               STREAMREC_REDIS="redis://127.0.0.1:9/0", STREAMREC_WEB_HOST="0.0.0.0")
    assert out.returncode == 2, out.stderr
    assert "STREAMREC_WEB_HOST 0.0.0.0 is reachable from other machines" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1, out.stderr


def test_cli_embedded_worker_refuses_security_settings_it_cannot_honour(tmp_path):
    out = _cli(tmp_path, "worker", "--embedded", STREAMREC_REDIS_PASSWORD="pw")
    assert out.returncode == 2, out.stderr
    assert "embedded broker and Redis speak neither" in out.stderr
    assert not (tmp_path / "runs").exists()  # refused before starting anything


# --- every client gets the options ------------------------------------------------------------

CLIENT_CALL = re.compile(
    r"\b(AIOKafkaProducer|AIOKafkaConsumer|AIOKafkaAdminClient|StrictRedis|Redis|from_url)\(")


def test_every_kafka_and_redis_client_is_built_in_clients_py():
    sources = sorted((ROOT / "streamrec").rglob("*.py")) + sorted((ROOT / "benchmarks").glob("*.py"))
    elsewhere, here = [], 0
    for path in sources:
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if CLIENT_CALL.search(line):
                if path == ROOT / "streamrec" / "clients.py":
                    here += 1
                else:
                    elsewhere.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()}")
    assert here == 4, "the pattern no longer sees the constructors in clients.py"
    assert not elsewhere, ("build clients with streamrec.clients, so they get the security "
                           "settings:\n" + "\n".join(elsewhere))


async def test_built_clients_carry_the_options(certs):
    s = sasl("SASL_SSL", "SCRAM-SHA-512", certs)
    producer, consumer = kafka_producer(s), kafka_consumer(s, "views")
    admin = kafka_admin(s)
    for client in (producer.client, consumer._client, admin._client):
        assert client._security_protocol == "SASL_SSL"
        assert client._sasl_mechanism == "SCRAM-SHA-512"
        assert client._sasl_plain_username == "alice"
        assert client._sasl_plain_password == "s3cret"
        assert ca_names(client._ssl_context) == ["streamrec test CA"]
    await admin.close()
    r = redis_client(settings(redis="rediss://127.0.0.1:6380/0", redis_username="alice",
                              redis_password="pw", redis_ssl_ca=str(certs.ca)))
    pool = r.connection_pool
    assert pool.connection_class is SSLConnection
    assert {k: pool.connection_kwargs[k] for k in ("username", "password", "ssl_ca_certs")} == {
        "username": "alice", "password": "pw", "ssl_ca_certs": str(certs.ca)}
    await r.aclose()


class KafkaEar:
    """A listener that speaks just enough Kafka to hear how a client opens: a TLS ClientHello
    (on a plain listener), or ApiVersions and then the SaslHandshake's mechanism."""

    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        self.tls = tls
        self.heard: list[str] = []

    async def __aenter__(self) -> str:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self.tls)
        return f"127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def __aexit__(self, *exc) -> None:
        self.server.close()
        await self.server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readexactly(4)
                if head[0] == 0x16:  # a TLS handshake record, not a Kafka frame's length
                    self.heard.append("tls")
                    return
                frame = await reader.readexactly(struct.unpack(">i", head)[0])
                api_key, _version, correlation = struct.unpack(">hhi", frame[:8])
                body = frame[10 + struct.unpack(">h", frame[8:10])[0]:]  # past the client id
                if api_key == 18:  # ApiVersions v0: offer SaslHandshake v0-1
                    reply = struct.pack(">ihi", correlation, 0, 1) + struct.pack(">hhh", 17, 0, 1)
                    writer.write(struct.pack(">i", len(reply)) + reply)
                    await writer.drain()
                    continue
                if api_key == 17:
                    n = struct.unpack(">h", body[:2])[0]
                    self.heard.append(f"sasl {body[2:2 + n].decode()}")
                else:
                    self.heard.append(f"api {api_key} in the clear")
                return
        except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError):
            return
        finally:
            writer.close()


async def _open_topics(s):
    await ensure_topics(s)


async def _open_trainer_log(s):
    await read_log(s)


async def _open_tail(s):
    await follow(s, "recommendations", True, False, 1)


async def _open_publisher(s):
    await (await start_producer(s)).stop()


PATHS = {"topic creation": _open_topics, "trainer's log reader": _open_trainer_log,
         "tail": _open_tail, "simulator's producer": _open_publisher}


def _server_tls(certs: Certs) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(certs.server_cert, certs.server_key)
    return ctx


@pytest.mark.parametrize("path", PATHS, ids=list(PATHS))
async def test_each_code_path_speaks_sasl_and_tls_on_the_wire(path, certs):
    open_client = PATHS[path]
    ear = KafkaEar()
    async with ear as address:
        with pytest.raises(KafkaError):
            await open_client(sasl("SASL_PLAINTEXT", "SCRAM-SHA-512", kafka=address))
        with pytest.raises(KafkaError):
            await open_client(settings(kafka=address, kafka_security_protocol="SSL",
                                       kafka_ssl_cafile=str(certs.ca)))
    assert ear.heard == ["sasl SCRAM-SHA-512", "tls"]
    # SASL inside real TLS: the client verifies the listener against the configured CA.
    ear = KafkaEar(_server_tls(certs))
    async with ear as address:
        with pytest.raises(KafkaError):
            await open_client(sasl("SASL_SSL", "SCRAM-SHA-256", certs, kafka=address))
    assert ear.heard == ["sasl SCRAM-SHA-256"]


async def test_the_workers_faust_producer_speaks_sasl_over_tls(certs, tmp_path):
    ear = KafkaEar(_server_tls(certs))
    async with ear as address:
        app = create_app(sasl("SASL_SSL", "PLAIN", certs, kafka=address,
                              data_dir=str(tmp_path), model_process=False, content=False))
        with pytest.raises(KafkaError):
            await app.producer._new_producer().start()
    assert ear.heard == ["sasl PLAIN"]


# --- the web token ----------------------------------------------------------------------------

async def test_metrics_need_the_bearer_token(tmp_path):
    app = create_app(settings(web_host="0.0.0.0", web_token=TOKEN, data_dir=str(tmp_path),
                              model_process=False, content=False))
    async with TestClient(TestServer(app.web.web_app, host="127.0.0.1")) as client:
        for headers in ({}, {"Authorization": "Bearer wrong-token-of-some-length"},
                        {"Authorization": TOKEN}, {"Authorization": f"Basic {TOKEN}"},
                        {"Authorization": f"Bearer {TOKEN}x"},
                        {"Authorization": "Bearer \u00e9t\u00e9"}):
            r = await client.get("/metrics", headers=headers)
            assert r.status == 401, headers
            assert r.headers["WWW-Authenticate"].startswith("Bearer")
            assert "streamrec_" not in await r.text()
        r = await client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
        assert r.status == 200
        assert "streamrec_events_total" in await r.text()


async def test_metrics_stay_open_on_loopback_without_a_token(tmp_path):
    app = create_app(settings(data_dir=str(tmp_path), model_process=False, content=False))
    assert app.conf.web_bind == "127.0.0.1"
    async with TestClient(TestServer(app.web.web_app, host="127.0.0.1")) as client:
        r = await client.get("/metrics")
        assert r.status == 200


def test_the_worker_app_refuses_an_open_host_without_a_token(tmp_path):
    with pytest.raises(SecurityConfigError, match="STREAMREC_WEB_TOKEN"):
        create_app(settings(web_host="0.0.0.0", data_dir=str(tmp_path)))
