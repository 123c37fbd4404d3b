"""The end-to-end slice with nothing faked:

fleet-sim gps (a NMEA receiver on a pty) -> fleet-agent (serial read, SQLite
outbox, MQTT) -> Mosquitto (project config) -> fleet-cloud ingest -> PostgreSQL,
and the cloud's end-to-end ack back to the agent, which then empties its outbox.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import orjson

from tests.harness import CloudStack, Proc, db_fetch, tool, wait_until


def outbox_depth(path: Path) -> int:
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
        return int(conn.execute("SELECT count(*) FROM outbox").fetchone()[0])


def oracle(path: Path) -> dict[int, tuple[float, float]]:
    """Fix time -> (lat, lon) of every fix the simulated receiver sent."""
    out = {}
    for line in path.read_text().splitlines():
        rec = orjson.loads(line)
        out[rec["t"]] = (rec["lat"], rec["lon"])
    return out


def stored_fix_times(cloud: CloudStack, device: str) -> list[int]:
    rows = db_fetch(cloud.dsn, "SELECT fix_time FROM positions WHERE device_id = $1", device)
    return [int(r["fix_time"].timestamp() * 1000) for r in rows]  # type: ignore[attr-defined]


def test_fix_from_simulated_receiver_reaches_postgres_and_outbox_empties(
    cloud: CloudStack, tmp_path: Path
) -> None:
    device = "e2e-agent-1"
    vehicle_id = cloud.register_vehicle("E2E truck", device)
    link, oracle_log, outbox = tmp_path / "gps", tmp_path / "oracle.jsonl", tmp_path / "outbox.db"
    config = tmp_path / "agent.toml"
    # Record every fix, so each one the receiver sent can be checked against the oracle.
    config.write_text(
        f'device_id = "{device}"\n'
        f'[broker]\nhost = "{cloud.broker.host}"\nport = {cloud.broker.port}\n'
        f'password = "{cloud.broker.device_password(device)}"\n'
        f'[gps]\nport = "{link}"\n'
        f'[outbox]\npath = "{outbox}"\n'
        "[sampler]\nmin_interval_s = 0\nmin_distance_m = 0\n"
    )
    gps = Proc(
        [tool("fleet-sim"), "gps", "--pty", "--link", str(link), "--hz", "5", "--seed", "7",
         "--oracle", str(oracle_log)],
        tmp_path / "gps.log",
    ).start()  # fmt: skip
    agent = None
    try:
        wait_until(link.exists, 10, "the simulated receiver's pty")
        agent = Proc([tool("fleet-agent"), "run", "--config", str(config)], tmp_path / "agent.log")
        agent.start()
        wait_until(lambda: len(cloud.stored_seqs(device)) >= 15, 30, "15 fixes stored")
        # Freeze the receiver: the pty stays open, so everything it wrote can be
        # read (unplugging would lose what is still in flight on the line).
        gps.pause()
        written = oracle(oracle_log)
        first_read = min(stored_fix_times(cloud, device))
        # The port drops what the receiver wrote before the agent opened it
        # (pyserial flushes input on open, as a real UART would have lost it);
        # from the first fix the agent read, every fix must arrive.
        sent = {t: v for t, v in written.items() if t >= first_read}
        wait_until(
            lambda: len(cloud.stored_seqs(device)) >= len(sent) and outbox_depth(outbox) == 0,
            30,
            "every fix stored and the outbox empty",
        )
        assert agent.alive(), agent.log()
    finally:
        gps.stop()
        if agent is not None:
            assert agent.stop() == 0, agent.log()

    rows = db_fetch(
        cloud.dsn,
        "SELECT seq, fix_time, lat, lon, vehicle_id FROM positions"
        " WHERE device_id = $1 ORDER BY seq",
        device,
    )
    stored = {int(r["fix_time"].timestamp() * 1000): (r["lat"], r["lon"]) for r in rows}  # type: ignore[attr-defined]
    assert stored == sent  # every fix read from the port, exactly as sent, once
    assert min(written) <= first_read <= min(written) + 3000  # the agent read from the start
    assert len(rows) == len(sent)
    assert {r["vehicle_id"] for r in rows} == {vehicle_id}
    seqs = [r["seq"] for r in rows]
    assert seqs == sorted(set(seqs))  # seq strictly increasing, never reused
    assert outbox_depth(outbox) == 0
    # the fixes are what the API serves as the vehicle's history and latest state
    token = cloud.token()
    from tests.harness import http_json

    history = http_json(f"{cloud.base_url}/api/v1/vehicles/{vehicle_id}/positions", token=token)
    assert isinstance(history, dict)
    assert [p["t"] for p in history["positions"]] == sorted(sent)
    vehicles = http_json(f"{cloud.base_url}/api/v1/vehicles", token=token)
    assert isinstance(vehicles, list)
    (mine,) = [v for v in vehicles if v["id"] == vehicle_id]
    assert mine["state"]["t"] == max(sent)
    assert time.time() * 1000 - max(sent) < 120_000
