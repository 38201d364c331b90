"""kill -9 the worker five times in the middle of a stream; nothing lost, nothing twice.

The input arrives in chunks; after each chunk a worker starts and is killed with
SIGKILL while it is still working through it (no shutdown, no flush, no commit). A last
worker drains everything. Then the last record per key on the KPI topic equals the
batch computation for every settled window, and every exported KPI series equals the
batch at the final watermarks.
"""

from __future__ import annotations

import asyncio
import random
import time
from pathlib import Path

import pytest

from kpimon.sim import SimConfig, generate, produce
from tests.integration.cluster import latest_windows
from tests.integration.kafka_env import LocalKafka, Topics, Worker, events_total
from tests.reference.batch import BatchConfig, compute
from tests.support.compare import compare_windows, metric_problems

pytestmark = pytest.mark.integration

KILLS = 5


def test_five_kill_nines_mid_stream_then_equal_to_batch(
    kafka: LocalKafka, tmp_path: Path
) -> None:
    topics = Topics.named("crash")
    kafka.create_topics(topics, partitions=4)
    now = time.time()
    start = (now // 86400) * 86400 - 86400 + 8 * 3600
    records = list(generate(SimConfig(
        seed=5, start=start, duration=4 * 3600, rate=16, duplicates=0.01, bad=0.001,
        orphans=0.003, now=now, tickets_topic=topics.tickets, surveys_topic=topics.surveys,
    )))
    chunks = [records[i * len(records) // (KILLS + 1):(i + 1) * len(records) // (KILLS + 1)]
              for i in range(KILLS + 1)]
    rng = random.Random(2026)
    killed_after: list[int] = []
    for i in range(KILLS):
        asyncio.run(produce(chunks[i], kafka.bootstrap, realtime=False, progress=False))
        worker = Worker(kafka, topics, "kpimon-crash", tmp_path / f"run{i}")
        worker.wait_ready()
        # Kill somewhere inside this chunk's processing: once the worker has read all
        # but a random part of its input (consumer lag over the 8 input partitions).
        unread = rng.randint(len(chunks[i]) // 10, len(chunks[i]) * 9 // 10)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            lags = [v for (n, _), v in worker.metrics().items()
                    if n == "support_consumer_lag_messages"]
            if len(lags) == 8 and sum(lags) <= unread:
                break
            time.sleep(0.05)
        else:
            raise AssertionError(f"worker {i} never got going:\n{worker.tail()}")
        killed_after.append(int(sum(lags)))
        worker.kill()

    asyncio.run(produce(chunks[KILLS], kafka.bootstrap, realtime=False, progress=False))
    worker = Worker(kafka, topics, "kpimon-crash", tmp_path / "final")
    batch_config = BatchConfig(tickets_topic=topics.tickets, surveys_topic=topics.surveys)
    try:
        worker.wait_ready()
        deadline = time.monotonic() + 300
        why = ""
        while time.monotonic() < deadline:
            metrics = worker.metrics()
            marks = {int(dict(lb)["partition"]): v for (n, lb), v in metrics.items()
                     if n == "support_watermark_timestamp_seconds"}
            lags = [v for (n, _), v in metrics.items() if n == "support_consumer_lag_messages"]
            if len(marks) == 4 and len(lags) == 8 and not any(lags):
                exact = compute([(r.topic, r.key, r.value) for r in records], now=now,
                                config=batch_config, partitions=4, watermarks=marks)
                end = int(max(marks.values()) // 60) * 60
                checked, problems = metric_problems(metrics, exact, end_bucket=end)
                if not problems:
                    break
                why = "\n".join(problems[:10])
            time.sleep(2)
        else:
            raise AssertionError(f"metrics never equal to the batch:\n{why}\n{worker.tail()}")
        time.sleep(3)  # the debounced emission of the last windows
        outcomes = events_total(worker.metrics())
    finally:
        worker.stop()

    streamed = latest_windows(kafka.bootstrap, topics.kpis)
    batch = compute([(r.topic, r.key, r.value) for r in records], now=now, config=batch_config)
    # Outcome accounting balances across the kills: each message counted exactly once.
    assert sum(outcomes.values()) == len(records)
    assert outcomes == dict(+batch.outcomes)
    result = compare_windows(streamed, batch.windows, until=min(marks.values()) - 900)
    print(f"\ncrash recovery: {len(records)} messages, {KILLS} kill -9 with "
          f"{killed_after} messages still unread, {result.compared} windows compared, "
          f"{len(result.mismatches)} mismatches, {checked} metric values equal, "
          f"outcomes {sum(outcomes.values())} = messages {len(records)}")
    assert result.compared > 3000
    assert result.mismatches == [], "\n".join(result.mismatches[:20])
