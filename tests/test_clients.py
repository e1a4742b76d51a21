"""Clients other than streamrec's own against the embedded broker (docs/clients.md): the
ApiVersions reply that librdkafka before 2.2.0 misreads, and the kcat and librdkafka recipes
the docs give."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import struct
import subprocess
from pathlib import Path

import pytest
from aiokafka.partitioner import murmur2

from streamrec.records.events import Click, encode
from streamrec.records.topics import ALL, CLICKS, RECOMMENDATIONS

from conftest import uid

PARTITIONS = 4  # what the session's runtime fixture creates the topics with

#: ApiVersions v3 tagged fields (KIP-511, KIP-584): tag -> name.
TAGS = {0: "SupportedFeatures", 1: "FinalizedFeaturesEpoch", 2: "FinalizedFeatures",
        3: "ZkMigrationReady"}

#: API key -> the lowest max version a streamrec client needs: record batches (magic 2) need
#: Produce v3 and Fetch v4, and librdkafka >= 2.2 asks for ApiVersions v3.
NEEDED = {0: 3, 1: 4, 2: 1, 3: 1, 8: 2, 9: 1, 10: 1, 11: 1, 12: 0, 13: 0, 14: 0, 18: 3,
          19: 0}

#: Debian's kcat (librdkafka 2.0.2) without the ApiVersions request: the 0.9.0 protocol.
LEGACY = ["-X", "api.version.request=false", "-X", "broker.version.fallback=0.9.0"]


def _uvarint(buf: bytes, i: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = buf[i]
        i += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, i
        shift += 7


def _compact(s: bytes) -> bytes:
    return bytes([len(s) + 1]) + s  # short strings only: a one-byte varint length


def api_versions_v3(port: int) -> bytes:
    """The broker's raw reply (after the size) to an ApiVersions v3 request as librdkafka
    sends it: header v2 (client id, empty tag section), then the client software name and
    version as compact strings and an empty tag section."""
    client_id = b"probe"
    req = (struct.pack(">hhih", 18, 3, 7, len(client_id)) + client_id + b"\x00"
           + _compact(b"librdkafka") + _compact(b"2.0.2") + b"\x00")
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(struct.pack(">i", len(req)) + req)
        head = b""
        while len(head) < 4:
            head += s.recv(4 - len(head))
        size = struct.unpack(">i", head)[0]
        reply = b""
        while len(reply) < size:
            chunk = s.recv(size - len(reply))
            assert chunk, "connection closed mid-reply"
            reply += chunk
    return reply


def parse_api_versions_v3(reply: bytes) -> tuple[int, dict[int, tuple[int, int]], int,
                                                 dict[int, bytes]]:
    """(error code, {api key: (min, max)}, offset of the tag section, {tag: bytes}).

    The response header stays v0 (correlation id only) even for v3, so that a client can read
    the reply whatever version it asked for."""
    corr, error = struct.unpack(">ih", reply[:6])
    assert corr == 7
    n, i = _uvarint(reply, 6)
    keys = {}
    for _ in range(n - 1):
        key, lo, hi = struct.unpack(">hhh", reply[i:i + 6])
        ntags, i = _uvarint(reply, i + 6)
        assert ntags == 0, f"api key {key} has tagged fields"
        keys[key] = (lo, hi)
    i += 4  # throttle_time_ms
    tag_section = i
    tags = {}
    count, i = _uvarint(reply, i)
    for _ in range(count):
        tag, i = _uvarint(reply, i)
        size, i = _uvarint(reply, i)
        tags[tag] = reply[i:i + size]
        i += size
    assert i == len(reply), "bytes left after the tag section"
    return error, keys, tag_section, tags


def skip_tags_as_librdkafka_before_2_2(reply: bytes, i: int) -> int | None:
    """The length librdkafka < 2.2.0 tries to skip past the end of the reply, or None.

    Its tag skipper read each tag's size and skipped one byte less, so every tag after the
    first is read from inside the previous one's value."""
    count, i = _uvarint(reply, i)
    for _ in range(count):
        _tag, i = _uvarint(reply, i)
        size, i = _uvarint(reply, i)
        if size > 1:
            if size - 1 > len(reply) - i:
                return size - 1
            i += size - 1
    return None


@pytest.fixture(scope="module")
def reply(runtime) -> bytes:
    return api_versions_v3(runtime.kafka_port)


def test_the_broker_offers_what_the_clients_need(reply):
    error, keys, _, _ = parse_api_versions_v3(reply)
    assert error == 0
    missing = {k: v for k, v in NEEDED.items() if k not in keys or keys[k][1] < v}
    assert not missing, f"api keys missing or too old: {missing} in {keys}"


def test_the_reply_carries_every_v3_tag_at_its_default(reply):
    """Apache Kafka leaves a tagged field out when it holds its default; Tansu writes all four,
    and FinalizedFeaturesEpoch's -1 is eight 0xff bytes."""
    _, _, _, tags = parse_api_versions_v3(reply)
    assert {TAGS[t]: v for t, v in tags.items()} == {
        "SupportedFeatures": b"\x01",  # an empty compact array
        "FinalizedFeaturesEpoch": b"\xff" * 8,  # -1
        "FinalizedFeatures": b"\x01",
        "ZkMigrationReady": b"\x00"}


