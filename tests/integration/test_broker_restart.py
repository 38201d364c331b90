"""The broker restarts mid-stream: the worker survives, reconnects and catches up.

Uses a broker of its own, so that stopping it cannot disturb the other tests.
"""

from __future__ import annotations

import asyncio
import subprocess
import time
from pathlib import Path

import pytest

from kpimon.sim import SimConfig, generate, produce
from tests.integration.cluster import wait_equal
from tests.integration.kafka_env import KAFKACTL, Topics, Worker, local_kafka

pytestmark = pytest.mark.integration


def test_worker_survives_a_broker_restart(tmp_path: Path) -> None:
    with local_kafka(tmp_path / "kafka") as kafka:
        topics = Topics.named("restart")
        kafka.create_topics(topics, partitions=4)
        now = time.time()
        start = (now // 86400) * 86400 - 86400 + 8 * 3600
        records = list(generate(SimConfig(
            seed=31, start=start, duration=2 * 3600, rate=16, now=now,
            tickets_topic=topics.tickets, surveys_topic=topics.surveys,
        )))
        half = len(records) // 2
        worker = Worker(kafka, topics, "kpimon-restart", tmp_path / "worker")
        try:
            worker.wait_ready()
            asyncio.run(produce(records[:half], kafka.bootstrap, realtime=False,
                                progress=False))
            wait_equal(records[:half], topics, now, [worker], timeout=180)
            lag_before = max(v for (n, _), v in worker.metrics().items()
                             if n == "support_event_lag_seconds")

            subprocess.run([str(KAFKACTL), "stop"], env=kafka.env, check=True, timeout=120)
            time.sleep(10)  # an outage
            assert worker.proc.poll() is None, f"worker died with the broker:\n{worker.tail()}"
            lag_during = max(v for (n, _), v in worker.metrics().items()
                             if n == "support_event_lag_seconds")
            assert lag_during >= lag_before + 9, "the outage shows as a growing event lag"
            subprocess.run([str(KAFKACTL), "start"], env=kafka.env, check=True, timeout=300)

            asyncio.run(produce(records[half:], kafka.bootstrap, realtime=False,
                                progress=False))
            wait_equal(records, topics, now, [worker], timeout=300)
            assert worker.proc.poll() is None
            print(f"\nbroker restart: event lag {lag_before:.0f} s -> {lag_during:.0f} s "
                  f"during the outage; all {len(records)} messages counted once afterwards")
        finally:
            worker.stop()
