"""The SQLite outbox: seqs never reused, WAL, deletes by ack ranges, caps, crash safety."""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from fleet_edge.gps.fix import GpsFix
from fleet_edge.outbox import (
    MIN_MAX_BYTES,
    ROW_OVERHEAD,
    DiskBudget,
    Outbox,
    OutboxError,
    OutboxStore,
    read_stats,
    row_cost,
)
from fleet_edge.outbox_writer import OutboxWriter
from fleet_edge.records import OutboxRow, build_payloads, encode_fix, with_seq
from fleet_wire import CT_JSON, CT_JSON_ZLIB, decode_telemetry, seq_ranges

T0 = 1_715_949_319_000
BIG = 10**9


def body(i: int) -> bytes:
    return encode_fix(GpsFix(t=T0 + i * 1000, lat=48.0 + i * 1e-5, lon=11.0, speed_kmh=36.0))


def records(start: int, n: int) -> list[tuple[int, bytes]]:
    return [(T0 + i * 1000, body(i)) for i in range(start, start + n)]


def store(path: Path, max_rows: int = BIG, max_bytes: int = BIG) -> OutboxStore:
    return OutboxStore(path, max_rows, max_bytes)


def test_wal_mode_and_schema(tmp_path: Path) -> None:
    s = store(tmp_path / "sub" / "outbox.db")  # parent directories created
    assert s.journal_mode() == "wal"
    s.close()
    db = sqlite3.connect(tmp_path / "sub" / "outbox.db")
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    sql = db.execute("SELECT sql FROM sqlite_master WHERE name='outbox'").fetchone()[0]
    assert "AUTOINCREMENT" in sql
    db.close()


def test_seq_monotonic_and_never_reused_across_reopen(tmp_path: Path) -> None:
    path = tmp_path / "outbox.db"
    s = store(path)
    r1 = s.append(7, records(0, 3))
    assert (r1.first_seq, r1.last_seq) == (1, 3)
    assert s.delete_acked(7, [(1, 3)]) == 3
    assert s.stats().depth == 0
    s.close()
    s = store(path)  # restart with an empty table: seqs must continue, not restart at 1
    r2 = s.append(8, records(3, 2))
    assert (r2.first_seq, r2.last_seq) == (4, 5)
    assert [r.seq for r in s.backlog_rows(0, 100, 100)] == [4, 5]
    assert s.stats().last_seq == 5
    s.close()


def test_delete_acked_by_ranges_and_boot(tmp_path: Path) -> None:
    s = store(tmp_path / "outbox.db")
    s.append(1, records(0, 5))  # seqs 1..5, boot 1
    s.append(2, records(5, 5))  # seqs 6..10, boot 2
    assert s.delete_acked(1, [(1, 2), (4, 7)]) == 4  # 6, 7 belong to boot 2: kept
    assert s.delete_acked(1, [(1, 2)]) == 0  # idempotent
    assert [r.seq for r in s.backlog_rows(0, 100, 100)] == [3, 6, 7, 8, 9, 10]
    st = s.stats()
    assert st.depth == 6 and st.oldest_ms == T0 + 2000
    assert st.bytes == sum(len(r.body) for r in s.backlog_rows(0, 100, 100))
    s.close()


def test_live_newest_first_backlog_oldest_first(tmp_path: Path) -> None:
    s = store(tmp_path / "outbox.db")
    s.append(1, records(0, 10))
    assert [r.seq for r in s.live_rows(6, 3)] == [10, 9, 8]
    assert [r.seq for r in s.backlog_rows(2, 8, 3)] == [3, 4, 5]
    assert [r.seq for r in s.rows_by_seq([9, 2, 42])] == [2, 9]
    s.close()


