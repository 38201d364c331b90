"""Input that a producer sent to another partition than its ticket's, and its way home.

kpimon keeps a ticket's state in the partition that Kafka's default partitioner
(murmur2 of the key, as Java clients, Kafka Connect and aiokafka compute it) gives its
ticket id. A producer with another partitioner (librdkafka's default `consistent_random`
is CRC32: confluent-kafka, kcat, the Go and .NET clients) sends some messages elsewhere.
Stage 1 notices (`HomePartitions`), counts them, and forwards each such message to its
home partition through the internal `<app_id>-reroute` topic (`Envelope`), where the
home partition applies it like direct input: Kafka's repartitioning, only for the
messages that need it.

A forward is journaled by its source partition until the producer confirms it, and sent
again after a crash; the home partition drops the copies by source offset
(streams/store.py). Free of Faust imports.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

from aiokafka.partitioner import murmur2

# Keys remembered by `HomePartitions` before it starts afresh: a ticket's few events
# arrive close together, so a small cache saves most of murmur2's 3 us per message.
CACHE_LIMIT = 65536


def home_partition(key: bytes, partitions: int) -> int:
    """Kafka's default partition of a key (murmur2, as the Java client computes it)."""
    return int(murmur2(key) & 0x7FFFFFFF) % partitions


class HomePartitions:
    """`home(key)`: the partition a key belongs to, with recent keys remembered."""

    def __init__(self, partitions: int, limit: int = CACHE_LIMIT) -> None:
        self.partitions = partitions
        self.limit = limit
        self._known: dict[bytes, int] = {}

    def home(self, key: bytes) -> int:
        home = self._known.get(key)
        if home is None:
            if len(self._known) >= self.limit:
                self._known.clear()
            home = self._known[key] = home_partition(key, self.partitions)
        return home


def producer_pattern(key: bytes, arrived: int, partitions: int) -> str:
    """Which partitioner sent a mis-routed message there, as far as the key tells."""
    if zlib.crc32(key) % partitions == arrived:
        return "crc32"  # librdkafka's consistent / consistent_random (its default)
    return "unknown"  # an explicit partition, round robin, or a custom partitioner


ADVICE = {
    "crc32": "their partitions match CRC32, librdkafka's default partitioner "
             "(confluent-kafka, kcat, the Go and .NET clients): set "
             "`partitioner=murmur2_random` in that producer's configuration",
    "unknown": "their partitions match no key hash (an explicit partition, round robin "
               "or a custom partitioner?): make that producer use Kafka's default "
               "partitioner, murmur2 of the key",
}


@dataclass(frozen=True, slots=True)
class Envelope:
    """A forwarded message: where it was read, and the original key and value."""

    topic: str
    partition: int
    offset: int
    value: bytes

    def encode(self) -> bytes:
        # One header line: topic names cannot hold a space or a newline.
        return b"%s %d %d\n" % (self.topic.encode(), self.partition, self.offset) + self.value

    @classmethod
    def decode(cls, raw: bytes) -> Envelope:
        """Raises ValueError on anything that `encode` did not write."""
        head, sep, value = raw.partition(b"\n")
        topic, partition, offset = head.decode().split(" ")
        if not sep or not topic:
            raise ValueError("not a kpimon reroute record")
        return cls(topic, int(partition), int(offset), value)


def progress_record(source: int, progress: float) -> bytes:
    """A reroute record saying that input partition `source` has read its ticket events
    up to `progress` and sent every forward of them before this record. '#' starts no
    topic name, so it cannot be taken for an `Envelope`."""
    return b"#%d %s" % (source, repr(progress).encode())


def parse_progress(raw: bytes) -> tuple[int, float] | None:
    """(source, progress) of a `progress_record`; None for any other record."""
    if not raw.startswith(b"#"):
        return None
    source, progress = raw[1:].split(b" ")
    return int(source), float(progress)


@dataclass(slots=True)
class Forward:
    """A message on its way to its home partition; `delivered` once Kafka has it."""

    home: int
    key: bytes
    envelope: Envelope
    delivered: bool = False

    def to_list(self) -> list[object]:
        """For the journal (JSON): a forwarded message is always valid UTF-8 JSON."""
        e = self.envelope
        return [self.home, self.key.decode(), e.topic, e.partition, e.offset, e.value.decode()]

    @classmethod
    def from_list(cls, item: list[object]) -> Forward:
        home, key, topic, partition, offset, value = item
        assert isinstance(home, int) and isinstance(key, str) and isinstance(topic, str)
        assert isinstance(partition, int) and isinstance(offset, int)
        assert isinstance(value, str)
        return cls(home, key.encode(), Envelope(topic, partition, offset, value.encode()))
