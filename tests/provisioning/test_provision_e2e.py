"""The installer's flow with nothing faked: a claim token -> `fleet-agent provision`
(real HTTP, real broker account over TLS, files on disk) -> `fleet-agent run` on a
simulated GPS receiver -> fixes in PostgreSQL. Plus every refusal the installer can
meet, as the one line the command prints."""

from __future__ import annotations

import os
import pwd
import secrets
import stat
import subprocess
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness import Proc, free_port, tool, wait_until
from tests.provisioning.conftest import ProvCloud

NOBODY = pwd.getpwnam("nobody")


def provision(
    cloud: str, token: str, etc: Path, state: Path, *extra: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [tool("fleet-agent"), "provision", "--cloud", cloud, "--token", token,
         "--config-dir", str(etc), "--state-dir", str(state), *extra],
        capture_output=True, text=True, timeout=180,
    )  # fmt: skip


def stored(pc: ProvCloud, device: str) -> list[dict[str, object]]:
    return [dict(r) for r in pc.db(
        "SELECT seq, vehicle_id FROM positions WHERE device_id = $1", device
    )]  # fmt: skip


def assert_private(path: Path, uid: int) -> None:
    st = path.stat()
    assert stat.S_IMODE(st.st_mode) == 0o600, (path, oct(st.st_mode))
    assert st.st_uid == uid, (path, st.st_uid)


@pytest.fixture
def gps(tmp_path: Path) -> Iterator[Path]:
    link = tmp_path / "gps"
    proc = Proc(
        [tool("fleet-sim"), "gps", "--pty", "--link", str(link), "--hz", "5", "--seed", "11"],
        tmp_path / "gps.log",
    ).start()
    wait_until(link.exists, 20, "the simulated receiver's pty")
    yield link
    proc.stop()


@pytest.mark.skipif(os.geteuid() != 0, reason="checks the chown to the agent's user (needs root)")
def test_token_to_fixes_in_the_database(prov_cloud: ProvCloud, gps: Path, tmp_path: Path) -> None:
    vid = prov_cloud.vehicle("E2E van " + secrets.token_hex(3))
    token = prov_cloud.claim(vid)["token"]
    etc, state = tmp_path / "etc", tmp_path / "state"
    flags = ("--user", "nobody", "--no-systemd", "--doctor-timeout", "30")
    out = provision(prov_cloud.url, token, etc, state, "--gps-port", str(gps), *flags)
    print(out.stdout)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "over TLS" in out.stdout and "systemd: skipped (--no-systemd)" in out.stdout
    assert "\nOK: " in out.stdout  # the doctor's verdict
    for f in (etc / "config.toml", etc / "ca.pem", state / "install_id"):
        assert_private(f, NOBODY.pw_uid)
    for d in (etc, state):
        assert stat.S_IMODE(d.stat().st_mode) == 0o700 and d.stat().st_uid == NOBODY.pw_uid
    assert not [p for p in etc.iterdir() if p.name.endswith(".tmp")]
    cfg = tomllib.loads((etc / "config.toml").read_text())
    device = cfg["device_id"]
    assert cfg["broker"]["tls"] is True and cfg["broker"]["port"] == prov_cloud.broker.tls_port
    assert cfg["broker"]["ca_file"] == str(etc / "ca.pem")
    assert (etc / "ca.pem").read_text() == prov_cloud.broker.ca_file.read_text()
    assert cfg["gps"]["port"] == str(gps) and cfg["outbox"]["path"] == str(state / "outbox.db")
    assert len(cfg["remote"]["public_key"]) == 44  # base64 of 32 bytes

    agent = Proc([tool("fleet-agent"), "run", "--config", str(etc / "config.toml")],
                 tmp_path / "agent.log").start()  # fmt: skip
    try:
        wait_until(lambda: len(stored(prov_cloud, device)) >= 3, 90, "3 fixes stored",
                   every=0.5)  # fmt: skip
    finally:
        assert agent.stop() == 0, agent.log()
    assert {r["vehicle_id"] for r in stored(prov_cloud, device)} == {vid}

    # Re-running the same command on the same unit is safe: same device, fresh
    # password (the old one stops working), the GPS port kept without --gps-port.
    old_password = cfg["broker"]["password"]
    again = provision(prov_cloud.url, token, etc, state, *flags)
    assert again.returncode == 0, again.stdout + again.stderr
    cfg2 = tomllib.loads((etc / "config.toml").read_text())
    assert cfg2["device_id"] == device and cfg2["gps"] == cfg["gps"]
    assert cfg2["broker"]["password"] != old_password
    before = len(stored(prov_cloud, device))
    agent = Proc([tool("fleet-agent"), "run", "--config", str(etc / "config.toml")],
                 tmp_path / "agent2.log").start()  # fmt: skip
    try:
        wait_until(lambda: len(stored(prov_cloud, device)) > before, 90, "fixes after re-run",
                   every=0.5)  # fmt: skip
    finally:
        assert agent.stop() == 0, agent.log()

    # Another unit with the same token: one clear line, nothing written.
    other = tmp_path / "other"
    refused = provision(prov_cloud.url, token, other / "etc", other / "state", *flags)
    assert refused.returncode == 1
    assert refused.stderr.count("\n") == 1, refused.stderr
    assert "claim refused: claim token already used on " in refused.stderr
    assert "by another unit" in refused.stderr
    assert not (other / "etc" / "config.toml").exists()


