"""The outbox hands staged records to the producer in order, one batch per partition."""

from __future__ import annotations

import asyncio
from typing import Any

from streams.outbox import Outbox


class FakeBatch:
    """Holds up to `room` records, like aiokafka's BatchBuilder (the first always fits)."""

    def __init__(self, room: int) -> None:
        self.room = room
        self.records: list[tuple[bytes, bytes | None]] = []

    def append(self, *, key: bytes, value: bytes | None, timestamp: Any) -> object | None:
        if self.records and len(self.records) >= self.room:
            return None
        self.records.append((key, value))
        return object()


class FakeProducer:
    def __init__(self, room: int) -> None:
        self.room = room
        self.sent: list[tuple[str, int, list[tuple[bytes, bytes | None]]]] = []

    def create_batch(self) -> FakeBatch:
        return FakeBatch(self.room)

    async def send_batch(self, batch: FakeBatch, topic: str, *, partition: int) -> None:
        self.sent.append((topic, partition, batch.records))


def test_records_keep_their_order_per_partition_across_full_batches() -> None:
    outbox = Outbox()
    write = outbox.writer("app-tickets-changelog")
    for i in range(7):
        write(i % 2, b"k%d" % i, None if i == 3 else b"v%d" % i)
    outbox.add("other", 0, b"x", b"y")
    assert len(outbox) == 8

    producer = FakeProducer(room=2)
    asyncio.run(outbox.send(producer))

    assert len(outbox) == 0 and outbox.sent == 8
    by_partition: dict[tuple[str, int], list[bytes]] = {}
    for topic, partition, records in producer.sent:
        assert 1 <= len(records) <= 2
        by_partition.setdefault((topic, partition), []).extend(k for k, _ in records)
    assert by_partition == {
        ("app-tickets-changelog", 0): [b"k0", b"k2", b"k4", b"k6"],
        ("app-tickets-changelog", 1): [b"k1", b"k3", b"k5"],
        ("other", 0): [b"x"],
    }
    deleted = [v for _, _, records in producer.sent for k, v in records if k == b"k3"]
    assert deleted == [None]


def test_nothing_staged_sends_nothing() -> None:
    producer = FakeProducer(room=10)
    asyncio.run(Outbox().send(producer))
    assert producer.sent == []


class SlowProducer(FakeProducer):
    """Yields to the loop inside every send, as aiokafka does when its buffer is full."""

    async def send_batch(self, batch: FakeBatch, topic: str, *, partition: int) -> None:
        await asyncio.sleep(0.01)
        await super().send_batch(batch, topic, partition=partition)


def test_a_send_returns_only_once_its_records_are_with_the_producer() -> None:
    async def scenario() -> int:
        outbox = Outbox()
        producer = SlowProducer(room=1)
        outbox.add("t", 0, b"mine", b"1")  # staged by one agent ...
        other = asyncio.create_task(outbox.send(producer))  # ... taken by another's send
        await asyncio.sleep(0)
        await outbox.send(producer)  # must not return before "mine" is handed over
        handed_over = len(producer.sent)
        await other
        return handed_over

    assert asyncio.run(scenario()) == 1


def test_close_waits_for_a_send_in_progress_then_drops_everything() -> None:
    async def scenario() -> tuple[int, int, int]:
        outbox = Outbox()
        producer = SlowProducer(room=1)
        for i in range(3):
            outbox.add("t", 0, b"k%d" % i, b"v")
        sending = asyncio.create_task(outbox.send(producer))
        await asyncio.sleep(0)  # the send holds the records now
        outbox.add("t", 0, b"late", b"v")  # staged while the send is in progress
        await outbox.close()
        handed_over = len(producer.sent)  # the send in progress finished first
        outbox.add("t", 1, b"after", b"v")
        await outbox.send(producer)
        await sending
        return handed_over, len(producer.sent), outbox.dropped

    assert asyncio.run(scenario()) == (3, 3, 2)