def test_row_cap_drops_oldest_and_counts_persistently(tmp_path: Path) -> None:
    path = tmp_path / "outbox.db"
    s = store(path, max_rows=5)
    s.append(1, records(0, 4))
    r = s.append(1, records(4, 4))  # 8 rows > 5: the 3 oldest go
    assert r.dropped == 3
    assert [x.seq for x in s.backlog_rows(0, 100, 100)] == [4, 5, 6, 7, 8]
    assert s.stats().dropped == 3 and s.stats().depth == 5
    s.close()
    s = store(path, max_rows=5)
    assert s.stats().dropped == 3  # survives restarts
    s.append(1, records(8, 1))
    assert s.stats().dropped == 4
    s.close()
    assert read_stats(path).dropped == 4


def test_byte_cap_drops_oldest(tmp_path: Path) -> None:
    # max_bytes bounds the footprint on disk (file + WAL + index), so rows get
    # only part of it; tests/faults/test_outbox_cap.py checks the real file sizes.
    budget = DiskBudget.for_cap(MIN_MAX_BYTES)
    fit = used = 0
    while used + row_cost(len(body(fit))) <= budget.rows_bytes:
        used, fit = used + row_cost(len(body(fit))), fit + 1
    s = store(tmp_path / "outbox.db", max_bytes=MIN_MAX_BYTES)
    s.append(1, records(0, fit))
    assert s.stats().dropped == 0
    s.append(1, records(fit, 3))
    st = s.stats()
    assert st.dropped >= 3 and st.depth + st.dropped == fit + 3
    assert s.backlog_rows(0, 100, 1)[0].seq == st.dropped + 1  # the oldest went
    assert st.bytes + st.depth * ROW_OVERHEAD <= budget.rows_bytes
    s.close()
    with pytest.raises(OutboxError, match="too small"):
        store(tmp_path / "small.db", max_bytes=MIN_MAX_BYTES - 1)


_KILLED_WRITER = """
import os, signal, sys
from pathlib import Path
from fleet_edge.outbox import OutboxStore
s = OutboxStore(Path(sys.argv[1]), 10**9, 10**9)
s.append(3, [(1715949319000 + i, b'{"t":%d,"lat":1.0,"lon":2.0}' % i) for i in range(50)])
os.kill(os.getpid(), signal.SIGKILL)  # no close, no checkpoint: as a power cut would leave it
"""


def test_committed_rows_survive_kill_9(tmp_path: Path) -> None:
    path = tmp_path / "outbox.db"
    for _ in range(2):
        p = subprocess.run([sys.executable, "-c", _KILLED_WRITER, str(path)], timeout=60)
        assert p.returncode == -9
    s = store(path)
    rows = s.backlog_rows(0, 1000, 1000)
    assert [r.seq for r in rows] == list(range(1, 101))
    assert s.append(4, records(0, 1)).first_seq == 101
    s.close()


def test_read_stats_read_only(tmp_path: Path) -> None:
    path = tmp_path / "outbox.db"
    with pytest.raises(OutboxError, match="no outbox"):
        read_stats(path)
    s = store(path)
    s.append(1, records(0, 3))
    st = read_stats(path)  # while the writer holds it open
    assert (st.depth, st.last_seq, st.oldest_ms) == (3, 3, T0)
    s.close()


def test_unusable_path_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a dir")
    with pytest.raises((OutboxError, OSError)):
        store(tmp_path / "file" / "outbox.db")
    (tmp_path / "junk.db").write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(OutboxError, match="cannot"):
        store(tmp_path / "junk.db")


# --- records: stored body -> batch payload ---------------------------------------------


def test_body_has_no_seq_and_splice_makes_valid_batch() -> None:
    b = body(0)
    assert b.startswith(b'{"t":') and b"seq" not in b
    assert with_seq(42, b) == b'{"seq":42,' + b[1:]
    rows = [OutboxRow(i, 9, T0, body(i)) for i in range(1, 4)]
    ((part, payload, ct),) = build_payloads(9, rows)
    assert part == rows and ct in (CT_JSON, CT_JSON_ZLIB)
    boot, fixes, bad = decode_telemetry(payload, ct)
    assert boot == 9 and not bad
    assert [f.seq for f in fixes] == [1, 2, 3] and fixes[0].spd == 36.0


