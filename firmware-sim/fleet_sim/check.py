"""``fleet-sim check``: compare the simulators' oracle logs with the database.

What counts as expected depends on what generated the fixes:

- ``fleet`` records (the lightweight vehicles) name their ``(dev, boot, seq)``:
  every recorded fix not later logged as ``drop`` must be stored once, with
  the oracle's time and position. A simulated vehicle keeps unacked fixes in
  memory only, so when it is stopped its last ones die with it: ``until``
  (fix time, UTC ms) limits what is expected to what was due before then.
- ``gps`` records (a receiver on a pty) carry only the fix time: the agent that
  read the port is named with ``--device``. Every stored fix of that device
  must be one the receiver wrote (matched by fix time, same position). What
  the agent must have stored is either the span of the receiver's output
  between the first and last stored fix, or, with ``--outbox``, exactly what
  the agent's outbox committed: its seqs are assigned by SQLite AUTOINCREMENT
  inside the commit transaction, so the committed seqs are 1..last_seq with
  no gap (a transaction cut short by a crash rolls its seqs back too), minus
  the rows the cap dropped, which the outbox counts.

Printed: expected, stored, missing, duplicated, out of order (fix time going
backwards while seq goes forward), arrival out of seq order (normal: live
fixes overtake the backlog), and the ingest latency (recv_time - fix_time)
percentiles. Exit status: 0 all good, 1 a loss, a duplicate, a stored fix
the oracle does not know or whose values differ, or a drop count that does
not match what is missing; 2 bad arguments or an unreachable database.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import Any

import orjson

POSITION_TOLERANCE_DEG = 2e-6  # the oracle rounds to 6 decimals


class CheckError(Exception):
    """Bad input (oracle, outbox, database); one line for the operator."""


@dataclass
class Oracle:
    gps: dict[int, tuple[float, float]] = field(default_factory=dict)  # t -> (lat, lon)
    gps_repeats: int = 0  # the same fix time written twice (a receiver bug, not ours)
    fleet: dict[tuple[str, int, int], dict[str, Any]] = field(default_factory=dict)
    fleet_dropped: set[tuple[str, int, int]] = field(default_factory=set)


def load_oracles(paths: list[Path]) -> Oracle:
    o = Oracle()
    for path in paths:
        try:
            data = path.read_bytes()
        except OSError as e:
            raise CheckError(f"cannot read oracle {path}: {e.strerror}") from None
        for n, line in enumerate(data.splitlines(), 1):
            if not line.strip():
                continue
            try:
                rec = orjson.loads(line)
                src = rec["src"]
                if src == "gps":
                    if rec["t"] in o.gps:
                        o.gps_repeats += 1
                    o.gps[int(rec["t"])] = (float(rec["lat"]), float(rec["lon"]))
                elif src == "fleet":
                    key = (str(rec["dev"]), int(rec["boot"]), int(rec["seq"]))
                    if rec.get("drop"):
                        o.fleet_dropped.add(key)
                    else:
                        o.fleet[key] = rec
                else:
                    raise KeyError("src")
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
                raise CheckError(f"{path}:{n}: not an oracle record") from None
    return o


@dataclass(frozen=True)
class OutboxFacts:
    last_seq: int
    dropped: int
    pending: frozenset[int]  # seqs still in the outbox (not yet acked)


def read_outbox(path: Path) -> OutboxFacts:
    """What an agent's outbox committed, read-only (the agent may still run)."""
    if not path.exists():
        raise CheckError(f"no outbox at {path}")
    try:
        db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
        try:
            last = db.execute("SELECT seq FROM sqlite_sequence WHERE name='outbox'").fetchone()
            dropped = db.execute("SELECT value FROM meta WHERE key='dropped'").fetchone()
            pending = frozenset(s for (s,) in db.execute("SELECT seq FROM outbox"))
        finally:
            db.close()
    except sqlite3.Error as e:
        raise CheckError(f"cannot read outbox {path}: {e}") from None
    return OutboxFacts(last[0] if last else 0, dropped[0] if dropped else 0, pending)


@dataclass(frozen=True, slots=True)
class Row:
    device_id: str
    boot: int
    seq: int
    t: int
    lat: float
    lon: float
    latency_ms: int
    arrival: int  # ingest_seq: the order the cloud stored rows in


