"""Edge agent footprint: steady RSS, CPU seconds per hour and SQLite bytes written per hour.

The agent (``fleet-agent run``, a real process) reads both simulators on
pseudo-terminals (``fleet-sim gps --pty`` at 1 Hz and 10 Hz, ``fleet-sim
elm327 --pty`` polled at 10 PIDs/s) and publishes to a real Mosquitto, where
a stand-in cloud acks every batch (so the outbox is written *and* emptied, as
in steady state). A bare Python interpreter's RSS is measured in the same run
for comparison.

    .venv/bin/python bench/edge/run.py --seconds 300

Figures come from /proc/<pid>: RSS (VmRSS, sampled every 5 s after the
warm-up), CPU (utime+stime over the window), bytes written to storage
(write_bytes in /proc/<pid>/io: what reaches the block device, i.e. SD-card
wear). Growth is the least-squares slope of RSS over the window.
Targets (issue 3): RSS <= 40 MB; CPU <= 1% of one core at 1 Hz; no growth.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.edge.cloud_standin import CloudStandIn  # noqa: E402
from tests.harness import Broker, Proc, tool, wait_until  # noqa: E402

CLK_TCK = os.sysconf("SC_CLK_TCK")
SAMPLE_EVERY_S = 5.0


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def pss_uss_kib(pid: int) -> tuple[int, int]:
    """Proportional and unique set size: RSS counts shared libraries in full."""
    v: dict[str, int] = {}
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            k, _, rest = line.partition(":")
            if rest.strip().endswith("kB"):
                v[k] = int(rest.split()[0])
    return v["Pss"], v["Private_Clean"] + v["Private_Dirty"]


def cpu_s(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime


def write_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/io") as f:
        for line in f:
            if line.startswith("write_bytes:"):
                return int(line.split()[1])
    raise RuntimeError("no write_bytes")


def bare_interpreter_rss_kib() -> int:
    p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(5)"])
    try:
        time.sleep(1.5)
        return rss_kib(p.pid)
    finally:
        p.terminate()
        p.wait()


def append_sample(series: Path, hz: int, t: float, rss: int) -> None:
    """A long run keeps its RSS curve on disk as it goes, so a growth question can
    be answered from the curve (and survives an interrupted run), not only the slope."""
    with open(series, "a") as f:
        f.write(f"{hz},{t:.0f},{rss}\n")


def slope_kib_per_h(samples: list[tuple[float, int]]) -> float:
    n = len(samples)
    if n < 3:
        return 0.0
    mt = sum(t for t, _ in samples) / n
    mr = sum(r for _, r in samples) / n
    num = sum((t - mt) * (r - mr) for t, r in samples)
    den = sum((t - mt) ** 2 for t, _ in samples)
    return num / den * 3600 if den else 0.0


@dataclass
class Result:
    hz: int
    seconds: float
    rss_kib: int  # median over the window
    rss_max_kib: int
    pss_kib: int
    uss_kib: int
    growth_kib_h: float
    cpu_s_per_h: float
    written_per_h: float
    fixes: int


def agent_config(path: Path, work: Path, broker: Broker, device: str) -> None:
    path.write_text(
        f"""device_id = "{device}"
