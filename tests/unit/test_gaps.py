"""A worker applies nothing past a hole in a partition's offsets (streams/gaps.py)."""

from __future__ import annotations

from streams.gaps import GapGuard, Verdict

K = ("support.tickets", 0)


def test_the_next_offset_a_redelivered_one_or_no_position_applies() -> None:
    guard = GapGuard()
    assert guard.check(K, None, 41, now=0) is Verdict.APPLY
    assert guard.check(K, 42, 42, now=0) is Verdict.APPLY
    assert guard.check(K, 43, 17, now=0) is Verdict.APPLY  # the caller knows it is old
    assert guard.take_due() == {}


def test_a_dropped_message_is_read_again_before_anything_after_it() -> None:
    guard = GapGuard(retry_after=2.0)
    # 1616 was dropped by the consumer: 1617..1620 arrive after 1615.
    assert [guard.check(K, 1616, o, now=10.0) for o in (1617, 1618)] == [Verdict.SKIP] * 2
    assert guard.take_due() == {K: 1616} and guard.is_open(K)
    guard.probed(K, 1616, first=1616)  # the broker has it: the worker seeks back
    assert guard.check(K, 1616, 1619, now=10.5) is Verdict.SKIP  # fetched before the seek
    assert guard.take_due() == {}
    assert guard.check(K, 1616, 1616, now=10.6) is Verdict.APPLY
    assert guard.check(K, 1617, 1617, now=10.6) is Verdict.APPLY
    assert (guard.rewinds, guard.bridged) == (1, 0) and not guard.is_open(K)


def test_a_hole_without_records_is_bridged_after_one_probe() -> None:
    guard = GapGuard()
    # A transactional producer's commit marker sits at offset 7.
    assert guard.check(K, 7, 8, now=0) is Verdict.SKIP
    assert guard.take_due() == {K: 7}
    guard.probed(K, 7, first=8)
    assert guard.check(K, 7, 8, now=0.1) is Verdict.APPLY  # redelivered after the seek
    assert guard.check(K, 9, 9, now=0.1) is Verdict.APPLY
    assert (guard.rewinds, guard.bridged) == (0, 1)


def test_a_hole_still_open_after_its_probe_is_probed_again_without_new_input() -> None:
    guard = GapGuard(retry_after=2.0)
    guard.check(K, 100, 150, now=0)
    assert guard.take_due() == {K: 100}
    guard.probed(K, 100, first=100)  # a rewind, whose messages get dropped again
    guard.check(K, 100, 151, now=1.0)
    assert guard.take_due() == {} and guard.overdue(now=1.5) == {}
    # Nothing more arrives (every later message was skipped): the timer asks again.
    assert guard.overdue(now=2.0) == {K: 100}
    assert guard.overdue(now=3.0) == {}
    assert guard.overdue(now=4.0) == {K: 100}
    assert guard.check(K, 100, 100, now=4.1) is Verdict.APPLY
    assert guard.overdue(now=10.0) == {}


def test_partitions_are_independent_and_forgotten_on_revoke() -> None:
    guard = GapGuard()
    other = ("support.surveys", 0)
    assert guard.check(K, 5, 9, now=0) is Verdict.SKIP
    assert guard.check(other, 3, 3, now=0) is Verdict.APPLY
    guard.forget(K)
    assert guard.take_due() == {}
