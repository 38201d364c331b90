"""Which changed windows may be published now: at most one record per key per interval.

SPEC section 4 re-emits a window whenever it changes, debounced to at most once per
second per key. A single timer that publishes every changed window once a second obeys
that, but makes every change wait for the next tick: up to a second even on a quiet
queue, where a new call should show at once. Here the timer ticks much faster and each
key keeps its own interval: a key that changes after a quiet interval goes out at the
next tick, and a key that keeps changing goes out once per interval with its latest
values. Free of any Faust import.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)


class Debounce(Generic[K]):
    """Changed keys, and when each was last published (monotonic seconds)."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._ready: set[K] = set()  # changed, free to go out
        self._held: set[K] = set()  # changed, published less than an interval ago
        self._published: dict[K, float] = {}
        # (time, key) in publication order: the keys whose interval is over are at the
        # front, so each tick touches only those, not every changed key.
        self._order: deque[tuple[float, K]] = deque()

    def changed(self, key: K) -> None:
        if key in self._published:
            self._held.add(key)
        else:
            self._ready.add(key)

    def discard(self, key: K) -> None:
        self._ready.discard(key)
        self._held.discard(key)

    def due(self, now: float) -> list[K]:
        """Take the changed keys that may be published at `now` and note them as
        published; the others stay pending until their interval has passed."""
        since = now - self.interval
        order, published, held = self._order, self._published, self._held
        while order and order[0][0] <= since:
            at, key = order.popleft()
            if published.get(key) == at:  # not published again since
                del published[key]
                if key in held:
                    held.remove(key)
                    self._ready.add(key)
        due = list(self._ready)
        self._ready.clear()
        for key in due:
            published[key] = now
            order.append((now, key))
        return due

    def held(self) -> int:
        """Changed keys waiting for their interval to pass."""
        return len(self._held)

    def pending(self) -> int:
        """Changed keys not taken for publication yet."""
        return len(self._ready) + len(self._held)

    def drain(self) -> list[K]:
        """Take every changed key, interval or not (a worker about to stop)."""
        keys = list(self._ready | self._held)
        self._ready.clear()
        self._held.clear()
        return keys
