"""Offsets that never reached an agent, and the rewinds that read them again.

Faust's consumer can drop a message it fetched (a fetch cut short around a rebalance)
and then commit past it: the rebalance test lost one or two events that way in some
runs. So a worker applies each partition strictly in offset order from the offset it
last applied (journaled by stage 1, kept in the `counters` table by stage 2): a
message past a hole is held back, and the worker asks the
broker what the hole holds. If it holds records, the worker seeks back and reads
them again; if not (transaction markers, aborted transactions, retention), the hole
is *bridged*: the first offset after it is applied next.

Free of Faust imports: the worker probes the broker and performs the seeks.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

Key = tuple[str, int]  # (topic, partition)


class Verdict(Enum):
    APPLY = "apply"  # the expected offset (or an earlier one), or no position yet
    SKIP = "skip"  # past a hole: wait until it is probed and read again


@dataclass(slots=True)
class _Hole:
    expected: int
    asked: float = float("-inf")  # when a probe-and-rewind was last asked for


class GapGuard:
    """Per partition: is an offset the next one, and which holes are due for a probe.

    A hole still open `retry_after` seconds after its probe (the seek's messages were
    dropped again, say) is due again: `overdue` is for a timer, since a partition
    whose every later message was skipped may receive nothing more to trigger it.
    """

    def __init__(self, retry_after: float = 2.0) -> None:
        self.retry_after = retry_after
        self._holes: dict[Key, _Hole] = {}
        self._due: dict[Key, int] = {}
        self._bridges: dict[Key, tuple[int, int]] = {}  # key -> (expected, first)
        self.rewinds = 0
        self.bridged = 0

    def check(self, key: Key, expected: int | None, offset: int, now: float) -> Verdict:
        """`expected`: the offset after the last one applied (None: nothing applied)."""
        if expected is None or offset <= expected:
            self._holes.pop(key, None)
            return Verdict.APPLY
        if self._bridges.get(key) == (expected, offset):
            del self._bridges[key]
            self._holes.pop(key, None)
            return Verdict.APPLY
        hole = self._holes.get(key)
        if hole is None or hole.expected != expected:
            self._holes[key] = _Hole(expected, asked=now)
            self._due[key] = expected
        return Verdict.SKIP

    def is_open(self, key: Key) -> bool:
        """Is a hole in this partition waiting to be read again or bridged?"""
        return key in self._holes

    def take_due(self) -> dict[Key, int]:
        """The holes to probe now: (topic, partition) -> the first missing offset."""
        due, self._due = self._due, {}
        return due

    def overdue(self, now: float) -> dict[Key, int]:
        """Holes still open `retry_after` seconds after they were last probed."""
        due = {}
        for key, hole in self._holes.items():
            if now - hole.asked >= self.retry_after and key not in self._due:
                hole.asked = now
                due[key] = hole.expected
        return due

    def probed(self, key: Key, expected: int, first: int | None) -> bool:
        """What the broker holds from `expected` on: the offset of its first record.
        True: the hole holds no records (bridged); False: read it again."""
        if first is not None and first > expected:
            self._bridges[key] = (expected, first)  # nothing to read in between
            self.bridged += 1
            return True
        self.rewinds += 1
        return False

    def forget(self, key: Key) -> None:
        """The partition moved away: its holes are the next owner's to find."""
        self._holes.pop(key, None)
        self._due.pop(key, None)
        self._bridges.pop(key, None)
