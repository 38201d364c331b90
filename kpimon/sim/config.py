"""Configuration, records and constants of the traffic simulator."""

from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass

CHANNELS = ("phone", "chat", "email", "messaging", "web", "social")
# Customers on these channels wait "on the line" and can give up; the others leave a
# message that stays in the backlog until an agent gets to it.
LIVE_CHANNELS = frozenset({"phone", "chat", "messaging"})
DEFAULT_QUEUES = ("billing", "tech", "sales", "returns")
DEAD_LETTER_REASONS = (
    "invalid_json",
    "not_an_object",
    "too_large",
    "schema",
    "bad_timestamp",
    "future_timestamp",
    "unsupported_version",
    "key_mismatch",
    "wrong_topic",
)
KINDS = ("valid", "duplicate", "ignored", "orphan", *(f"bad:{r}" for r in DEAD_LETTER_REASONS))
MAX_VALUE_BYTES = 64 * 1024
ALLOWED_LATENESS = 120.0  # SPEC section 3 default; disorder must stay below it
ORPHAN_SETTLE = 20 * 60.0  # orphans stop this long before the end so a test run settles
QUEUE_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")


@dataclass(frozen=True)
class Surge:
    """Multiply one queue's arrivals by `factor` during part of the run."""

    queue: str
    offset: float  # seconds after the start of event time
    duration: float
    factor: float

    @classmethod
    def parse(cls, text: str) -> Surge:
        """Parse ``QUEUE:START_OFFSET_S:DURATION_S:FACTOR``."""
        parts = text.split(":")
        if len(parts) != 4:
            raise ValueError(f"expected QUEUE:START_OFFSET_S:DURATION_S:FACTOR, got {text!r}")
        try:
            offset, duration, factor = (float(p) for p in parts[1:])
        except ValueError:
            raise ValueError(f"offset, duration and factor must be numbers in {text!r}") from None
        surge = cls(parts[0], offset, duration, factor)
        surge.check()
        return surge

    def check(self) -> None:
        """Raise ValueError unless every field is usable."""
        if not QUEUE_NAME.fullmatch(self.queue):
            raise ValueError(f"surge queue {self.queue!r} is not a valid queue name")
        if not (math.isfinite(self.offset) and self.offset >= 0):
            raise ValueError("surge offset must be a finite number >= 0")
        if not (math.isfinite(self.duration) and self.duration > 0):
            raise ValueError("surge duration must be a finite number > 0")
        if not (math.isfinite(self.factor) and 0 <= self.factor <= 1000):
            raise ValueError("surge factor must be between 0 and 1000")


@dataclass(frozen=True)
class SimConfig:
    """Everything that shapes a run; the same config and seed give the same records."""

    seed: int = 1
    start: float | None = None  # epoch seconds; None: now - duration
    duration: float = 3600.0  # seconds of event time; 0: unbounded (realtime demo)
    rate: float = 20.0  # tickets per minute at the daily peak, all queues together
    queues: tuple[str, ...] = DEFAULT_QUEUES
    surge: Surge | None = None
    duplicates: float = 0.0
    disorder: float = 60.0
    bad: float = 0.0
    unknown_types: float = 0.0
    orphans: float = 0.0
    tickets_topic: str = "support.tickets"
    surveys_topic: str = "support.surveys"
    now: float | None = None  # wall-clock reference (default start, future timestamps)

    def check(self) -> None:
        """Raise ValueError with a readable message for an unusable config."""
        for name in ("start", "now"):
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be epoch seconds (a finite number >= 0)")
        if not (math.isfinite(self.duration) and self.duration >= 0):
            raise ValueError("duration must be a finite number >= 0")
        if not (math.isfinite(self.rate) and 0 < self.rate <= 100_000):
            raise ValueError("rate must be > 0 (tickets per minute at peak)")
        if not self.queues:
            raise ValueError("at least one queue is needed")
        for q in self.queues:
            if not QUEUE_NAME.fullmatch(q):
                raise ValueError(f"queue {q!r}: 1-64 characters of A-Z a-z 0-9 _ . -")
        if len(set(self.queues)) != len(self.queues):
            raise ValueError("queue names must be distinct")
        if self.surge is not None:
            self.surge.check()
            if self.surge.queue not in self.queues:
                raise ValueError(f"surge queue {self.surge.queue!r} is not one of the queues")
        for name in ("duplicates", "bad", "unknown_types", "orphans"):
            value = getattr(self, name)
            if not 0 <= value <= 1:
                raise ValueError(f"{name} must be a fraction between 0 and 1")
        if not 0 <= self.disorder < ALLOWED_LATENESS:
            raise ValueError(f"disorder must be >= 0 and below {ALLOWED_LATENESS:.0f} s")
        if not self.tickets_topic or not self.surveys_topic:
            raise ValueError("topic names must not be empty")
        if self.tickets_topic == self.surveys_topic:
            raise ValueError("the tickets and surveys topics must differ")


@dataclass(frozen=True, slots=True)
class SimRecord:
    """One Kafka message, its arrival time (epoch seconds) and what it is meant to be."""

    topic: str
    key: bytes | None
    value: bytes
    kind: str
    at: float = 0.0


def format_ms(ms: int) -> str:
    """RFC 3339 UTC with `Z` and milliseconds, from integer epoch milliseconds."""
    sec, frac = divmod(ms, 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec)) + f".{frac:03d}Z"