_ROWS_SQL = """
SELECT device_id, boot_id, seq,
       (extract(epoch FROM fix_time) * 1000)::bigint AS t, lat, lon,
       (extract(epoch FROM recv_time - fix_time) * 1000)::bigint AS latency_ms,
       ingest_seq
FROM positions WHERE device_id = ANY($1::text[])
"""


async def fetch_rows(dsn: str, devices: list[str]) -> list[Row]:
    import asyncpg

    try:
        conn = await asyncpg.connect(dsn, timeout=15)
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as e:
        raise CheckError(f"cannot connect to the database: {e}") from None
    try:
        return [Row(*r.values()) for r in await conn.fetch(_ROWS_SQL, devices)]
    except asyncpg.PostgresError as e:
        raise CheckError(f"query failed: {e}") from None
    finally:
        await conn.close()


@dataclass
class Report:
    devices: list[str]
    expected: int = 0
    stored: int = 0
    missing: int = 0  # expected, not stored, not counted as dropped
    duplicated: int = 0  # extra copies of one fix
    out_of_order: int = 0  # fix time going backwards along seq
    arrival_out_of_seq: int = 0  # informational: live fixes overtaking the backlog
    unknown: int = 0  # stored, but the oracle never generated it
    mismatched: int = 0  # stored with other values than generated
    dropped_counted: int = 0  # drops the device counted (cap)
    dropped_unmatched: int = 0  # |counted drops - undelivered|
    pending: int = 0  # still in the device's outbox (not lost, not delivered yet)
    not_committed: int = 0  # gps oracle fixes the agent never committed (it was down)
    latency_ms: dict[str, int | None] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        bad = self.missing + self.duplicated + self.unknown + self.mismatched
        return bad == 0 and self.dropped_unmatched == 0


def percentiles(values: list[int]) -> dict[str, int | None]:
    if not values:
        return {"p50": None, "p90": None, "p99": None, "max": None}
    v = sorted(values)

    def pick(q: float) -> int:
        return v[min(len(v) - 1, int(q * len(v)))]

    return {"p50": pick(0.50), "p90": pick(0.90), "p99": pick(0.99), "max": v[-1]}


def _close(a: tuple[float, float], b: tuple[float, float]) -> bool:
    return abs(a[0] - b[0]) <= POSITION_TOLERANCE_DEG and abs(a[1] - b[1]) <= POSITION_TOLERANCE_DEG


def _order_counts(rows: list[Row], report: Report) -> None:
    by_dev: dict[str, list[Row]] = defaultdict(list)
    for r in rows:
        by_dev[r.device_id].append(r)
    for dev_rows in by_dev.values():
        by_seq = sorted(dev_rows, key=lambda r: (r.seq, r.t))
        report.out_of_order += sum(1 for a, b in pairwise(by_seq) if b.t < a.t)
        by_arrival = sorted(dev_rows, key=lambda r: r.arrival)
        report.arrival_out_of_seq += sum(1 for a, b in pairwise(by_arrival) if b.seq < a.seq)


def _duplicates(rows: list[Row]) -> int:
    # A fix stored twice under its key, or under two keys (same device, same fix time).
    by_key = Counter((r.device_id, r.boot, r.seq) for r in rows)
    by_time = Counter((r.device_id, r.t) for r in rows)
    return max(sum(n - 1 for n in by_key.values()), sum(n - 1 for n in by_time.values()))


def check_fleet(oracle: Oracle, rows: list[Row], report: Report, until: int | None) -> None:
    expected = {
        k: v
        for k, v in oracle.fleet.items()
        if k not in oracle.fleet_dropped and (until is None or v["t"] <= until)
    }
    report.expected += len(expected)
    report.dropped_counted += len(oracle.fleet_dropped)
    seen = set()
    for r in rows:
        key = (r.device_id, r.boot, r.seq)
        rec = oracle.fleet.get(key)
        if rec is None:
            report.unknown += 1
            continue
        seen.add(key)
        if rec["t"] != r.t or not _close((rec["lat"], rec["lon"]), (r.lat, r.lon)):
            report.mismatched += 1
    report.missing += len(set(expected) - seen)


