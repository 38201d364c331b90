"""Stage 1 of the engine for one input partition, free of any Faust import.

A `TicketProcessor` owns a partition's watermark and ticket facts (through a
`TicketStore`), applies each decoded event, and returns the outcome of every message it
settled plus the *difference* in bucket contributions that the event (and any deadline
or timeout the watermark crossed) caused.
"""

from __future__ import annotations

import heapq
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Protocol

from models.events import (
    Abandoned,
    AgentReplied,
    Handled,
    Reopened,
    Resolved,
    SurveyResponded,
    TicketCreated,
    TicketEvent,
)
from streams.contributions import Contributions, contributions, diff, next_change
from streams.facts import ABANDONED, HANDLED, REOPENED, REPLY, RESOLVED, Held, Survey, TicketFacts
from streams.live import LiveKey, is_waiting, live_change, live_state
from streams.rules import KpiRules

TICKETS, SURVEYS = "tickets", "surveys"


class TicketStore(Protocol):
    """Where ticket facts live: a dict in tests, a Faust table in the worker."""

    def get(self, ticket_id: str) -> TicketFacts | None: ...

    def put(self, ticket_id: str, facts: TicketFacts) -> None: ...

    def delete(self, ticket_id: str) -> None: ...

    def items(self) -> Iterable[tuple[str, TicketFacts]]: ...


class DictStore(dict[str, TicketFacts]):
    """An in-memory `TicketStore`."""

    def put(self, ticket_id: str, facts: TicketFacts) -> None:
        self[ticket_id] = facts

    def delete(self, ticket_id: str) -> None:
        self.pop(ticket_id, None)


@dataclass(slots=True)
class Step:
    """What one call changed: settled outcomes and contribution deltas."""

    outcomes: Counter[tuple[str, str]] = field(default_factory=Counter)
    deltas: Contributions = field(default_factory=dict)
    live: dict[LiveKey, int] = field(default_factory=dict)
    # (queue, channel) -> earliest created_at of its waiting tickets (None: none waiting)
    oldest: dict[tuple[str, str], float | None] = field(default_factory=dict)

    def add_live(self, old: dict[LiveKey, int], new: dict[LiveKey, int]) -> None:
        if old == new:  # most events leave a ticket's live state as it was
            return
        for key in old.keys() | new.keys():
            total = self.live.get(key, 0) + new.get(key, 0) - old.get(key, 0)
            if total:
                self.live[key] = total
            else:
                self.live.pop(key, None)

    def add_deltas(self, more: Contributions) -> None:
        for key, value in more.items():
            total = self.deltas.get(key, 0.0) + value
            if total:
                self.deltas[key] = total
            else:
                self.deltas.pop(key, None)


# Contributions kept for the most recently settled tickets (about 2 KiB each).
_RECENT_TICKETS = 4096

_HELD_KIND = {
    AgentReplied: REPLY,
    Handled: HANDLED,
    Abandoned: ABANDONED,
    Resolved: RESOLVED,
    Reopened: REOPENED,
}


