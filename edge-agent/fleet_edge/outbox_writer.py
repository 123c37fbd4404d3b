"""Collect recorded fixes and commit them to the outbox in batches.

One commit (one fsync) per ``commit_interval_s``, or sooner once
``commit_max_rows`` fixes wait: the SD card sees about one small write per
second whatever the GPS rate. After each commit the publisher is told the new
highest seq, so live fixes leave within a commit interval.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from pydantic import ValidationError

from fleet_edge.gps.fix import GpsFix
from fleet_edge.logs import Every
from fleet_edge.outbox import Outbox
from fleet_edge.records import encode_fix

log = logging.getLogger(__name__)

# Fixes waiting for a commit. At one fix per second this is hours of a stalled
# card; past it the newest fixes are refused (and counted) rather than memory grown.
QUEUE_MAX = 10_000
WARN_EVERY_S = 60.0


@dataclass
class WriterStats:
    committed: int = 0
    commits: int = 0
    invalid: int = 0  # fixes the wire schema refused (never stored)
    queue_full: int = 0  # fixes lost because the queue was full
    cap_dropped: int = 0  # rows the outbox caps dropped during this run
    commit_errors: int = 0  # failed commits (card full, I/O error); the fixes were kept


class OutboxWriter:
    def __init__(
        self,
        outbox: Outbox,
        boot: int,
        commit_interval_s: float,
        commit_max_rows: int,
        on_commit: Callable[[int], None],
    ) -> None:
        self._outbox = outbox
        self._boot = boot
        self._interval = commit_interval_s
        self._max_rows = commit_max_rows
        self._on_commit = on_commit
        self._pending: deque[tuple[int, bytes]] = deque()
        self._arrived = asyncio.Event()  # something to commit (or stop requested)
        self._full = asyncio.Event()  # commit_max_rows reached (or stop): commit now
        self._stopping = False
        self._drop_warning = Every(WARN_EVERY_S)
        self._error_warning = Every(WARN_EVERY_S)
        self.stats = WriterStats()

    def submit(self, fix: GpsFix) -> None:
        """Queue a recorded fix for the next commit (never blocks)."""
        try:
            body = encode_fix(fix)  # position + engine values
        except ValidationError as e:
            self.stats.invalid += 1
            log.debug("fix refused by the wire schema: %s", e)
            return
        if len(self._pending) >= QUEUE_MAX:
            self.stats.queue_full += 1
            return
        self._pending.append((fix.t, body))
        self._arrived.set()
        if len(self._pending) >= self._max_rows:
            self._full.set()

    async def run(self) -> None:
        """Commit until ``stop()``; then commit what is left and return."""
        try:
            while not self._stopping:
                await self._arrived.wait()
                if not self._full.is_set():
                    # Gather fixes for up to one interval: one fsync for all of them.
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._full.wait(), self._interval)
                await self._commit(self._take_all())
        except asyncio.CancelledError:
            # Cancelled without stop() (a sibling task failed): still keep what we hold.
            await self._commit(self._take_all())
            raise
        await self._commit(self._take_all())

    def stop(self) -> None:
        """Ask run() to commit what is pending and return."""
        self._stopping = True
        self._arrived.set()
        self._full.set()

    @property
    def pending(self) -> int:
        return len(self._pending)

    def _take_all(self) -> list[tuple[int, bytes]]:
        items = list(self._pending)
        self._pending.clear()
        self._arrived.clear()
        self._full.clear()
        return items

    async def _commit(self, records: list[tuple[int, bytes]]) -> None:
        if not records:
            return
        try:
            result = await self._outbox.append(self._boot, records)
        except sqlite3.Error as e:
            # Card full or I/O error: keep the fixes in memory (bounded) and
            # retry after an interval rather than take the whole agent down.
            self.stats.commit_errors += 1
            if self._error_warning.due():
                log.error("outbox commit failed (%s); %d fixes kept in memory", e, len(records))
            self._pending.extendleft(reversed(records))
            while len(self._pending) > QUEUE_MAX:
                self._pending.pop()
                self.stats.queue_full += 1
            self._arrived.set()
            if not self._stopping:
                await asyncio.sleep(self._interval)
            return
        self.stats.commits += 1
        self.stats.committed += len(records)
        if result.dropped:
            self.stats.cap_dropped += result.dropped
            if self._drop_warning.due():
                log.warning(
                    "outbox full: dropped the %d oldest fixes to stay within the caps "
                    "(%d this run)",
                    result.dropped,
                    self.stats.cap_dropped,
                )
        self._on_commit(result.last_seq)
