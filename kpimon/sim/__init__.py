"""Traffic simulator: a seeded contact centre that emits the input events of SPEC section 2.

A discrete-event model of several queues (`model`: arrivals with a daily pattern, agents
on shifts, FIFO service, abandonment, follow-ups, resolutions, reopens and surveys)
produces valid events in event-time order. A noise layer (`noise`) adds what real pipes
deliver (redeliveries, arrival jitter, malformed messages, unknown types, orphans) and
the records leave in *arrival* order, each labelled with what it is meant to be.
`output` writes them to a JSON lines file or Kafka, in realtime mode paced by the
wall-clock (``--speed`` runs event time faster than the clock, ``--behind`` keeps it in
the past so that it never runs ahead); `cli` is ``kpimon simulate``.

Volume: a ticket yields about 4.5 messages, so a run gives roughly
``rate * 60 * hours * day_factor * 4.5`` messages, where ``day_factor`` is the mean of
the daily pattern over the window by UTC hour (0.07 at night, 1.0 at the 10:00 and
15:00 peaks, 0.49 over a whole day). ``rate=20`` over 6 h gives about 21,700 messages
for 06:00-12:00 UTC, 27,000 for 09:00-15:00 and 2,700 for 00:00-06:00 (without noise);
generation runs at roughly 70,000-100,000 messages per second.

Determinism: the same `SimConfig` gives the same records. Only `now` (default: the
wall-clock) is read from outside: it sets the default start and the `future_timestamp`
test messages, a day ahead of it; pin `start` and `now` for byte-identical runs.
Ticket ids are ``T{seed}-{n}`` and event ids ``e{seed}-{n}``, so runs with different
seeds never collide (the CLI takes a fresh seed from the clock unless given one).
"""

from kpimon.sim.cli import add_arguments, main, run
from kpimon.sim.config import (
    ALLOWED_LATENESS,
    CHANNELS,
    DEAD_LETTER_REASONS,
    DEFAULT_QUEUES,
    KINDS,
    LIVE_CHANNELS,
    MAX_VALUE_BYTES,
    ORPHAN_SETTLE,
    SimConfig,
    SimRecord,
    Surge,
)
from kpimon.sim.noise import generate
from kpimon.sim.output import Pace, produce, read_jsonl, write_jsonl

__all__ = [
    "ALLOWED_LATENESS",
    "CHANNELS",
    "DEAD_LETTER_REASONS",
    "DEFAULT_QUEUES",
    "KINDS",
    "LIVE_CHANNELS",
    "MAX_VALUE_BYTES",
    "ORPHAN_SETTLE",
    "Pace",
    "SimConfig",
    "SimRecord",
    "Surge",
    "add_arguments",
    "generate",
    "main",
    "produce",
    "read_jsonl",
    "run",
    "write_jsonl",
]
