"""Stage 1's mis-routed input at run time: notice it, send it home, say how far we read.

The pure part (home partition, records, journal entries) is streams/routing.py; this
class holds the worker's side: the reroute topic, the one-time warnings, the sending
order (one sender at a time: a partition's forwards and then its progress reach every
other partition in that order), and each partition's read progress. The worker's
stage 1 asks it about every input message (`misrouted`) and hands it every record of
the reroute topic (`received`).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Callable, Mapping
from typing import Any

from models.decode import DeadLetter, Decoded, Ignored, TopicKind
from streams.routing import (
    ADVICE,
    Envelope,
    Forward,
    HomePartitions,
    parse_progress,
    producer_pattern,
    progress_record,
)
from streams.store import InputPartition

log = logging.getLogger(__name__)

# How often each input partition tells the others how far it has read: held events
# wait for it (600 s of event time by default), so seconds do not matter, and the
# reroute topic keeps n * (n - 1) records per interval at most.
PROGRESS_INTERVAL = 5.0


class Rerouter:
    """The reroute topic of one worker: forwards out, forwards and progress in."""

    def __init__(
        self, name: str, topic: Any, kinds: Mapping[str, TopicKind], tickets_topic: str,
        partitions: int, highwater: Callable[[str, int], int | None],
    ) -> None:
        self.name = name
        self.topic = topic  # Faust topic: send(key=, value=, partition=) -> future
        self.kinds = kinds
        self.tickets_topic = tickets_topic
        self.partitions = partitions
        self.homes = HomePartitions(partitions)
        self._highwater = highwater
        self._told: set[tuple[str, str]] = set()
        self._sending = asyncio.Lock()
        self._progress_sent: dict[int, float] = {}

    def misrouted(
        self, part: InputPartition, topic: str, partition: int, offset: int,
        key: bytes | None, value: bytes | None, decoded: Decoded,
    ) -> bool:
        """Note a direct input message; True if it belongs to another partition and
        was passed on (it is applied and counted there)."""
        valid = False
        if not isinstance(decoded, DeadLetter | Ignored):
            valid = True
            if topic == self.tickets_topic:
                part.note_read(decoded.occurred_at)
        if key is None:
            return False
        home = self.homes.home(key)
        if home == partition:
            return False
        part.note_misrouted(topic)
        self._tell(topic, partition, offset, key)
        if not valid:
            return False  # dead-lettered or ignored where it arrived: no state to reach
        assert value is not None  # it decoded
        part.forward(topic, offset, home, key, value)
        return True

    def received(
        self, part: InputPartition, offset: int, value: bytes | None
    ) -> tuple[TopicKind, Envelope] | None:
        """A record of the reroute topic: a forward to apply (its kind and envelope),
        or None when it only told a partition's progress or was not ours."""
        raw = value or b""
        heard = None
        with contextlib.suppress(ValueError):
            heard = parse_progress(raw)
        if heard is not None:
            part.heard(*heard)
            part.skip(self.name, offset)
            return None
        try:
            envelope = Envelope.decode(raw)
            return self.kinds[envelope.topic], envelope
        except (ValueError, KeyError):
            log.error("%s[%d]@%d: not a forwarded input message of this worker's topics; "
                      "skipped", self.name, part.store.partition, offset)
            part.skip(self.name, offset)
            return None

    async def send(self, parts: Mapping[int, InputPartition], progress: bool = False) -> None:
        """Hand the forwards staged since the last call to the producer (their journal
        is staged already: a crash before Kafka has one sends it again from there);
        with `progress`, then tell every other partition how far each has read."""
        async with self._sending:
            # Taken with no await in between: a progress covers exactly these forwards.
            taken = [(p, part.take_unsent(), self.read_progress(p, part))
                     for p, part in list(parts.items())]
            for partition, unsent, read in taken:
                for forward in unsent:
                    sent = await self.topic.send(key=forward.key,
                                                 value=forward.envelope.encode(),
                                                 partition=forward.home)
                    sent.add_done_callback(functools.partial(_delivered, forward))
                if not progress or read is None or self._progress_sent.get(partition) == read:
                    continue
                self._progress_sent[partition] = read
                record = progress_record(partition, read)
                for target in range(self.partitions):
                    if target != partition:
                        await self.topic.send(key=None, value=record, partition=target)

    def read_progress(self, partition: int, part: InputPartition) -> float | None:
        """How far `partition` has read its ticket input; +inf for a partition with no
        message at all on the broker (it holds nobody up); None: nothing to say yet."""
        read = part.progress()
        if read != float("-inf"):
            return read
        with contextlib.suppress(Exception):
            if self._highwater(self.tickets_topic, partition) == 0:
                return float("inf")
        return None

    def forget(self, partition: int) -> None:
        """A partition this worker gave up: its next owner speaks for it."""
        self._progress_sent.pop(partition, None)

    def _tell(self, topic: str, partition: int, offset: int, key: bytes) -> None:
        """Log once per topic and partitioner what the operator should change."""
        pattern = producer_pattern(key, partition, self.partitions)
        if (topic, pattern) in self._told:
            return
        self._told.add((topic, pattern))
        log.warning(
            "%s: messages arrive on other partitions than murmur2 of their key gives (the "
            "first at partition %d, offset %d); %s. Meanwhile they are routed to their "
            "ticket's partition through %s and counted right; "
            "support_input_misrouted_total counts them.",
            topic, partition, offset, ADVICE[pattern], self.name,
        )


def _delivered(forward: Forward, sent: asyncio.Future[Any]) -> None:
    if sent.cancelled() or sent.exception() is not None:
        # Kept in the journal: the next owner of its source partition sends it again.
        log.error("a forwarded input message was not delivered (%r); it is sent again "
                  "when its partition is next recovered",
                  None if sent.cancelled() else sent.exception())
        return
    forward.delivered = True
