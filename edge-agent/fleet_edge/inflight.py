"""Batches sent and not yet acknowledged by the cloud, and when to send them again.

A batch leaves the window only when the cloud's end-to-end ack covers all its
seqs. A PUBACK only tells us the broker has it (in memory); it is recorded so
that a batch the broker never confirmed can be re-sent at once after a
reconnect instead of waiting for its ack timeout.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable
from dataclasses import dataclass

# Re-sends of a batch the cloud keeps not acking back off up to this multiple
# of ack_timeout: with the cloud down but the broker up, re-sending the same
# window every ack_timeout would only burn cellular data.
RESEND_BACKOFF_CAP = 8


@dataclass(eq=False)
class Batch:
    boot: int
    seqs: set[int]  # not yet acked
    live: bool
    sent_at: float
    deadline: float  # re-send when this passes without a full ack
    attempts: int = 1
    pubacked: bool = False  # the broker confirmed the latest attempt


def merge_ranges(ranges: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    """Sorted, non-overlapping inclusive ranges (an ack from another implementation may overlap)."""
    merged: list[tuple[int, int]] = []
    for lo, hi in sorted(ranges):
        if merged and lo <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(hi, merged[-1][1]))
        else:
            merged.append((lo, hi))
    return merged


def _covered(ranges: list[tuple[int, int]], starts: list[int], seq: int) -> bool:
    i = bisect.bisect_right(starts, seq) - 1
    return i >= 0 and ranges[i][0] <= seq <= ranges[i][1]


class InFlight:
    def __init__(self, ack_timeout_s: float, max_batches: int) -> None:
        self._timeout = ack_timeout_s
        self._max = max_batches
        self._batches: list[Batch] = []

    def __len__(self) -> int:
        return len(self._batches)

    def tracks(self, batch: Batch) -> bool:
        return any(b is batch for b in self._batches)

    def has_room(self, *, live: bool = False) -> bool:
        """Room for one more batch. The last slot is kept for live fixes: a
        backlog drain that filled the window would otherwise make the newest
        position wait for an ack round trip (and behind the drain's bytes)."""
        limit = self._max if live or self._max == 1 else self._max - 1
        return len(self._batches) < limit

    def seqs(self) -> int:
        return sum(len(b.seqs) for b in self._batches)

    def add(self, boot: int, seqs: Iterable[int], *, live: bool, now: float) -> Batch:
        batch = Batch(boot, set(seqs), live, now, now + self._timeout)
        self._batches.append(batch)
        return batch

    def ack(self, boot: int, ranges: Iterable[tuple[int, int]]) -> int:
        """Apply a cloud ack; return how many in-flight seqs it covered."""
        rs = merge_ranges(ranges)
        starts = [lo for lo, _ in rs]
        covered = 0
        for b in self._batches:
            if b.boot != boot:
                continue
            gone = {s for s in b.seqs if _covered(rs, starts, s)}
            b.seqs -= gone
            covered += len(gone)
        self._batches = [b for b in self._batches if b.seqs]
        return covered

    def next_due(self, now: float) -> Batch | None:
        due = [b for b in self._batches if b.deadline <= now]
        return min(due, key=lambda b: b.deadline) if due else None

    def next_deadline(self) -> float | None:
        return min((b.deadline for b in self._batches), default=None)

    def resent(self, batch: Batch, seqs: Iterable[int], now: float) -> None:
        """The batch went out again with ``seqs`` (those still in the outbox)."""
        batch.seqs = set(seqs)
        batch.attempts += 1
        batch.pubacked = False
        batch.sent_at = now
        batch.deadline = now + self._timeout * min(2 ** (batch.attempts - 1), RESEND_BACKOFF_CAP)

    def forget(self, batch: Batch) -> None:
        """Its rows are gone (dropped by the caps): nothing left to deliver."""
        self._batches = [b for b in self._batches if b is not batch]

    def resend_unconfirmed(self, now: float) -> None:
        """After a reconnect: batches never PUBACKed died with the old connection;
        they are due now. A PUBACKed batch may have died with the broker (a
        broker killed before it saved or forwarded it): its ack, if any, waits in
        our persistent session and arrives within one ack timeout, so after that
        it goes again. Either way the backoff starts over: it is there for a
        cloud that keeps not answering on a working connection, and carried
        across reconnects it made confirmed batches wait up to 8 ack timeouts
        after every broker restart (p99 318 s in the broker kill -9 soak)."""
        for b in self._batches:
            b.attempts = 1
            b.deadline = now if not b.pubacked else min(b.deadline, now + self._timeout)
