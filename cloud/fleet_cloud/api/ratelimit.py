"""Failed-login limiter: at most N failures per (email, client IP) per window.

Only failures count, so a user signing in often is never locked out, while a
password guesser gets N tries a window. Once over, every attempt for that key
(right password or not) answers 429 until the oldest failure leaves the window:
otherwise the guesser would still learn which guess was right.

In-process: with several API processes each keeps its own count, so the bound
is N per process (documented in docs/api.md).
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable

MAX_KEYS = 100_000  # memory bound: keys whose failures have all expired go first


class FailureLimiter:
    def __init__(
        self, max_failures: int, window_s: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.max = max_failures
        self.window = window_s
        self.clock = clock
        self._fails: dict[tuple[str, str], deque[float]] = {}

    def _recent(self, key: tuple[str, str]) -> deque[float] | None:
        q = self._fails.get(key)
        if q is None:
            return None
        cutoff = self.clock() - self.window
        while q and q[0] <= cutoff:
            q.popleft()
        if not q:
            del self._fails[key]
            return None
        return q

    def retry_after(self, key: tuple[str, str]) -> int:
        """0 when an attempt may go ahead, else whole seconds to wait."""
        q = self._recent(key)
        if q is None or len(q) < self.max:
            return 0
        return max(1, math.ceil(q[0] + self.window - self.clock()))

    def failed(self, key: tuple[str, str]) -> None:
        if len(self._fails) >= MAX_KEYS:
            self._sweep()
        self._fails.setdefault(key, deque(maxlen=self.max)).append(self.clock())

    def succeeded(self, key: tuple[str, str]) -> None:
        self._fails.pop(key, None)

    def _sweep(self) -> None:
        for key in list(self._fails):
            self._recent(key)
        while len(self._fails) >= MAX_KEYS:  # all recent: drop the oldest-inserted
            del self._fails[next(iter(self._fails))]
