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


class TableTicketStore:
    """`TicketStore` over a Faust table, for the tickets of one input partition.

    Writes name their partition explicitly (changelog and store) instead of taking it
    from the current event, so the idle-watermark timer can settle tickets outside any
    event, with the memory and the RocksDB store alike;
    a ticket's state always lives in its own partition's changelog either way. The
    memory store does not say which partition a key belongs to, so each value starts
    with its partition number, and recovery regroups tickets by it.

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
        self._prefix = b"%d " % partition
        self._journal_key = _JOURNAL_KEY + b"%d" % partition
        self._staged: dict[bytes, bytes | None] = {}
        self.staged_bytes = 0
        self._send: Writer = write or changelog_writer(table)

    def get(self, ticket_id: str) -> TicketFacts | None:
        raw = self.table.data.get(ticket_id.encode())
        return None if raw is None else TicketFacts.from_bytes(raw[len(self._prefix):])

    def put(self, ticket_id: str, facts: TicketFacts) -> None:
        self._stage(ticket_id.encode(), self._prefix + facts.to_bytes())

    def delete(self, ticket_id: str) -> None:
        self._stage(ticket_id.encode(), None)

    def items(self) -> Iterator[tuple[str, TicketFacts]]:
        prefix = self._prefix
        for key, raw in list(self.table.data.items()):
            if not key.startswith(b"\x00") and raw.startswith(prefix):
                yield key.decode(), TicketFacts.from_bytes(raw[len(prefix):])

    def _stage(self, key: bytes, value: bytes | None) -> None:
        if value is None:
            self.table.data.pop(key, None)
        else:
            put_in_partition(self.table.data, self.partition, key, value)
            self.staged_bytes += len(value)
        self._staged[key] = value

    def commit(self, ledger: dict[str, Any]) -> None:
        """Write the staged changes after a journal record holding them and `ledger`."""
        staged, self._staged = self._staged, {}
        self.staged_bytes = 0
        cut = len(self._prefix)
        journal = dict(ledger)
        journal["c"] = [
            [key.decode(), None if value is None else value[cut:].decode()]
            for key, value in staged.items()
        ]
        self._write(self._journal_key, self._prefix + orjson.dumps(journal))
        for key, value in staged.items():
            self._write(key, value)

    def recover(self) -> dict[str, Any]:
        """Replay the last journal record over the keys; the ledger it carried."""
        raw = self.table.data.get(self._journal_key)
        if raw is None:
            return {}
        journal: dict[str, Any] = orjson.loads(raw[len(self._prefix):])
        for key, value in journal.pop("c", ()):
            # Written again, so a later journal record can never hide a lost write.
            self._write(key.encode(), None if value is None else self._prefix + value.encode())
        return journal

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

    @classmethod
    def open(
        cls, table: Any, partition: int, rules: KpiRules, topics: Mapping[str, str],
        now_ms: int, write: Writer | None = None,
    ) -> InputPartition:
        """The partition's state from its recovered table, in a new generation."""
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
            position=ledger.get("m", {}),
        )
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
        self, kind: TopicKind, offset: int, decoded: Decoded
    ) -> None:
        """Apply one input message (already decoded), counting its outcome.

        Its changes are journaled by the next `commit` (the caller's, after a batch), or
        at once when the staged changes near the journal's size limit.
        """
        topic = self.topics[kind]
        if isinstance(decoded, DeadLetter):
            self._count({f"{topic}|dead_letter": 1}, {f"{topic}|{decoded.reason}": 1})
        elif isinstance(decoded, Ignored):
            self._count({f"{topic}|ignored": 1})
        else:
            self._settle(self.processor.process(kind, decoded))
        self.position[topic] = offset
        self.uncommitted = True
        if self.store.staged_bytes >= JOURNAL_LIMIT:
            self.commit()

    def advance(self, watermark: float) -> None:
        """Move event time with no input message (an idle partition), and journal it."""
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
        self.store.commit({
            "n": self.outcomes, "r": self.reasons, "m": self.position, "g": self.generation,
            "w": None if watermark == float("-inf") else watermark,
        })

    def next_version(self) -> tuple[int, int]:
        self.sequence += 1
        return self.generation, self.sequence
