"""The compose files cannot be run here (no Docker engine), so check their shape."""

import dataclasses
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from streamrec.config import Settings
from streamrec.security import SASL_MECHANISMS, check

ROOT = Path(__file__).resolve().parents[1]
COMPOSE_FILES = ("docker-compose.yml", "docker-compose.secure.yml")


def test_compose_file_runs_kafka_kraft_redis_worker_and_simulator():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert {"kafka", "redis", "worker", "simulator", "trainer"} <= services.keys()
    kafka = services["kafka"]["environment"]
    assert "controller" in kafka["KAFKA_PROCESS_ROLES"], "KRaft mode: no ZooKeeper"
    assert "zookeeper" not in services
    for name in ("worker", "simulator", "trainer"):
        svc = services[name]
        assert svc["build"] == "."
        assert svc["environment"]["STREAMREC_KAFKA"] == "kafka:9092"
        assert svc["command"][0] in ("worker", "simulate", "train")
        for dep in svc["depends_on"]:
            assert dep in services
    assert services["worker"]["environment"]["STREAMREC_REDIS"].startswith("redis://redis:")
    # As the embedded runtime starts Redis: neighbour lists as skip lists (REDIS_MODEL_SETTINGS).
    redis_cmd = services["redis"]["command"]
    assert redis_cmd[redis_cmd.index("--zset-max-listpack-entries") + 1] == "0"
    # The trainer and the workers share the folder large snapshots are written to.
    for name in ("worker", "trainer"):
        env, volumes = services[name]["environment"], services[name]["volumes"]
        assert f"snapshots:{env['STREAMREC_SNAPSHOT_DIR']}" in volumes
    assert "snapshots" in compose["volumes"]
    assert services["worker"]["environment"]["STREAMREC_WEB_PUBLIC"] == "1"  # see below


@pytest.mark.parametrize("name", COMPOSE_FILES)
def test_compose_ports_are_published_on_loopback_only(name):
    services = yaml.safe_load((ROOT / name).read_text())["services"]
    published = [port for svc in services.values() for port in svc.get("ports", [])]
    assert published
    for port in published:
        ip, host, container = port.split(":")
        assert ip == "127.0.0.1", port
        assert host.isdigit() and container.isdigit()


@pytest.mark.parametrize("name", COMPOSE_FILES)
def test_compose_settings_names_exist(name):
    fields = {f"STREAMREC_{f.name.upper()}" for f in dataclasses.fields(Settings)}
    for service, svc in yaml.safe_load((ROOT / name).read_text())["services"].items():
        unknown = {k for k in svc.get("environment", {}) if k.startswith("STREAMREC_")} - fields
        assert not unknown, f"{name} {service}: no such setting {unknown}"


@pytest.fixture(scope="module")
def secure(tmp_path_factory):
    """docker-compose.secure.yml as compose would run it: with the secrets and .env made by
    deploy/make-secrets.sh, ${VAR} substituted from that .env."""
    d = tmp_path_factory.mktemp("secure")
    subprocess.run(["sh", str(ROOT / "deploy" / "make-secrets.sh"), str(d)], check=True,
                   capture_output=True)
    env = dict(line.split("=", 1) for line in (d / ".env").read_text().splitlines())
    text = (ROOT / "docker-compose.secure.yml").read_text()
    wanted = set(re.findall(r"\$\{(\w+)", text))
    assert wanted <= env.keys(), f"not made by make-secrets.sh: {wanted - env.keys()}"
    text = re.sub(r"\$\{(\w+)[^}]*\}", lambda m: env[m.group(1)], text)
    return d, yaml.safe_load(text)


def _container_files(d: Path, svc: dict) -> dict[str, Path]:
    """Each path a service sees through its bind mounts, as the host file behind it."""
    seen = {}
    for volume in svc.get("volumes", []):
        host, container = volume.split(":")[:2]
        if host.startswith("./"):
            seen[container] = d / host[2:]
    return seen


def _in_container(d: Path, svc: dict, path: str) -> Path:
    for container, host in _container_files(d, svc).items():
        if path == container or path.startswith(container + "/"):
            return host / path[len(container):].lstrip("/")
    raise AssertionError(f"{path} is not mounted")


