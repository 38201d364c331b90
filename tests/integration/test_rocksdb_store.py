"""The RocksDB store: a worker killed with kill -9 restarts on its own state directory.

`store = "rocksdb://"` keeps the tables on disk (state larger than memory). The worker
writes ticket state from timers too (opening a partition, the idle watermark), where
Faust's RocksDB store has no current event to take the partition from
(`streams.store.put_in_partition`). The first worker is killed in the middle of the
input; the second starts on the same state directory, so it recovers from the local
databases plus the changelog's tail, and must then equal the batch computation.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from kpimon.sim import SimConfig, generate, produce
from tests.integration.cluster import wait_equal
from tests.integration.kafka_env import LocalKafka, Topics, Worker

pytestmark = pytest.mark.integration


def test_rocksdb_worker_restarts_on_its_state_and_equals_batch(
    kafka: LocalKafka, tmp_path: Path
) -> None:
    import rocksdict  # noqa: F401  (scripts/setup.sh installs the rocksdb extra)

    topics = Topics.named("rocks")
    kafka.create_topics(topics, partitions=4)
    now = time.time()
    start = (now // 86400) * 86400 - 86400 + 9 * 3600
    records = list(generate(SimConfig(
        seed=17, start=start, duration=3 * 3600, rate=12, duplicates=0.01, bad=0.001,
        orphans=0.003, now=now, tickets_topic=topics.tickets, surveys_topic=topics.surveys,
    )))
    half = len(records) // 2
    data_dir = tmp_path / "data"
    env = {"KPIMON_WORKER__STORE": "rocksdb://", "KPIMON_WORKER__DATA_DIR": str(data_dir)}

    asyncio.run(produce(records[:half], kafka.bootstrap, realtime=False, progress=False))
    first = Worker(kafka, topics, "kpimon-rocks", tmp_path / "first", env)
    try:
        first.wait_ready()
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:  # kill it with about a third of its input unread
            lags = [v for (n, _), v in first.metrics().items()
                    if n == "support_consumer_lag_messages"]
            if len(lags) == 8 and sum(lags) <= half // 3:
                break
            time.sleep(0.05)
        else:
            raise AssertionError(f"the first worker never got going:\n{first.tail()}")
    finally:
        first.kill()
    databases = [p for p in data_dir.rglob("*") if p.is_dir() and p.name.endswith(".db")]
    assert databases, f"no RocksDB databases under {data_dir}: {list(data_dir.rglob('*'))[:20]}"

    asyncio.run(produce(records[half:], kafka.bootstrap, realtime=False, progress=False))
    second = Worker(kafka, topics, "kpimon-rocks", tmp_path / "second", env)
    try:
        second.wait_ready()
        wait_equal(records, topics, now, [second], timeout=240)
        assert "AssertionError" not in second.tail(400), second.tail()
    finally:
        second.stop()
