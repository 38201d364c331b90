"""A table recovery that stopped moving is read again (streams/stall.py)."""

from __future__ import annotations

from streams.stall import StallWatch


def test_a_partition_stuck_behind_its_highwater_is_read_again_from_its_offset() -> None:
    watch = StallWatch(after=20)
    assert watch.stalled({"changelog-3": (-1, 1043)}, now=0) == []
    assert watch.stalled({"changelog-3": (-1, 1043)}, now=19) == []
    assert watch.stalled({"changelog-3": (-1, 1043)}, now=20) == [("changelog-3", 0)]
    # The re-read gets its own 20 s before it is reported again.
    assert watch.stalled({"changelog-3": (-1, 1043)}, now=30) == []
    assert watch.stalled({"changelog-3": (-1, 1043)}, now=40) == [("changelog-3", 0)]


def test_progress_or_a_finished_partition_is_never_reported() -> None:
    watch = StallWatch(after=20)
    for t in range(0, 100, 10):
        progress = {"moving": (t * 10, 5000), "done": (700, 700)}
        assert watch.stalled(progress, now=float(t)) == []


def test_a_new_recovery_starts_the_clock_again() -> None:
    watch = StallWatch(after=20)
    watch.stalled({"changelog-0": (5, 50)}, now=0)
    watch.stalled({}, now=15)  # that recovery ended
    assert watch.stalled({"changelog-0": (5, 50)}, now=25) == []
    assert watch.stalled({"changelog-0": (5, 50)}, now=45) == [("changelog-0", 6)]
