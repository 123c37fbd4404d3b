"""The container path: deploy/compose.yaml is a valid compose file for the cloud stack."""

from __future__ import annotations

import shutil
import subprocess

import pytest
import yaml

from tests.harness import ROOT

COMPOSE = ROOT / "deploy" / "compose.yaml"


def _compose_cli() -> list[str] | None:
    docker = shutil.which("docker")
    if (
        docker
        and subprocess.run([docker, "compose", "version"], capture_output=True).returncode == 0
    ):
        return [docker, "compose"]
    legacy = shutil.which("docker-compose")
    return [legacy] if legacy else None


def test_compose_uses_the_official_images_and_the_project_broker_policy() -> None:
    doc = yaml.safe_load(COMPOSE.read_text())
    images = {name: svc.get("image", "") for name, svc in doc["services"].items()}
    assert images["timescaledb"].startswith("timescale/timescaledb:")
    assert images["mosquitto"].startswith("eclipse-mosquitto:2")
    assert images["redis"].startswith("redis:7")
    assert doc["services"]["cloud"]["build"]["dockerfile"].endswith("Dockerfile.cloud")
    mounts = " ".join(str(v) for v in doc["services"]["mosquitto"]["volumes"])
    assert "mosquitto/conf.d" in mounts  # the same policy as make up and the tests
    for name in ("timescaledb", "mosquitto", "redis"):
        assert doc["services"]["cloud"]["depends_on"][name]["condition"] == "service_healthy"


def test_docker_compose_config_accepts_it() -> None:
    cli = _compose_cli()
    if cli is None:
        pytest.skip("neither `docker compose` nor `docker-compose` is installed")
    out = subprocess.run(
        [*cli, "-f", str(COMPOSE), "config", "--quiet"], capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
