"""Input offsets that never reached stage 1, and the rewinds that read them again.

The input topics are neither compacted nor transactional, so a partition's offsets are
consecutive: after the journaled position p the next message applied must be p + 1.
Faust's consumer can drop a message it fetched (a fetch cut short around a rebalance,
then an offset jump it takes for compaction and acks as a gap), and the rebalance test
lost one or two events that way in some runs. So stage 1 applies nothing past a hole:
it asks for a rewind (a seek back to p + 1) and skips what arrives until p + 1 does.

A hole that outlives several rewinds is real (retention deleted the offsets, or a
transactional producer's markers occupy them) and is then accepted, with a warning.
Free of Faust imports: the worker performs the seeks.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

Key = tuple[str, int]  # (topic, partition)


class Verdict(Enum):
    APPLY = "apply"  # the expected offset, or no position yet
    SKIP = "skip"  # past a hole: wait for the rewind to deliver the missing offsets
    ACCEPT = "accept"  # past a hole that rewinds did not fill: apply, the hole is real


@dataclass(slots=True)
class _Hole:
    expected: int
    rewinds: int = 0
    last_rewind: float = float("-inf")


class GapGuard:
    """Per input partition: is an offset the next one, and which rewinds are due.

    `retry_after` seconds pass between two rewinds of one hole (messages fetched before
    a seek are still on their way); after `max_rewinds` the hole is accepted.
    """

    def __init__(self, retry_after: float = 2.0, max_rewinds: int = 5) -> None:
        self.retry_after = retry_after
        self.max_rewinds = max_rewinds
        self._holes: dict[Key, _Hole] = {}
        self._due: dict[Key, int] = {}
        self.rewinds = 0
        self.accepted = 0

    def check(self, key: Key, expected: int | None, offset: int, now: float) -> Verdict:
        """`expected`: the offset after the partition's position (None: no position)."""
        if expected is None or offset <= expected:
            # At or before the position is the caller's (already applied); here only
            # the expected offset itself arrives.
            self._holes.pop(key, None)
            return Verdict.APPLY
        hole = self._holes.get(key)
        if hole is None or hole.expected != expected:
            hole = self._holes[key] = _Hole(expected)
        waited = now - hole.last_rewind >= self.retry_after
        if hole.rewinds >= self.max_rewinds and waited:
            del self._holes[key]
            self.accepted += 1
            return Verdict.ACCEPT
        if waited and hole.rewinds < self.max_rewinds:
            hole.rewinds += 1
            hole.last_rewind = now
            self._due[key] = expected
            self.rewinds += 1
        return Verdict.SKIP

    def take_due(self) -> dict[Key, int]:
        """The rewinds to perform now: (topic, partition) -> offset to read from."""
        due, self._due = self._due, {}
        return due

    def forget(self, key: Key) -> None:
        """The partition moved away: its holes are the next owner's to find."""
        self._holes.pop(key, None)
        self._due.pop(key, None)
