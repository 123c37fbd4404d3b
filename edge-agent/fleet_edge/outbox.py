"""The SQLite outbox: every recorded fix is committed here before anything is sent,
and deleted only when the cloud acknowledges it end to end.

``OutboxStore`` is the blocking SQLite code; ``Outbox`` runs it on ONE
dedicated worker thread so the event loop never waits on the SD card and the
connection never leaves the thread that opened it.

Caps: ``max_rows`` and ``max_bytes``. ``max_bytes`` bounds the outbox's whole
footprint on the card: the database file, its WAL and the WAL index (see
``DiskBudget``). When a commit would exceed either cap, the OLDEST rows are
deleted (the newest data is the most useful to a dispatcher, and a cap must
keep the card from filling). Drops are counted in the ``meta`` table, so the
count survives restarts, and reported in stats and logs: never silent.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from fleet_edge.records import OutboxRow

log = logging.getLogger(__name__)

T = TypeVar("T")

SCHEMA_VERSION = 1

PAGE_SIZE = 4096  # SQLite's default, stated so the budget below is exact
# On-disk cost of one row beyond its body: b-tree cell (rowid, header, boot,
# t), cell pointer, and leaf pages that are not quite full. Measured about
# 30 B for a 113 B body with append-only inserts; 32 plus FILL_FACTOR leave room.
ROW_OVERHEAD = 32
FILL_FACTOR = 0.92
# Always on disk whatever the rows: the WAL index (-shm, 32 KiB) and the pages
# of the schema, sqlite_sequence, meta and the b-tree interior.
FIXED_BYTES = 32 * 1024 + 8 * PAGE_SIZE
MIN_WAL_BYTES = 16 * PAGE_SIZE
MAX_WAL_BYTES = 4 * 1024 * 1024
MIN_MAX_BYTES = 160 * 1024
_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    -- AUTOINCREMENT: SQLite then never hands out a seq again, even after the
    -- rows holding the highest ones were deleted (acked) and across restarts;
    -- a plain INTEGER PRIMARY KEY would reuse max(seq)+1 on an emptied table.
    seq  INTEGER PRIMARY KEY AUTOINCREMENT,
    boot INTEGER NOT NULL,
    t    INTEGER NOT NULL,
    body BLOB    NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value INTEGER NOT NULL
) WITHOUT ROWID;
INSERT OR IGNORE INTO meta (key, value) VALUES ('dropped', 0);
"""


class OutboxError(RuntimeError):
    """The outbox file cannot be opened or used; the message is for the operator."""


