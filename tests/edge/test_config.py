"""Configuration: TOML file, CLI overrides, one-line errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from fleet_edge.config import AgentConfig, ConfigError, load_config, parse_host_port

EXAMPLE = """
device_id = "truck-042"

[broker]
host = "mqtt.example.net"
port = 8883
password = "s3cret"
keepalive_s = 60

[gps]
port = "/dev/serial/by-id/usb-u-blox_GNSS-if00"
baud = 38400

[outbox]
path = "/var/lib/fleet-agent/outbox.db"
max_rows = 200000
max_bytes = 33554432

[sampler]
min_interval_s = 1
max_interval_s = 120
min_distance_m = 30
heading_change_deg = 15

[publisher]
live_batch_max = 20
backlog_batch = 250
drain_rate = 50
ack_timeout_s = 20
status_interval_s = 30
"""


def test_example_config_loads(tmp_path: Path) -> None:
    f = tmp_path / "agent.toml"
    f.write_text(EXAMPLE)
    cfg = load_config(f)
    assert cfg.device_id == "truck-042"
    assert cfg.broker.port == 8883 and cfg.gps.baud == 38400
    assert cfg.outbox.max_rows == 200_000 and cfg.sampler.max_interval_s == 120
    assert cfg.publisher.backlog_batch == 250
    assert cfg.outbox.commit_interval_s == 1.0  # default kept


def test_overrides_win_over_file(tmp_path: Path) -> None:
    f = tmp_path / "agent.toml"
    f.write_text(EXAMPLE)
    cfg = load_config(
        f,
        {
            "device_id": "van-7",
            "broker.host": "127.0.0.1",
            "broker.port": 1884,
            "gps.port": tmp_path / "gps",
            "outbox.path": None,  # None: not given on the command line
        },
    )
    assert (cfg.device_id, cfg.broker.host, cfg.broker.port) == ("van-7", "127.0.0.1", 1884)
    assert cfg.gps.port == tmp_path / "gps"
    assert cfg.outbox.path == Path("/var/lib/fleet-agent/outbox.db")


def test_no_file_needs_device_id() -> None:
    with pytest.raises(ConfigError, match="device_id"):
        load_config(None)
    assert load_config(None, {"device_id": "abc"}).broker.host == "localhost"


@pytest.mark.parametrize(
    ("toml", "fragment"),
    [
        ('device_id = "Truck_1"', "device_id"),
        ('device_id = "ok-1"\n[outbox]\nmax_rows = 0', "outbox.max_rows"),
        ('device_id = "ok-1"\n[outbox]\nmax_row = 5', "outbox.max_row"),
        ('device_id = "ok-1"\n[publisher]\nbacklog_batch = 5000', "publisher.backlog_batch"),
        ('device_id = "ok-1"\n[sampler]\nmin_interval_s = 9\nmax_interval_s = 5', "sampler"),
        ('device_id = "ok-1"\n[broker]\nkeepalive_s = 3600', "broker.keepalive_s"),
        ("device_id = ", "agent.toml"),
    ],
)
def test_bad_config_is_one_line(tmp_path: Path, toml: str, fragment: str) -> None:
    f = tmp_path / "agent.toml"
    f.write_text(toml)
    with pytest.raises(ConfigError) as e:
        load_config(f)
    msg = str(e.value)
    assert fragment in msg and "\n" not in msg


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such file"):
        load_config(tmp_path / "nope.toml")


def test_parse_host_port() -> None:
    assert parse_host_port("broker.local:1883") == ("broker.local", 1883)
    assert parse_host_port("[::1]:8883") == ("::1", 8883)
    for bad in ("nohost", ":1883", "h:0", "h:99999", "h:x"):
        with pytest.raises(ConfigError):
            parse_host_port(bad)


def test_config_is_immutable_and_revalidatable() -> None:
    cfg = AgentConfig(device_id="abc")
    again = AgentConfig.model_validate(cfg.model_dump())
    assert again == cfg
