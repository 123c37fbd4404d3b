"""How long to wait before retrying, and how fast to send: plain arithmetic, no I/O."""

from __future__ import annotations

import random


class Backoff:
    """Capped exponential backoff with jitter.

    Jitter spreads the reconnects of a whole fleet that lost the same broker at
    the same moment, so they do not all come back in the same second.
    """

    def __init__(self, first_s: float, cap_s: float, rng: random.Random | None = None) -> None:
        self._first = first_s
        self._cap = cap_s
        self._attempt = 0
        self._rng = rng or random.Random()

    def next_delay(self) -> float:
        ceiling = min(self._cap, self._first * 2**self._attempt)
        self._attempt = min(self._attempt + 1, 32)  # 2**32 * first is past any cap
        return self._rng.uniform(ceiling / 2, ceiling)

    def reset(self) -> None:
        self._attempt = 0


class TokenBucket:
    """Limits a rate of items (fixes) per second, allowing a burst of ``capacity``.

    Sending may overdraw the bucket by one batch (the size of a batch is only
    known once it has been read); the debt is then waited off, so the long-run
    rate still holds.
    """

    def __init__(self, rate: float, capacity: float, now: float) -> None:
        self._rate = rate
        self._capacity = capacity
        self._tokens = capacity
        self._stamp = now

    def _refill(self, now: float) -> None:
        self._tokens = min(self._capacity, self._tokens + (now - self._stamp) * self._rate)
        self._stamp = now

    def ready(self, now: float) -> bool:
        self._refill(now)
        return self._tokens > 0

    def consume(self, n: int, now: float) -> None:
        self._refill(now)
        self._tokens -= n

    def wait_s(self, now: float) -> float:
        """Seconds until ``ready`` turns true (0 when it already is)."""
        self._refill(now)
        if self._tokens > 0:
            return 0.0
        return (-self._tokens) / self._rate + 1e-3
