"""docker-compose.yml cannot be run here (no Docker engine), so check its shape."""

from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


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
    for svc in services.values():
        for port in svc.get("ports", []):
            host, container = port.split(":")
            assert host.isdigit() and container.isdigit()


def test_dockerfile_entrypoint_is_the_cli():
    text = (ROOT / "Dockerfile").read_text()
    assert 'ENTRYPOINT ["streamrec"]' in text
    assert "recbole==1.2.1" in text


def test_makefile_has_the_two_commands_and_ci_calls_make_test():
    make = (ROOT / "Makefile").read_text()
    assert "\ndemo:" in make and "\ntest:" in make
    assert "make test" in (ROOT / ".ci" / "run").read_text()


def test_the_docs_document_every_setting_and_each_is_read_from_its_variable(monkeypatch):
    import dataclasses

    from streamrec.config import Settings

    page = (ROOT / "docs" / "configuration.md").read_text()
    table = "\n".join(line for line in page.splitlines() if line.startswith("| `STREAMREC_"))
    fields = dataclasses.fields(Settings)
    missing = [f"STREAMREC_{f.name.upper()}" for f in fields
               if f"`STREAMREC_{f.name.upper()}`" not in table]
    assert not missing, f"settings missing from docs/configuration.md's table: {missing}"
    # Values unlike every default, one per type, set through the documented names.
    given = {"str": ("x-set", "x-set"), "int": ("7", 7), "float": ("0.3", 0.3),
             "bool": ("0", False)}
    for f in fields:
        monkeypatch.setenv(f"STREAMREC_{f.name.upper()}", given[f.type][0])
    s = Settings()
    for f in fields:
        assert getattr(s, f.name) == given[f.type][1], f.name