def test_secure_compose_clients_use_sasl_ssl_and_redis_tls_with_consistent_settings(
        secure, monkeypatch):
    d, compose = secure
    services = compose["services"]
    for name in ("worker", "simulator", "trainer"):
        env = services[name]["environment"]
        assert env["STREAMREC_KAFKA_SECURITY_PROTOCOL"] == "SASL_SSL"
        assert env["STREAMREC_KAFKA_SASL_MECHANISM"] in SASL_MECHANISMS
        for key, value in env.items():
            if key.endswith(("_CAFILE", "_SSL_CA")):  # as the container sees it
                value = str(_in_container(d, services[name], value))
            monkeypatch.setenv(key, value)
        monkeypatch.setenv("STREAMREC_WEB_HOST", "0.0.0.0")  # as the Dockerfile sets it
        uses_redis = "STREAMREC_REDIS" in env
        if uses_redis:
            assert env["STREAMREC_REDIS"].startswith("rediss://")
        # The settings hold together, the CA loads, the web server has its token.
        check(Settings(), redis=uses_redis, web=name == "worker")
        for key in list(env):
            monkeypatch.delenv(key)
    assert "STREAMREC_WEB_PUBLIC" not in services["worker"]["environment"]


def test_secure_compose_servers_find_their_secrets(secure):
    d, compose = secure
    services = compose["services"]
    kafka = services["kafka"]
    env = kafka["environment"]
    protocols = dict(m.split(":") for m in env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(","))
    assert protocols["SASL_SSL"] == "SASL_SSL"
    published = {p.split(":")[2] for p in kafka["ports"]}
    for listener in env["KAFKA_LISTENERS"].split(","):
        name, address = listener.split("://")
        if address.split(":")[-1] in published:
            assert protocols[name] == "SASL_SSL", listener  # nothing plaintext from outside
        elif name != "SASL_SSL":
            assert address.startswith("127.0.0.1:"), listener
    for key in ("KAFKA_SSL_KEYSTORE_FILENAME", "KAFKA_SSL_KEYSTORE_CREDENTIALS"):
        assert _in_container(d, kafka, f"/etc/kafka/secrets/{env[key]}").is_file()
    redis = services["redis"]
    cmd = redis["command"]
    assert cmd[cmd.index("--port") + 1] == "0"  # TLS only
    for flag in ("--tls-cert-file", "--tls-key-file", "--tls-ca-cert-file", "--aclfile"):
        assert _in_container(d, redis, cmd[cmd.index(flag) + 1]).is_file(), flag
    acl = _in_container(d, redis, "/tls/users.acl").read_text()
    assert "user default off" in acl
    assert f">{services['worker']['environment']['STREAMREC_REDIS_PASSWORD']} " in acl


def test_dockerfile_entrypoint_is_the_cli():
    text = (ROOT / "Dockerfile").read_text()
    assert 'ENTRYPOINT ["streamrec"]' in text
    assert "recbole==1.2.1" in text


def test_makefile_has_the_two_commands_and_ci_calls_make_test():
    make = (ROOT / "Makefile").read_text()
    assert "\ndemo:" in make and "\ntest:" in make
    assert "make test" in (ROOT / ".ci" / "run").read_text()


def test_the_docs_document_every_setting_and_each_is_read_from_its_variable(monkeypatch):
    page = (ROOT / "docs" / "configuration.md").read_text()
    table = "\n".join(line for line in page.splitlines() if line.startswith("| `STREAMREC_"))
    fields = dataclasses.fields(Settings)
    missing = [f"STREAMREC_{f.name.upper()}" for f in fields
               if f"`STREAMREC_{f.name.upper()}`" not in table]
    assert not missing, f"settings missing from docs/configuration.md's table: {missing}"
    # Values unlike every default, one per type, set through the documented names.
    default = Settings()
    by_type = {"str": ("x-set", "x-set"), "int": ("7", 7), "float": ("0.3", 0.3)}
    given = {f.name: by_type[f.type] if f.type != "bool" else
             ("0", False) if getattr(default, f.name) else ("1", True) for f in fields}
    for f in fields:
        monkeypatch.setenv(f"STREAMREC_{f.name.upper()}", given[f.name][0])
    s = Settings()
    for f in fields:
        assert getattr(s, f.name) == given[f.name][1], f.name
