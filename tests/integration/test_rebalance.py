"""Workers join and leave mid-stream (2 -> 3 -> 1): output and metrics equal the batch.

Each change of membership happens right after a chunk of input was produced, while
the workers are busy with it; the two leaving workers leave at once. (kill -9 is
tests/integration/test_crash_recovery.py.)
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from kpimon.sim import SimConfig, generate, produce
from tests.integration.cluster import kpi_series, latest_windows, wait_equal, wait_settled
from tests.integration.kafka_env import LocalKafka, Topics, Worker
from tests.reference.batch import BatchConfig, compute
from tests.support.compare import compare_windows

pytestmark = pytest.mark.integration


def test_two_then_three_then_one_worker(kafka: LocalKafka, tmp_path: Path) -> None:
    topics = Topics.named("rebalance")
    kafka.create_topics(topics, partitions=4)
    now = time.time()
    start = (now // 86400) * 86400 - 86400 + 8 * 3600
    records = list(generate(SimConfig(
        seed=23, start=start, duration=3 * 3600, rate=16, duplicates=0.01, now=now,
        tickets_topic=topics.tickets, surveys_topic=topics.surveys,
    )))
    third = len(records) // 3
    chunks = [records[:third], records[third:2 * third], records[2 * third:]]

    def worker(name: str) -> Worker:
        return Worker(kafka, topics, "kpimon-rebalance", tmp_path / name)

    a, b = worker("a"), worker("b")
    c: Worker | None = None
    try:
        a.wait_ready()
        b.wait_ready()
        wait_settled([a, b])  # the first rebalance of a fresh group is done
        asyncio.run(produce(chunks[0], kafka.bootstrap, realtime=False, progress=False))
        wait_equal(chunks[0], topics, now, [a, b], timeout=180)

        asyncio.run(produce(chunks[1], kafka.bootstrap, realtime=False, progress=False))
        c = worker("c")  # joins while chunk 2 is being processed
        c.wait_ready()
        scrapes = wait_equal(records[: 2 * third], topics, now, [a, b, c], timeout=240)
        owned = [kpi_series(m) for m in scrapes]
        assert sum(len(o) for o in owned) == len(set().union(*owned)), "a series twice"

        asyncio.run(produce(chunks[2], kafka.bootstrap, realtime=False, progress=False))
        # Two leave at once, mid-chunk: SIGTERM to both, then wait for both.
        b.proc.terminate()
        c.stop()
        b.stop()
        (final,) = wait_equal(records, topics, now, [a], timeout=300)
        time.sleep(3)  # the debounced emission of the last windows
    finally:
        for w in (a, b, c):
            if w is not None:
                w.stop()

    streamed = latest_windows(kafka.bootstrap, topics.kpis)
    batch = compute([(r.topic, r.key, r.value) for r in records], now=now,
                    config=BatchConfig(tickets_topic=topics.tickets, surveys_topic=topics.surveys))
    marks = [v for (n, _), v in final.items() if n == "support_watermark_timestamp_seconds"]
    result = compare_windows(streamed, batch.windows, until=min(marks) - 900)
    print(f"\nrebalance 2->3->1: {len(records)} messages, {len(kpi_series(final))} KPI series "
          f"on the survivor, {result.compared} windows compared, "
          f"{len(result.mismatches)} mismatches")
    assert result.compared > 2000
    assert result.mismatches == [], "\n".join(result.mismatches[:20])
