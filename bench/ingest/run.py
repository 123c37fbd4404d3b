"""Ingest benchmark: our end-to-end rate beside the raw limits, measured in the same run.

    .venv/bin/python bench/ingest/run.py [--messages 200000] [--devices 32]

Everything runs on this machine, co-located: a Mosquitto with the project's
config, the local PostgreSQL (a fresh database, dropped at the end), C MQTT
clients (mosquitto_pub / mosquitto_sub) as the load, and `fleet-cloud ingest`
processes as the system under test. Prints a table, then one JSON line with
the same figures.

Load: one mosquitto_pub per device reads telemetry batches (one per line) from
a pipe that this script fills as fast as the publishers take them, stamping
each fix with the time it was written, so `recv_time - t` is the ingest lag.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path

import asyncpg
import orjson

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.harness import (  # noqa: E402
    PG_ADMIN_DSN,
    Broker,
    Proc,
    create_database,
    drop_database,
    tool,
)

from fleet_cloud import directory  # noqa: E402
from fleet_wire import INGEST_SUBSCRIPTION, Up, up_topic  # noqa: E402

T_BASE = 1_763_700_000_000


def batch_line(boot: int, first_seq: int, n: int, now_ms: int) -> bytes:
    fixes = [
        {"seq": s, "t": now_ms, "lat": 52.52 + s * 1e-6, "lon": 13.405, "spd": 42.5, "hdg": 181.0}
        for s in range(first_seq, first_seq + n)
    ]
    return orjson.dumps({"v": 1, "boot": boot, "fixes": fixes}) + b"\n"


def publish_load(
    broker: Broker, devices: list[str], messages: int, fixes_per_msg: int, boot: int,
    rate: float | None = None,
) -> float:  # fmt: skip
    """Feed `messages` telemetry messages through one mosquitto_pub per device; return seconds.

    rate: offered messages/s over all devices (paced in chunks of 50 lines per
    device); None offers them as fast as the publishers take them.
    """
    per_dev = messages // len(devices)
    chunk_s = 50 / (rate / len(devices)) if rate else 0.0
    passwords = broker.device_passwords(devices)
    procs = [
        subprocess.Popen(
            [
                "mosquitto_pub",
                "-h",
                broker.host,
                "-p",
                str(broker.port),
                "-q",
                "1",
                "-V",
                "5",
                "-i",
                d,
                "-u",
                d,
                "-P",
                passwords[d],
                "-t",
                up_topic(d, Up.TELEMETRY),
                "-l",
            ],
            stdin=subprocess.PIPE,
        )
        for d in devices
    ]

    def feed(p: subprocess.Popen[bytes]) -> None:
        assert p.stdin is not None
        seq = 1
        began = time.monotonic()
        for k, start in enumerate(range(0, per_dev, 50)):  # 50 lines per write: t stays close
            if chunk_s:  # to the publish
                time.sleep(max(0.0, began + k * chunk_s - time.monotonic()))
            n = min(50, per_dev - start)
            now = int(time.time() * 1000)
            lines = b"".join(
                batch_line(boot, seq + i * fixes_per_msg, fixes_per_msg, now) for i in range(n)
            )
            seq += n * fixes_per_msg
            p.stdin.write(lines)
        p.stdin.close()

    t0 = time.perf_counter()
    threads = [threading.Thread(target=feed, args=(p,)) for p in procs]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    for p in procs:
        p.wait()
    return time.perf_counter() - t0


def raw_broker_rate(broker: Broker, devices: list[str], messages: int) -> float:
    """C publishers -> broker -> one C subscriber on the ingest shared subscription."""
    sub = subprocess.Popen(
        ["mosquitto_sub", "-h", broker.host, "-p", str(broker.port), "-q", "1", "-V", "5",
         "-i", "bench-raw-sub", "-t", INGEST_SUBSCRIPTION, "-C", str(messages),
         "-u", broker.INGEST_USER, "-P", broker.secret(broker.INGEST_USER)],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    time.sleep(0.5)
    t0 = time.perf_counter()
    publish_load(broker, devices, messages, 1, boot=1)
    sub.wait(300)
    return messages / (time.perf_counter() - t0)


async def raw_db_rates(dsn: str, rows: int) -> dict[str, float]:
    """The database's raw limits and our batch writer, each with the PostgreSQL
    backend's CPU per row (read from /proc: everything here is local).

    - raw COPY: every row into positions in one statement;
    - raw idempotent: per 2,000-row batch (about one ingest flush at these rates),
      one transaction of COPY into a staging table + INSERT ... ON CONFLICT DO NOTHING;
    - our write_batch on the same rows (new fixes: its bulk path, COPY straight
      into positions in a savepoint).

    The last two write the same 17-column rows, built before the clock starts.
    """
    from fleet_cloud.db import init_connection
    from fleet_cloud.store import POSITION_COLUMNS, PositionRows, write_batch
    from fleet_wire import Fix

    def batches(device: str) -> list[PositionRows]:
        out = []
        now = _dt(T_BASE)
        for start in range(1, rows + 1, 2000):
            batch = PositionRows()
            for s in range(start, min(start + 2000, rows + 1)):
                fix = Fix(seq=s, t=T_BASE + s, lat=52.5, lon=13.4, spd=42.5, hdg=181.0)
                batch.add(device, 9, fix, now, 1)
            out.append(batch)
        return out

    def backend_cpu_s(pid: int) -> float:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    conn = await asyncpg.connect(dsn)
    await init_connection(conn)  # as ingest's pool does
    pid = conn.get_server_pid()
    results: dict[str, float] = {}

    async def timed(name: str, write: Callable[[], Awaitable[None]]) -> None:
        c0, t0 = backend_cpu_s(pid), time.perf_counter()
        await write()
        results[f"{name}_rows_per_s"] = rows / (time.perf_counter() - t0)
        results[f"{name}_db_cpu_us_per_row"] = (backend_cpu_s(pid) - c0) / rows * 1e6

    try:
        copy_recs = [
            ("raw-copy", 9, s, _dt(T_BASE + s), _dt(T_BASE + s), 1, 52.5, 13.4, 42.5, 181.0)
            for s in range(1, rows + 1)
        ]

        async def raw_copy() -> None:
            await conn.copy_records_to_table("positions", records=copy_recs,
                                             columns=POSITION_COLUMNS[:10])  # fmt: skip

        cols = ", ".join(POSITION_COLUMNS)
        await conn.execute(
            f"CREATE TEMP TABLE raw_stage ON COMMIT DELETE ROWS AS"
            f" SELECT {cols} FROM positions WITH NO DATA"
        )
        idem_batches = batches("raw-idem")

        async def raw_idempotent() -> None:
            for b in idem_batches:
                async with conn.transaction():
                    await conn.copy_records_to_table(
                        "raw_stage", records=b.rows, columns=POSITION_COLUMNS
                    )
                    await conn.execute(
                        f"INSERT INTO positions ({cols}) SELECT {cols} FROM raw_stage"
                        " ON CONFLICT DO NOTHING"
                    )

        writer_batches = batches("raw-writer")

        async def writer() -> None:
            for b in writer_batches:
                await write_batch(conn, b, [], [])

        await timed("raw_copy", raw_copy)
        await timed("raw_idempotent_insert", raw_idempotent)
        await timed("batch_writer", writer)
        await conn.execute(
            "DELETE FROM positions WHERE device_id IN ('raw-copy', 'raw-idem', 'raw-writer')"
        )
        return results
    finally:
        await conn.close()


def _dt(ms: int) -> datetime:
    from fleet_cloud.store import ms_to_dt

    return ms_to_dt(ms)


async def count_and_lag(dsn: str, boot: int) -> tuple[int, int, float, float, float, float]:
    conn = await asyncpg.connect(dsn)
    try:
        row = await conn.fetchrow(
            """SELECT count(*) AS n, count(DISTINCT (device_id, seq)) AS distinct_n,
                      percentile_cont(0.5) WITHIN GROUP (ORDER BY lag) AS p50,
                      percentile_cont(0.99) WITHIN GROUP (ORDER BY lag) AS p99,
                      extract(epoch FROM min(recv_time)) AS first_recv,
                      extract(epoch FROM max(recv_time)) AS last_recv
               FROM (SELECT device_id, seq, recv_time,
                            extract(epoch FROM recv_time - fix_time) * 1000 AS lag
                     FROM positions WHERE boot_id = $1) x""",
            boot,
        )
        assert row is not None
        return (row["n"], row["distinct_n"], row["p50"] or 0.0, row["p99"] or 0.0,
                float(row["first_recv"] or 0), float(row["last_recv"] or 0))  # fmt: skip
    finally:
        await conn.close()


def run_ours(
    broker: Broker, dsn: str, devices: list[str], messages: int, fixes_per_msg: int,
    workers: int, boot: int, logs: Path, rate: float | None = None, stall_ok: bool = False,
) -> dict[str, float]:  # fmt: skip
    env = {
        "FLEET_DATABASE_URL": dsn,
        "FLEET_MQTT_HOST": broker.host,
        "FLEET_MQTT_PORT": str(broker.port),
        "FLEET_INGEST_CLIENT_PREFIX": f"bench-ingest-{boot}",
        **broker.service_env(),
    }
    procs = [
        Proc([tool("fleet-cloud"), "ingest", "--first-index", str(i), "--log-level", "warning"],
             logs / f"ingest-{boot}-{i}.log", env).start()
        for i in range(workers)
    ]  # fmt: skip
    try:
        time.sleep(2.0)  # connect + subscribe
        expected = (messages // len(devices)) * len(devices) * fixes_per_msg
        t0 = time.time()
        publish_load(broker, devices, messages, fixes_per_msg, boot, rate)
        wait_for_count(dsn, boot, expected, procs, stall_ok)
        n, distinct_n, p50, p99, _first_recv, last_recv = asyncio.run(count_and_lag(dsn, boot))
        elapsed = last_recv - t0
        return {
            "fixes": n, "missing": expected - distinct_n, "duplicated": n - distinct_n,
            "fixes_per_s": n / elapsed, "msgs_per_s": n / fixes_per_msg / elapsed,
            "lag_p50_ms": p50, "lag_p99_ms": p99,
        }  # fmt: skip
    finally:
        for p in procs:
            p.stop()


def wait_for_count(
    dsn: str, boot: int, expected: int, procs: list[Proc], stall_ok: bool = False
) -> None:
    """Wait until every fix is stored; fail with a diagnosis if progress stalls for 30 s
    (or, with stall_ok, just return: the caller reports what is missing)."""
    last, since = -1, time.monotonic()
    while True:
        n = asyncio.run(count_and_lag(dsn, boot))[0]
        if n >= expected:
            return
        if n != last:
            last, since = n, time.monotonic()
        elif time.monotonic() - since > 30:
            if stall_ok:
                return
            dead = asyncio.run(_dead_letters(dsn))
            logs = "\n".join(p.log()[-1500:] for p in procs)
            raise RuntimeError(f"stalled at {n}/{expected} fixes; dead letters {dead}\n{logs}")
        time.sleep(0.5)


async def _dead_letters(dsn: str) -> list[tuple[str, int]]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch("SELECT reason, count(*) AS n FROM dead_letters GROUP BY 1")
        return [(r["reason"], r["n"]) for r in rows]
    finally:
        await conn.close()


async def register(dsn: str, devices: list[str]) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        tid = await directory.ensure_tenant(conn, "bench")
        for i, d in enumerate(devices):
            await directory.ensure_vehicle_with_device(conn, tid, None, f"Bench {i}", d)
    finally:
        await conn.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--messages", type=int, default=200_000, help="messages per run (1 fix/msg)")
    ap.add_argument("--devices", type=int, default=32)
    ap.add_argument("--lag-seconds", type=float, default=30.0,
                    help="length of each fixed-rate lag run (0: skip them)")  # fmt: skip
    args = ap.parse_args()
    devices = [f"bench-{i:04d}" for i in range(args.devices)]
    work = Path(tempfile.mkdtemp(prefix="bench-ingest-"))
    broker = Broker(work / "mosquitto").start()
    name, dsn = create_database(PG_ADMIN_DSN)
    results: dict[str, object] = {"cores": os.cpu_count()}
    try:
        subprocess.run([tool("fleet-cloud"), "migrate", "--dsn", dsn], check=True,
                       capture_output=True)  # fmt: skip
        asyncio.run(register(dsn, devices))
        results["raw_broker_msgs_per_s"] = raw_broker_rate(broker, devices, args.messages)
        results.update(asyncio.run(raw_db_rates(dsn, 200_000)))
        boot = 100
        for workers in (1, 2):
            for per_msg, msgs in ((1, args.messages), (10, args.messages // 5)):
                boot += 1
                r = run_ours(broker, dsn, devices, msgs, per_msg, workers, boot, work)
                results[f"ours_{per_msg}fix_{workers}w"] = r
                print(
                    f"  {workers} worker(s), {per_msg:>2} fix/msg: "
                    f"{r['fixes_per_s']:>9,.0f} fixes/s  lag p50 {r['lag_p50_ms']:.0f} ms "
                    f"p99 {r['lag_p99_ms']:.0f} ms  missing {r['missing']} dup {r['duplicated']}",
                    flush=True,
                )
        # Lag where it means something: at a fixed offered rate well under the
        # capacity just measured (the runs above are overload: their lag is
        # queueing). Half the 2-process rate, as messages/s.
        for per_msg in (1, 10) if args.lag_seconds > 0 else ():
            cap = results[f"ours_{per_msg}fix_2w"]
            assert isinstance(cap, dict)
            msg_rate = cap["msgs_per_s"] / 2
            msgs = int(msg_rate * args.lag_seconds)
            boot += 1
            r = run_ours(broker, dsn, devices, msgs, per_msg, 2, boot, work, rate=msg_rate)
            r["offered_fixes_per_s"] = msg_rate * per_msg
            results[f"lag_{per_msg}fix_2w"] = r
        # Sustained: the targets themselves offered at a fixed rate for the same
        # length. Kept up with means the stored rate matches the offered one and
        # the lag stays bounded (a backlog would show as seconds of p99). A backlog
        # past the broker's max_queued_messages is dropped by the broker (a real
        # agent would resend it): that shows as "lost" here, and means "fell behind".
        for per_msg, target in ((1, 20_000), (10, 100_000)) if args.lag_seconds > 0 else ():
            msg_rate = target / per_msg
            boot += 1
            r = run_ours(broker, dsn, devices, int(msg_rate * args.lag_seconds), per_msg, 2,
                         boot, work, rate=msg_rate, stall_ok=True)  # fmt: skip
            r["offered_fixes_per_s"] = float(target)
            results[f"sustain_{per_msg}fix_2w"] = r
    finally:
        broker.stop()
        drop_database(name, PG_ADMIN_DSN)
    report(results)


def report(r: dict[str, object]) -> None:
    raw_b = float(r["raw_broker_msgs_per_s"])  # type: ignore[arg-type]
    raw_c = float(r["raw_copy_rows_per_s"])  # type: ignore[arg-type]
    raw_i = float(r["raw_idempotent_insert_rows_per_s"])  # type: ignore[arg-type]
    print()
    print(f"{'measure':<52}{'rate/s':>10}{'vs broker':>11}{'vs COPY':>9}{'vs idem':>9}")
    print(f"{'raw broker, C clients, QoS 1 (msgs)':<52}{raw_b:>10,.0f}")
    for key, label in (("raw_copy", "raw COPY into positions, one statement"),
                       ("raw_idempotent_insert", "raw idempotent: stage + INSERT ON CONFLICT"),
                       ("batch_writer", "our batch writer alone, new fixes")):  # fmt: skip
        rate = float(r[f"{key}_rows_per_s"])  # type: ignore[arg-type]
        cpu = float(r[f"{key}_db_cpu_us_per_row"])  # type: ignore[arg-type]
        ratios = f"{rate / raw_c:>9.0%}{rate / raw_i:>9.0%}" if key == "batch_writer" else ""
        print(f"{label + ' (rows)':<52}{rate:>10,.0f}{'':>11}{ratios:<18}"
              f"   PostgreSQL CPU {cpu:.1f} us/row")  # fmt: skip
    for workers in (1, 2):
        for per_msg in (1, 10):
            o = r[f"ours_{per_msg}fix_{workers}w"]
            assert isinstance(o, dict)
            label = f"ours, {workers} ingest proc, {per_msg} fix/msg (fixes)"
            print(f"{label:<52}{o['fixes_per_s']:>10,.0f}{o['msgs_per_s'] / raw_b:>11.0%}"
                  f"{o['fixes_per_s'] / raw_c:>9.0%}{o['fixes_per_s'] / raw_i:>9.0%}"
                  f"   lag p50/p99 {o['lag_p50_ms']:.0f}/{o['lag_p99_ms']:.0f} ms,"
                  f" lost {o['missing']}, dup {o['duplicated']}")  # fmt: skip
    for kind, what in (("lag", "lag at a fixed"), ("sustain", "target offered:")):
        for per_msg in (1, 10):
            run = r.get(f"{kind}_{per_msg}fix_2w")
            if not isinstance(run, dict):
                continue
            label = f"{what} {run['offered_fixes_per_s']:,.0f} fixes/s, {per_msg} fix/msg"
            print(f"{label:<52}{run['fixes_per_s']:>10,.0f}{'':>29}   lag p50/p99 "
                  f"{run['lag_p50_ms']:.0f}/{run['lag_p99_ms']:.0f} ms, lost {run['missing']}, "
                  f"dup {run['duplicated']}")  # fmt: skip
    print(orjson.dumps(r).decode())


if __name__ == "__main__":
    main()
