"""deploy/systemd/ as systemd itself reads it: `systemd-analyze verify` (clean, no
warnings), `systemd-analyze security --offline` (hardening kept), systemd-sysusers
on a scratch root, and the copy `fleet-agent provision` installs."""

from __future__ import annotations

import re
import shutil
import subprocess
from importlib import resources
from pathlib import Path

import pytest

from fleet_edge.provision import UNIT_DEFAULTS, render_unit
from tests.harness import ROOT, tool

UNITS = ROOT / "deploy" / "systemd"
SERVICES = sorted(p.name for p in UNITS.glob("*.service"))
# `systemd-analyze security` exposure, 0 (locked down) .. 10 (unprotected); the
# agent needs serial devices and the network, so it cannot reach 0.
MAX_EXPOSURE = 2.5


def concrete(name: str, tmp_path: Path) -> Path:
    """The unit with its commands pointing at this checkout's executables (verify
    checks that ExecStart exists); a template gets an instance name too."""
    text = (UNITS / name).read_text()
    text = text.replace("/usr/local/bin/fleet-agent", tool("fleet-agent"))
    text = text.replace("/usr/local/bin/fleet-cloud", tool("fleet-cloud"))
    out = tmp_path / name.replace("@.", "@1.")
    out.write_text(text)
    return out


def analyze(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["systemd-analyze", *args], capture_output=True, text=True, timeout=120)


def test_the_units_we_ship() -> None:
    assert {"fleet-agent.service", "fleet-cloud.service", "fleet-cloud-process.service",
            "fleet-cloud-ingest@.service"} <= set(SERVICES)  # fmt: skip


@pytest.mark.parametrize("name", SERVICES)
def test_unit_verifies_cleanly(name: str, tmp_path: Path) -> None:
    unit = concrete(name, tmp_path)
    r = analyze("verify", str(unit))
    assert r.returncode == 0 and not r.stderr.strip(), r.stderr  # warnings count as failures
    r = analyze("security", "--offline=true", str(unit))
    m = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", r.stdout)
    assert m is not None, r.stdout + r.stderr
    assert float(m.group(1)) <= MAX_EXPOSURE, r.stdout


def test_agent_unit_is_a_watched_notify_service() -> None:
    keys: dict[str, list[str]] = {}
    for line in (UNITS / "fleet-agent.service").read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            k, v = line.split("=", 1)
            keys.setdefault(k, []).append(v)
    assert keys["Type"] == ["notify"] and keys["WatchdogSec"] == ["30"]
    assert keys["Restart"] == ["always"] and keys["SupplementaryGroups"] == ["dialout"]
    assert keys["ProtectSystem"] == ["strict"] and keys["NoNewPrivileges"] == ["yes"]
    assert keys["ReadWritePaths"] == [f"{UNIT_DEFAULTS['state_dir']} {UNIT_DEFAULTS['config_dir']}"]
    # The agent's stop budget (STOP_BUDGET_S) fits in systemd's.
    from fleet_edge.agent import STOP_BUDGET_S

    assert float(keys["TimeoutStopSec"][0]) > STOP_BUDGET_S


def test_provision_installs_the_shipped_unit(tmp_path: Path) -> None:
    shipped = (resources.files("fleet_edge") / "systemd" / "fleet-agent.service").read_text()
    assert shipped == (UNITS / "fleet-agent.service").read_text()  # one source of truth
    text = render_unit(
        shipped, exe=tool("fleet-agent"), config_dir=tmp_path / "etc",
        state_dir=tmp_path / "state", user="fleet-agent",
    )  # fmt: skip
    (tmp_path / "fleet-agent.service").write_text(text)
    r = analyze("verify", str(tmp_path / "fleet-agent.service"))
    assert r.returncode == 0 and not r.stderr.strip(), r.stderr
    assert (
        f"ExecStart={tool('fleet-agent')} run --config {tmp_path / 'etc' / 'config.toml'}" in text
    )
    # everything else is the shipped unit, line for line
    assert len(text.splitlines()) == len(shipped.splitlines())


def test_sysusers_creates_the_agent_user_in_dialout(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    for f in ("passwd", "group", "shadow", "gshadow"):
        if Path("/etc", f).exists():
            shutil.copy(Path("/etc", f), root / "etc" / f)
    conf = resources.files("fleet_edge") / "systemd" / "fleet-agent.sysusers.conf"
    with resources.as_file(conf) as path:
        r = subprocess.run(
            ["systemd-sysusers", f"--root={root}", str(path)],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    assert r.returncode == 0, r.stderr
    users = {
        ln.split(":")[0]: ln.split(":") for ln in (root / "etc/passwd").read_text().splitlines()
    }
    assert users["fleet-agent"][6] == "/usr/sbin/nologin"
    assert int(users["fleet-agent"][2]) < 1000  # a system user
    groups = {
        ln.split(":")[0]: ln.split(":") for ln in (root / "etc/group").read_text().splitlines()
    }
    assert "fleet-agent" in groups["dialout"][3].split(",")
