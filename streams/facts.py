"""Per-ticket facts (SPEC section 3): what is known of one ticket from its events.

Facts keep every deduplicated event time that a KPI rule can look at, so any rule can
be re-evaluated from scratch when a late event arrives. That is what makes results a
function of the facts rather than of arrival order.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

# Kinds of held ticket events (events that arrived before their ticket.created).
REPLY, HANDLED, ABANDONED, RESOLVED, REOPENED = "r", "h", "a", "s", "o"


@dataclass(slots=True)
class Survey:
    """One survey answer, with the survey's own attribution for unknown tickets."""

    at: float
    metric: str
    score: int
    scale_max: int
    queue: str | None
    channel: str | None


@dataclass(slots=True)
class Held:
    """A ticket event waiting for its ticket's `ticket.created`."""

    at: float
    kind: str
    handle_seconds: float = 0.0


@dataclass(slots=True)
class TicketFacts:
    """Everything kpimon keeps about one ticket."""

    created_at: float | None = None
    queue: str = ""
    channel: str = ""
    priority: str = ""
    replies: list[float] = field(default_factory=list)
    resolutions: list[float] = field(default_factory=list)
    abandons: list[float] = field(default_factory=list)
    reopens: list[float] = field(default_factory=list)
    handled: list[tuple[float, float]] = field(default_factory=list)
    surveys: list[Survey] = field(default_factory=list)
    held: list[Held] = field(default_factory=list)
    seen: list[str] = field(default_factory=list)
    last_event_at: float = 0.0
    # The watermark the ticket's current contributions were computed with.
    evaluated_at: float = float("-inf")

    @property
    def known(self) -> bool:
        return self.created_at is not None

    def first_reply(self) -> float | None:
        return min(self.replies) if self.replies else None

    def to_bytes(self) -> bytes:
        return orjson.dumps(
            [
                self.created_at,
                self.queue,
                self.channel,
                self.priority,
                self.replies,
                self.resolutions,
                self.abandons,
                self.reopens,
                self.handled,
                [[s.at, s.metric, s.score, s.scale_max, s.queue, s.channel] for s in self.surveys],
                [[h.at, h.kind, h.handle_seconds] for h in self.held],
                self.seen,
                self.last_event_at,
                # JSON has no -inf; None marks "never evaluated".
                None if self.evaluated_at == float("-inf") else self.evaluated_at,
            ]
        )

    @classmethod
    def from_bytes(cls, raw: bytes) -> TicketFacts:
        v: list[Any] = orjson.loads(raw)
        return cls(
            created_at=v[0],
            queue=v[1],
            channel=v[2],
            priority=v[3],
            replies=v[4],
            resolutions=v[5],
            abandons=v[6],
            reopens=v[7],
            handled=[(a, b) for a, b in v[8]],
            surveys=[Survey(*s) for s in v[9]],
            held=[Held(*h) for h in v[10]],
            seen=v[11],
            last_event_at=v[12],
            evaluated_at=float("-inf") if v[13] is None else v[13],
        )
