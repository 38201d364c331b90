"""A tiny harness: feed events to a TicketProcessor and sum the deltas per window."""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any

from models.events import SurveyResponded, TicketEvent, input_event_adapter
from models.timestamps import format_rfc3339
from streams.rules import KpiRules
from streams.tickets import DictStore, TicketProcessor
from streams.windows import cumulate_fields

T0 = 1_795_341_600.0  # 2026-11-22T10:00:00Z, a bucket boundary


def event(kind: str, ticket: str, at: float, event_id: str | None = None, **extra: Any) -> Any:
    """A validated event of `kind` (`created`, `agent_replied`, ...) at `T0 + at`."""
    full = kind if kind.startswith("survey.") else f"ticket.{kind}"
    raw = {
        "schema_version": 1,
        "event_id": event_id or f"{ticket}-{kind}-{at}",
        "type": full,
        "occurred_at": format_rfc3339(T0 + at),
        "ticket_id": ticket,
        **extra,
    }
    if kind == "created":
        raw.setdefault("queue", "billing")
        raw.setdefault("channel", "phone")
    if kind == "handled":
        for name in ("talk_seconds", "hold_seconds", "wrap_seconds"):
            raw.setdefault(name, 0)
    return input_event_adapter.validate_python(raw)


class Harness:
    """Runs events through one partition's processor and keeps window totals."""

    def __init__(self, rules: KpiRules | None = None) -> None:
        self.processor = TicketProcessor(DictStore(), rules or KpiRules())
        self.totals: dict[tuple[str, str, int, str], float] = defaultdict(float)
        self.outcomes: Counter[tuple[str, str]] = Counter()
        self.live: Counter[tuple[str, str, str, str]] = Counter()
        self.oldest: dict[tuple[str, str], float | None] = {}

    def feed(self, *events: TicketEvent | SurveyResponded) -> Harness:
        for e in events:
            topic = "surveys" if isinstance(e, SurveyResponded) else "tickets"
            self._take(self.processor.process(topic, e))
        return self

    def advance(self, at: float) -> Harness:
        self._take(self.processor.advance(T0 + at))
        return self

    def _take(self, step: Any) -> None:
        self.outcomes.update(step.outcomes)
        self.live.update(step.live)
        self.oldest.update(step.oldest)
        for key, delta in step.deltas.items():
            self.totals[key] += delta

    def field(self, name: str, queue: str = "billing", channel: str = "phone") -> dict[int, float]:
        """Non-zero values of one field by bucket offset from T0 (seconds); histogram
        cells ("frt_hist:30") cumulative, as in the outputs."""
        windows: dict[int, dict[str, float]] = defaultdict(dict)
        for (q, c, b, f), v in self.totals.items():
            if q == queue and c == channel:
                windows[b][f] = v
        return {
            int(b - T0): v
            for b, fields in windows.items()
            if (v := cumulate_fields(fields).get(name, 0.0))
        }

    def gauge(self, name: str, queue: str = "billing", channel: str = "phone") -> int:
        """A live gauge summed over priorities."""
        return sum(n for (q, c, _, g), n in self.live.items()
                   if (q, c, g) == (queue, channel, name))
