"""What one input partition contributes, summed per window and per live pair.

Stage 1 keeps these partial sums in memory and sends them to stage 2 as absolute values
with a version, never as differences: a value that arrives twice, late or out of order
is then harmless, and stage 2 adds the partials of the input partitions. The partials
are a pure function of the stored ticket facts (every ticket's contributions as of its
last evaluation), so after a crash or a move they are rebuilt from the recovered facts
instead of being trusted from a second, possibly inconsistent copy. Free of Faust.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from streams.contributions import contributions
from streams.facts import TicketFacts
from streams.live import is_waiting, live_state
from streams.rules import KpiRules
from streams.tickets import Step
from streams.windows import CELLS, WindowState, apply_deltas

Pair = tuple[str, str]
WindowKey = tuple[str, str, int]
# (priority, gauge) -> tickets
Gauges = dict[tuple[str, str], int]


@dataclass(slots=True)
class Partials:
    """Partial window sums and live gauges of one input partition, with what changed."""

    windows: dict[WindowKey, WindowState] = field(default_factory=dict)
    gauges: dict[Pair, Gauges] = field(default_factory=dict)
    # Earliest created_at of the pair's waiting tickets (None: none waiting).
    oldest: dict[Pair, float | None] = field(default_factory=dict)
    dirty_windows: set[WindowKey] = field(default_factory=set)
    dirty_pairs: set[Pair] = field(default_factory=set)

    @classmethod
    def rebuild(cls, tickets: Iterable[tuple[str, TicketFacts]], rules: KpiRules) -> Partials:
        """The partials of a partition from its stored facts, everything marked changed."""
        partials = cls()
        for _, facts in tickets:
            if not facts.seen:
                continue
            at = facts.evaluated_at
            cells: dict[WindowKey, list[tuple[str, float]]] = {}
            for (queue, channel, start, cell), n in contributions(facts, at, rules).items():
                cells.setdefault((queue, channel, start), []).append((cell, n))
            for key, deltas in cells.items():
                apply_deltas(partials.windows.setdefault(key, WindowState()), deltas)
            for (queue, channel, priority, gauge), n in live_state(facts, at, rules).items():
                gauges = partials.gauges.setdefault((queue, channel), {})
                gauges[(priority, gauge)] = gauges.get((priority, gauge), 0) + n
            if facts.known and is_waiting(facts):
                assert facts.created_at is not None
                pair = (facts.queue, facts.channel)
                current = partials.oldest.get(pair)
                if current is None or facts.created_at < current:
                    partials.oldest[pair] = facts.created_at
        partials.dirty_windows = set(partials.windows)
        partials.dirty_pairs = set(partials.gauges) | set(partials.oldest)
        return partials

    def apply(self, step: Step) -> None:
        """Add one step's contribution and live differences."""
        cells: dict[WindowKey, list[tuple[str, float]]] = {}
        for (queue, channel, start, cell), delta in step.deltas.items():
            cells.setdefault((queue, channel, start), []).append((cell, delta))
        for key, deltas in cells.items():
            state = self.windows.get(key)
            if state is None:
                state = self.windows[key] = WindowState()
            if apply_deltas(state, deltas):
                self.dirty_windows.add(key)
        for (queue, channel, priority, gauge), delta in step.live.items():
            pair = (queue, channel)
            gauges = self.gauges.setdefault(pair, {})
            total = gauges.get((priority, gauge), 0) + delta
            if total:
                gauges[(priority, gauge)] = total
            else:
                gauges.pop((priority, gauge), None)
            self.dirty_pairs.add(pair)
        for pair, created_at in step.oldest.items():
            if self.oldest.get(pair) != created_at or pair not in self.oldest:
                self.oldest[pair] = created_at
                self.dirty_pairs.add(pair)

    def expire(self, before: int) -> int:
        """Forget windows that start before `before`; how many were dropped."""
        old = [key for key in self.windows if key[2] < before]
        for key in old:
            del self.windows[key]
            self.dirty_windows.discard(key)
        return len(old)

    def take_changes(
        self,
    ) -> dict[Pair, tuple[dict[int, list[float]], Gauges | None, float | None]]:
        """What changed since the last call, by pair: window values by bucket start,
        and the pair's live gauges and oldest waiting (None gauges: live unchanged)."""
        out: dict[Pair, tuple[dict[int, list[float]], Gauges | None, float | None]] = {}
        for queue, channel, start in self.dirty_windows:
            state = self.windows.get((queue, channel, start))
            values = state.values if state is not None else [0] * len(CELLS)
            windows, _, _ = out.setdefault((queue, channel), ({}, None, None))
            windows[start] = list(values)
        for pair in self.dirty_pairs:
            windows, _, _ = out.get(pair, ({}, None, None))
            out[pair] = (windows, dict(self.gauges.get(pair, {})), self.oldest.get(pair))
        self.dirty_windows = set()
        self.dirty_pairs = set()
        return out

    def mark_all(self) -> None:
        """Everything is to be sent again (a new generation after recovery)."""
        self.dirty_windows = set(self.windows)
        self.dirty_pairs = set(self.gauges) | set(self.oldest)
