"""WebSocket client swarm for bench/fanout (one process; run several for more clients).

    python bench/fanout/clients.py --url ws://... --clients 500 --subscribe '{...}' \
        --measure-from T0 --measure-to T1 [--probes 10] [--subscribes-json FILE]

Opens the connections (ramped), sends each its subscribe message, then counts the
frames and bytes every connection receives between two wall-clock instants. Probe
connections also parse their frames and record, for every vehicle state in a
``positions`` frame, now - state["t"]: the fix was stamped with the wall clock
when it was published, so that is broker-ingress-to-client latency. The others
do not parse (the swarm must stay cheaper than the server it measures).
Prints one JSON line with the results.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import resource
import sys
import time
from collections import Counter

import orjson
import websockets
from websockets.typing import Origin

POSITIONS = '{"type":"positions"'


class Conn:
    def __init__(self, probe: bool) -> None:
        self.probe = probe
        self.frames = 0  # every frame (alerts too)
        self.positions = 0  # coalesced position frames: the rate the hub promises
        self.bytes = 0
        self.types: Counter[str] = Counter()
        self.latencies: list[float] = []
        self.failed: str | None = None


async def run_conn(url: str, sub: str, c: Conn, t0: float, t1: float, origin: str) -> None:
    try:
        async with websockets.connect(
            url,
            origin=Origin(origin),
            max_size=64 * 1024 * 1024,
            open_timeout=60,
            ping_interval=None,
            compression=None,
        ) as ws:
            await ws.send(sub)
            while True:
                remaining = t1 - time.time()
                if remaining <= 0:
                    return
                try:
                    async with asyncio.timeout(remaining):
                        msg = await ws.recv()
                except TimeoutError:
                    return
                now = time.time()
                if now < t0:
                    continue
                c.frames += 1
                c.bytes += len(msg)
                if isinstance(msg, str) and msg.startswith(POSITIONS):  # "type" first: no parse
                    c.positions += 1
                if c.probe:
                    frame = orjson.loads(msg)
                    c.types[frame.get("type", "?")] += 1
                    if frame.get("type") == "positions":
                        ms = now * 1000
                        c.latencies.extend(ms - v["t"] for v in frame["vehicles"] if v.get("t"))
    except (OSError, websockets.WebSocketException, TimeoutError) as e:
        c.failed = f"{type(e).__name__}: {e}"[:200]


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--origin", required=True)
    ap.add_argument("--clients", type=int, required=True)
    ap.add_argument("--subscribes", required=True, help="JSON list of subscribe messages")
    ap.add_argument("--offset", type=int, default=0, help="index of the first client (round-robin)")
    ap.add_argument("--probes", type=int, default=5)
    ap.add_argument("--measure-from", type=float, required=True)
    ap.add_argument("--measure-to", type=float, required=True)
    args = ap.parse_args()
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    subs = [orjson.dumps(s).decode() for s in orjson.loads(args.subscribes)]
    conns = [Conn(i < args.probes) for i in range(args.clients)]
    tasks = []
    for i, c in enumerate(conns):
        sub = subs[(args.offset + i) % len(subs)]
        conn = run_conn(args.url, sub, c, args.measure_from, args.measure_to, args.origin)
        tasks.append(asyncio.create_task(conn))
        if i % 100 == 99:  # ramp: a burst of thousands of handshakes measures the handshake
            await asyncio.sleep(0.05)
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.gather(*tasks)
    window = args.measure_to - args.measure_from
    lat = sorted(x for c in conns for x in c.latencies)
    out = {
        "clients": args.clients,
        "failed": sum(1 for c in conns if c.failed),
        "errors": sorted({c.failed for c in conns if c.failed})[:5],
        "frames": sum(c.frames for c in conns),
        "bytes": sum(c.bytes for c in conns),
        "positions": sum(c.positions for c in conns),
        "min_client_fps": min((c.positions / window for c in conns), default=0.0),
        "probe_frame_types": dict(sum((c.types for c in conns), Counter())),
        "latencies_ms": lat[:: max(1, len(lat) // 20_000)],  # a sample is enough for p50/p99
    }
    sys.stdout.write(orjson.dumps(out).decode() + "\n")


if __name__ == "__main__":
    asyncio.run(main())
