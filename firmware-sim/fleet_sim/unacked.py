"""Fixes a simulated vehicle has recorded but the cloud has not acked yet.

The vehicle keeps these in memory (it is a load generator, not the agent with
its SQLite outbox), bounded by a cap with drop-oldest. A fix is sent once as
"fresh"; if no end-to-end ack covers it within ``resend_after`` seconds it
becomes "due" and is sent again. Each further resend of the same fix waits
twice as long (up to ``max_backoff`` times the first wait): with no cloud
acking at all, a thousand vehicles would otherwise resend their whole backlog
every few seconds and turn a cloud outage into a broker overload.

Operations are O(log n) per fix at most, because a thousand vehicles with a
long backlog each call them every batch period.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable


class Unacked:
    def __init__(self, cap: int, resend_after: float = 10.0, max_backoff: int = 16) -> None:
        if cap < 1:
            raise ValueError("cap must be at least 1")
        if resend_after <= 0:
            raise ValueError("resend_after must be positive")
        self.cap = cap
        self.resend_after = resend_after
        self.max_backoff = max_backoff
        self._fix: dict[int, tuple[bytes, int]] = {}  # seq -> (encoded fix, fix time ms)
        self._sent: dict[int, tuple[float, int]] = {}  # seq -> (when due again, sends so far)
        # (due time, seq), earliest first. Entries of seqs acked, dropped or
        # re-sent since are recognised as stale and skipped when they surface.
        self._due: list[tuple[float, int]] = []
        self._low = 1  # no seq below this is held
        self._high = 0  # highest seq added
        self._fresh_from = 1  # seqs from here up have never been sent
        self.dropped = 0
        self.held_bytes = 0  # encoded size of the fixes held

    def __len__(self) -> int:
        return len(self._fix)

    def add(self, seq: int, body: bytes, t_ms: int) -> list[int]:
        """Hold a new fix; return the seqs the cap pushed out (oldest first)."""
        if seq <= self._high:
            raise ValueError(f"seq {seq} not above {self._high}")
        if not self._fix:
            self._low = seq
        self._fix[seq] = (body, t_ms)
        self.held_bytes += len(body)
        self._high = seq
        dropped: list[int] = []
        while len(self._fix) > self.cap:
            oldest = self._oldest()
            self.held_bytes -= len(self._fix.pop(oldest)[0])
            self._sent.pop(oldest, None)
            dropped.append(oldest)
        self.dropped += len(dropped)
        if dropped:
            self._compact()
        return dropped

    def _oldest(self) -> int:
        while self._low not in self._fix:
            self._low += 1
        return self._low

    def oldest_t_ms(self) -> int | None:
        return self._fix[self._oldest()][1] if self._fix else None

    def take_fresh(self, now: float, limit: int) -> list[tuple[int, bytes]]:
        """Up to limit never-sent fixes, in seq order, marked as sent at now."""
        out: list[tuple[int, bytes]] = []
        s = max(self._fresh_from, self._low)
        while s <= self._high and len(out) < limit:
            held = self._fix.get(s)
            if held is not None:
                out.append((s, held[0]))
                self._mark(s, now)
            s += 1
        self._fresh_from = s
        return out

    def take_due(self, now: float, limit: int) -> list[tuple[int, bytes]]:
        """Up to limit sent-but-unacked fixes whose wait is over, in seq order,
        marked as sent again at now."""
        seqs: list[int] = []
        while self._due and len(seqs) < limit and self._due[0][0] <= now:
            at, s = heapq.heappop(self._due)
            sent = self._sent.get(s)
            if sent is not None and sent[0] == at:
                seqs.append(s)
        seqs.sort()
        for s in seqs:
            self._mark(s, now)
        return [(s, self._fix[s][0]) for s in seqs]

    def _mark(self, seq: int, now: float) -> None:
        sends = self._sent[seq][1] + 1 if seq in self._sent else 1
        due = now + self.resend_after * min(2 ** (sends - 1), self.max_backoff)
        self._sent[seq] = (due, sends)
        heapq.heappush(self._due, (due, seq))

    def ack(self, ranges: Iterable[tuple[int, int]]) -> int:
        """Forget the fixes in these inclusive seq ranges; return how many were held."""
        n = 0
        for lo, hi in ranges:
            lo, hi = max(lo, self._low), min(hi, self._high)
            if hi < lo:
                continue
            # A hostile or buggy ack may span 2**53 seqs: walk whichever is shorter.
            if hi - lo + 1 <= len(self._fix):
                seqs: Iterable[int] = range(lo, hi + 1)
            else:
                seqs = [s for s in self._fix if lo <= s <= hi]
            for s in seqs:
                held = self._fix.pop(s, None)
                if held is not None:
                    self.held_bytes -= len(held[0])
                    self._sent.pop(s, None)
                    n += 1
        self._compact()
        return n

    def _compact(self) -> None:
        # Heap entries of acked or dropped seqs only leave when they reach the
        # front; rebuild when they outnumber the live ones, to bound memory.
        if len(self._due) > 2 * len(self._sent) + 64:
            self._due = [
                (at, s) for at, s in self._due if s in self._sent and self._sent[s][0] == at
            ]
            heapq.heapify(self._due)
