"""Partitions whose reading stopped moving short of their highwater.

Used for table recovery (below) and for input partitions whose last messages Faust
dropped (`KpiWorker._tail_progress`).

Faust's recovery reads each changelog partition up to the highwater it saw at the
start. Its consumer can drop records it fetched (the same cut-short fetch as in
`streams/gaps.py`); the recovery then waits forever ("No event received for active
tp ..."), and the worker never becomes ready. The rebalance test hung that way in
about one run of ten. A partition behind its highwater whose offset has not moved for
`after` seconds is reported, to be read again from its last recovered offset. A
spurious report costs a re-read: applying a changelog record twice changes nothing.
Free of Faust imports.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)  # a changelog topic-partition


class StallWatch(Generic[K]):
    def __init__(self, after: float = 20.0) -> None:
        self.after = after
        self._since: dict[K, tuple[int, float]] = {}

    def stalled(self, progress: Mapping[K, tuple[int, int]], now: float) -> list[tuple[K, int]]:
        """From (offset read, highwater) per partition: those to read again, with the
        offset to read from. Pass an empty mapping when no recovery runs."""
        due = []
        for tp in list(self._since):
            if tp not in progress:
                del self._since[tp]
        for tp, (offset, highwater) in progress.items():
            if offset >= highwater:
                self._since.pop(tp, None)
                continue
            seen = self._since.get(tp)
            if seen is None or seen[0] != offset:
                self._since[tp] = (offset, now)
            elif now - seen[1] >= self.after:
                due.append((tp, offset + 1))
                self._since[tp] = (offset, now)  # give the re-read time to arrive
        return due
