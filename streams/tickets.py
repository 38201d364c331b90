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

    def add_deltas(self, more: Contributions) -> None:
        for key, value in more.items():
            total = self.deltas.get(key, 0.0) + value
            if total:
                self.deltas[key] = total
            else:
                self.deltas.pop(key, None)


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
        self.rebuild_timers(store.items())

    def rebuild_timers(self, items: Iterable[tuple[str, TicketFacts]]) -> None:
        """Recreate the timer heap from stored facts (after recovery)."""
        self._timers = []
        self._scheduled = {}
        for ticket_id, facts in items:
            due = next_change(facts, self.watermark, self.rules)
            if due is not None:
                self._timers.append((due, ticket_id))
                self._scheduled[ticket_id] = due
        heapq.heapify(self._timers)

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
        old = contributions(facts, facts.evaluated_at, self.rules) if facts.seen else {}
        facts.seen.append(event.event_id)
        facts.last_event_at = max(facts.last_event_at, event.occurred_at)
        outcome = self._apply(facts, event, step)
        if outcome is not None:
            step.outcomes[(topic, outcome)] += 1
        self._settle(ticket_id, facts, old, step)
        self._fire_timers(step)
        return step

    def advance(self, watermark: float) -> Step:
        """Move the watermark forward with no event (idle partitions, wall-clock)."""
        step = Step()
        if watermark > self.watermark:
            self.watermark = watermark
            self._fire_timers(step)
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
        if self.watermark >= t + self.rules.orphan_timeout:
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

    def _settle(self, ticket_id: str, facts: TicketFacts, old: Contributions, step: Step) -> None:
        """Orphan what timed out, emit the contribution change, schedule the next check."""
        if facts.held and not facts.known:
            limit = self.watermark - self.rules.orphan_timeout
            kept = [h for h in facts.held if h.at > limit]
            if len(kept) < len(facts.held):
                step.outcomes[(TICKETS, "orphaned")] += len(facts.held) - len(kept)
                facts.held = kept
        new = contributions(facts, self.watermark, self.rules)
        step.add_deltas(diff(old, new))
        facts.evaluated_at = self.watermark
        self.store.put(ticket_id, facts)
        self._schedule(ticket_id, next_change(facts, self.watermark, self.rules))

    def _schedule(self, ticket_id: str, due: float | None) -> None:
        if due is None:
            return
        current = self._scheduled.get(ticket_id)
        if current is None or due < current:
            self._scheduled[ticket_id] = due
            heapq.heappush(self._timers, (due, ticket_id))

    def _fire_timers(self, step: Step) -> None:
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
                self.store.delete(ticket_id)
                continue
            old = contributions(facts, facts.evaluated_at, self.rules)
            self._settle(ticket_id, facts, old, step)

    def pending_timers(self) -> Iterator[tuple[float, str]]:
        """Live timers, earliest first (for inspection and tests)."""
        return iter(sorted((due, tid) for tid, due in self._scheduled.items()))
