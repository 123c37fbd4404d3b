"""The fleet vehicle's in-memory store of unacked fixes."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fleet_sim.unacked import Unacked


def filled(n: int, cap: int = 100, resend_after: float = 10.0) -> Unacked:
    u = Unacked(cap, resend_after)
    for s in range(1, n + 1):
        u.add(s, b"x%d" % s, 1_000 * s)
    return u


def seqs(items: list[tuple[int, bytes]]) -> list[int]:
    return [s for s, _ in items]


def test_fresh_fixes_go_out_once_in_order() -> None:
    u = filled(5)
    assert seqs(u.take_fresh(0.0, 3)) == [1, 2, 3]
    assert seqs(u.take_fresh(0.0, 10)) == [4, 5]
    assert u.take_fresh(0.0, 10) == []
    u.add(6, b"x6", 6_000)
    assert seqs(u.take_fresh(1.0, 10)) == [6]


def test_unacked_fixes_fall_due_after_the_timeout_then_back_off() -> None:
    u = filled(3, resend_after=10.0)
    u.take_fresh(0.0, 10)
    assert u.take_due(9.9, 10) == []
    assert seqs(u.take_due(10.0, 10)) == [1, 2, 3]
    # Second resend waits twice as long.
    assert u.take_due(29.9, 10) == []
    assert seqs(u.take_due(30.0, 10)) == [1, 2, 3]
    assert u.take_due(69.9, 10) == []
    assert seqs(u.take_due(70.0, 2)) == [1, 2]  # limited
    assert seqs(u.take_due(70.0, 2)) == [3]


def test_backoff_is_capped() -> None:
    u = Unacked(10, resend_after=1.0, max_backoff=4)
    u.add(1, b"a", 0)
    u.take_fresh(0.0, 1)
    now = 0.0
    waits = []
    for _ in range(6):
        nxt = now
        while not u.take_due(nxt, 1):
            nxt += 0.5
        waits.append(nxt - now)
        now = nxt
    assert waits == [1.0, 2.0, 4.0, 4.0, 4.0, 4.0]


def test_acked_fixes_are_forgotten_and_never_resent() -> None:
    u = filled(10)
    u.take_fresh(0.0, 100)
    assert u.ack([(1, 3), (7, 7), (50, 60)]) == 4
    assert len(u) == 6
    assert seqs(u.take_due(10.0, 100)) == [4, 5, 6, 8, 9, 10]
    assert u.ack([(1, 3)]) == 0  # a duplicate ack is harmless


def test_huge_ack_range_is_cheap() -> None:
    u = filled(10)
    assert u.ack([(1, 2**53 - 1)]) == 10
    assert len(u) == 0
    assert u.held_bytes == 0


def test_cap_drops_oldest_and_says_which() -> None:
    u = filled(3, cap=3)
    u.take_fresh(0.0, 10)
    assert u.add(4, b"x4", 4_000) == [1]
    u.ack([(2, 2)])
    assert u.add(5, b"x5", 5_000) == []
    assert u.add(6, b"x6", 6_000) == [3]
    assert u.dropped == 2
    assert u.oldest_t_ms() == 4_000
    assert seqs(u.take_fresh(0.0, 10)) == [4, 5, 6]
    assert seqs(u.take_due(100.0, 10)) == [4, 5, 6]


def test_seq_must_grow() -> None:
    u = filled(3)
    with pytest.raises(ValueError):
        u.add(3, b"again", 0)


@given(
    st.lists(
        st.one_of(
            st.tuples(st.just("add")),
            st.tuples(st.just("ack"), st.integers(1, 60), st.integers(0, 10)),
            st.tuples(st.just("send"), st.floats(0, 100)),
        ),
        max_size=80,
    )
)
def test_model(ops: list[tuple[Any, ...]]) -> None:
    """Against a plain set: held fixes are exactly those added, not acked, not dropped."""
    u = Unacked(cap=20, resend_after=5.0)
    held: dict[int, bytes] = {}
    seq = 0
    now = 0.0
    for op in ops:
        if op[0] == "add":
            seq += 1
            held[seq] = b"%d" % seq
            for s in u.add(seq, held[seq], seq):
                del held[s]
        elif op[0] == "ack":
            lo, n = op[1], op[2]
            u.ack([(lo, lo + n)])
            for s in range(lo, lo + n + 1):
                held.pop(s, None)
        else:
            now += op[1]
            for s, body in u.take_fresh(now, 1000) + u.take_due(now, 1000):
                assert held[s] == body
        assert len(u) == len(held) <= 20
        assert u.held_bytes == sum(map(len, held.values()))
    # Everything still held goes out again eventually.
    sent = set(seqs(u.take_fresh(now, 1000)))
    sent |= set(seqs(u.take_due(now + 10_000, 1000)))
    assert sent == set(held)
