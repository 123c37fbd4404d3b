"""Drain benchmark: wire bytes per fix, and a 24 h backlog through a 0.5 Mbit/s link.

    .venv/bin/python bench/drain/run.py [--backlog 86400] [--kbit 500] [--baseline-s 30]

Everything is real and on this machine: Mosquitto with the project's config,
the local PostgreSQL (a fresh database, dropped at the end), ``fleet-cloud
serve``, ``fleet-sim gps --pty`` at 1 Hz and the real ``fleet-agent`` with its
default publisher settings. Between the agent and the broker sits the fault
proxy of the tests (tests/faults/netproxy.py) as the cellular link: each
direction limited to ``--kbit`` kbit/s, with a queue in front, counting the
MQTT bytes it carries.

1. Baseline: the agent sends live fixes (one per second, each alone) through
   the limited link for ``--baseline-s``: wire bytes per single fix, and the
   live fixes' ingest latency (cloud ``recv_time`` - fix time) without a drain.
2. Drain: the agent is stopped, its outbox is filled with ``--backlog`` fixes
   of an earlier boot (a day of a city drive at 1 Hz, as the agent records
   them), and it is started again: time until the whole backlog is stored,
   wire bytes per backlog fix (the agent's real batches), and the latency of
   the live fixes recorded meanwhile.

Prints a table, then one JSON line with the same figures.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import asyncpg
import orjson

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.faults.netproxy import FaultProxy  # noqa: E402
from tests.faults.rig import AgentRig  # noqa: E402
from tests.harness import (  # noqa: E402
    PG_ADMIN_DSN,
    Broker,
    CloudStack,
    create_database,
    drop_database,
    tool,
    wait_until,
)

from fleet_edge.config import OutboxConfig, PublisherConfig  # noqa: E402
from fleet_edge.gps.fix import GpsFix  # noqa: E402
from fleet_edge.outbox import OutboxStore  # noqa: E402
from fleet_edge.records import encode_fix  # noqa: E402
from fleet_sim.route import RouteSim  # noqa: E402


def backlog_records(n: int, end_ms: int) -> list[tuple[int, bytes]]:
    """n fixes at 1 Hz ending at end_ms, rounded as the agent records NMEA values."""
    sim = RouteSim(seed=99, hz=1, start_ms=end_ms - n * 1000 - 600_000)
    out: list[tuple[int, bytes]] = []
    while len(out) < n:
        f = sim.step()
        if not f.fix_type:
            continue  # the receiver had no fix (tunnel): the agent records nothing
        fix = GpsFix(
            t=f.t_ms,
            lat=round(f.lat, 6),
            lon=round(f.lon, 6),
            speed_kmh=round(f.speed_kmh, 1),
            course_deg=round(f.heading_deg, 1),
            alt_m=round(f.alt_m, 1),
            hdop=round(f.hdop, 2),
            sats=f.sats,
            fix_type=3 if f.fix_type == 3 else 2,
        )
        out.append((fix.t, encode_fix(fix)))
    return out


async def latencies(dsn: str, device: str, boot_not: int | None, after_ms: int) -> list[int]:
    """Ingest latency (ms) of the fixes recorded live after ``after_ms``."""
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT (extract(epoch FROM recv_time - fix_time) * 1000)::bigint AS ms"
            " FROM positions WHERE device_id = $1 AND fix_time >= to_timestamp($2 / 1000.0)"
            " AND ($3::bigint IS NULL OR boot_id <> $3)",
            device,
            after_ms,
            boot_not,
        )
    finally:
        await conn.close()
    return sorted(int(r["ms"]) for r in rows)


async def count_boot(dsn: str, device: str, boot: int) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        return int(
            await conn.fetchval(
                "SELECT count(*) FROM positions WHERE device_id = $1 AND boot_id = $2",
                device,
                boot,
            )
        )
    finally:
        await conn.close()


def pct(values: list[int], q: float) -> int | None:
    return values[min(len(values) - 1, int(q * len(values)))] if values else None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--backlog", type=int, default=86_400, help="backlog fixes (24 h at 1 Hz)")
    ap.add_argument("--kbit", type=float, default=500.0, help="link rate each way, kbit/s")
    ap.add_argument("--baseline-s", type=float, default=30.0, help="live-only phase, seconds")
    ap.add_argument(
        "--drain-rate",
        type=float,
        default=PublisherConfig().drain_rate,
        help="publisher.drain_rate (fixes/s; default: the agent's)",
    )
    ap.add_argument(
        "--backlog-batch",
        type=int,
        default=PublisherConfig().backlog_batch,
        help="publisher.backlog_batch (default: the agent's)",
    )
    args = ap.parse_args()
    rate = args.kbit * 1000 / 8  # bytes/s

    tmp = Path(tempfile.mkdtemp(prefix="fleet-drain-"))
    db_name, dsn = create_database(PG_ADMIN_DSN)
    broker = Broker(tmp / "mosquitto").start()
    cloud = proxy = rig = None
    try:
        subprocess.run([tool("fleet-cloud"), "migrate", "--dsn", dsn], check=True,
                       capture_output=True, timeout=120)  # fmt: skip
        cloud = CloudStack(broker, dsn, tmp / "cloud").start()
        proxy = FaultProxy(broker.host, broker.port).start()
        proxy.set_rate(rate)
        rig = AgentRig(tmp / "agent", proxy.host, proxy.port, seed=7, hz=1, broker=broker)
        rig.tmp.mkdir()
        cloud.register_vehicle("Drain bench", rig.device)
        # The agent's defaults, except: every fix recorded (the receiver runs at
        # 1 Hz, as the backlog was), status only at connect (not in the counts).
        rig.outbox_cfg = {"commit_interval_s": OutboxConfig().commit_interval_s}
        rig.publisher_cfg = {
            "ack_timeout_s": PublisherConfig().ack_timeout_s,
            "status_interval_s": 3600.0,
            "drain_rate": args.drain_rate,
            "backlog_batch": args.backlog_batch,
        }
        # --- 1. baseline: live fixes only ---------------------------------------
        rig.start()
        wait_until(lambda: rig is not None and rig.stored_count(dsn) >= 3, 60, "first fixes")
        time.sleep(2)
        up0, down0, n0 = proxy.up_bytes, proxy.down_bytes, rig.stored_count(dsn)
        base_from = int(time.time() * 1000)
        time.sleep(args.baseline_s)
        up1, down1, n1 = proxy.up_bytes, proxy.down_bytes, rig.stored_count(dsn)
        single_up = (up1 - up0) / max(1, n1 - n0)
        single_down = (down1 - down0) / max(1, n1 - n0)
        base = asyncio.run(latencies(dsn, rig.device, None, base_from))
        assert rig.agent is not None
        assert rig.agent.stop() == 0, rig.agent.log()[-2000:]

        # --- 2. a 24 h backlog in the outbox, then the agent again ---------------
        t_fill = time.monotonic()
        old_boot = secrets.randbelow(2**52)
        store = OutboxStore(rig.outbox, OutboxConfig().max_rows, OutboxConfig().max_bytes)
        recs = backlog_records(args.backlog, int(time.time() * 1000) - 5_000)
        for i in range(0, len(recs), 10_000):
            store.append(old_boot, recs[i : i + 10_000])
        stats = store.stats()
        store.close()
        fill_s = time.monotonic() - t_fill
        up0, down0 = proxy.up_bytes, proxy.down_bytes
        started = time.monotonic()
        drain_from = int(time.time() * 1000)
        rig.start_agent()
        wait_until(lambda: proxy is not None and proxy.connections >= 2, 60, "agent connected")
        connected = time.monotonic()
        while (stored_old := asyncio.run(count_boot(dsn, rig.device, old_boot))) < len(recs):
            if time.monotonic() - started > 1800:
                raise SystemExit(f"drain did not finish in 30 min ({stored_old}/{len(recs)})")
            time.sleep(0.25)
        drained = time.monotonic()
        up1, down1 = proxy.up_bytes, proxy.down_bytes
        during = asyncio.run(latencies(dsn, rig.device, old_boot, drain_from))
        live_during = len(during)
        assert rig.agent is not None
        assert rig.agent.stop() == 0, rig.agent.log()[-2000:]
        total_fixes = len(recs) + live_during
        batched_up = (up1 - up0) / total_fixes
        batched_down = (down1 - down0) / total_fixes
        drain_s = drained - connected
    finally:
        if rig is not None:
            rig.close()
        if cloud is not None:
            cloud.stop()
        if proxy is not None:
            proxy.close()
        broker.stop()
        drop_database(db_name, PG_ADMIN_DSN)

    result = {
        "link_kbit_s": args.kbit,
        "backlog_fixes": len(recs),
        "backlog_body_bytes": stats.bytes,
        "outbox_fill_s": round(fill_s, 1),
        "drain_s": round(drain_s, 1),
        "drain_fixes_per_s": round(len(recs) / drain_s),
        "single_fix_up_bytes": round(single_up, 1),
        "single_fix_down_bytes": round(single_down, 1),
        "batched_fix_up_bytes": round(batched_up, 1),
        "batched_fix_down_bytes": round(batched_down, 1),
        "link_utilisation_up": round((up1 - up0) / drain_s / rate, 2),
        "live_baseline_ms": {"n": len(base), "p50": pct(base, 0.5), "p99": pct(base, 0.99)},
        "live_during_drain_ms": {
            "n": live_during,
            "p50": pct(during, 0.5),
            "p99": pct(during, 0.99),
            "max": during[-1] if during else None,
        },
        "drain_rate_fixes_s": args.drain_rate,
        "backlog_batch": args.backlog_batch,
        "max_inflight_batches": PublisherConfig().max_inflight_batches,
    }
    report(result)


def report(r: dict[str, object]) -> None:
    b = r["live_baseline_ms"]
    d = r["live_during_drain_ms"]
    assert isinstance(b, dict) and isinstance(d, dict)
    rows = [
        ("link (each way)", f"{r['link_kbit_s']:.0f} kbit/s", ""),
        ("wire bytes per fix, single (live)", f"{r['single_fix_up_bytes']} B up",
         f"{r['single_fix_down_bytes']} B down (PUBACK + cloud ack)"),
        ("wire bytes per fix, batched (drain)", f"{r['batched_fix_up_bytes']} B up",
         f"{r['batched_fix_down_bytes']} B down"),
        ("backlog", f"{r['backlog_fixes']:,} fixes", f"{r['backlog_body_bytes']:,} B stored"),
        ("drain time (connect -> all stored)", f"{r['drain_s']} s",
         f"{r['drain_fixes_per_s']:,} fixes/s, link {r['link_utilisation_up']:.0%} busy"),
        ("live latency, no drain", f"p50 {b['p50']} ms", f"p99 {b['p99']} ms (n={b['n']})"),
        ("live latency, during drain", f"p50 {d['p50']} ms",
         f"p99 {d['p99']} ms, max {d['max']} ms (n={d['n']})"),
        ("agent settings", f"drain_rate {r['drain_rate_fixes_s']:.0f}/s",
         f"backlog_batch {r['backlog_batch']}, inflight {r['max_inflight_batches']}"),
    ]  # fmt: skip
    w0 = max(len(a) for a, _, _ in rows)
    w1 = max(len(b_) for _, b_, _ in rows)
    print()
    for a, b_, c in rows:
        print(f"{a:<{w0}}  {b_:<{w1}}  {c}")
    print(orjson.dumps(r).decode())


if __name__ == "__main__":
    main()
