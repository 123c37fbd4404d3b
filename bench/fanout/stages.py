"""Where the fan-out latency accrues: per-stage lag and rates, per-process CPU.

Used by run.py (--stages) during one measurement window. Every fix carries the
load generator's wall clock at publish (t); ingest stamps its own receive time
(recv) on the live state; so, with observers that cost little:

- broker: an MQTT subscriber on a few vehicles' telemetry topics sees each fix
  now - t after publish (load generator + broker, without ingest);
- ingest intake: recv - t of the states ingest relays through Redis (adds the
  wait in front of ingest's consumer);
- relay: a Redis subscriber on the live channel sees each state now - recv after
  ingest took it (ingest's live path + the relay's publish loop);
- the clients' own latency (run.py) minus these is the API worker's share.

CPU: seconds each process (and its children, for the client swarm) used in the
window, as % of one core; the machine has os.cpu_count() cores.
"""

from __future__ import annotations

import os
import statistics
import threading
import time
from pathlib import Path
from typing import Any

import orjson
import paho.mqtt.client as mqtt
import redis


def cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pids_matching(needle: str) -> list[int]:
    """Processes whose command line contains needle (this run's load and client swarm)."""
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if needle in (d / "cmdline").read_bytes().replace(b"\0", b" ").decode():
                    out.append(int(d.name))
            except OSError:
                pass
    return out


def machine_busy_seconds() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine, all cores."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    tick = os.sysconf("SC_CLK_TCK")
    idle = v[3] + v[4]
    return (sum(v) - idle) / tick, sum(v) / tick


def _pct(xs: list[float], q: int) -> float | None:
    if len(xs) < 2:
        return xs[0] if xs else None
    return round(statistics.quantiles(xs, n=100)[q - 1], 1)


class StageProbe:
    def __init__(self, redis_url: str, channel: str, broker: tuple[str, int, str, str],
                 sample_topics: list[str], t0: float, t1: float) -> None:  # fmt: skip
        self.redis_url, self.channel = redis_url, channel
        self.broker, self.sample_topics = broker, sample_topics
        self.t0, self.t1 = t0, t1
        self.relay_msgs = 0
        self.publishes: int | None = None  # PUBLISH calls Redis served in the window
        self.relay_lag: list[tuple[float, float]] = []  # (recv - t, now - recv) ms
        self.broker_lag: list[float] = []
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def _in_window(self) -> bool:
        return self.t0 <= time.time() < self.t1

    def _redis(self) -> None:
        r = redis.Redis.from_url(self.redis_url)
        ps = r.pubsub(ignore_subscribe_messages=True)
        ps.subscribe(self.channel)
        before: int | None = None

        def publishes() -> int:
            return int(r.info("commandstats").get("cmdstat_publish", {}).get("calls", 0))

        while not self._stop.is_set():
            if before is None and time.time() >= self.t0:
                before = publishes()
            if before is not None and self.publishes is None and time.time() >= self.t1:
                self.publishes = publishes() - before
            m = ps.get_message(timeout=0.2)
            if m is None or not self._in_window():
                continue
            now = time.time() * 1000
            self.relay_msgs += 1
            for s in orjson.loads(m["data"]).get("states", []):
                if s.get("t") is not None and s.get("recv") is not None:
                    self.relay_lag.append((s["recv"] - s["t"], now - s["recv"]))
        ps.close()
        r.close()

    def _mqtt(self) -> None:
        host, port, user, password = self.broker
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"stage-probe-{os.getpid()}",
                        protocol=mqtt.MQTTv5)  # fmt: skip
        c.username_pw_set(user, password)

        def on_message(_c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
            if self._in_window():
                now = time.time() * 1000
                for f in orjson.loads(msg.payload).get("fixes", []):
                    self.broker_lag.append(now - f["t"])

        c.on_message = on_message
        c.connect(host, port)
        for t in self.sample_topics:
            c.subscribe(t, qos=0)
        c.loop_start()
        self._stop.wait()
        c.loop_stop()
        c.disconnect()

    def start(self) -> StageProbe:
        for fn in (self._redis, self._mqtt):
            th = threading.Thread(target=fn, daemon=True)
            th.start()
            self._threads.append(th)
        return self

    def stop(self) -> dict[str, Any]:
        self._stop.set()
        for th in self._threads:
            th.join(timeout=5)
        window = self.t1 - self.t0
        intake = [a for a, _ in self.relay_lag]
        relay = [b for _, b in self.relay_lag]
        return {
            "broker_lag_p50_ms": _pct(self.broker_lag, 50),
            "broker_lag_p99_ms": _pct(self.broker_lag, 99),
            "broker_samples": len(self.broker_lag),
            "ingest_intake_lag_p50_ms": _pct(intake, 50),
            "ingest_intake_lag_p99_ms": _pct(intake, 99),
            "relay_lag_p50_ms": _pct(relay, 50),
            "relay_lag_p99_ms": _pct(relay, 99),
            "relay_states_per_s": round(len(self.relay_lag) / window),
            "relay_msgs_per_s": round(self.relay_msgs / window, 1),
            "redis_publishes_per_s": round((self.publishes or 0) / window, 1),
        }


class CpuSampler:
    """CPU % of one core per process group over [t0, t1]; run() in a thread.

    groups: name -> pids, or name -> a command-line substring looked up at each
    sample (processes started after construction). "machine" is every core
    together, other helpers' work included: 100 % per core.
    """

    def __init__(self, groups: dict[str, Any], t0: float, t1: float) -> None:
        self.groups, self.t0, self.t1 = groups, t0, t1
        self.result: dict[str, float] = {}

    def _sample(self) -> dict[str, dict[int, float]]:
        out = {}
        for k, v in self.groups.items():
            pids = pids_matching(v) if isinstance(v, str) else v
            out[k] = {p: cpu_seconds(p) for p in pids}
        out["machine"] = {0: machine_busy_seconds()[0]}
        return out

    def run(self) -> None:
        time.sleep(max(0.0, self.t0 - time.time()))
        a, ta = self._sample(), time.monotonic()
        time.sleep(max(0.0, self.t1 - 0.3 - time.time()))  # before the swarm exits
        b, tb = self._sample(), time.monotonic()
        # only processes alive at both samples (database backends come and go)
        self.result = {
            k: round(100 * sum(b[k][p] - a[k][p] for p in b[k] if p in a[k]) / (tb - ta)) for k in b
        }
