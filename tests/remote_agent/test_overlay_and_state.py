"""The pieces under remote config that need no broker: the overlay's rules, the key
setting, and the state files (atomic replace, damaged file moved aside)."""

from __future__ import annotations

import base64
import os
from pathlib import Path

import pytest

from fleet_edge.config import AgentConfig, ConfigError, load_config, overlay_remote
from fleet_edge.remote.durable import atomic_write
from fleet_edge.remote.state import CONFIG_STATE_FILE, ConfigState, load, save
from fleet_wire.remote import REMOTE_KEYS, ConfigDocument, public_key_b64, sign

BASE = AgentConfig(device_id="truck-042")


def current(cfg: AgentConfig, dotted: str) -> object:
    node: object = cfg
    for part in dotted.split("."):
        node = getattr(node, part)
    return node


def test_every_remote_key_is_a_setting_of_the_agent() -> None:
    for key in sorted(REMOTE_KEYS):
        value = current(BASE, key)
        if isinstance(value, tuple):
            value = list(value)  # as JSON carries it
        assert overlay_remote(BASE, {key: value}) == BASE, key


def test_overlay_sets_values_through_the_same_validation() -> None:
    cfg = overlay_remote(
        BASE,
        {"sampler.min_interval_s": 5, "obd.pids": ["rpm", "speed"], "broker.host": "mqtt.b",
         "log_level": "debug"},
    )  # fmt: skip
    assert cfg.sampler.min_interval_s == 5.0 and cfg.obd.pids == ("rpm", "speed")
    assert (cfg.broker.host, cfg.log_level) == ("mqtt.b", "debug")
    assert cfg.broker.password == BASE.broker.password and cfg.device_id == "truck-042"


@pytest.mark.parametrize(
    ("doc", "reason"),
    [
        ({"broker.password": "x"}, "'broker.password' may not be set remotely"),
        ({"device_id": "other-1"}, "'device_id' may not be set remotely"),
        ({"remote.public_key": "x"}, "'remote.public_key' may not be set remotely"),
        ({"sampler.min_interval_s": -1}, "sampler.min_interval_s: Input should be greater"),
        ({"sampler.min_interval_s": 9, "sampler.max_interval_s": 5}, "max_interval_s must be >="),
        ({"obd.pids": ["rpm", "warp"]}, "unknown PID 'warp'"),
        ({"broker.port": 70000}, "broker.port: Input should be less than or equal to 65535"),
        ({"log_level": "loud"}, "log_level: Input should be"),
    ],
)
def test_overlay_refusals_are_one_line_reasons(doc: dict[str, object], reason: str) -> None:
    with pytest.raises(ConfigError) as e:
        overlay_remote(BASE, doc)
    assert reason in str(e.value) and "\n" not in str(e.value)


def test_public_key_must_be_a_base64_ed25519_key(tmp_path: Path) -> None:
    good = public_key_b64(os.urandom(32))
    f = tmp_path / "a.toml"
    f.write_text(
        f'device_id = "truck-042"\nlog_level = "warning"\n[remote]\npublic_key = "{good}"\n'
    )
    cfg = load_config(f)
    assert cfg.remote.public_key == good and cfg.log_level == "warning"
    assert cfg.remote.probation_s == 120 and cfg.remote.state_dir == Path("/var/lib/fleet-agent")
    for bad, why in (("not base64!", "must be base64"),
                     (base64.b64encode(b"x" * 16).decode(), "32-byte")):  # fmt: skip
        f.write_text(f'device_id = "truck-042"\n[remote]\npublic_key = "{bad}"\n')
        with pytest.raises(ConfigError, match=why):
            load_config(f)


def test_state_is_replaced_whole_and_a_damaged_file_is_set_aside(tmp_path: Path) -> None:
    path = tmp_path / "state" / CONFIG_STATE_FILE
    assert load(path, ConfigState) == ConfigState()  # nothing yet
    seed = os.urandom(32)
    conf = {"sampler.min_interval_s": 3.0}
    t = 1_800_000_000_000
    sig = sign(seed, "truck-042", 4, t, conf)
    doc = ConfigDocument(device_id="truck-042", version=4, issued_at=t, config=conf, sig=sig)
    st = ConfigState(max_version=4, max_sig=doc.sig, active=doc, committed=False)
    # A temporary file left by a write that a kill cut short is never read, and goes.
    stale = path.parent / f".{CONFIG_STATE_FILE}.12345.tmp"
    path.parent.mkdir(parents=True)
    stale.write_bytes(b"{half")
    save(path, st)
    assert load(path, ConfigState) == st
    assert not stale.exists()
    assert oct(path.stat().st_mode & 0o777) == "0o600"

    atomic_write(path, b'{"format": 1, "max_version": "torn')
    assert load(path, ConfigState) == ConfigState()
    assert not path.exists() and (path.parent / (CONFIG_STATE_FILE + ".damaged")).exists()


def test_start_up_uses_the_stored_config_only_when_it_still_fits(tmp_path: Path) -> None:
    from fleet_edge.remote.config_keeper import load_config_state

    seed = os.urandom(32)
    t = 1_800_000_000_000

    def doc(version: int, conf: dict[str, object]) -> ConfigDocument:
        sig = sign(seed, "truck-042", version, t, conf)
        return ConfigDocument(device_id="truck-042", version=version, issued_at=t, config=conf,
                              sig=sig)  # fmt: skip

    good = doc(1, {"sampler.min_interval_s": 3.0})
    active = doc(2, {"sampler.max_interval_s": 20.0})
    save(tmp_path / CONFIG_STATE_FILE, ConfigState(max_version=2, active=active, good=good,
                                                   committed=False))  # fmt: skip
    remote = {"state_dir": tmp_path, "public_key": public_key_b64(seed)}
    local = AgentConfig(device_id="truck-042", remote=remote)
    st, cfg = load_config_state(local)
    assert cfg.sampler.max_interval_s == 20.0 and st.active == active and not st.committed

    # The local file changed so that version 2 no longer validates: the good one rules.
    local = AgentConfig(device_id="truck-042", remote=remote, sampler={"min_interval_s": 30})
    st, cfg = load_config_state(local)
    assert cfg.sampler.min_interval_s == 3.0 and st.active == good and st.committed

    # No key any more: remote config is off, the local file rules.
    local = AgentConfig(device_id="truck-042", remote={"state_dir": tmp_path})
    st, cfg = load_config_state(local)
    assert cfg == local and st.active is None and st.max_version == 2
