"""``fleet-sim check`` itself: it must see a loss, a duplicate and a wrong drop count.

A checker that always says OK would make every fault test pass; these feed it
a database that is wrong in one known way each.
"""

from __future__ import annotations

import json
import subprocess
import uuid
from pathlib import Path
from typing import Any

from fleet_edge.outbox import OutboxStore
from tests.harness import CloudStack, db_fetch, tool

T0 = 1_763_700_000_000


def store(dsn: str, device: str, rows: list[tuple[int, int, int]]) -> None:
    """(boot, seq, t) rows, as ingest would have stored them."""
    for boot, seq, t in rows:
        db_fetch(
            dsn,
            "INSERT INTO positions (device_id, boot_id, seq, fix_time, recv_time, lat, lon)"
            " VALUES ($1, $2, $3, to_timestamp($4::bigint / 1000.0),"
            " to_timestamp($4::bigint / 1000.0 + 0.2), 52.5, $5)",
            device,
            boot,
            seq,
            t,
            13.4 + seq * 0.0001,
        )


def check(dsn: str, *args: str) -> dict[str, Any]:
    p = subprocess.run([tool("fleet-sim"), "check", "--dsn", dsn, *args, "--json"],
                       capture_output=True, text=True, timeout=60)  # fmt: skip
    report: dict[str, Any] = json.loads(p.stdout.strip().splitlines()[-1])
    report["exit_code"] = p.returncode
    return report


def fleet_oracle(path: Path, device: str, n: int, drop: int = 0) -> None:
    lines = [{"src": "fleet", "dev": device, "boot": 7, "seq": s, "t": T0 + s * 1000,
              "lat": 52.5, "lon": round(13.4 + s * 0.0001, 6), "spd": 30.0}
             for s in range(1, n + 1)]  # fmt: skip
    lines += [{"src": "fleet", "dev": device, "boot": 7, "seq": s, "drop": "cap"}
              for s in range(1, drop + 1)]  # fmt: skip
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))


def new_device(cloud: CloudStack) -> str:
    device = f"chk-{uuid.uuid4().hex[:8]}"
    cloud.register_vehicle(f"Check {device}", device)
    return device


def test_all_stored_once_is_ok(cloud: CloudStack, tmp_path: Path) -> None:
    device = new_device(cloud)
    fleet_oracle(tmp_path / "o.jsonl", device, 5, drop=1)
    store(cloud.dsn, device, [(7, s, T0 + s * 1000) for s in range(2, 6)])
    r = check(cloud.dsn, "--oracle", str(tmp_path / "o.jsonl"))
    assert r["exit_code"] == 0 and r["ok"] and r["expected"] == 4 and r["stored"] == 4


def test_loss_and_duplicate_fail(cloud: CloudStack, tmp_path: Path) -> None:
    device = new_device(cloud)
    fleet_oracle(tmp_path / "o.jsonl", device, 5)
    # seq 3 lost; seq 5's fix stored a second time under another seq
    store(cloud.dsn, device, [(7, 1, T0 + 1000), (7, 2, T0 + 2000), (7, 4, T0 + 4000),
                              (7, 5, T0 + 5000), (7, 6, T0 + 5000)])  # fmt: skip
    r = check(cloud.dsn, "--oracle", str(tmp_path / "o.jsonl"))
    assert r["exit_code"] == 1
    assert r["missing"] == 1 and r["duplicated"] == 1 and r["unknown"] == 1


def test_outbox_committed_seqs_and_drop_count(cloud: CloudStack, tmp_path: Path) -> None:
    device = new_device(cloud)
    outbox = tmp_path / "outbox.db"
    s = OutboxStore(outbox, max_rows=4, max_bytes=10**9)
    s.append(9, [(T0 + i * 1000, b'{"t":%d,"lat":52.5,"lon":13.4}' % (T0 + i * 1000))
                 for i in range(1, 7)])  # fmt: skip  # seqs 1..6, the cap drops 1 and 2
    s.delete_acked(9, [(3, 6)])
    s.close()
    oracle = tmp_path / "gps.jsonl"
    oracle.write_text("".join(
        json.dumps({"src": "gps", "t": T0 + i * 1000, "lat": 52.5,
                    "lon": round(13.4 + i * 0.0001, 6), "spd": 1.0}) + "\n"
        for i in range(0, 8)))  # fmt: skip
    args = ["--oracle", str(oracle), "--device", device, "--outbox", str(outbox)]
    store(cloud.dsn, device, [(9, i, T0 + i * 1000) for i in (3, 4, 6)])  # 5 lost
    r = check(cloud.dsn, *args)
    assert r["exit_code"] == 1 and r["missing"] == 1 and r["dropped_counted"] == 2
    store(cloud.dsn, device, [(9, 5, T0 + 5000)])
    r = check(cloud.dsn, *args)
    assert r["exit_code"] == 0 and r["missing"] == 0 and r["dropped_unmatched"] == 0
    assert r["not_committed"] == 2  # t0 and t7: the receiver wrote them, nothing recorded them
