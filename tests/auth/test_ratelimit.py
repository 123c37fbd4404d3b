"""The failed-login limiter's window, on a hand-driven clock."""

from __future__ import annotations

import pytest

from fleet_cloud.api import ratelimit
from fleet_cloud.api.ratelimit import FailureLimiter


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_window_slides_and_success_clears() -> None:
    clock = Clock()
    lim = FailureLimiter(3, 60, clock)
    key = ("a@b.test", "10.0.0.1")
    for _ in range(3):
        assert lim.retry_after(key) == 0
        lim.failed(key)
        clock.now += 10
    assert lim.retry_after(key) == 30  # the first failure leaves the window at 1060
    assert lim.retry_after(("a@b.test", "10.0.0.2")) == 0  # per address
    clock.now = 1060.5
    assert lim.retry_after(key) == 0  # one slot free again
    lim.failed(key)
    assert lim.retry_after(key) > 0
    lim.succeeded(key)
    assert lim.retry_after(key) == 0


def test_memory_stays_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ratelimit, "MAX_KEYS", 100)
    lim = FailureLimiter(10, 60, Clock())
    for i in range(1000):
        lim.failed((f"u{i}@b.test", "10.0.0.1"))
    assert len(lim._fails) <= 100
