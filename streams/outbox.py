"""Records written by synchronous code, sent later as one Kafka batch per partition.

Faust's table writes (`send_changelog`) go through its producer buffer one record at a
time, with a future and callbacks each: about 100 us per record here, the largest cost
of stage 1 when every input message writes a journal and a ticket. The stages stage
their changelog writes here instead and send them after each batch of input with
aiokafka's `create_batch`/`send_batch`: a few microseconds per record.

Order is kept per partition (one batch after another through the same producer), which
is all the journal needs: its record precedes the keys it covers. Faust flushes the
producer before it commits input offsets, so these records are delivered before the
offsets of the input they reflect are committed, as with `send_changelog`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, Protocol


class BatchProducer(Protocol):
    """The two calls of `aiokafka.AIOKafkaProducer` the outbox uses."""

    def create_batch(self) -> Any: ...

    async def send_batch(self, batch: Any, topic: str, *, partition: int) -> Any: ...


# write(partition, key, value or None to delete): one changelog record
Writer = Callable[[int, bytes, "bytes | None"], None]


class Outbox:
    """Staged records per (topic, partition), in the order they were added."""

    def __init__(self) -> None:
        self._records: dict[tuple[str, int], list[tuple[bytes, bytes | None]]] = {}
        self.sent = 0
        self.dropped = 0
        self.closed = False
        self._sending = asyncio.Lock()

    def __len__(self) -> int:
        return sum(len(items) for items in self._records.values())

    def add(self, topic: str, partition: int, key: bytes, value: bytes | None) -> None:
        if self.closed:
            self.dropped += 1
            return
        records = self._records.get((topic, partition))
        if records is None:
            records = self._records[(topic, partition)] = []
        records.append((key, value))

    def writer(self, topic: str) -> Writer:
        """`write(partition, key, value)` into `topic`: the store's changelog writes."""

        def write(partition: int, key: bytes, value: bytes | None) -> None:
            self.add(topic, partition, key, value)

        return write

    async def send(self, producer: BatchProducer) -> None:
        """Hand every staged record to the producer (delivery is the producer's job).

        When it returns, every record staged before the call is with the producer, even
        if another caller's send took it: the agents rely on that before their input
        offsets can be committed (Faust flushes only what the producer holds).
        """
        async with self._sending:
            await self._send(producer)

    async def close(self) -> None:
        """Wait for a send in progress, then drop every record, now and from now on.

        For a worker that has lost its partitions without a handover: whatever it
        sends after that lands in changelogs the next owner has already restored.
        """
        async with self._sending:
            self.closed = True
            self.dropped += len(self)
            self._records = {}

    async def _send(self, producer: BatchProducer) -> None:
        records, self._records = self._records, {}
        for (topic, partition), items in records.items():
            batch = producer.create_batch()
            for key, value in items:
                if batch.append(key=key, value=value, timestamp=None) is None:
                    await producer.send_batch(batch, topic, partition=partition)
                    batch = producer.create_batch()
                    # The first record of a batch always fits, whatever its size.
                    batch.append(key=key, value=value, timestamp=None)
                self.sent += 1
            await producer.send_batch(batch, topic, partition=partition)
