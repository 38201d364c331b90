"""Input written in Kafka transactions: the commit markers occupy offsets, so every
partition's offsets have holes that hold no records. The worker must tell them from
messages its consumer dropped (streams/gaps.py): probe, bridge, lose nothing, stall
nowhere.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer

from kpimon.sim import SimConfig, generate
from tests.integration.cluster import wait_equal
from tests.integration.kafka_env import LocalKafka, Topics, Worker, topic_end

pytestmark = pytest.mark.integration


async def produce_in_transactions(records: list[Any], bootstrap: str, per_txn: int) -> int:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=True,
                                transactional_id="kpimon-test-txn")
    await producer.start()
    transactions = 0
    try:
        for i in range(0, len(records), per_txn):
            async with producer.transaction():
                for r in records[i:i + per_txn]:
                    await producer.send(r.topic, key=r.key, value=r.value)
            transactions += 1
    finally:
        await producer.stop()
    return transactions


def test_transaction_markers_are_bridged_and_nothing_is_lost(
    kafka: LocalKafka, tmp_path: Path
) -> None:
    topics = Topics.named("txn")
    kafka.create_topics(topics, partitions=4)
    now = time.time()
    start = (now // 86400) * 86400 - 86400 + 9 * 3600
    records = list(generate(SimConfig(
        seed=37, start=start, duration=3600, rate=6, now=now,
        tickets_topic=topics.tickets, surveys_topic=topics.surveys,
    )))
    worker = Worker(kafka, topics, "kpimon-txn", tmp_path / "worker")
    try:
        worker.wait_ready()
        transactions = asyncio.run(produce_in_transactions(records, kafka.bootstrap, 40))
        offsets = topic_end(kafka.bootstrap, topics.tickets) + topic_end(
            kafka.bootstrap, topics.surveys)
        assert offsets > len(records), "the markers take offsets of their own"
        started = time.monotonic()
        (scrape,) = wait_equal(records, topics, now, [worker], timeout=180)
        took = time.monotonic() - started
        holes = {dict(labels)["kind"]: int(v) for (name, labels), v in scrape.items()
                 if name == "support_input_holes_total"}
        assert holes.get("bridged", 0) > 0, "the holes were probed and bridged"
        assert holes.get("reread", 0) == 0, "no hole was mistaken for a dropped message"
        bridged = holes["bridged"]
    finally:
        worker.stop()
    print(f"\ntransactional input: {len(records)} messages in {transactions} transactions "
          f"({offsets - len(records)} offsets of markers), {bridged} holes bridged, "
          f"every series equal to the batch after {took:.1f} s")
