"""The pure engine over simulated traffic equals the independent batch computation.

No Kafka here: messages are split over four partitions by ticket id as a producer
would, each with its own processor and watermark, like the worker does.
"""

from __future__ import annotations

import time
import zlib
from collections import Counter, defaultdict
from typing import Any

from kpimon.sim import SimConfig, generate
from models.decode import DeadLetter, Ignored, decode
from streams.rules import KpiRules
from streams.tickets import DictStore, TicketProcessor
from streams.windows import cumulate_fields
from tests.reference.batch import compute
from tests.support.compare import compare_windows

PARTITIONS = 4


def test_engine_over_four_partitions_equals_batch() -> None:
    now = time.time()
    start = (now // 86400) * 86400 - 86400 + 8 * 3600  # yesterday 08:00 UTC: busy hours
    cfg = SimConfig(
        seed=42, start=start, duration=3 * 3600, rate=12, duplicates=0.01, bad=0.003,
        unknown_types=0.003, orphans=0.005, now=now,
    )
    records = list(generate(cfg))
    batch = compute([(r.topic, r.key, r.value) for r in records], now=now)

    processors = [TicketProcessor(DictStore(), KpiRules()) for _ in range(PARTITIONS)]
    totals: dict[tuple[str, str, int], dict[str, Any]] = defaultdict(lambda: defaultdict(float))
    outcomes: Counter[tuple[str, str]] = Counter()
    for r in records:
        kind = "tickets" if r.topic == cfg.tickets_topic else "surveys"
        decoded = decode(kind, r.key, r.value, now=now)
        if isinstance(decoded, DeadLetter):
            outcomes[(r.topic, "dead_letter")] += 1
            continue
        if isinstance(decoded, Ignored):
            outcomes[(r.topic, "ignored")] += 1
            continue
        processor = processors[zlib.crc32(r.key or b"") % PARTITIONS]
        step = processor.process(kind, decoded)
        for (k, outcome), n in step.outcomes.items():
            topic = cfg.tickets_topic if k == "tickets" else cfg.surveys_topic
            outcomes[(topic, outcome)] += n
        for (q, c, b, cell), delta in step.deltas.items():
            totals[(q, c, b)][cell] += delta

    assert outcomes == batch.outcomes
    assert sum(outcomes.values()) == len(records)
    # Windows well behind every partition's watermark are final.
    horizon = min(p.watermark for p in processors) - 900
    streamed = {key: cumulate_fields(fields) for key, fields in totals.items()}
    result = compare_windows(streamed, batch.windows, until=horizon)
    assert result.compared > 1000
    assert result.mismatches == []