@dataclass(frozen=True, slots=True)
class DiskBudget:
    """How ``max_bytes`` of card space is split between the WAL and the rows.

    The WAL is bounded by checkpointing every ``wal_bytes / 2`` (one commit may
    run past the threshold, a second half is its room) and truncating it back
    to ``wal_bytes`` (journal_size_limit). Rows are charged ``row_cost`` each,
    so the main file (free pages are reused, never grown past the high-water
    mark) stays within ``rows_bytes``.
    """

    wal_bytes: int
    rows_bytes: int

    @classmethod
    def for_cap(cls, max_bytes: int) -> DiskBudget:
        if max_bytes < MIN_MAX_BYTES:
            raise OutboxError(
                f"outbox.max_bytes {max_bytes} is too small: at least {MIN_MAX_BYTES} "
                "(the WAL and SQLite's own pages need part of it)"
            )
        wal = min(MAX_WAL_BYTES, max(MIN_WAL_BYTES, max_bytes // 8))
        return cls(wal, int((max_bytes - wal - FIXED_BYTES) * FILL_FACTOR))

    @property
    def checkpoint_pages(self) -> int:
        return max(1, self.wal_bytes // (PAGE_SIZE + 24) // 2)  # 24: WAL frame header


def row_cost(body_len: int) -> int:
    return body_len + ROW_OVERHEAD


@dataclass(frozen=True, slots=True)
class OutboxStats:
    depth: int  # rows waiting for a cloud ack
    bytes: int  # sum of their stored bodies
    oldest_ms: int | None  # fix time of the oldest row (lowest seq)
    dropped: int  # rows dropped by the caps since the outbox was created
    last_seq: int  # highest seq ever assigned (0 before the first)


@dataclass(frozen=True, slots=True)
class AppendResult:
    first_seq: int
    last_seq: int
    dropped: int  # rows this commit dropped to stay within the caps


class OutboxStore:
    """Blocking access to the outbox file. Use from one thread only."""

    def __init__(self, path: Path, max_rows: int, max_bytes: int) -> None:
        self._max_rows = max_rows
        self._budget = DiskBudget.for_cap(max_bytes)
        self._wal_path = path.with_name(path.name + "-wal")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise OutboxError(f"cannot create {path.parent}: {e.strerror}") from None
        try:
            # isolation_level=None: transactions are explicit (BEGIN IMMEDIATE ... COMMIT).
            self._db = sqlite3.connect(path, isolation_level=None)
        except sqlite3.Error as e:
            raise OutboxError(f"cannot open outbox {path}: {e}") from None
        try:
            self._init()
        except sqlite3.Error as e:
            self._db.close()
            raise OutboxError(f"cannot use outbox {path}: {e}") from None

    def _init(self) -> None:
        db = self._db
        db.execute(f"PRAGMA page_size={PAGE_SIZE}")  # only takes effect on a new file
        mode = db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if mode != "wal":
            raise sqlite3.OperationalError(f"journal_mode is {mode}, WAL refused")
        # FULL: every COMMIT fsyncs the WAL, so a fix whose commit returned
        # survives a power cut (the Pi has no battery-backed cache; NORMAL in
        # WAL mode may lose the last commits). The writer batches commits to
        # about one per second, so this costs about one fsync per second.
        db.execute("PRAGMA synchronous=FULL")
        # Readers (`fleet-agent status`) never block the writer in WAL mode;
        # this only covers the rare checkpoint overlap.
        db.execute("PRAGMA busy_timeout=5000")
        # The WAL is part of the disk cap: checkpoint often enough, and truncate
        # it back after a checkpoint instead of keeping its high-water mark.
        db.execute(f"PRAGMA wal_autocheckpoint={self._budget.checkpoint_pages}")
        db.execute(f"PRAGMA journal_size_limit={self._budget.wal_bytes}")
        db.executescript(_SCHEMA)
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version == 0:
            db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        elif version != SCHEMA_VERSION:
            raise sqlite3.DatabaseError(f"outbox schema v{version}, this agent knows v1")
        # Depth and size are kept in memory (one scan at start) because the caps
        # are checked on every commit and count(*) is a full scan in SQLite.
        self._rows, self._bytes = db.execute(
            "SELECT count(*), coalesce(sum(length(body)), 0) FROM outbox"
        ).fetchone()
        self._dropped = db.execute("SELECT value FROM meta WHERE key='dropped'").fetchone()[0]

    def close(self) -> None:
        self._db.close()

    def journal_mode(self) -> str:
        return str(self._db.execute("PRAGMA journal_mode").fetchone()[0])

    def last_seq(self) -> int:
        row = self._db.execute("SELECT seq FROM sqlite_sequence WHERE name='outbox'").fetchone()
        return int(row[0]) if row else 0

    def append(self, boot: int, records: Sequence[tuple[int, bytes]]) -> AppendResult:
        """Commit (t, body) records of one boot in one transaction; enforce the caps."""
        if not records:
            last = self.last_seq()
            return AppendResult(last + 1, last, 0)
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            before = self.last_seq()
            db.executemany(
                "INSERT INTO outbox (boot, t, body) VALUES (?, ?, ?)",
                [(boot, t, body) for t, body in records],
            )
            last = self.last_seq()
            rows = self._rows + len(records)
            size = self._bytes + sum(len(body) for _, body in records)
            cost = size + rows * ROW_OVERHEAD
            dropped, freed = self._drop_oldest(
                rows - self._max_rows, cost - self._budget.rows_bytes
            )
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        self._rows = rows - dropped
        self._bytes = size - freed
        self._dropped += dropped
        self._bound_wal()
        return AppendResult(before + 1, last, dropped)

    def _bound_wal(self) -> None:
        """Keep the WAL file within its share of the cap.

        The automatic (passive) checkpoint cannot restart the WAL while a reader
        (``fleet-agent status``, a monitoring script) holds a snapshot, and then
        the file keeps growing; once past half its budget, a TRUNCATE checkpoint
        waits for the readers (busy_timeout) and empties it. One stat() per commit.
        """
        try:
            size = self._wal_path.stat().st_size
        except FileNotFoundError:
            return
        if size > self._budget.wal_bytes // 2:
            # After the COMMIT: a failure here must not look like a failed
            # commit (the writer would commit the same fixes again).
            try:
                self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
            except sqlite3.Error as e:
                log.warning("outbox WAL checkpoint failed: %s", e)

    def _drop_oldest(self, excess_rows: int, excess_cost: int) -> tuple[int, int]:
        """Inside the append transaction: delete oldest rows until both caps hold.

        Returns (rows dropped, body bytes freed).
        """
        if excess_rows <= 0 and excess_cost <= 0:
            return 0, 0
        n = freed = cost = 0
        cutoff = None
        for seq, size in self._db.execute("SELECT seq, length(body) FROM outbox ORDER BY seq"):
            if n >= excess_rows and cost >= excess_cost:
                break
            cutoff, n, freed, cost = seq, n + 1, freed + size, cost + row_cost(size)
        if cutoff is None:
            return 0, 0
        self._db.execute("DELETE FROM outbox WHERE seq <= ?", (cutoff,))
        self._db.execute("UPDATE meta SET value = value + ? WHERE key='dropped'", (n,))
        return n, freed

    def live_rows(self, after: int, limit: int) -> list[OutboxRow]:
        """Rows with seq > after, NEWEST first (the freshest position goes out first)."""
        cur = self._db.execute(
            "SELECT seq, boot, t, body FROM outbox WHERE seq > ? ORDER BY seq DESC LIMIT ?",
            (after, limit),
        )
        return [OutboxRow(*r) for r in cur]

    def backlog_rows(self, after: int, upto: int, limit: int) -> list[OutboxRow]:
        """Rows with after < seq <= upto, OLDEST first."""
        cur = self._db.execute(
            "SELECT seq, boot, t, body FROM outbox WHERE seq > ? AND seq <= ? ORDER BY seq LIMIT ?",
            (after, upto, limit),
        )
        return [OutboxRow(*r) for r in cur]

    def rows_by_seq(self, seqs: Sequence[int]) -> list[OutboxRow]:
        """The rows still present among ``seqs``, in seq order."""
        out: list[OutboxRow] = []
        chunk = 500  # well under SQLite's bound-parameter limit
        for i in range(0, len(seqs), chunk):
            part = list(seqs[i : i + chunk])
            marks = ",".join("?" * len(part))
            cur = self._db.execute(
                f"SELECT seq, boot, t, body FROM outbox WHERE seq IN ({marks}) ORDER BY seq",
                part,
            )
            out += [OutboxRow(*r) for r in cur]
        out.sort()
        return out

    def delete_acked(self, boot: int, ranges: Sequence[tuple[int, int]]) -> int:
        """Delete the rows of ``boot`` inside the inclusive seq ranges; return how many."""
        db = self._db
        # A delete that a power cut rolls back only makes those fixes be sent
        # again (the cloud drops duplicates), so it does not need its own
        # fsync: the next insert commit (FULL) syncs the WAL, deletes included.
        db.execute("PRAGMA synchronous=NORMAL")
        try:
            db.execute("BEGIN IMMEDIATE")
            try:
                n = freed = 0
                for lo, hi in ranges:
                    for (size,) in db.execute(
                        "DELETE FROM outbox WHERE seq BETWEEN ? AND ? AND boot = ? "
                        "RETURNING length(body)",
                        (lo, hi, boot),
                    ).fetchall():
                        n, freed = n + 1, freed + size
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        finally:
            db.execute("PRAGMA synchronous=FULL")
        self._bound_wal()
        self._rows -= n
        self._bytes -= freed
        return n

    def drop_all(self) -> int:
        """Delete every row (a confirmed clear_outbox command), counted as dropped; how many."""
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            n = db.execute("DELETE FROM outbox").rowcount
            db.execute("UPDATE meta SET value = value + ? WHERE key='dropped'", (n,))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        self._rows = self._bytes = 0
        self._dropped += n
        self._bound_wal()
        return n

    def stats(self) -> OutboxStats:
        row = self._db.execute("SELECT t FROM outbox ORDER BY seq LIMIT 1").fetchone()
        return OutboxStats(
            depth=self._rows,
            bytes=self._bytes,
            oldest_ms=row[0] if row else None,
            dropped=self._dropped,
            last_seq=self.last_seq(),
        )


def read_stats(path: Path) -> OutboxStats:
    """Stats of an outbox file opened read-only (safe while the agent runs)."""
    if not path.exists():
        raise OutboxError(f"no outbox at {path}")
    try:
        db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    except sqlite3.Error as e:
        raise OutboxError(f"cannot open outbox {path}: {e}") from None
    try:
        depth, size = db.execute(
            "SELECT count(*), coalesce(sum(length(body)), 0) FROM outbox"
        ).fetchone()
        oldest = db.execute("SELECT t FROM outbox ORDER BY seq LIMIT 1").fetchone()
        last = db.execute("SELECT seq FROM sqlite_sequence WHERE name='outbox'").fetchone()
        dropped = db.execute("SELECT value FROM meta WHERE key='dropped'").fetchone()
        return OutboxStats(
            depth=depth,
            bytes=size,
            oldest_ms=oldest[0] if oldest else None,
            dropped=dropped[0] if dropped else 0,
            last_seq=last[0] if last else 0,
        )
    except sqlite3.Error as e:
        raise OutboxError(f"cannot read outbox {path}: {e}") from None
    finally:
        db.close()


class Outbox:
    """Async facade: each call runs on the outbox's own single worker thread."""

    def __init__(self, store: OutboxStore, executor: ThreadPoolExecutor) -> None:
        self._store = store
        self._executor = executor

    @classmethod
    async def open(cls, path: Path, max_rows: int, max_bytes: int) -> Outbox:
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="outbox")
        loop = asyncio.get_running_loop()
        try:
            store = await loop.run_in_executor(executor, OutboxStore, path, max_rows, max_bytes)
        except BaseException:
            executor.shutdown(wait=False)
            raise
        return cls(store, executor)

    async def _call(self, fn: Callable[..., T], *args: object) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def append(self, boot: int, records: Sequence[tuple[int, bytes]]) -> AppendResult:
        return await self._call(self._store.append, boot, records)

    async def live_rows(self, after: int, limit: int) -> list[OutboxRow]:
        return await self._call(self._store.live_rows, after, limit)

    async def backlog_rows(self, after: int, upto: int, limit: int) -> list[OutboxRow]:
        return await self._call(self._store.backlog_rows, after, upto, limit)

    async def rows_by_seq(self, seqs: Sequence[int]) -> list[OutboxRow]:
        return await self._call(self._store.rows_by_seq, seqs)

    async def delete_acked(self, boot: int, ranges: Sequence[tuple[int, int]]) -> int:
        return await self._call(self._store.delete_acked, boot, ranges)

    async def drop_all(self) -> int:
        return await self._call(self._store.drop_all)

    async def stats(self) -> OutboxStats:
        return await self._call(self._store.stats)

    async def last_seq(self) -> int:
        return await self._call(self._store.last_seq)

    async def journal_mode(self) -> str:
        return await self._call(self._store.journal_mode)

    async def close(self) -> None:
        # Close on the connection's own thread, then stop that thread.
        await self._call(self._store.close)
        self._executor.shutdown(wait=True)
