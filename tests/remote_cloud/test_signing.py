"""The signing key: created 0600, loaded with clear errors, and its signatures
verify with the agent's own check (fleet_wire.remote.verify)."""

from __future__ import annotations

import stat
import subprocess
from pathlib import Path

import pytest

from fleet_cloud.remote_config.signing import (
    SigningKeyError,
    config_public_key,
    load_signing_key,
    write_new_key,
)
from fleet_cloud.settings import Settings
from fleet_wire.remote import ConfigDocument, sign, verify
from tests.harness import tool


def test_keygen_cli_writes_a_0600_seed_and_refuses_to_replace_it(tmp_path: Path) -> None:
    key = tmp_path / "keys" / "config-signing.key"
    out = subprocess.run(
        [tool("fleet-cloud"), "config-keygen", "--file", str(key)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert len(key.read_bytes()) == 32
    settings = Settings(config_signing_key_file=key)
    assert config_public_key(settings) in out.stdout

    again = subprocess.run(
        [tool("fleet-cloud"), "config-keygen", "--file", str(key)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert again.returncode == 1
    assert "already exists" in again.stdout + again.stderr
    assert load_signing_key(settings) == key.read_bytes()  # untouched


def test_missing_or_malformed_key_is_a_one_line_error(tmp_path: Path) -> None:
    with pytest.raises(SigningKeyError, match="FLEET_CONFIG_SIGNING_KEY_FILE"):
        load_signing_key(Settings(config_signing_key_file=None))
    with pytest.raises(SigningKeyError, match="config-keygen"):
        load_signing_key(Settings(config_signing_key_file=tmp_path / "absent.key"))
    short = tmp_path / "short.key"
    short.write_bytes(b"x" * 31)
    with pytest.raises(SigningKeyError, match="expected 32 raw bytes, found 31"):
        load_signing_key(Settings(config_signing_key_file=short))


def test_signature_round_trip_with_the_agents_check(tmp_path: Path) -> None:
    path = tmp_path / "k"
    public = write_new_key(path)
    settings = Settings(config_signing_key_file=path)
    assert config_public_key(settings) == public
    seed = load_signing_key(settings)
    config = {"sampler.min_interval_s": 5.0, "obd.pids": ["rpm", "speed"], "log_level": "info"}
    doc = ConfigDocument(
        device_id="truck-001", version=3, issued_at=1_700_000_000_000, config=config,
        sig=sign(seed, "truck-001", 3, 1_700_000_000_000, config),
    )  # fmt: skip
    assert verify(public, doc)
    # Bound to the device, the version and the content.
    assert not verify(public, doc.model_copy(update={"device_id": "truck-002"}))
    assert not verify(public, doc.model_copy(update={"version": 4}))
    assert not verify(public, doc.model_copy(update={"config": {**config, "log_level": "debug"}}))
    other = write_new_key(tmp_path / "other")
    assert not verify(other, doc)
