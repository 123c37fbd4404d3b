"""`fleet-agent doctor` against the simulators and a real broker: a pass/fail table, exit status."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.edge.sims import SimDevice
from tests.harness import Broker, tool


def doctor(broker: Broker, tmp_path: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    cfg = tmp_path / "agent.toml"
    cfg.write_text(f'[broker]\npassword = "{broker.device_password("doc-test-01")}"\n')
    return subprocess.run(
        [tool("fleet-agent"), "doctor", "--config", str(cfg), "--device-id", "doc-test-01",
         "--gps-serial", str(tmp_path / "gps0"), "--obd-serial", str(tmp_path / "elm0"),
         "--broker", f"{broker.host}:{broker.port}", "--outbox", str(tmp_path / "outbox.db"),
         *extra],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def rows(out: str) -> dict[str, tuple[str, str]]:
    table: dict[str, tuple[str, str]] = {}
    for line in out.splitlines():
        for result in ("PASS", "WARN", "FAIL"):
            name, sep, detail = line.partition(f"  {result}  ")
            if sep:
                table[name.strip()] = (result, detail)
    return table


def test_doctor_passes_against_the_simulators(broker: Broker, tmp_path: Path) -> None:
    gps = SimDevice("gps", tmp_path / "gps0").plug()
    elm = SimDevice("elm327", tmp_path / "elm0", route_start_ms=gps.route_start_ms).plug()
    try:
        r = doctor(broker, tmp_path, "--timeout", "30")
    finally:
        gps.close()
        elm.close()
    assert r.returncode == 0, r.stdout + r.stderr
    t = rows(r.stdout)
    for check in ("serial ports", "gps fix", "clock", "obd link", "vin", "obd pids", "broker",
                  "outbox disk"):  # fmt: skip
        assert t[check][0] == "PASS", (check, r.stdout)
    assert t["gps fix"][1].startswith("3D, ") and "HDOP" in t["gps fix"][1]
    assert "first fix after" in t["gps fix"][1]
    assert "ISO 15765-4 CAN" in t["obd link"][1]
    assert t["vin"][1] == "WVWZZZ1KZ8W123456"
    assert "round trip" in t["broker"][1]
    assert r.stdout.rstrip().splitlines()[-1].startswith("OK:")
    assert "Traceback" not in r.stdout + r.stderr


def test_doctor_fails_with_a_reason_when_the_receiver_has_no_fix(
    broker: Broker, tmp_path: Path
) -> None:
    gps = SimDevice("gps", tmp_path / "gps0", "--no-fix").plug()
    elm = SimDevice("elm327", tmp_path / "elm0", "--ignition-off").plug()
    try:
        r = doctor(broker, tmp_path, "--timeout", "6")
    finally:
        gps.close()
        elm.close()
    assert r.returncode == 1
    t = rows(r.stdout)
    result, detail = t["gps fix"]
    assert result == "FAIL" and "no fix within 6 s" in detail and "rmc_void" in detail
    result, detail = t["obd link"]
    assert result == "FAIL" and "ignition off" in detail
    assert t["broker"][0] == "PASS"
    assert r.stdout.rstrip().splitlines()[-1].startswith("FAILED: 2 of")
    assert "Traceback" not in r.stdout + r.stderr


def test_doctor_names_a_missing_port(broker: Broker, tmp_path: Path) -> None:
    r = doctor(broker, tmp_path, "--timeout", "2")
    assert r.returncode == 1
    result, detail = rows(r.stdout)["serial ports"]
    assert result == "FAIL" and "gps0 does not exist" in detail
