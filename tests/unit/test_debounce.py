"""The KPI topic's debounce: a quiet window's change goes out at the next tick, a busy
window at most once per interval, and no change is left unpublished."""

from __future__ import annotations

import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from streams.debounce import Debounce


def test_a_quiet_key_goes_out_at_once() -> None:
    d: Debounce[str] = Debounce(1.0)
    d.changed("a")
    assert d.due(10.0) == ["a"]
    assert d.due(10.05) == []  # nothing changed since
    d.changed("a")
    assert d.due(11.5) == ["a"]  # its interval had passed: no wait


def test_a_busy_key_goes_out_once_per_interval() -> None:
    d: Debounce[str] = Debounce(1.0)
    d.changed("a")
    assert d.due(10.0) == ["a"]
    d.changed("a")
    assert d.due(10.4) == []
    assert d.held() == 1
    d.changed("a")
    assert d.due(10.95) == []
    assert d.due(11.0) == ["a"]  # exactly one interval after the last
    assert d.held() == 0


def test_keys_have_their_own_interval() -> None:
    d: Debounce[str] = Debounce(1.0)
    d.changed("a")
    assert d.due(10.0) == ["a"]
    d.changed("a")
    d.changed("b")
    assert d.due(10.1) == ["b"]
    assert d.due(11.0) == ["a"]


def test_a_discarded_key_is_not_published() -> None:
    d: Debounce[str] = Debounce(1.0)
    d.changed("a")
    d.discard("a")
    assert d.due(10.0) == []


def test_publication_times_are_forgotten_once_their_interval_is_over() -> None:
    d: Debounce[int] = Debounce(1.0)
    for key in range(10_000):
        d.changed(key)
    assert len(d.due(10.0)) == 10_000
    d.changed(1)
    assert d.due(11.0) == [1]
    # Only the key published last is still remembered: memory follows the keys that
    # changed within one interval, not every key ever seen.
    assert len(d._published) == 1
    assert len(d._order) == 1


@settings(max_examples=300, deadline=None)
@given(
    changes=st.lists(
        st.tuples(st.integers(0, 5), st.floats(0, 20, allow_nan=False)), max_size=60),
    tick=st.sampled_from([0.01, 0.05, 0.1, 0.3]),
)
def test_at_most_once_per_interval_and_nothing_left_behind(
        changes: list[tuple[int, float]], tick: float) -> None:
    interval = 1.0
    d: Debounce[int] = Debounce(interval)
    changes.sort(key=lambda c: c[1])
    published: dict[int, list[float]] = {}
    now, i = 0.0, 0
    while now < 25.0:
        while i < len(changes) and changes[i][1] <= now:
            d.changed(changes[i][0])
            i += 1
        for key in d.due(now):
            published.setdefault(key, []).append(now)
        now = round(now + tick, 9)
    for times in published.values():
        assert all(b - a >= interval - 1e-9 for a, b in itertools.pairwise(times))
    for key, at in changes:
        # Every change is followed by a publication of its key no later than one
        # interval after the previous publication, or the next tick.
        after = [t for t in published[key] if t >= at]
        before = [t for t in published[key] if t < at]
        latest = max(at, before[-1] + interval if before else at) + tick + 1e-9
        assert after and after[0] <= latest
    assert d.held() == 0


def test_drain_takes_ready_and_held_keys_at_once() -> None:
    d: Debounce[str] = Debounce(1.0)
    d.changed("a")
    assert d.due(0.0) == ["a"]
    d.changed("a")  # held: published less than an interval ago
    d.changed("b")
    assert d.pending() == 2
    assert sorted(d.drain()) == ["a", "b"]
    assert d.pending() == 0 and d.drain() == []
    assert d.due(5.0) == []  # nothing left over for the next tick