def check_gps(oracle: Oracle, rows: list[Row], outbox: OutboxFacts | None, report: Report) -> None:
    stored_seqs = set()
    stored_times = set()
    for r in rows:
        stored_seqs.add(r.seq)
        stored_times.add(r.t)
        pos = oracle.gps.get(r.t)
        if pos is None:
            report.unknown += 1
        elif not _close(pos, (r.lat, r.lon)):
            report.mismatched += 1
    if outbox is not None:
        committed = set(range(1, outbox.last_seq + 1))
        report.expected += len(committed)
        pending = len(committed & outbox.pending - stored_seqs)
        undelivered = len(committed - stored_seqs - outbox.pending)
        report.pending += pending
        report.dropped_counted += outbox.dropped
        report.dropped_unmatched += abs(undelivered - outbox.dropped)
        report.missing += max(0, undelivered - outbox.dropped)
        unstored = len(set(oracle.gps) - stored_times)
        report.not_committed += max(0, unstored - undelivered - pending)
    elif stored_times:
        lo, hi = min(stored_times), max(stored_times)
        span = {t for t in oracle.gps if lo <= t <= hi}
        report.expected += len(span)
        report.missing += len(span - stored_times)
        report.not_committed += len(set(oracle.gps) - span)
    else:
        report.expected += len(oracle.gps)
        report.missing += len(oracle.gps)


def run_check(
    dsn: str,
    oracle_paths: list[Path],
    device: str | None,
    outbox_path: Path | None,
    until: int | None = None,
) -> Report:
    oracle = load_oracles(oracle_paths)
    if oracle.gps and device is None:
        raise CheckError("the oracle has gps records: name the agent's device with --device")
    if outbox_path is not None and device is None:
        raise CheckError("--outbox needs --device (the agent that owns it)")
    outbox = read_outbox(outbox_path) if outbox_path is not None else None
    fleet_devices = sorted({k[0] for k in oracle.fleet} | {k[0] for k in oracle.fleet_dropped})
    devices = sorted(set(fleet_devices) | ({device} if device else set()))
    if not devices:
        raise CheckError("the oracle is empty and no --device was given: nothing to check")
    rows = asyncio.run(fetch_rows(dsn, devices))
    report = Report(devices=devices, stored=len(rows))
    report.duplicated = _duplicates(rows)
    _order_counts(rows, report)
    gps_rows = [r for r in rows if r.device_id == device]
    check_fleet(oracle, [r for r in rows if r.device_id != device], report, until)
    if device is not None:
        check_gps(oracle, gps_rows, outbox, report)
    report.latency_ms = percentiles([r.latency_ms for r in rows])
    return report


def format_report(r: Report) -> str:
    lat = r.latency_ms

    def ms(v: int | None) -> str:
        return "-" if v is None else f"{v} ms"

    lines = [
        (
            "devices",
            ", ".join(r.devices[:5]) + (f" (+{len(r.devices) - 5})" if len(r.devices) > 5 else ""),
        ),
        ("expected", str(r.expected)),
        ("stored", str(r.stored)),
        ("missing", str(r.missing)),
        ("duplicated", str(r.duplicated)),
        ("unknown", str(r.unknown)),
        ("mismatched", str(r.mismatched)),
        ("out of order", f"{r.out_of_order} (fix time backwards along seq)"),
        ("arrival order", f"{r.arrival_out_of_seq} arrivals below an earlier seq (live first)"),
        ("dropped (counted)", f"{r.dropped_counted} (unmatched: {r.dropped_unmatched})"),
        ("pending in outbox", str(r.pending)),
        ("never committed", f"{r.not_committed} (generated while nothing read or recorded them)"),
        (
            "ingest latency",
            f"p50 {ms(lat.get('p50'))}  p90 {ms(lat.get('p90'))}  "
            f"p99 {ms(lat.get('p99'))}  max {ms(lat.get('max'))}",
        ),
        ("result", "OK" if r.ok else "FAIL"),
    ]
    width = max(len(k) for k, _ in lines)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in lines)


def report_json(r: Report) -> str:
    return orjson.dumps({**asdict(r), "ok": r.ok}).decode()
