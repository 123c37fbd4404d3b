"""WebSocket fan-out benchmark: how many dashboards one API worker serves.

    .venv/bin/python bench/fanout/run.py [--vehicles 1000] [--fleet-size 100]
        [--clients 1000,2000,5000,10000] [--modes 1fps,10hz] [--seconds 20]
        [--skip-raw] [--stages] [--no-processing]

--stages adds per-stage lag (publish -> broker -> ingest -> Redis relay) and
per-process CPU to each step (bench/fanout/stages.py).

Everything on this machine: Mosquitto (the project's config), a fresh PostgreSQL
database, Redis, one `fleet-cloud ingest` process, and ONE API worker
(`fleet-cloud serve --no-ingest`: one uvicorn process) that gets the live states
through the Redis relay, as an API node of a scaled-out deployment does.

Load: --vehicles vehicles in fleets of --fleet-size, each publishing one fix per
message over MQTT QoS 1 (1 Hz in mode 1fps, 10 Hz in mode 10hz), stamped with the
wall clock at publish. Clients: WebSocket connections, each subscribed to one
fleet (round-robin), coalesced frames at FLEET_WS_TICK_MS = 1000 (1fps) or 100
(10hz). Probe clients parse their frames: now - fix time is the
broker-ingress-to-client latency (p50/p99).

Raw limit, same run: a bare uvicorn/Starlette WebSocket server
(bench/fanout/bare_server.py) sending every client a frame of the same shape and
size at the same tick, to the same client swarm.

A step "serves" its clients when none failed and the slowest client got at least
90 % of the frame rate it should. Targets: 10,000 clients at 1fps or 2,000 at
10hz; p99 <= 100 ms at 10k fixes/s (1,000 vehicles at 10 Hz) with 1,000 clients.
Prints a table, then one JSON line with every figure.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))

from tests.harness import (  # noqa: E402
    PG_ADMIN_DSN,
    Broker,
    CloudStack,
    Proc,
    RedisServer,
    create_database,
    drop_database,
    free_port,
    port_open,
    tool,
    wait_until,
)

from fleet_cloud import directory  # noqa: E402
from fleet_wire import Up, up_topic  # noqa: E402

PY = sys.executable
TENANT = "fanout"


@dataclass(frozen=True)
class Mode:
    name: str
    tick_ms: int
    hz: float  # fixes per vehicle per second

    @property
    def fps(self) -> float:
        return 1000 / self.tick_ms


MODES = {"1fps": Mode("1fps", 1000, 1.0), "10hz": Mode("10hz", 100, 10.0)}


async def register(dsn: str, vehicles: int, fleet_size: int) -> tuple[list[str], list[int]]:
    conn = await asyncpg.connect(dsn)
    try:
        tid = await directory.ensure_tenant(conn, TENANT)
        devices, fleets = [], []
        for i in range(vehicles):
            if i % fleet_size == 0:
                fleets.append(
                    await directory.ensure_fleet(conn, tid, f"fleet-{i // fleet_size:03d}")
                )
            d = f"fan-{i:05d}"
            await directory.ensure_vehicle_with_device(conn, tid, fleets[-1], f"van-{i:05d}", d)
            devices.append(d)
        return devices, fleets
    finally:
        await conn.close()


async def events(dsn: str) -> dict[str, int]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch("SELECT type, count(*) AS n FROM events GROUP BY 1 ORDER BY 2 DESC")
        return {r["type"]: r["n"] for r in rows}
    finally:
        await conn.close()


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start_load(broker: Broker, devices: list[str], hz: float, seconds: float, procs: int,
               boot: int, log_dir: Path) -> list[subprocess.Popen[bytes]]:  # fmt: skip
    user, password = broker.observer
    shares = [devices[i::procs] for i in range(procs)]
    return [
        subprocess.Popen(
            [
                PY,
                str(HERE / "load.py"),
                "--host",
                broker.host,
                "--port",
                str(broker.port),
                "--user",
                user,
                "--password",
                password,
                "--devices",
                ",".join(share),
                "--hz",
                str(hz),
                "--seconds",
                str(seconds),
                "--boot",
                str(boot),
            ],
            stdout=subprocess.PIPE,
            stderr=open(log_dir / f"load-{boot}-{n}.log", "ab"),
        )
        for n, share in enumerate(shares)
        if share
    ]


def run_clients(url: str, origin: str, clients: int, subscribes: list[dict[str, Any]],
                procs: int, probes: int, t0: float, t1: float) -> dict[str, Any]:  # fmt: skip
    per = [clients // procs + (1 if i < clients % procs else 0) for i in range(procs)]
    running, offset = [], 0
    for n in per:
        if n == 0:
            continue
        running.append(subprocess.Popen(
            [PY, str(HERE / "clients.py"), "--url", url, "--origin", origin, "--clients", str(n),
             "--subscribes", json.dumps(subscribes), "--offset", str(offset),
             "--probes", str(max(1, probes // procs)),
             "--measure-from", str(t0), "--measure-to", str(t1)],
            stdout=subprocess.PIPE,
        ))  # fmt: skip
        offset += n
    parts = []
    for p in running:
        out, _ = p.communicate(timeout=t1 - time.time() + 300)
        parts.append(json.loads(out.decode().strip().splitlines()[-1]))
    lat = sorted(x for part in parts for x in part["latencies_ms"])
    window = t1 - t0
    return {
        "clients": clients,
        "failed": sum(p["failed"] for p in parts),
        "errors": sorted({e for p in parts for e in p["errors"]})[:3],
        "frames_per_s": sum(p["frames"] for p in parts) / window,
        "position_frames_per_s": sum(p["positions"] for p in parts) / window,
        "probe_frame_types": dict(sum((Counter(p["probe_frame_types"]) for p in parts), Counter())),
        "mbytes_per_s": sum(p["bytes"] for p in parts) / window / 1e6,
        "min_client_fps": min(p["min_client_fps"] for p in parts),
        "p50_ms": _pct(lat, 50),
        "p99_ms": _pct(lat, 99),
        "latency_samples": len(lat),
    }


def _pct(xs: list[float], q: int) -> float | None:
    if not xs:
        return None
    if len(xs) < 2:
        return xs[0]
    return statistics.quantiles(xs, n=100)[q - 1]


def measured(args: argparse.Namespace, clients: int) -> tuple[float, float]:
    """The measurement window: after the handshakes have had time and a warm-up."""
    ramp = max(5.0, clients / 400)
    t0 = time.time() + ramp + args.warmup
    return t0, t0 + args.seconds


def step(args: argparse.Namespace, mode: Mode, api: CloudStack, broker: Broker,
         devices: list[str], fleets: list[int], clients: int, boot: int,
         work: Path, stage_ctx: dict[str, Any]) -> dict[str, Any]:  # fmt: skip
    t0, t1 = measured(args, clients)
    probe, cpu_groups = None, None
    if args.stages:
        from stages import CpuSampler, StageProbe

        user, password = broker.observer
        sample = [up_topic(d, Up.TELEMETRY) for d in devices[:: max(1, len(devices) // 10)]]
        probe = StageProbe(stage_ctx["redis_url"], stage_ctx["channel"],
                           (broker.host, broker.port, user, password), sample, t0, t1)  # fmt: skip
        probe.start()
        assert api.proc is not None and broker.proc is not None
        cpu_groups = CpuSampler(
            {**stage_ctx["pids"], "api": [api.proc.pid], "mosquitto": [broker.proc.pid],
             "load": str(HERE / "load.py"), "clients": str(HERE / "clients.py")},
            t0, t1,
        )  # fmt: skip
    load = start_load(broker, devices, mode.hz, t1 - time.time() + 3, args.load_procs, boot, work)
    token = api.token()
    url = api.base_url.replace("http://", "ws://") + f"/api/v1/ws?token={token}"
    subs = [{"type": "subscribe", "fleets": [f]} for f in fleets]
    assert api.proc is not None
    pid = api.proc.pid
    cpu: dict[str, float] = {}

    def sample_cpu() -> None:  # in a thread: the client swarm's results come at t1
        time.sleep(max(0.0, t0 - time.time()))
        cpu["t0"] = cpu_seconds(pid)
        time.sleep(max(0.0, t1 - time.time()))
        cpu["t1"] = cpu_seconds(pid)

    import threading

    th = threading.Thread(target=sample_cpu)
    th.start()
    cpu_th = threading.Thread(target=cpu_groups.run) if cpu_groups else None
    if cpu_th:
        cpu_th.start()
    res = run_clients(url, api.base_url, clients, subs, args.client_procs, args.probes, t0, t1)
    th.join()
    if cpu_th and cpu_groups:
        cpu_th.join()
        res["cpu_pct"] = cpu_groups.result
    if probe:
        res["stages"] = probe.stop()
    rates = []
    for p in load:
        out, _ = p.communicate(timeout=60)
        rates.append(json.loads(out.decode().strip().splitlines()[-1])["rate"])
    res["fixes_per_s"] = sum(rates)
    res["api_cpu_pct"] = 100 * (cpu["t1"] - cpu["t0"]) / (t1 - t0)
    return res


def raw_step(args: argparse.Namespace, mode: Mode, clients: int, fleets: int,
             work: Path) -> dict[str, Any]:  # fmt: skip
    port = free_port()
    proc = Proc([PY, str(HERE / "bare_server.py"), "--port", str(port), "--tick-ms",
                 str(mode.tick_ms), "--vehicles", str(args.fleet_size)],
                work / f"bare-{mode.name}.log").start()  # fmt: skip
    try:
        wait_until(lambda: port_open(port), 20, "the bare WebSocket server")
        t0, t1 = measured(args, clients)
        subs = [{"type": "subscribe", "fleets": [f]} for f in range(fleets)]
        base = f"http://127.0.0.1:{port}"
        return run_clients(f"ws://127.0.0.1:{port}/ws", base, clients, subs,
                           args.client_procs, args.probes, t0, t1)  # fmt: skip
    finally:
        proc.stop()


def run_mode(args: argparse.Namespace, mode: Mode, broker: Broker, redis: RedisServer,
             dsn: str, devices: list[str], fleets: list[int], boot: int,
             work: Path) -> list[dict[str, Any]]:  # fmt: skip
    prefix = f"fan{uuid.uuid4().hex[:6]}"
    common = {"FLEET_REDIS_URL": redis.url, "FLEET_REDIS_PREFIX": prefix,
              "FLEET_DATABASE_URL": dsn}  # fmt: skip
    ingest = Proc(
        [tool("fleet-cloud"), "ingest"], work / f"ingest-{mode.name}.log",
        {**common, "FLEET_MQTT_HOST": broker.host, "FLEET_MQTT_PORT": str(broker.port),
         "FLEET_INGEST_CLIENT_PREFIX": f"fanout-ingest-{prefix}", **broker.service_env()},
    ).start()  # fmt: skip
    # Processing (events, trips) on a node of its own; its alerts reach the API node
    # through PostgreSQL NOTIFY and go to every client of the tenant.
    processing = None
    if not args.no_processing:
        processing = Proc([tool("fleet-cloud"), "process"], work / f"process-{mode.name}.log",
                          common).start()  # fmt: skip
    api = CloudStack(
        broker, dsn, work, tenant=TENANT, email=f"fanout-{prefix}@bench.local",
        serve_args=["--no-ingest", "--log-level", "warning"],
        extra_env={**common, "FLEET_WS_TICK_MS": str(mode.tick_ms),
                   "FLEET_TENANT_RATE_PER_S": "0", "FLEET_PROCESSING_ENABLED": "false"},
    ).start()  # fmt: skip
    rows = []
    try:
        for n in args.clients:
            print(f"  {mode.name}: {n} clients ...", flush=True)
            pids = {"ingest": [ingest.pid]}
            if processing is not None:
                pids["processing"] = [processing.pid]
            ctx = {"redis_url": redis.url, "channel": f"{prefix}:live",
                   "pids": {**pids, "postgres": f" {urlsplit(dsn).path.lstrip('/')} "}}  # fmt: skip
            ours = step(args, mode, api, broker, devices, fleets, n, boot, work, ctx)
            boot += 1
            raw = None if args.skip_raw else raw_step(args, mode, n, len(fleets), work)
            rows.append({"mode": mode.name, "target_fps": mode.fps, "ours": ours, "raw": raw})
    finally:
        api.stop()
        if processing is not None:
            processing.stop()
        ingest.stop()
    return rows


def serves(r: dict[str, Any], target_fps: float) -> bool:
    return bool(r["failed"] == 0 and r["min_client_fps"] >= 0.9 * target_fps)


def report(rows: list[dict[str, Any]], args: argparse.Namespace) -> None:
    def f(v: float | None, fmt: str = ".0f") -> str:
        return "-" if v is None else format(v, fmt)

    print()
    print(f"vehicles {args.vehicles} in fleets of {args.fleet_size}; window {args.seconds} s")
    print(f"{'mode':5} {'clients':>7} {'fixes/s':>8} {'frames/s':>9} {'pos/s':>7} {'MB/s':>6} "
          f"{'min fps':>7} {'p50 ms':>7} {'p99 ms':>7} {'API cpu':>7} {'failed':>6} | "
          f"{'raw frames/s':>12} {'raw MB/s':>8} {'raw min fps':>11} {'ours/raw':>8} "
          "serves")  # fmt: skip
    for row in rows:
        o, r = row["ours"], row["raw"]
        # the bare server sends position frames only: compare like with like
        ratio = (
            o["position_frames_per_s"] / r["position_frames_per_s"]
            if r and r["position_frames_per_s"]
            else None
        )
        print(f"{row['mode']:5} {o['clients']:>7} {f(o['fixes_per_s']):>8} "
              f"{f(o['frames_per_s']):>9} {f(o['position_frames_per_s']):>7} "
              f"{f(o['mbytes_per_s'], '.1f'):>6} "
              f"{f(o['min_client_fps'], '.2f'):>7} {f(o['p50_ms']):>7} {f(o['p99_ms']):>7} "
              f"{f(o['api_cpu_pct']):>6}% {o['failed']:>6} | "
              f"{f(r and r['frames_per_s']):>12} {f(r and r['mbytes_per_s'], '.1f'):>8} "
              f"{f(r and r['min_client_fps'], '.2f'):>11} "
              f"{f(ratio and 100 * ratio):>7}% "
              f"{'yes' if serves(o, row['target_fps']) else 'no'}")  # fmt: skip
        extra = {k: v for k, v in o["probe_frame_types"].items() if k != "positions"}
        if extra:
            print(f"        probe clients also got: {extra}")
        if o["errors"]:
            print(f"        client errors: {o['errors']}")
        if "stages" in o:
            print(f"        stages: {o['stages']}")
        if "cpu_pct" in o:
            print(f"        cpu % of one core: {o['cpu_pct']}")
    for mode in {row["mode"] for row in rows}:
        ok = [row["ours"]["clients"] for row in rows
              if row["mode"] == mode and serves(row["ours"], row["target_fps"])]  # fmt: skip
        print(f"{mode}: most clients served in this run: {max(ok) if ok else 'none of the steps'}")
    print(json.dumps({"vehicles": args.vehicles, "fleet_size": args.fleet_size,
                      "seconds": args.seconds, "rows": rows}))  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--vehicles", type=int, default=1000)
    ap.add_argument("--fleet-size", type=int, default=100, help="vehicles per fleet (and frame)")
    ap.add_argument("--clients", default="1000,2000,5000,10000",
                    help="client counts to step through")  # fmt: skip
    ap.add_argument("--modes", default="1fps,10hz", help=f"any of {', '.join(MODES)}")
    ap.add_argument("--seconds", type=float, default=20.0, help="measurement window per step")
    ap.add_argument("--warmup", type=float, default=5.0)
    ap.add_argument("--client-procs", type=int, default=2, help="processes for the client swarm")
    ap.add_argument("--load-procs", type=int, default=2, help="MQTT publisher processes")
    ap.add_argument("--probes", type=int, default=20, help="clients that measure latency")
    ap.add_argument("--skip-raw", action="store_true", help="do not run the bare server")
    ap.add_argument(
        "--stages",
        action="store_true",
        help="also measure per-stage lag and per-process CPU (bench/fanout/stages.py)",
    )
    ap.add_argument("--no-processing", action="store_true",
                    help="do not run `fleet-cloud process` (isolates its CPU share)")  # fmt: skip
    args = ap.parse_args()
    args.clients = [int(x) for x in args.clients.split(",")]
    modes = [MODES[m] for m in args.modes.split(",")]
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # the API process inherits it
    # Each process holds its own sockets: the API worker one per client, each
    # client process its share; the limit applies per process.
    if hard < max(args.clients) + 1000:
        sys.exit(f"open-file limit {hard} is too low for {max(args.clients)} clients")
    work = Path(tempfile.mkdtemp(prefix="bench-fanout-"))
    broker = Broker(work / "mosquitto").start()
    redis = RedisServer(work / "redis").start()
    name, dsn = create_database(PG_ADMIN_DSN)
    rows: list[dict[str, Any]] = []
    try:
        subprocess.run([tool("fleet-cloud"), "migrate", "--dsn", dsn], check=True,
                       capture_output=True)  # fmt: skip
        devices, fleets = asyncio.run(register(dsn, args.vehicles, args.fleet_size))
        boot = 1
        for mode in modes:
            rows += run_mode(args, mode, broker, redis, dsn, devices, fleets, boot, work)
            boot += len(args.clients)
        report(rows, args)
        print(
            f"events stored during the run (alerts pushed to clients): {asyncio.run(events(dsn))}"
        )
    finally:
        redis.stop()
        broker.stop()
        drop_database(name, PG_ADMIN_DSN)
        print(f"logs: {work}", file=sys.stderr)


if __name__ == "__main__":
    main()
