"""The files `fleet-agent provision` writes, without a cloud: the config it builds from
a provisioning document (plain and TLS), its TOML read back by the agent's own model,
and the atomic 0600 write."""

from __future__ import annotations

import os
import stat
import tomllib
from pathlib import Path
from typing import Any

import pytest

from fleet_edge.provision import (
    ProvisionError,
    build_config,
    render_unit,
    to_toml,
    validated,
    write_private,
)


def document(tls: bool) -> dict[str, Any]:
    port = 8883 if tls else 1883
    return {
        "device_id": "van-42",
        "mqtt": {"password": 'p"w\\d', "ca_pem": "PEM" if tls else None},
        "config": {"device_id": "van-42",
                   "broker": {"host": "mqtt.example.com", "port": port, "tls": tls}},
    }  # fmt: skip


@pytest.mark.parametrize("tls", [True, False])
def test_config_from_a_document_is_what_the_agent_loads(tls: bool, tmp_path: Path) -> None:
    etc, state = tmp_path / "etc ü", tmp_path / "state"
    cfg = build_config(
        document(tls), config_dir=etc, state_dir=state, existing={},
        gps_port=Path("/dev/serial/by-id/usb-u-blox"), obd_port=None,
    )  # fmt: skip
    text = to_toml(cfg)
    agent = validated(text)
    assert agent.device_id == "van-42" and agent.broker.password == 'p"w\\d'
    assert agent.broker.tls is tls and agent.broker.port == (8883 if tls else 1883)
    assert agent.broker.ca_file == (etc / "ca.pem" if tls else None)
    assert agent.outbox.path == state / "outbox.db" and agent.remote.state_dir == state
    assert agent.remote.public_key is None  # the cloud had no signing key
    assert str(agent.gps.port) == "/dev/serial/by-id/usb-u-blox" and not agent.obd.enabled
    assert tomllib.loads(text) == cfg


def test_a_rerun_keeps_the_units_own_wiring(tmp_path: Path) -> None:
    existing = {"gps": {"port": "/dev/ttyAMA0", "baud": 38400}, "obd": {"enabled": True},
                "outbox": {"max_rows": 1000}}  # fmt: skip
    cfg = build_config(document(True), config_dir=tmp_path, state_dir=tmp_path,
                       existing=existing, gps_port=None, obd_port=Path("/dev/rfcomm0"))  # fmt: skip
    agent = validated(to_toml(cfg))
    assert str(agent.gps.port) == "/dev/ttyAMA0" and agent.gps.baud == 38400
    assert agent.obd.enabled and str(agent.obd.port) == "/dev/rfcomm0"
    assert agent.outbox.max_rows == 1000 and agent.outbox.path == tmp_path / "outbox.db"


def test_an_initial_config_the_agent_refuses_is_one_line(tmp_path: Path) -> None:
    doc = document(False)
    doc["config"]["sampler"] = {"min_interval_s": -1}
    cfg = build_config(doc, config_dir=tmp_path, state_dir=tmp_path, existing={},
                       gps_port=None, obd_port=None)  # fmt: skip
    with pytest.raises(ProvisionError) as e:
        validated(to_toml(cfg))
    assert "sampler.min_interval_s" in str(e.value) and "\n" not in str(e.value)


def test_private_write_is_0600_whatever_the_umask_and_leaves_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "config.toml"
    target.write_text("old")
    os.chmod(target, 0o644)
    old = os.umask(0)
    try:
        write_private(target, b"new", None)
    finally:
        os.umask(old)
    assert target.read_bytes() == b"new" and stat.S_IMODE(target.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["config.toml"]
    with pytest.raises(ProvisionError, match="cannot write"):
        write_private(tmp_path / "missing-dir" / "x", b"", None)


def test_unit_paths_systemd_would_misread_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ProvisionError, match="may not contain spaces"):
        render_unit("ExecStart=x\n", exe="/usr/bin/fleet-agent", config_dir=tmp_path / "a b",
                    state_dir=tmp_path, user="fleet-agent")  # fmt: skip