class TicketProcessor:
    """Facts, watermark and timers of one input partition."""

    def __init__(
        self, store: TicketStore, rules: KpiRules, watermark: float = float("-inf")
    ) -> None:
        self.store = store
        self.rules = rules
        self.watermark = watermark
        # (due watermark, ticket_id). A ticket's live entry is the one in _scheduled;
        # others are stale and skipped on pop, so rescheduling later costs no push.
        self._timers: list[tuple[float, str]] = []
        self._scheduled: dict[str, float] = {}
        # How far the slowest input partition has read (any may forward this
        # partition's events: streams/routing.py); None: none can. Held events wait for
        # their ticket.created until the slower of it and the watermark passes their
        # time plus the orphan timeout (`orphan_clock`), on their own timers.
        self.peers: float | None = None
        self._orphan_timers: list[tuple[float, str]] = []  # (due orphan clock, ticket)
        # Waiting tickets by (queue, channel): ticket -> created_at, plus a lazy min-heap.
        self._waiting: dict[tuple[str, str], dict[str, float]] = {}
        self._waiting_heap: dict[tuple[str, str], list[tuple[float, str]]] = {}
        self._reported_oldest: dict[tuple[str, str], float | None] = {}
        self._touched: set[tuple[str, str]] = set()
        # The contributions last computed for recently settled tickets, so the next event
        # of a busy ticket need not compute its old contributions again. Bounded.
        self._recent: dict[
            str, tuple[float, Contributions, dict[LiveKey, int]]
        ] = {}
        self.rebuild_timers(store.items())

    def rebuild_timers(self, items: Iterable[tuple[str, TicketFacts]]) -> None:
        """Recreate timers and the waiting index from stored facts (after recovery)."""
        self._timers = []
        self._scheduled = {}
        self._waiting = {}
        self._waiting_heap = {}
        self._reported_oldest = {}
        self._touched = set()
        self._orphan_timers = []
        for ticket_id, facts in items:
            self._index_waiting(ticket_id, facts)
            due = self._due(facts)
            if due is not None:
                self._timers.append((due, ticket_id))
                self._scheduled[ticket_id] = due
            if facts.held and not facts.known:
                self._orphan_timers.append((self._orphan_due(facts), ticket_id))
        heapq.heapify(self._timers)
        heapq.heapify(self._orphan_timers)

    @property
    def orphan_clock(self) -> float:
        """The event time against which held events time out."""
        return self.watermark if self.peers is None else min(self.watermark, self.peers)

    def advance_peers(self, peers: float) -> Step:
        """The input partitions (the slowest of them) have read up to `peers`."""
        step = Step()
        before = self.orphan_clock
        self.peers = peers
        if self.orphan_clock > before:
            self._fire_orphans(step)
            self._report_oldest(step)
        return step

    def process(self, topic: str, event: TicketEvent | SurveyResponded) -> Step:
        """Apply one decoded event; a later ticket event advances the watermark."""
        step = Step()
        ticket_id = event.ticket_id
        facts = self.store.get(ticket_id)
        if facts is None:
            facts = TicketFacts()
        elif event.event_id in facts.seen:
            step.outcomes[(topic, "duplicate")] += 1
            return step

        # Only ticket events move the watermark. The surveys topic is sparse and is read
        # at its own pace (during a replay it can run hours ahead of the tickets
        # partition); letting it move time would orphan ticket events not yet read.
        if topic == TICKETS and event.occurred_at > self.watermark:
            self.watermark = event.occurred_at
        before = self._shown(ticket_id, facts)
        facts.seen.append(event.event_id)
        facts.last_event_at = max(facts.last_event_at, event.occurred_at)
        outcome = self._apply(facts, event, step)
        if outcome is not None:
            step.outcomes[(topic, outcome)] += 1
        self._settle(ticket_id, facts, before, step)
        self._fire_timers(step)
        self._report_oldest(step)
        return step

    def advance(self, watermark: float) -> Step:
        """Move the watermark forward with no event (idle partitions, wall-clock)."""
        step = Step()
        if watermark > self.watermark:
            self.watermark = watermark
            self._fire_timers(step)
            self._report_oldest(step)
        return step

    def _apply(
        self, facts: TicketFacts, event: TicketEvent | SurveyResponded, step: Step
    ) -> str | None:
        """Add the event to the facts; its outcome, or None while it is held."""
        t = event.occurred_at
        if isinstance(event, SurveyResponded):
            facts.surveys.append(
                Survey(t, event.metric, event.score, event.scale, event.queue, event.channel)
            )
            return "processed"
        if isinstance(event, TicketCreated):
            if facts.known:
                return "ignored"  # only the first ticket.created to arrive counts
            facts.created_at = t
            facts.queue, facts.channel, facts.priority = event.queue, event.channel, event.priority
            for held in facts.held:
                self._record(facts, held.kind, held.at, held.handle_seconds)
                step.outcomes[(TICKETS, "processed")] += 1
            facts.held = []
            return "processed"
        kind = _HELD_KIND[type(event)]
        seconds = event.handle_seconds if isinstance(event, Handled) else 0.0
        if facts.known:
            self._record(facts, kind, t, seconds)
            return "processed"
        if self.orphan_clock >= t + self.rules.orphan_timeout:
            return "orphaned"
        facts.held.append(Held(t, kind, seconds))
        return None

    @staticmethod
    def _record(facts: TicketFacts, kind: str, t: float, seconds: float) -> None:
        if kind == REPLY:
            facts.replies.append(t)
        elif kind == HANDLED:
            facts.handled.append((t, seconds))
        elif kind == ABANDONED:
            facts.abandons.append(t)
        elif kind == RESOLVED:
            facts.resolutions.append(t)
        else:
            facts.reopens.append(t)

    def _shown(
        self, ticket_id: str, facts: TicketFacts
    ) -> tuple[Contributions, dict[LiveKey, int]]:
        """What the ticket currently contributes (as of its last evaluation)."""
        if not facts.seen:
            return {}, {}
        at = facts.evaluated_at
        cached = self._recent.get(ticket_id)
        if cached is not None and cached[0] == at:
            return cached[1], cached[2]
        return contributions(facts, at, self.rules), live_state(facts, at, self.rules)

    def _settle(
        self,
        ticket_id: str,
        facts: TicketFacts,
        before: tuple[Contributions, dict[LiveKey, int]],
        step: Step,
    ) -> None:
        """Orphan what timed out, emit the changes, schedule the next check."""
        if facts.held and not facts.known:
            limit = self.orphan_clock - self.rules.orphan_timeout
            kept = [h for h in facts.held if h.at > limit]
            if len(kept) < len(facts.held):
                step.outcomes[(TICKETS, "orphaned")] += len(facts.held) - len(kept)
                facts.held = kept
            if kept:
                heapq.heappush(self._orphan_timers, (self._orphan_due(facts), ticket_id))
        shown = contributions(facts, self.watermark, self.rules)
        live = live_state(facts, self.watermark, self.rules)
        step.add_deltas(diff(before[0], shown))
        step.add_live(before[1], live)
        facts.evaluated_at = self.watermark
        if len(self._recent) >= _RECENT_TICKETS:
            self._recent.clear()
        self._recent[ticket_id] = (self.watermark, shown, live)
        self.store.put(ticket_id, facts)
        self._index_waiting(ticket_id, facts)
        self._schedule(ticket_id, self._due(facts))

    def _due(self, facts: TicketFacts) -> float | None:
        """The next watermark at which the ticket's contributions or live state change."""
        due = [
            t
            for t in (
                next_change(facts, self.watermark, self.rules),
                live_change(facts, self.watermark, self.rules),
            )
            if t is not None
        ]
        return min(due) if due else None

    def _index_waiting(self, ticket_id: str, facts: TicketFacts) -> None:
        if not facts.known:
            return
        qc = (facts.queue, facts.channel)
        waiting = self._waiting.setdefault(qc, {})
        if is_waiting(facts):
            assert facts.created_at is not None
            if ticket_id not in waiting:
                waiting[ticket_id] = facts.created_at
                heapq.heappush(self._waiting_heap.setdefault(qc, []), (facts.created_at, ticket_id))
                self._touched.add(qc)
        elif waiting.pop(ticket_id, None) is not None:
            self._touched.add(qc)

    def _report_oldest(self, step: Step) -> None:
        """Add the (queue, channel) pairs whose oldest waiting ticket changed."""
        for qc in self._touched:
            waiting = self._waiting.get(qc, {})
            heap = self._waiting_heap.get(qc, [])
            # Lazy deletion: drop heap entries of tickets no longer waiting.
            while heap and waiting.get(heap[0][1]) != heap[0][0]:
                heapq.heappop(heap)
            oldest = heap[0][0] if heap else None
            if self._reported_oldest.get(qc, None) != oldest or qc not in self._reported_oldest:
                self._reported_oldest[qc] = oldest
                step.oldest[qc] = oldest
        self._touched.clear()

    def _schedule(self, ticket_id: str, due: float | None) -> None:
        if due is None:
            return
        current = self._scheduled.get(ticket_id)
        if current is None or due < current:
            self._scheduled[ticket_id] = due
            heapq.heappush(self._timers, (due, ticket_id))

    def _orphan_due(self, facts: TicketFacts) -> float:
        return min(h.at for h in facts.held) + self.rules.orphan_timeout

    def _fire_orphans(self, step: Step) -> None:
        clock = self.orphan_clock
        timers = self._orphan_timers
        while timers and timers[0][0] <= clock:
            _, ticket_id = heapq.heappop(timers)
            facts = self.store.get(ticket_id)
            if facts is None or facts.known or not facts.held:
                continue  # stale: created since, or forgotten
            self._settle(ticket_id, facts, self._shown(ticket_id, facts), step)

    def _fire_timers(self, step: Step) -> None:
        if self._orphan_timers:
            self._fire_orphans(step)
        while self._timers and self._timers[0][0] <= self.watermark:
            due, ticket_id = heapq.heappop(self._timers)
            if self._scheduled.get(ticket_id) != due:
                continue  # stale entry
            del self._scheduled[ticket_id]
            facts = self.store.get(ticket_id)
            if facts is None:
                continue
            if self.watermark >= facts.last_event_at + self.rules.ticket_retention:
                if facts.held:
                    step.outcomes[(TICKETS, "orphaned")] += len(facts.held)
                # Forgotten tickets leave the live gauges; their history stays in windows.
                step.add_live(self._shown(ticket_id, facts)[1], {})
                if facts.known:
                    self._waiting.get((facts.queue, facts.channel), {}).pop(ticket_id, None)
                    self._touched.add((facts.queue, facts.channel))
                self.store.delete(ticket_id)
                continue
            self._settle(ticket_id, facts, self._shown(ticket_id, facts), step)

    def pending_timers(self) -> Iterator[tuple[float, str]]:
        """Live timers, earliest first (for inspection and tests)."""
        return iter(sorted((due, tid) for tid, due in self._scheduled.items()))
