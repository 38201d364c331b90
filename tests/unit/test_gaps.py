"""Stage 1 applies nothing past a hole in an input partition's offsets (streams/gaps.py)."""

from __future__ import annotations

from streams.gaps import GapGuard, Verdict

K = ("support.tickets", 0)


def test_the_next_offset_or_no_position_applies() -> None:
    guard = GapGuard()
    assert guard.check(K, None, 41, now=0) is Verdict.APPLY
    assert guard.check(K, 42, 42, now=0) is Verdict.APPLY
    assert guard.take_due() == {}


def test_a_hole_asks_one_rewind_and_skips_until_the_missing_offset_arrives() -> None:
    guard = GapGuard(retry_after=2.0)
    # 1616 was dropped by the consumer: 1617..1620 arrive after position 1615.
    assert [guard.check(K, 1616, o, now=10.0) for o in (1617, 1618)] == [Verdict.SKIP] * 2
    assert guard.take_due() == {K: 1616}
    assert guard.check(K, 1616, 1619, now=11.0) is Verdict.SKIP  # fetched before the seek
    assert guard.take_due() == {}
    assert guard.check(K, 1616, 1616, now=11.5) is Verdict.APPLY  # the rewind delivers it
    assert guard.check(K, 1617, 1617, now=11.5) is Verdict.APPLY
    assert guard.rewinds == 1 and guard.accepted == 0


def test_a_hole_that_rewinds_do_not_fill_is_accepted() -> None:
    guard = GapGuard(retry_after=2.0, max_rewinds=3)
    verdicts = []
    for t in range(0, 10):  # retention deleted 100..149: the log starts at 150
        verdicts.append(guard.check(K, 100, 150, now=float(t)))
        guard.take_due()
        if verdicts[-1] is Verdict.ACCEPT:
            break  # 150 is applied: the position moves past the hole
    assert verdicts[:6] == [Verdict.SKIP] * 6  # rewinds at t = 0, 2 and 4
    assert verdicts[6] is Verdict.ACCEPT
    assert guard.rewinds == 3 and guard.accepted == 1


def test_partitions_are_independent_and_forgotten_on_revoke() -> None:
    guard = GapGuard()
    other = ("support.surveys", 0)
    assert guard.check(K, 5, 9, now=0) is Verdict.SKIP
    assert guard.check(other, 3, 3, now=0) is Verdict.APPLY
    guard.forget(K)
    assert guard.take_due() == {}