def test_librdkafka_before_2_2_reads_a_length_past_the_end(reply):
    """What kcat 1.7.1 with librdkafka 2.0.2 logs (`-d protocol`): "Protocol read buffer
    underflow for ApiVersion v3 ...: expected 216172782113783806 bytes > 5 remaining bytes".
    Misaligned by the skipped-short tags, it reads 0xff x 8, 0x02 (the epoch and the next tag's
    id) as a varint size."""
    _, _, tag_section, _ = parse_api_versions_v3(reply)
    assert skip_tags_as_librdkafka_before_2_2(reply, tag_section) == 216172782113783806
    # The same reply without the default-valued tags, as Kafka writes it, reads through.
    assert skip_tags_as_librdkafka_before_2_2(reply[:tag_section] + b"\x00", tag_section) is None


# --- the recipes, with a real worker --------------------------------------------------------

def _partition(key: str) -> int:
    """The partition Java clients, aiokafka and Faust pick for ``key``."""
    return (murmur2(key.encode()) & 0x7FFFFFFF) % PARTITIONS


def _kcat(args: list[str], env: dict | None = None, stdin: str | None = None,
          timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(["kcat", *args], input=stdin, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})


def _click_line(user: str) -> str:
    return f"{user}\t{encode(Click(uid('e'), user, uid('item'), 1_700_000_000.0)).decode()}\n"


needs_kcat = pytest.mark.skipif(shutil.which("kcat") is None, reason="kcat is not on PATH")


@pytest.mark.integration
@pytest.mark.slow
@needs_kcat
async def test_legacy_kcat_lists_topics_and_reads_a_list(runtime, producer, collector):
    """Debian's kcat with the 0.9.0 protocol: metadata and reads from absolute offsets work
    (produce and logical offsets do not; docs/clients.md)."""
    listed = await asyncio.to_thread(_kcat, ["-b", runtime.kafka, *LEGACY, "-L"])
    assert listed.returncode == 0, listed.stderr
    for topic in ALL:
        assert f'topic "{topic}" with {PARTITIONS} partitions' in listed.stdout

    user = uid("kcat-reader")
    await producer.send(CLICKS, encode(Click(uid("e"), user, uid("item"), 1_700_000_000.0)),
                        key=user.encode())
    await producer.flush()
    await collector.wait_for(lambda: collector.lists_for(user))
    read = await asyncio.to_thread(_kcat, ["-b", runtime.kafka, *LEGACY, "-C", "-t",
                                           RECOMMENDATIONS, "-o", "0", "-e", "-q",
                                           "-f", "%p\t%k\t%s\n"])
    assert read.returncode == 0, read.stderr
    mine = [line.split("\t", 2) for line in read.stdout.splitlines()
            if line.split("\t", 2)[1] == user]
    assert mine, f"no list for {user} in kcat's output"
    partition, _, value = mine[0]
    assert int(partition) == _partition(user), "lists are keyed and partitioned as Java does"
    assert f'"user_id":"{user}"' in value


def _new_librdkafka() -> Path:
    """The librdkafka (>= 2.2) inside the confluent-kafka wheel, or skip."""
    ck = pytest.importorskip("confluent_kafka")
    if tuple(int(p) for p in ck.libversion()[0].split(".")[:2]) < (2, 2):
        pytest.skip(f"confluent-kafka bundles librdkafka {ck.libversion()[0]} (< 2.2)")
    libs = sorted((Path(ck.__file__).parent.parent / "confluent_kafka.libs")
                  .glob("librdkafka-*.so*"))
    if not libs:
        pytest.skip("this confluent-kafka build bundles no librdkafka")
    return libs[0]


@pytest.mark.integration
@pytest.mark.slow
async def test_confluent_kafka_with_murmur2_lands_where_the_system_expects(
        runtime, collector):
    _new_librdkafka()
    from confluent_kafka import Producer

    user = uid("rdkafka-writer")
    delivered: list = []
    p = Producer({"bootstrap.servers": runtime.kafka, "partitioner": "murmur2_random"})
    p.produce(CLICKS, key=user, value=encode(Click(uid("e"), user, uid("item"), 1.7e9)),
              on_delivery=lambda err, msg: delivered.append((err, msg.partition())))
    await asyncio.to_thread(p.flush, 30)
    assert delivered == [(None, _partition(user))]
    await collector.wait_for(lambda: collector.lists_for(user))


@pytest.mark.integration
@pytest.mark.slow
@needs_kcat
async def test_kcat_on_a_newer_librdkafka_produces_an_event_the_worker_learns(
        runtime, collector, tmp_path):
    """The LD_LIBRARY_PATH recipe: Debian's kcat on the wheel's librdkafka. The wheel renames
    the library, so a link named as kcat asks for it (librdkafka.so.1) is needed."""
    (tmp_path / "librdkafka.so.1").symlink_to(_new_librdkafka())
    env = {"LD_LIBRARY_PATH": str(tmp_path)}
    version = await asyncio.to_thread(_kcat, ["-V"], env)
    assert "librdkafka 2.0" not in version.stdout and "librdkafka 2." in version.stdout
    listed = await asyncio.to_thread(_kcat, ["-b", runtime.kafka, "-L", "-t", CLICKS], env)
    assert listed.returncode == 0, listed.stderr
    user = uid("kcat-writer")
    sent = await asyncio.to_thread(
        _kcat, ["-b", runtime.kafka, "-P", "-t", CLICKS, "-K", "\t",
                "-X", "partitioner=murmur2_random"], env, _click_line(user))
    assert sent.returncode == 0, sent.stderr
    await collector.wait_for(lambda: collector.lists_for(user))
