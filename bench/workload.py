"""What the contenders read: the simulator's realistic mix, and open tickets only."""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import orjson

from bench.common import say
from kpimon.sim import SimConfig, SimRecord, generate, produce
from kpimon.sim.config import format_ms

# The realistic mix: the simulator's multi-queue contact centre over 12 hours of
# yesterday's event time (06:00-18:00 UTC, both daily peaks), with the noise a real pipe
# adds: 1 % redeliveries, 60 s arrival jitter, 0.1 % malformed messages (every
# dead-letter reason) and 0.2 % unknown event types. No orphans: every message then ends
# in a final outcome once the input is read, so "processed" has a precise end.
MIX_HOURS = 12
MIX_START_HOUR = 6
MIX_NOISE: dict[str, Any] = {
    "duplicates": 0.01, "disorder": 60.0, "bad": 0.001, "unknown_types": 0.002,
}
# Messages per ticket-per-minute-of-peak-rate per hour, measured on this window.
_MSGS_PER_RATE_HOUR = 60 * 0.8 * 4.2


def mix(target: int, tickets_topic: str, surveys_topic: str, seed: int = 2026,
        ) -> list[SimRecord]:
    """At least `target` records of the realistic mix, in arrival order."""
    now = time.time()
    start = (now // 86400) * 86400 - 86400 + MIX_START_HOUR * 3600
    rate = max(1.0, target / (_MSGS_PER_RATE_HOUR * MIX_HOURS) * 1.03)
    while True:
        cfg = SimConfig(
            seed=seed, start=start, duration=MIX_HOURS * 3600.0, rate=rate, now=now,
            tickets_topic=tickets_topic, surveys_topic=surveys_topic, **MIX_NOISE,
        )
        began = time.monotonic()
        records = list(generate(cfg))
        say(f"simulator: {len(records):,} records at {rate:.0f} tickets/min peak "
            f"in {time.monotonic() - began:.1f} s")
        if len(records) >= target:
            return records
        rate *= target / max(1, len(records)) * 1.02


def describe(records: list[SimRecord]) -> dict[str, int]:
    kinds = Counter(r.kind.split(":")[0] for r in records)
    topics = Counter(r.topic for r in records)
    return {**{f"kind_{k}": v for k, v in sorted(kinds.items())},
            **{f"topic_{k}": v for k, v in sorted(topics.items())}}


def prefill(bootstrap: str, records: list[SimRecord]) -> float:
    """Produce all records (fast mode, acks=all, idempotent); returns the seconds taken."""
    began = time.monotonic()
    sent = asyncio.run(produce(records, bootstrap, realtime=False, progress=True))
    assert sent == len(records)
    return time.monotonic() - began


_QUEUES = (("billing", 0.30), ("tech", 0.35), ("sales", 0.20), ("returns", 0.15))
_CHANNELS = (("phone", 0.35), ("chat", 0.25), ("email", 0.20), ("messaging", 0.07),
             ("web", 0.08), ("social", 0.05))
_PRIORITIES = (("normal", 0.80), ("high", 0.10), ("low", 0.07), ("urgent", 0.03))


def _pick(rng: random.Random, weighted: tuple[tuple[str, float], ...]) -> str:
    u = rng.random()
    for item, w in weighted:
        u -= w
        if u < 0:
            return item
    return weighted[-1][0]


def open_tickets(n: int, topic: str, span: float = 3 * 3600.0, seed: int = 77,
                 ) -> Iterator[SimRecord]:
    """`n` ticket.created events and nothing else: tickets that stay open.

    Their creation times spread evenly over the `span` seconds before now, ids look
    like the simulator's, queue/channel/priority follow its mix.
    """
    rng = random.Random(seed)
    end = time.time() - 60
    start = end - span
    for i in range(n):
        t = start + span * i / n
        ticket_id = f"M{seed}-{i:07d}"
        event = {
            "schema_version": 1, "event_id": f"m{seed}-{i}", "type": "ticket.created",
            "occurred_at": format_ms(int(t * 1000)), "ticket_id": ticket_id,
            "queue": _pick(rng, _QUEUES), "channel": _pick(rng, _CHANNELS),
            "priority": _pick(rng, _PRIORITIES), "customer_id": f"cust-{rng.randrange(10**6):06d}",
        }
        value = orjson.dumps(event)
        yield SimRecord(topic, ticket_id.encode(), value, "valid", t)
