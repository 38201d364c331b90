"""A rebalance during shutdown: the worker's last changelog records go out before its
partitions are given up, nothing after, and no input offset is committed after either
(streams/app.py `_App`, `KpiWorker._fence`).
"""

from __future__ import annotations

import asyncio
from typing import Any

from kpimon.config import load_settings
from tests.unit.test_outbox import SlowProducer


class FlushingProducer(SlowProducer):
    """aiokafka's producer as the outbox and `_fence` use it, recording the order."""

    def __init__(self, events: list[str]) -> None:
        super().__init__(room=1)
        self.events = events

    async def send_batch(self, batch: Any, topic: str, *, partition: int) -> None:
        await super().send_batch(batch, topic, partition=partition)
        self.events.append(f"sent {batch.records[0][0].decode()}")

    async def flush(self) -> None:
        self.events.append("flushed")


class FaustConsumer:
    def __init__(self, events: list[str]) -> None:
        self.events = events

    async def commit(self) -> bool:
        self.events.append("committed")
        return True


class FaustProducer:
    def __init__(self, inner: FlushingProducer) -> None:
        self.inner = inner

    def _ensure_producer(self) -> FlushingProducer:
        return self.inner


def test_a_rebalance_while_stopping_fences_the_worker_before_giving_up() -> None:
    from streams.app import KpiWorker

    worker = KpiWorker(load_settings(None, {"KPIMON_WORKER__APP_ID": "unit-fence"}))
    events: list[str] = []
    worker.app.producer = FaustProducer(FlushingProducer(events))  # type: ignore[assignment]
    worker.app.consumer = FaustConsumer(events)  # type: ignore[assignment]
    worker.app._on_rebalance_when_stopped = lambda: events.append("gave up")  # type: ignore[method-assign]
    write = worker._writers[id(worker.tickets)]

    async def scenario() -> None:
        write(0, b"applied", b"v")  # an agent's batch, being sent when the stop begins
        sending = asyncio.create_task(worker._send_staged())
        await asyncio.sleep(0)
        write(1, b"staged", b"v")  # staged while that send is in progress
        worker.app._stopped.set()  # SIGTERM: Faust's stop has begun
        await worker.app._on_partitions_revoked(set())
        write(2, b"late", b"v")  # the agent goes on with its batch
        await worker._send_staged()
        await sending
        # ... and acks it: Faust would commit, but the fence stopped that (dropped
        # records must be applied again by the next owner).
        assert await worker.app.consumer.commit() is False

    asyncio.run(scenario())
    assert events == ["sent applied", "flushed", "gave up"]
    assert worker.outbox.dropped == 2 and len(worker.outbox) == 0
