"""End to end on the real broker: simulator -> Kafka -> worker -> support.kpis.

Six hours of simulated event time (over 20,000 messages) with redeliveries, disorder
within the allowed lateness, orphans, unknown types and malformed messages of every
dead-letter reason. After the input drains, the last record per key on the KPI topic
must equal the independent batch computation for every window that is no longer
pending, and every input message must be accounted as exactly one outcome.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest

from kpimon.sim import SimConfig, generate, produce
from models.decode import DEAD_LETTER_REASONS
from models.records import DeadLetterRecord, KpiWindow
from models.timestamps import parse_rfc3339
from tests.integration.kafka_env import (
    LocalKafka,
    Topics,
    Worker,
    events_total,
    read_topic,
    topic_end,
)
from tests.reference.batch import BatchConfig, compute
from tests.support.compare import compare_windows, metric_problems

pytestmark = pytest.mark.integration

SIX_HOURS = 6 * 3600


def _wait(predicate: Any, timeout: float, what: str, worker: Worker) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(1)
    raise AssertionError(f"timed out waiting for {what}; worker log:\n{worker.tail()}")


def test_six_hours_of_traffic_end_to_end_equal_batch(
    kafka: LocalKafka, tmp_path: Path
) -> None:
    began = time.monotonic()
    topics = Topics.named("e2e")
    kafka.create_topics(topics, partitions=4)

    now = time.time()
    start = (now // 86400) * 86400 - 86400 + 8 * 3600  # yesterday 08:00-14:00 UTC
    cfg = SimConfig(
        seed=2026, start=start, duration=SIX_HOURS, rate=16, duplicates=0.01, disorder=60,
        bad=0.002, unknown_types=0.003, orphans=0.005, now=now,
        tickets_topic=topics.tickets, surveys_topic=topics.surveys,
    )
    records = list(generate(cfg))
    kinds = Counter(r.kind for r in records)
    assert len(records) >= 20_000
    assert all(kinds[f"bad:{reason}"] >= 1 for reason in DEAD_LETTER_REASONS)
    assert kinds["duplicate"] >= 0.008 * len(records)

    sent = asyncio.run(produce(records, kafka.bootstrap, realtime=False, progress=False))
    assert sent == len(records)
    batch = compute(
        [(r.topic, r.key, r.value) for r in records],
        now=time.time(),
        config=BatchConfig(tickets_topic=topics.tickets, surveys_topic=topics.surveys),
    )

    worker = Worker(kafka, topics, "kpimon-e2e", tmp_path)
    try:
        worker.wait_ready()
        _wait(lambda: sum(events_total(worker.metrics()).values()) >= len(records),
              timeout=600, what="every message to reach an outcome", worker=worker)
        print(f"\nall outcomes after {time.monotonic() - began:.1f} s")
        # Then the KPI topic goes quiet: deltas applied, debounced emission done.
        last = [-1]

        def kpis_quiet() -> bool:
            end = topic_end(kafka.bootstrap, topics.kpis)
            quiet = end == last[0] and end > 0
            last[0] = end
            return quiet

        time.sleep(3)
        _wait(kpis_quiet, timeout=600, what="the KPI topic to settle", worker=worker)
        print(f"\nsettled after {time.monotonic() - began:.1f} s")
        metrics = worker.metrics()
    finally:
        worker.stop()

    # Every input message is exactly one outcome, and the same one the batch predicts.
    outcomes = events_total(metrics)
    assert sum(outcomes.values()) == len(records)
    assert Counter(outcomes) == +batch.outcomes

    # Dead letters: one record per rejected message, reason and original bytes kept.
    dead = [DeadLetterRecord.model_validate_json(v or b"")
            for _, v in read_topic(kafka.bootstrap, topics.deadletter)]
    assert Counter(d.reason for d in dead) == batch.dead_letter_reasons
    bad_values = Counter(r.value for r in records if r.kind.startswith("bad:"))
    assert Counter(d.original_value() for d in dead) == bad_values

    # Last record per key on the compacted KPI topic = the truth readers keep.
    latest: dict[bytes, dict[str, Any]] = {}
    last_bytes: dict[bytes, bytes] = {}
    gaps: list[float] = []  # between a key's consecutive records (SPEC 4: >= 1 s)
    for key, value in read_topic(kafka.bootstrap, topics.kpis):
        assert key is not None and value is not None
        record = orjson.loads(value)
        KpiWindow.model_validate(record)
        if key in latest:
            previous = latest[key]["revision"]
            assert record["revision"] > previous or value == last_bytes[key], (
                f"revision of {key!r} went {previous} -> {record['revision']} with new values"
            )
            gaps.append(parse_rfc3339(record["updated_at"])
                        - parse_rfc3339(latest[key]["updated_at"]))
        last_bytes[key] = value
        latest[key] = record
    streamed = {
        (r["queue"], r["channel"], int(parse_rfc3339(r["window_start"]))): r
        for r in latest.values()
    }
    for key, r in latest.items():
        assert key.decode() == f"{r['queue']}|{r['channel']}|{r['window_start']}"
    # Debounced: at most one record per key per second (updated_at is rounded to 1 ms).
    assert len(gaps) > 100, len(gaps)
    assert min(gaps) >= 0.999, sorted(gaps)[:10]

    lags = {dict(lb)["topic"] + dict(lb)["partition"]: v for (name, lb), v in metrics.items()
            if name == "support_consumer_lag_messages"}
    assert len(lags) == 8 and set(lags.values()) == {0}, lags  # drained, 2 topics x 4

    watermarks = [v for (name, _), v in metrics.items()
                  if name == "support_watermark_timestamp_seconds"]
    assert len(watermarks) == 4
    # Pending at the end: SLA deadlines and orphan timeouts not yet reached by the
    # slowest partition's watermark. Everything older is final.
    horizon = min(watermarks) - 900
    result = compare_windows(streamed, batch.windows, until=horizon)
    elapsed = time.monotonic() - began
    print(
        f"\nend-to-end: {len(records)} messages ({dict(kinds)}), "
        f"{len(latest)} windows on the KPI topic, {result.compared} compared, "
        f"{len(result.mismatches)} mismatches, {elapsed:.1f} s"
    )
    assert result.compared > 5000
    assert result.mismatches == [], "\n".join(result.mismatches[:20])

    # /metrics at the end equals the batch at the same per-partition watermarks.
    by_partition = {int(dict(labels)["partition"]): v for (name, labels), v in metrics.items()
                    if name == "support_watermark_timestamp_seconds"}
    exact = compute(
        [(r.topic, r.key, r.value) for r in records], now=now,
        config=BatchConfig(tickets_topic=topics.tickets, surveys_topic=topics.surveys),
        partitions=4, watermarks=by_partition,
    )
    checked, problems = metric_problems(
        metrics, exact, end_bucket=int(max(by_partition.values()) // 60) * 60
    )
    assert problems == [], "\n".join(problems[:20])
    print(f"metrics: {checked} exported values equal the batch computation")
    # 24 queue/channel pairs x 4 windows x (19 sums + 26 histogram cells), plus live gauges.
    assert checked > 4000
    assert sum(n for k, n in exact.live.items() if k[3] == "waiting") > 0
    assert max(exact.oldest_waiting.values()) > 60
