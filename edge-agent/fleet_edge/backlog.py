"""Which stored seqs still wait to be sent for the first time, oldest first.

The outbox is scanned by seq ranges rather than by "not yet sent" flags, so
sending never writes to the card: only commits and acks do.
"""

from __future__ import annotations

from collections import deque


class BacklogRanges:
    """Ranges ``(after, upto]`` of seqs to send oldest-first, in ascending order."""

    def __init__(self) -> None:
        self._ranges: deque[tuple[int, int]] = deque()

    def __bool__(self) -> bool:
        return bool(self._ranges)

    def add(self, after: int, upto: int) -> None:
        """Append a range above every range already queued (merged when adjacent)."""
        if upto <= after:
            return
        if self._ranges and after <= self._ranges[-1][1]:
            last_after, last_upto = self._ranges.pop()
            after, upto = min(after, last_after), max(upto, last_upto)
        self._ranges.append((after, upto))

    def first(self) -> tuple[int, int]:
        return self._ranges[0]

    def advance(self, sent_upto: int) -> None:
        """Everything up to ``sent_upto`` in the first range has been sent (or is gone)."""
        after, upto = self._ranges[0]
        if sent_upto >= upto:
            self._ranges.popleft()
        else:
            self._ranges[0] = (max(after, sent_upto), upto)

    def upper(self) -> int:
        return self._ranges[-1][1] if self._ranges else 0
