"""``fleet-agent doctor``: prove the installation before the installer leaves the vehicle.

Runs the agent's own GPS source and OBD poller (the same code paths as
``run``), a publish/receive round trip through the broker, and a look at the
clock and the outbox's disk. Prints one line per check with PASS, WARN or
FAIL and the reason; exits non-zero if anything failed.

The broker probe logs in as the device (client id = username = device_id:
the broker binds the account to that client id, docs/security.md) over TLS
when configured, and subscribes to the device's ``down/cmd`` topic: the
CONNACK proves address, TLS and credentials, the SUBACK's grant proves the
device's ACL. It sends nothing (a device may publish only its ``up/`` topics,
which the cloud ingests) and resumes the device's persistent session rather
than discarding it; a running agent is taken over for that moment and
reconnects by itself, re-sending whatever was not acked.
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import aiomqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from fleet_edge.config import AgentConfig
from fleet_edge.gps.fix import GpsFix, GpsReading, NoFix
from fleet_edge.gps.source import make_gps_source
from fleet_edge.obd.pids import BY_NAME, BY_PID
from fleet_edge.obd.poller import ObdPoller
from fleet_wire import Down, down_topic

Result = Literal["PASS", "WARN", "FAIL"]
CLOCK_TOLERANCE_S = 2.0
POOR_HDOP = 5.0
SERIAL_GLOBS = (
    "/dev/serial/by-id/*",
    "/dev/ttyUSB*",
    "/dev/ttyACM*",
    "/dev/ttyAMA*",
    "/dev/ttyS[0-3]",
    "/dev/rfcomm*",
)


@dataclass(frozen=True)
class Check:
    name: str
    result: Result
    detail: str


def _mib(n: float) -> str:
    return f"{n / 1024**3:.1f} GiB" if n >= 1024**3 else f"{n / 1024**2:.0f} MiB"


def check_serial_ports(cfg: AgentConfig) -> Check:
    found = sorted({p for g in SERIAL_GLOBS for p in glob.glob(g)})
    wanted: list[tuple[str, Path]] = []
    if cfg.gps.source == "serial":
        wanted.append(("gps", cfg.gps.port))
    if cfg.obd.enabled:
        wanted.append(("obd", cfg.obd.port))
    parts = []
    for what, port in wanted:
        if not os.path.exists(port):
            seen = f"found: {', '.join(found)}" if found else "no serial ports found"
            return Check("serial ports", "FAIL", f"{what} port {port} does not exist ({seen})")
        if not os.access(port, os.R_OK | os.W_OK):
            return Check("serial ports", "FAIL", f"no read/write access to {port} "
                         "(is this user in group dialout?)")  # fmt: skip
        real = os.path.realpath(port)
        parts.append(f"{what} {port}" + (f" -> {real}" if real != str(port) else ""))
    others = [p for p in found if p not in {str(w[1]) for w in wanted}]
    detail = "; ".join(parts) or "none configured (gps via gpsd)"
    if others:
        detail += f"; also present: {', '.join(others[:6])}"
    return Check("serial ports", "PASS", detail)


async def check_gps(cfg: AgentConfig, timeout_s: float) -> list[Check]:
    q: asyncio.Queue[GpsReading] = asyncio.Queue(1000)
    source = make_gps_source(cfg.gps, q)
    task = asyncio.create_task(source.run())
    loop = asyncio.get_running_loop()
    start = loop.time()
    start_wall = time.time()
    ttff = 0.0
    last_no_fix: NoFix | None = None
    fix: GpsFix | None = None
    received_at = 0.0
    try:
        while fix is None:
            left = timeout_s - (loop.time() - start)
            if left <= 0:
                break
            try:
                r = await asyncio.wait_for(q.get(), left)
            except TimeoutError:
                break
            if isinstance(r, GpsFix):
                fix, received_at = r, time.time()
            else:
                last_no_fix = r
        if fix is not None:
            ttff = received_at - start_wall
            # The first epochs may lack sentences (GSA: the fix type) while the
            # reader learns the receiver's burst; judge quality on a later one.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(3.0):
                    while fix.fix_type is None:
                        r = await q.get()
                        if isinstance(r, GpsFix):
                            fix, received_at = r, time.time()
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    h = source.health()
    where = (
        f"gpsd {cfg.gps.gpsd_host}:{cfg.gps.gpsd_port}" if cfg.gps.source == "gpsd"
        else str(cfg.gps.port)
    )  # fmt: skip
    in_view = h.get("in_view")
    if fix is None:
        if h.get("sentences", 0) == 0:
            why = f"no data from {where} (link {h.get('port')})"
        elif last_no_fix is not None:
            why = f"receiver reports no fix ({last_no_fix.reason})"
            if in_view is not None:
                why += f", {in_view} satellites in view"
        else:
            why = "receiver talks but sends no position"
        return [
            Check("gps fix", "FAIL", f"no fix within {timeout_s:.0f} s: {why}"),
            Check("clock", "WARN", "not checked: no GPS time"),
        ]
    kind = {3: "3D", 2: "2D"}.get(fix.fix_type or 0, "fix")
    sats = f"{fix.sats if fix.sats is not None else '?'} sats used"
    if in_view is not None:
        sats += f" / {in_view} in view"
    hdop = "HDOP ?" if fix.hdop is None else f"HDOP {fix.hdop:.2f}"
    detail = f"{kind}, {sats}, {hdop}, first fix after {ttff:.1f} s"
    result: Result = "PASS"
    if fix.hdop is not None and fix.hdop > POOR_HDOP:
        result, detail = "WARN", detail + " (poor geometry: check the antenna's sky view)"
    skew = received_at - fix.t / 1000.0
    clock = (
        Check("clock", "PASS", f"system clock within {abs(skew):.1f} s of GPS time")
        if abs(skew) <= CLOCK_TOLERANCE_S
        else Check(
            "clock",
            "FAIL",
            f"system clock is {abs(skew):.1f} s {'ahead of' if skew > 0 else 'behind'} GPS time "
            "(is NTP/chrony running?)",
        )
    )
    return [Check("gps fix", result, detail), clock]


async def check_obd(cfg: AgentConfig, timeout_s: float) -> list[Check]:
    if not cfg.obd.enabled:
        return [Check("obd link", "WARN", "OBD disabled in the config (obd.enabled = false)")]
    poller = ObdPoller(cfg.obd)
    task = asyncio.create_task(poller.run())
    try:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(poller.connected.wait(), timeout_s)
        if poller.connected.is_set():
            # One polling round, so the PID list reflects real answers.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(_first_values(poller), 5.0)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    if not poller.connected.is_set():
        if poller.adapter is None:
            why = poller.last_error or "no ELM327 answer"
            return [Check("obd link", "FAIL", f"no adapter on {cfg.obd.port}: {why}")]
        rejected = poller.health()["rejected"]
        seen = ", ".join(sorted(k for k in rejected if not k.startswith("init_"))) or "no answer"
        return [
            Check(
                "obd link",
                "FAIL",
                f"{poller.adapter} answers but no ECU does ({seen}): ignition off?",
            ),
        ]
    checks = [Check("obd link", "PASS", f"{poller.adapter or 'ELM327'}, {poller.protocol}")]
    checks.append(
        Check("vin", "PASS", poller.vin)
        if poller.vin
        else Check("vin", "WARN", "vehicle does not report its VIN (mode 09 PID 02)")
    )
    wanted = [BY_NAME[n].pid for n in cfg.obd.pids]
    polled = [BY_PID[p].name for p in wanted if p in poller.supported]
    missing = [BY_PID[p].name for p in wanted if p not in poller.supported]
    detail = f"{len(poller.supported)} supported; polling {len(polled)}: {', '.join(polled)}"
    if missing:
        detail += f" (vehicle lacks: {', '.join(missing)})"
    checks.append(Check("obd pids", "PASS" if polled else "FAIL", detail))
    dtcs = poller.dtcs or []
    checks.append(
        Check("dtc", "WARN", f"stored trouble codes: {', '.join(dtcs)}")
        if dtcs
        else Check("dtc", "PASS", "no stored trouble codes")
    )
    return checks


async def _first_values(poller: ObdPoller) -> None:
    while not poller.values:  # noqa: ASYNC110 - a diagnostic, polled for a few seconds at most
        await asyncio.sleep(0.1)


async def check_broker(cfg: AgentConfig, timeout_s: float = 10.0) -> Check:
    b = cfg.broker
    where = f"{b.host}:{b.port}{' (TLS)' if b.tls else ''}"
    topic = down_topic(cfg.device_id, Down.CMD)
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = b.session_expiry_s
    t0 = time.monotonic()
    try:
        async with asyncio.timeout(timeout_s):
            async with aiomqtt.Client(
                b.host,
                b.port,
                identifier=cfg.device_id,
                username=cfg.device_id,
                password=b.password,
                protocol=aiomqtt.ProtocolVersion.V5,
                clean_start=False,
                properties=props,
                tls_params=b.tls_params(),
                timeout=timeout_s,
            ) as client:
                granted = await client.subscribe(topic, qos=1)
    except TimeoutError:
        return Check("broker", "FAIL", f"{where}: no answer within {timeout_s:.0f} s")
    except aiomqtt.MqttError as e:
        return Check("broker", "FAIL", f"{where}: {e}")
    except (OSError, ValueError) as e:  # TLS files missing or unreadable
        return Check("broker", "FAIL", f"{where}: {e}")
    codes = [c.value if isinstance(c, ReasonCode) else int(c) for c in granted]
    if not codes or any(c >= 0x80 for c in codes):  # 0x80 and up: refused
        return Check(
            "broker", "FAIL", f"{where}: logged in, but not allowed to subscribe to {topic}"
        )
    ms = (time.monotonic() - t0) * 1000
    return Check(
        "broker",
        "PASS",
        f"{where}: logged in as {cfg.device_id}, subscribe round trip in {ms:.0f} ms",
    )


def check_outbox_disk(cfg: AgentConfig) -> Check:
    path = cfg.outbox.path
    d = path.parent
    while not d.exists() and d != d.parent:
        d = d.parent
    try:
        usage = shutil.disk_usage(d)
    except OSError as e:
        return Check("outbox disk", "FAIL", f"{d}: {e.strerror or e}")
    if not os.access(d, os.W_OK):
        return Check("outbox disk", "FAIL", f"{d} is not writable by this user")
    # The database file, its WAL and a checkpoint's worth of headroom.
    need = cfg.outbox.max_bytes * 2
    detail = f"{d}: {_mib(usage.free)} free (outbox cap {_mib(cfg.outbox.max_bytes)})"
    if usage.free < need:
        return Check("outbox disk", "FAIL", f"{detail}: needs {_mib(need)}")
    return Check("outbox disk", "PASS", detail)


async def run_doctor(cfg: AgentConfig, timeout_s: float) -> list[Check]:
    checks = [check_serial_ports(cfg)]
    gps, obd, broker = await asyncio.gather(
        check_gps(cfg, timeout_s), check_obd(cfg, timeout_s), check_broker(cfg)
    )
    checks += gps + obd + [broker, check_outbox_disk(cfg)]
    return checks


def format_report(device_id: str, checks: list[Check]) -> str:
    width = max(len(c.name) for c in checks)
    lines = [f"fleet-agent doctor: {device_id}", ""]
    lines += [f"{c.name:<{width}}  {c.result:<4}  {c.detail}" for c in checks]
    failed = [c for c in checks if c.result == "FAIL"]
    lines.append("")
    if failed:
        lines.append(
            f"FAILED: {len(failed)} of {len(checks)} checks ({', '.join(c.name for c in failed)})"
        )
    else:
        warned = sum(c.result == "WARN" for c in checks)
        lines.append(f"OK: {len(checks)} checks" + (f", {warned} warning(s)" if warned else ""))
    return "\n".join(lines)