def test_large_batch_compressed() -> None:
    rows = [OutboxRow(i, 1, T0, body(i)) for i in range(1, 201)]
    ((_, payload, ct),) = build_payloads(1, rows)
    assert ct == CT_JSON_ZLIB
    assert len(decode_telemetry(payload, ct)[1]) == 200


def test_oversized_batch_is_split() -> None:
    import os

    # Incompressible bodies (random hex) too big for one payload in total.
    rows = [
        OutboxRow(i, 1, T0, b'{"t":1,"x":"%s"}' % os.urandom(2000).hex().encode())
        for i in range(1, 201)
    ]
    parts = build_payloads(1, rows)
    assert len(parts) > 1
    assert [r for p, _, _ in parts for r in p] == rows
    assert all(len(payload) <= 256 * 1024 for _, payload, _ in parts)


# --- async facade and writer -------------------------------------------------------------


async def test_facade_runs_on_one_dedicated_thread(tmp_path: Path) -> None:
    ob = await Outbox.open(tmp_path / "outbox.db", BIG, BIG)
    try:
        threads = {await ob._call(threading.get_ident) for _ in range(5)}
        assert len(threads) == 1 and threading.get_ident() not in threads
        await ob.append(1, records(0, 2))
        assert (await ob.stats()).depth == 2
    finally:
        await ob.close()


async def test_writer_batches_commits_and_flushes_on_stop(tmp_path: Path) -> None:
    ob = await Outbox.open(tmp_path / "outbox.db", BIG, BIG)
    committed: list[int] = []
    w = OutboxWriter(ob, 5, commit_interval_s=0.3, commit_max_rows=1000, on_commit=committed.append)
    task = asyncio.create_task(w.run())
    try:
        for i in range(3):
            w.submit(GpsFix(t=T0 + i, lat=1.0, lon=2.0))
        await asyncio.sleep(1.0)
        assert committed == [3] and w.stats.commits == 1  # one commit for the three
        for i in range(3, 5):
            w.submit(GpsFix(t=T0 + i, lat=1.0, lon=2.0))
        w.submit(GpsFix(t=1, lat=1.0, lon=2.0))  # time before 2000: refused by the schema
        w.stop()  # before the interval elapses: still committed
        await asyncio.wait_for(task, 5)
        assert committed == [3, 5] and w.stats.invalid == 1
        assert (await ob.stats()).depth == 5
    finally:
        task.cancel()
        await ob.close()


async def test_writer_commits_early_at_max_rows(tmp_path: Path) -> None:
    ob = await Outbox.open(tmp_path / "outbox.db", BIG, BIG)
    committed: list[int] = []
    w = OutboxWriter(ob, 5, commit_interval_s=60, commit_max_rows=10, on_commit=committed.append)
    task = asyncio.create_task(w.run())
    try:
        for i in range(10):
            w.submit(GpsFix(t=T0 + i, lat=1.0, lon=2.0))
        for _ in range(100):
            if committed:
                break
            await asyncio.sleep(0.05)
        assert committed == [10]
    finally:
        w.stop()
        await asyncio.wait_for(task, 5)
        await ob.close()


async def test_writer_keeps_fixes_when_commit_fails(tmp_path: Path) -> None:
    ob = await Outbox.open(tmp_path / "outbox.db", BIG, BIG)
    committed: list[int] = []
    w = OutboxWriter(ob, 5, commit_interval_s=0.1, commit_max_rows=1000, on_commit=committed.append)
    await ob._call(ob._store.close)  # every SQLite call now fails, as on a dead card
    task = asyncio.create_task(w.run())
    try:
        for i in range(3):
            w.submit(GpsFix(t=T0 + i, lat=1.0, lon=2.0))
        for _ in range(100):
            if w.stats.commit_errors >= 2:
                break
            await asyncio.sleep(0.05)
        assert w.stats.commit_errors >= 2 and w.pending == 3 and not task.done()
        assert committed == []
    finally:
        w.stop()
        await asyncio.wait_for(task, 5)
        ob._executor.shutdown()


def test_ranges_helper_matches_wire() -> None:
    assert seq_ranges([3, 1, 2, 7]) == [(1, 3), (7, 7)]