def test_refusals_are_one_clear_line(prov_cloud: ProvCloud, tmp_path: Path) -> None:
    vid = prov_cloud.vehicle("Refused van " + secrets.token_hex(3))
    expired = prov_cloud.claim(vid)
    prov_cloud.db(
        """UPDATE device_claims SET created_at = now() - interval '3 hours',
               expires_at = now() - interval '1 hour' WHERE id = $1""",
        expired["id"],
    )
    plain = f"http://127.0.0.1:{free_port()}"
    cases = [
        (prov_cloud.url, expired["token"], "claim refused: claim token expired on "),
        (prov_cloud.url, "fct_" + secrets.token_urlsafe(32), "claim refused: unknown claim token"),
        (plain, "fct_x", f"cannot reach the cloud at {plain}: connection refused"),
        # an https URL on a server whose certificate no system CA signed (the broker's TLS port)
        (f"https://127.0.0.1:{prov_cloud.broker.tls_port}", "fct_x", "pass --cloud-ca FILE"),
        # https to a plain-HTTP server
        (prov_cloud.url.replace("http:", "https:"), "fct_x", "TLS error with 127.0.0.1"),
        ("fleet.example.com", "fct_x", "expected a URL such as https://"),
    ]
    for i, (cloud, token, message) in enumerate(cases):
        out = provision(cloud, token, tmp_path / f"etc{i}", tmp_path / f"state{i}", "--no-systemd")
        assert out.returncode == 1, (cloud, out.stdout, out.stderr)
        assert out.stderr.startswith("fleet-agent: ") and out.stderr.count("\n") == 1, out.stderr
        assert message in out.stderr, (message, out.stderr)
        assert not (tmp_path / f"etc{i}" / "config.toml").exists()
    # nothing consumed the expired claim
    (claim,) = prov_cloud.call("GET", f"/api/v1/vehicles/{vid}/claims").body
    assert claim["status"] == "expired"


def test_unit_installed_and_doctor_failure_fails_the_command(
    prov_cloud: ProvCloud, tmp_path: Path
) -> None:
    """Without --no-systemd the unit is installed with this installation's paths (systemd
    is not PID 1 here, which the command says); no GPS receiver: the doctor fails, and so
    does the command, after writing everything."""
    token = prov_cloud.claim(prov_cloud.vehicle("Unit van " + secrets.token_hex(3)))["token"]
    etc, state, units = tmp_path / "etc", tmp_path / "state", tmp_path / "units"
    out = provision(
        prov_cloud.url, token, etc, state, "--unit-dir", str(units), "--user", "root",
        "--gps-port", str(tmp_path / "no-receiver"), "--doctor-timeout", "2",
    )  # fmt: skip
    assert out.returncode == 1, out.stdout + out.stderr
    assert "systemd is not running here" in out.stdout
    assert "FAILED:" in out.stdout and "gps" in out.stdout
    assert "provisioned, but the doctor found problems" in out.stderr
    unit = (units / "fleet-agent.service").read_text()
    assert f"ExecStart={tool('fleet-agent')} run --config {etc / 'config.toml'}\n" in unit
    assert f"ReadWritePaths={state} {etc}\n" in unit and "User=root\n" in unit
    verify = subprocess.run(
        ["systemd-analyze", "verify", str(units / "fleet-agent.service")],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert verify.returncode == 0 and not verify.stderr.strip(), verify.stderr
    assert (etc / "config.toml").exists()
