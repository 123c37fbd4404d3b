"""Backoff, token bucket, in-flight window and backlog ranges: the publisher's arithmetic."""

from __future__ import annotations

import random

from fleet_edge.backlog import BacklogRanges
from fleet_edge.inflight import InFlight, merge_ranges
from fleet_edge.pacing import Backoff, TokenBucket


def test_backoff_grows_caps_jitters_and_resets() -> None:
    b = Backoff(1.0, 30.0, random.Random(1))
    delays = [b.next_delay() for _ in range(10)]
    ceilings = [1, 2, 4, 8, 16, 30, 30, 30, 30, 30]
    assert all(c / 2 <= d <= c for d, c in zip(delays, ceilings, strict=True))
    assert len(set(delays)) == len(delays)  # jittered
    b.reset()
    assert b.next_delay() <= 1.0


def test_token_bucket_rate() -> None:
    tb = TokenBucket(rate=10, capacity=5, now=0.0)
    assert tb.ready(0.0)
    tb.consume(8, 0.0)  # overdraw by one batch is allowed...
    assert not tb.ready(0.0)
    assert abs(tb.wait_s(0.0) - 0.3) < 0.01  # ...and waited off
    assert tb.ready(0.31)
    tb.consume(100, 1.0)
    assert not tb.ready(10.4) and tb.ready(10.6)
    assert tb.ready(1000.0)  # capped: no unbounded burst after a long idle
    tb.consume(6, 1000.0)
    assert not tb.ready(1000.0)


def test_inflight_window_ack_and_resend() -> None:
    w = InFlight(ack_timeout_s=10, max_batches=2)
    a = w.add(1, [1, 2, 3], live=False, now=0)
    assert w.has_room(live=True)
    assert not w.has_room()  # the last slot is kept for live fixes
    b = w.add(1, [4, 5], live=True, now=1)
    assert not w.has_room(live=True) and w.next_deadline() == 10
    assert w.ack(2, [(1, 5)]) == 0  # other boot: nothing
    assert w.ack(1, [(1, 2)]) == 2 and len(w) == 2
    assert w.next_due(9.9) is None
    assert w.next_due(10) is a
    w.resent(a, [3], now=10)
    assert a.attempts == 2 and a.deadline == 30  # second re-send waits 2x
    assert w.ack(1, [(3, 3), (5, 5), (4, 4)]) == 3 and len(w) == 0
    assert b.seqs == set()


def test_inflight_reconnect_makes_unconfirmed_due() -> None:
    w = InFlight(ack_timeout_s=10, max_batches=4)
    a = w.add(1, [1], live=False, now=0)
    b = w.add(1, [2], live=False, now=0)
    a.pubacked = True
    w.resend_unconfirmed(now=3)
    assert w.next_due(3) is b
    w.forget(b)
    assert w.next_due(3) is None and w.tracks(a) and not w.tracks(b)


def test_reconnect_restarts_the_backoff_of_confirmed_batches() -> None:
    """A batch the broker confirmed, re-sent three times into a silent cloud,
    waits 40 s for its fourth try; after a reconnect it waits one ack timeout."""
    w = InFlight(ack_timeout_s=10, max_batches=4)
    a = w.add(1, [1], live=False, now=0)
    for t in (10, 30, 70):
        w.resent(a, [1], now=t)
    a.pubacked = True
    assert a.deadline == 70 + 80  # backoff capped at 8x
    w.resend_unconfirmed(now=75)
    assert a.attempts == 1 and a.deadline == 85
    assert w.next_due(84.9) is None and w.next_due(85) is a
    w.resent(a, [1], now=85)
    assert a.deadline == 85 + 20  # and grows again from the start


def test_merge_ranges() -> None:
    assert merge_ranges([(5, 9), (1, 3), (4, 4), (8, 12), (20, 20)]) == [(1, 12), (20, 20)]


def test_backlog_ranges() -> None:
    r = BacklogRanges()
    assert not r
    r.add(0, 10)
    r.add(10, 15)  # adjacent: merged
    r.add(20, 20)  # empty: ignored
    r.add(30, 40)
    assert r.first() == (0, 15)
    r.advance(7)
    assert r.first() == (7, 15)
    r.advance(15)
    assert r.first() == (30, 40) and r.upper() == 40
    r.advance(99)
    assert not r
