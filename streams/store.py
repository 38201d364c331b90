"""Stage 1's durable state of one input partition, over a Faust table's changelog.

Free of Faust imports: the table is anything with a `data` mapping and
`send_changelog(partition, key, value, ...)`, so the crash-consistency of the journal
is testable by cutting a recorded changelog at every point.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from models.decode import DeadLetter, Decoded, Ignored, TopicKind
from streams.facts import TicketFacts
from streams.outbox import Writer
from streams.partials import Partials
from streams.routing import Envelope, Forward
from streams.rules import KpiRules
from streams.tickets import Step, TicketProcessor

_JOURNAL_KEY = b"\x00journal"
# A journal record holds every change it covers: commit before it nears Kafka's default
# 1 MB record limit, whatever the batch size.
JOURNAL_LIMIT = 256 * 1024


def changelog_writer(table: Any) -> Writer:
    """A `Writer` through the table's own `send_changelog` (Faust's producer path)."""

    def write(partition: int, key: bytes, value: bytes | None) -> None:
        if value is None:
            table.send_changelog(partition, key, None, value_serializer="raw")
        else:
            table.send_changelog(partition, key, value)

    return write


def put_in_partition(data: Any, partition: int, key: bytes, value: bytes) -> None:
    """`data[key] = value`, kept in `partition`'s part of the table's store.

    Faust's RocksDB store keeps one database per partition and takes a write's
    partition from the *current event* (it asserts there is one), so a write from a
    timer fails there. This names the partition instead, through the store's
    per-partition database and key index (faust-streaming 0.15's RocksDB `Store`;
    values are raw bytes, as every kpimon table's are). The memory store is one mapping.
    """
    db_for_partition = getattr(data, "_db_for_partition", None)
    if db_for_partition is None:
        data[key] = value
    else:
        db_for_partition(partition).put(key, value)
        data._key_index[key] = partition


def ticket_key(partition: int, ticket_id: str) -> bytes:
    """The table key of a ticket's facts in `partition`'s part of the tickets table.

    The partition is part of the key, so a partition never reads or overwrites another
    partition's state for the same ticket id, even when a producer with another
    partitioner sent some of that ticket's messages elsewhere. The leading 0xFF byte
    never starts UTF-8 text, which tells these keys from the journal's (0x00) and from
    the unprefixed keys of kpimon 0.1 (`TableTicketStore.recover` moves those).
    """
    return b"\xff%d " % partition + ticket_id.encode()


class TableTicketStore:
    """`TicketStore` over a Faust table, for the tickets of one input partition.

    Writes name their partition explicitly (changelog and store) instead of taking it
    from the current event, so the idle-watermark timer can settle tickets outside any
    event, with the memory and the RocksDB store alike;
    a ticket's state always lives in its own partition's changelog either way. The
    memory store is one mapping for every partition the worker holds, so each key
    starts with its partition (`ticket_key`).

    One input message may change several keys (its ticket and tickets whose timers
    fire), and a batch of messages many. A crash can cut the changelog between any two
    records, so the changes are staged and `commit` first writes one journal record
    holding all of them with the partition's ledger (outcome counts, read position,
    watermark), then the keys themselves (each once, however often it changed).
    Recovery replays the last journal record over the keys: the state is then exactly
    that after some committed input message, never half of a commit.

    `write` sends one changelog record; by default the table's own `send_changelog`.
    """

    def __init__(self, table: Any, partition: int, write: Writer | None = None) -> None:
        self.table = table
        self.partition = partition
        self._prefix = b"%d " % partition  # of the journal's value (and 0.1's values)
        self._key_prefix = ticket_key(partition, "")
        self._journal_key = _JOURNAL_KEY + b"%d" % partition
        self._staged: dict[str, bytes | None] = {}
        self.staged_bytes = 0
        self._send: Writer = write or changelog_writer(table)

    def get(self, ticket_id: str) -> TicketFacts | None:
        raw = self.table.data.get(self._key_prefix + ticket_id.encode())
        return None if raw is None else TicketFacts.from_bytes(raw)

    def put(self, ticket_id: str, facts: TicketFacts) -> None:
        self._stage(ticket_id, facts.to_bytes())

    def delete(self, ticket_id: str) -> None:
        self._stage(ticket_id, None)

    def items(self) -> Iterator[tuple[str, TicketFacts]]:
        prefix = self._key_prefix
        cut = len(prefix)
        for key, raw in list(self.table.data.items()):
            if key.startswith(prefix):
                yield key[cut:].decode(), TicketFacts.from_bytes(raw)

    def _stage(self, ticket_id: str, value: bytes | None) -> None:
        key = self._key_prefix + ticket_id.encode()
        if value is None:
            self.table.data.pop(key, None)
        else:
            put_in_partition(self.table.data, self.partition, key, value)
            self.staged_bytes += len(value)
        self._staged[ticket_id] = value

    def commit(self, ledger: dict[str, Any]) -> None:
        """Write the staged changes after a journal record holding them and `ledger`."""
        staged, self._staged = self._staged, {}
        self.staged_bytes = 0
        journal = dict(ledger)
        journal["c"] = [
            [ticket_id, None if value is None else value.decode()]
            for ticket_id, value in staged.items()
        ]
        self._write(self._journal_key, self._prefix + orjson.dumps(journal))
        prefix = self._key_prefix
        for ticket_id, value in staged.items():
            self._write(prefix + ticket_id.encode(), value)

    def recover(self) -> dict[str, Any]:
        """Replay the last journal record over the keys; the ledger it carried."""
        self._migrate()
        raw = self.table.data.get(self._journal_key)
        if raw is None:
            return {}
        journal: dict[str, Any] = orjson.loads(raw[len(self._prefix):])
        prefix = self._key_prefix
        for ticket_id, value in journal.pop("c", ()):
            # Written again, so a later journal record can never hide a lost write.
            self._write(prefix + ticket_id.encode(), None if value is None else value.encode())
        return journal

    def _migrate(self) -> None:
        """Move this partition's tickets from kpimon 0.1's keys (the bare ticket id,
        the value prefixed with the partition) to `ticket_key`; the new key is written
        before the old one is deleted, so a crash in between only repeats the move."""
        prefix = self._prefix
        for key, raw in list(self.table.data.items()):
            if key[:1] not in (b"\x00", b"\xff") and raw.startswith(prefix):
                self._write(self._key_prefix + key, raw[len(prefix):])
                self._write(key, None)

    def _write(self, key: bytes, value: bytes | None) -> None:
        if value is None:
            self.table.data.pop(key, None)
        else:
            put_in_partition(self.table.data, self.partition, key, value)
        self._send(self.partition, key, value)


@dataclass(slots=True)
class InputPartition:
    """Stage 1's state of one input partition: facts and timers, partial sums, and
    the ledger (outcome counts and read position) that is journaled with every change.

    `topics` maps the engine's topic kinds ("tickets", "surveys") to topic names, which
    label the outcome counts.
    """

    store: TableTicketStore
    processor: TicketProcessor
    partials: Partials
    generation: int
    topics: Mapping[str, str]
    outcomes: dict[str, int] = field(default_factory=dict)  # "topic|outcome" -> count
    reasons: dict[str, int] = field(default_factory=dict)  # "topic|reason" -> count
    # topic -> offset of the last input message whose effects are in the state
    position: dict[str, int] = field(default_factory=dict)
    sequence: int = 0
    counts_changed: bool = True
    # Stage 2 must first forget this partition's partials of older generations: a
    # window or pair that the recovered facts no longer feed would otherwise keep them.
    announce: bool = True
    uncommitted: bool = False  # applied input whose journal is not written yet
    # topic -> messages that arrived here but belong to another partition
    misrouted: dict[str, int] = field(default_factory=dict)
    # "topic|partition" -> the last source offset of a message forwarded here and applied
    rerouted: dict[str, int] = field(default_factory=dict)
    # Messages passed on to their home partition (streams/routing.py): journaled until
    # Kafka confirms them, so a crash before that sends them again; `unsent` are not
    # yet with the producer.
    forwards: list[Forward] = field(default_factory=list)
    unsent: list[Forward] = field(default_factory=list)
    # The latest occurred_at of the ticket events read here, applied or forwarded: what
    # this partition tells the others (`progress`).
    read_until: float = float("-inf")
    # Input partition -> its `progress` as last heard (this one's own included); with
    # `peers` (every input partition: any may forward events here) set, held events
    # time out on the slowest of them (TicketProcessor.orphan_clock).
    clocks: dict[str, float] = field(default_factory=dict)
    peers: tuple[int, ...] = ()

    @classmethod
    def open(
        cls, table: Any, partition: int, rules: KpiRules, topics: Mapping[str, str],
        now_ms: int, write: Writer | None = None, partitions: int = 0,
    ) -> InputPartition:
        """The partition's state from its recovered table, in a new generation.

        `partitions`: the input partition count, when the others may forward events
        here (0: none do, and held events time out on the watermark alone).
        """
        store = TableTicketStore(table, partition, write)
        ledger = store.recover()
        # The watermark travels in every journal record (JSON has no -inf: None).
        watermark = ledger.get("w")
        processor = TicketProcessor(
            store, rules, float("-inf") if watermark is None else float(watermark)
        )
        partials = Partials.rebuild(store.items(), rules)
        # A new generation outranks every partial sent before this recovery, including
        # ones that reflect input the recovered state has not seen yet.
        generation = max(int(ledger.get("g", 0)) + 1, now_ms)
        part = cls(
            store, processor, partials, generation, topics,
            outcomes=ledger.get("n", {}), reasons=ledger.get("r", {}),
            position=ledger.get("m", {}), misrouted=ledger.get("x", {}),
            rerouted=ledger.get("y", {}),
            forwards=[Forward.from_list(item) for item in ledger.get("f", ())],
        )
        part.unsent = list(part.forwards)
        read_until = ledger.get("q")
        part.read_until = float("-inf") if read_until is None else float(read_until)
        part.clocks = {k: _from_json(v) for k, v in ledger.get("z", {}).items()}
        part.peers = tuple(range(partitions))
        if part.peers:
            processor.peers = part.slowest_peer()
        part.commit()
        return part

    @property
    def watermark(self) -> float:
        return self.processor.watermark

    def already_applied(self, topic: str, offset: int) -> bool:
        return offset <= self.position.get(topic, -1)

    def expected(self, topic: str) -> int:
        """The offset to apply next from `topic`: 0 before its first message, so that
        even a first message the consumer dropped is noticed (streams/gaps.py; a log
        that retention trimmed is bridged after one probe)."""
        return self.position.get(topic, -1) + 1

    def apply(
        self, kind: TopicKind, offset: int, decoded: Decoded, via: str | None = None
    ) -> None:
        """Apply one input message (already decoded), counting its outcome.

        `via`: the topic it was read from when that is not its kind's own (a forwarded
        message), whose position `offset` is then. Its changes are journaled by the
        next `commit` (the caller's, after a batch), or at once when the staged changes
        near the journal's size limit.
        """
        topic = self.topics[kind]
        if isinstance(decoded, DeadLetter):
            self._count({f"{topic}|dead_letter": 1}, {f"{topic}|{decoded.reason}": 1})
        elif isinstance(decoded, Ignored):
            self._count({f"{topic}|ignored": 1})
        else:
            self._settle(self.processor.process(kind, decoded))
        self.position[via or topic] = offset
        self.uncommitted = True
        if self.store.staged_bytes >= JOURNAL_LIMIT:
            self.commit()

    def forward(self, topic: str, offset: int, home: int, key: bytes, value: bytes) -> None:
        """Pass a message of `topic` on to partition `home`, where it is applied and
        counted (streams/routing.py); here it only moves the read position."""
        envelope = Envelope(topic, self.store.partition, offset, value)
        forward = Forward(home, key, envelope)
        self.forwards.append(forward)
        self.unsent.append(forward)
        self.position[topic] = offset
        self.uncommitted = True

    def apply_forwarded(
        self, kind: TopicKind, via: str, offset: int, envelope: Envelope, decoded: Decoded
    ) -> bool:
        """Apply a message forwarded here, read from `via` at `offset`. False: a copy
        of one applied before (sent again after its sender crashed), only skipped.

        One sender's forwards reach a partition in its offset order (one producer, one
        partition), so the last source offset applied tells every copy.
        """
        source = f"{envelope.topic}|{envelope.partition}"
        if envelope.offset <= self.rerouted.get(source, -1):
            self.skip(via, offset)
            return False
        self.rerouted[source] = envelope.offset
        self.apply(kind, offset, decoded, via)
        return True

    def skip(self, topic: str, offset: int) -> None:
        """Move past a message with no effect on the state or the counts."""
        self.position[topic] = offset
        self.uncommitted = True

    def note_read(self, occurred_at: float) -> None:
        """A ticket event was read here (applied or forwarded)."""
        if occurred_at > self.read_until:
            self.read_until = occurred_at

    def progress(self) -> float:
        """Event time up to which this partition has read its own ticket input and
        handed what belongs elsewhere to `unsent`: a forward it sends later is of a
        later (or late) event. Not the watermark, which forwarded events move too."""
        return self.read_until

    def heard(self, source: int, progress: float) -> None:
        """Partition `source` (this one too) says how far it got (`progress`); held
        events here that no partition can still complete time out."""
        if self.clocks.get(str(source)) == progress:
            return
        self.clocks[str(source)] = progress
        self.uncommitted = True
        self._settle(self.processor.advance_peers(self.slowest_peer()))

    def slowest_peer(self) -> float:
        clocks = self.clocks
        return min((clocks.get(str(p), float("-inf")) for p in self.peers),
                   default=float("inf"))

    def note_misrouted(self, topic: str) -> None:
        self.misrouted[topic] = self.misrouted.get(topic, 0) + 1
        self.counts_changed = True

    def take_unsent(self) -> list[Forward]:
        unsent, self.unsent = self.unsent, []
        return unsent

    def advance(self, watermark: float) -> None:
        """Move event time with no input message (an idle partition), and journal it."""
        self.note_read(watermark)
        self._settle(self.processor.advance(watermark))
        self.commit()

    def _settle(self, step: Step) -> None:
        if step.outcomes:
            self._count({f"{self.topics[k]}|{o}": n for (k, o), n in step.outcomes.items()})
        self.partials.apply(step)

    def _count(self, outcomes: dict[str, int], reasons: dict[str, int] | None = None) -> None:
        for name, n in outcomes.items():
            self.outcomes[name] = self.outcomes.get(name, 0) + n
        for name, n in (reasons or {}).items():
            self.reasons[name] = self.reasons.get(name, 0) + n
        self.counts_changed = True

    def commit(self) -> None:
        """Journal everything applied since the last commit, with the ledger."""
        self.uncommitted = False
        watermark = self.processor.watermark
        ledger: dict[str, Any] = {
            "n": self.outcomes, "r": self.reasons, "m": self.position, "g": self.generation,
            "w": None if watermark == float("-inf") else watermark,
        }
        if self.forwards:
            self.forwards = [f for f in self.forwards if not f.delivered]
        # Rare: kept out of the journal while empty.
        if self.read_until != float("-inf"):
            ledger["q"] = self.read_until
        for name, value in (("x", self.misrouted), ("y", self.rerouted),
                            ("z", {k: _to_json(v) for k, v in self.clocks.items()}),
                            ("f", [f.to_list() for f in self.forwards])):
            if value:
                ledger[name] = value
        self.store.commit(ledger)

    def next_version(self) -> tuple[int, int]:
        self.sequence += 1
        return self.generation, self.sequence


def _to_json(clock: float) -> float | None:
    return None if clock == float("inf") else clock  # JSON has no infinity


def _from_json(clock: float | None) -> float:
    return float("inf") if clock is None else float(clock)
