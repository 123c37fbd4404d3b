"""Reconnect delays: exponential with jitter.

A thousand devices that lose the broker together must not come back together,
or the broker's restart becomes a thundering herd. "Equal jitter" keeps half of
each delay fixed (so nobody spins) and spreads the other half at random.
"""

from __future__ import annotations

import random


class Backoff:
    def __init__(self, rng: random.Random, base: float = 1.0, cap: float = 60.0) -> None:
        self._rng = rng
        self.base = base
        self.cap = cap
        self.attempt = 0

    def next(self) -> float:
        ceiling = min(self.cap, self.base * 2.0 ** min(self.attempt, 30))
        self.attempt += 1
        return ceiling / 2 + self._rng.uniform(0.0, ceiling / 2)

    def reset(self) -> None:
        self.attempt = 0