[broker]
host = "{broker.host}"
port = {broker.port}
password = "{broker.device_password(device)}"
[gps]
port = "{work / "gps0"}"
[obd]
enabled = true
port = "{work / "elm0"}"
pids_per_s = 10.0
[outbox]
path = "{work / "outbox.db"}"
"""
    )


async def run_case(
    broker: Broker, hz: int, seconds: float, warmup: float, series: Path | None = None
) -> Result:
    with tempfile.TemporaryDirectory(prefix=f"fleet-bench-{hz}hz-", dir="/var/tmp") as d:
        work = Path(d)
        # Seed 3 drives ~95% of the time (a parked vehicle would flatter the figures).
        start = (time.time_ns() // 1_000_000 // 1000) * 1000
        common = ["--seed", "3", "--hz", str(hz), "--route-start", str(start)]
        gps = Proc([tool("fleet-sim"), "gps", "--pty", "--link", str(work / "gps0"), *common],
                   work / "gps.log").start()  # fmt: skip
        elm = Proc([tool("fleet-sim"), "elm327", "--pty", "--link", str(work / "elm0"), *common],
                   work / "elm.log").start()  # fmt: skip
        wait_until(lambda: (work / "gps0").exists() and (work / "elm0").exists(), 20, "sims")
        device = f"bench-{hz}hz-{os.getpid()}"
        agent_config(work / "agent.toml", work, broker, device)
        async with CloudStandIn(
            broker.host, broker.port, device, credentials=broker.observer
        ) as cloud:
            agent = Proc([tool("fleet-agent"), "run", "-c", str(work / "agent.toml"),
                          "--log-level", "warning"], work / "agent.log").start()  # fmt: skip
            try:
                await asyncio.sleep(warmup)
                if not agent.alive():
                    raise RuntimeError(agent.log())
                pid = agent.pid
                t0, c0, w0, n0 = time.monotonic(), cpu_s(pid), write_bytes(pid), len(cloud.seqs())
                samples: list[tuple[float, int]] = []
                while time.monotonic() - t0 < seconds:
                    samples.append((time.monotonic() - t0, rss_kib(pid)))
                    if series is not None:
                        append_sample(series, hz, *samples[-1])
                    await asyncio.sleep(SAMPLE_EVERY_S)
                dt = time.monotonic() - t0
                c1, w1, n1 = cpu_s(pid), write_bytes(pid), len(cloud.seqs())
                pss, uss = pss_uss_kib(pid)
            finally:
                agent.stop()
                gps.stop()
                elm.stop()
        rss = sorted(r for _, r in samples)
        return Result(
            hz=hz,
            seconds=dt,
            rss_kib=rss[len(rss) // 2],
            rss_max_kib=rss[-1],
            pss_kib=pss,
            uss_kib=uss,
            growth_kib_h=slope_kib_per_h(samples),
            cpu_s_per_h=(c1 - c0) / dt * 3600,
            written_per_h=(w1 - w0) / dt * 3600,
            fixes=n1 - n0,
        )


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=300.0, help="measured window per case")
    ap.add_argument("--warmup", type=float, default=20.0)
    ap.add_argument("--hz", default="1,10", help="GPS rates to run, comma-separated")
    ap.add_argument("--series", type=Path, help="append hz,seconds,rss_kib samples to this CSV")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="fleet-bench-mq-") as mq:
        broker = Broker(Path(mq)).start()
        try:
            bare = bare_interpreter_rss_kib()
            results = [
                await run_case(broker, int(h), args.seconds, args.warmup, args.series)
                for h in args.hz.split(",")
            ]
        finally:
            broker.stop()
    mib = 1024.0
    print(f"\nedge agent footprint ({args.seconds:.0f} s per case after {args.warmup:.0f} s "
          f"warm-up; OBD 10 PIDs/s; this machine: {os.cpu_count()} cores)")  # fmt: skip
    print(f"bare python interpreter RSS: {bare / mib:.1f} MiB (same run)\n")
    hdr = ("GPS", "RSS MiB", "max", "PSS", "USS", "growth MiB/h", "CPU s/h", "% core",
           "disk writes/h", "fixes/min")  # fmt: skip
    print("  ".join(f"{h:>13}" for h in hdr))
    for r in results:
        row = (
            f"{r.hz} Hz",
            f"{r.rss_kib / mib:.1f}",
            f"{r.rss_max_kib / mib:.1f}",
            f"{r.pss_kib / mib:.1f}",
            f"{r.uss_kib / mib:.1f}",
            f"{r.growth_kib_h / mib:+.2f}",
            f"{r.cpu_s_per_h:.1f}",
            f"{r.cpu_s_per_h / 36:.2f}%",
            f"{r.written_per_h / 1024**2:.1f} MiB",
            f"{r.fixes / r.seconds * 60:.0f}",
        )
        print("  ".join(f"{c:>13}" for c in row))
    print(f"bare interpreter: {bare / mib:.1f} MiB RSS")
    print("\ntargets: RSS <= 40 MB; CPU <= 1% of one core at 1 Hz (36 s/h); no growth")
    print("RSS counts shared libraries (libpython, pydantic-core, libssl) in full; PSS shares")
    print("them out; USS is what this process alone holds. disk writes = /proc/<pid>/io")
    print("write_bytes (what reached the block device: the outbox's WAL, checkpoints, fsyncs).")


if __name__ == "__main__":
    asyncio.run(main())
