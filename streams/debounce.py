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

from collections.abc import Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)


class Debounce(Generic[K]):
    """Changed keys, and when each was last published (monotonic seconds)."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self.pending: set[K] = set()
        # Insertion order is publication order (a key is re-inserted when published), so
        # the keys whose interval has passed are always at the front.
        self._published: dict[K, float] = {}

    def changed(self, key: K) -> None:
        self.pending.add(key)

    def discard(self, key: K) -> None:
        self.pending.discard(key)

    def due(self, now: float) -> list[K]:
        """Take the changed keys that may be published at `now` and note them as
        published; the others stay pending until their interval has passed."""
        since = now - self.interval
        published = self._published
        while published:
            key = next(iter(published))
            if published[key] > since:
                break
            del published[key]  # its interval is over: it may go out at once
        due = [key for key in self.pending if key not in published]
        for key in due:
            published[key] = now
        self.pending.difference_update(due)
        return due

    def held(self) -> int:
        """Changed keys waiting for their interval to pass."""
        return len(self.pending)
