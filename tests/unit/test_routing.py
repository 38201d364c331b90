"""Mis-routed input: detection, the forward's way home, exactly-once across crashes.

A producer with another partitioner (librdkafka's CRC32) sends some of a ticket's
messages to another partition than the one holding its state. The partition that reads
such a message journals it as a forward until Kafka has it; the home partition applies
it once, however often it is sent; held events wait for every partition that may still
forward their ticket.created.
"""

from __future__ import annotations

import zlib

import orjson
import pytest

from models.decode import decode
from models.timestamps import format_rfc3339
from streams.routing import (
    Envelope,
    Forward,
    HomePartitions,
    home_partition,
    parse_progress,
    producer_pattern,
    progress_record,
)
from streams.rules import KpiRules
from streams.store import InputPartition
from streams.tickets import DictStore, TicketProcessor
from tests.unit.kpi_harness import T0, event
from tests.unit.test_store import NAMES, RecordingTable

NOW = T0 + 3600


def message(kind: str, ticket: str, at: float, **extra: object) -> bytes:
    full = kind if kind.startswith("survey.") else f"ticket.{kind}"
    raw: dict[str, object] = {"schema_version": 1, "event_id": f"{ticket}-{kind}-{at}",
                              "type": full, "ticket_id": ticket, **extra}
    raw["occurred_at"] = format_rfc3339(T0 + at)
    if kind == "created":
        raw.update(queue="billing", channel="phone")
    return orjson.dumps(raw)


def decoded(kind: str, ticket: str, at: float) -> object:
    return decode("tickets", ticket.encode(), message(kind, ticket, at), now=NOW)


def test_home_partition_is_murmur2_and_the_cache_agrees_and_stays_bounded() -> None:
    homes = HomePartitions(4, limit=8)
    keys = [f"T-{i}".encode() for i in range(100)]
    assert [homes.home(k) for k in keys] == [home_partition(k, 4) for k in keys]
    assert [homes.home(k) for k in keys] == [home_partition(k, 4) for k in keys]
    assert len(homes._known) <= 8
    assert {home_partition(k, 4) for k in keys} == {0, 1, 2, 3}


def test_a_crc32_placement_is_recognised_as_librdkafkas_default() -> None:
    keys = [f"T-{i}".encode() for i in range(200)]
    wrong = [k for k in keys if zlib.crc32(k) % 4 != home_partition(k, 4)]
    assert wrong
    assert {producer_pattern(k, zlib.crc32(k) % 4, 4) for k in wrong} == {"crc32"}
    odd = [k for k in wrong if (zlib.crc32(k) + 1) % 4 != home_partition(k, 4)]
    assert {producer_pattern(k, (zlib.crc32(k) + 1) % 4, 4) for k in odd} == {"unknown"}


def test_envelope_and_progress_records_round_trip_and_never_mix() -> None:
    env = Envelope("support.tickets", 3, 1234, b'{"a": "b\\nc"}\n')
    assert Envelope.decode(env.encode()) == env
    assert parse_progress(env.encode()) is None
    for progress in (1.5e9, float("inf")):
        assert parse_progress(progress_record(2, progress)) == (2, progress)
    with pytest.raises(ValueError):
        Envelope.decode(progress_record(2, 1.0))
    with pytest.raises(ValueError):
        Envelope.decode(b"garbage")
    forward = Forward(1, b"T-1", env)
    assert Forward.from_list(orjson.loads(orjson.dumps(forward.to_list()))) == forward


class AnyPartitionTable(RecordingTable):
    """One table for several partitions, as Faust's memory store is."""

    def send_changelog(self, partition: int, key: bytes, value: bytes | None,
                       **_: object) -> None:
        self.changelog.append((key, value))


def open_part(table: RecordingTable, partition: int = 0, now_ms: int = 1,
              partitions: int = 0) -> InputPartition:
    return InputPartition.open(table, partition, KpiRules(), NAMES, now_ms=now_ms,
                               partitions=partitions)


def test_a_forward_moves_the_position_counts_nothing_and_is_journaled_until_delivered(
) -> None:
    table = RecordingTable()
    part = open_part(table)
    value = message("resolved", "T-9", 10)
    part.note_misrouted("support.tickets")
    part.forward("support.tickets", 7, 2, b"T-9", value)
    assert part.already_applied("support.tickets", 7)
    assert part.outcomes == {}  # counted where it is applied
    part.commit()
    [sent] = part.take_unsent()
    assert part.take_unsent() == []
    assert sent.home == 2 and sent.envelope == Envelope("support.tickets", 0, 7, value)

    # A crash before Kafka confirmed it: the recovered partition sends it again.
    again = open_part(RecordingTable.recovered(table.changelog), now_ms=2)
    assert [f.envelope for f in again.take_unsent()] == [sent.envelope]
    assert again.misrouted == {"support.tickets": 1}
    assert again.already_applied("support.tickets", 7)

    # Once delivered, the next journal no longer carries it.
    sent.delivered = True
    part.commit()
    later = open_part(RecordingTable.recovered(table.changelog), now_ms=3)
    assert later.take_unsent() == [] and later.forwards == []
    assert later.misrouted == {"support.tickets": 1}


def test_the_home_partition_applies_a_forward_once_however_often_it_is_sent() -> None:
    table = AnyPartitionTable()
    home = open_part(table, partition=2)
    created = Envelope("support.tickets", 0, 5, message("created", "T-9", 0))
    resolved = Envelope("support.tickets", 0, 6, message("resolved", "T-9", 60))
    reroute = "app-reroute"
    for offset, env in enumerate([created, resolved, created, resolved]):
        home.apply_forwarded("tickets", reroute, offset, env,
                             decode("tickets", b"T-9", env.value, now=NOW))
    assert home.outcomes == {"support.tickets|processed": 2}
    assert home.position == {reroute: 3}
    facts = home.store.get("T-9")
    assert facts is not None and facts.known and len(facts.resolutions) == 1
    # The dedup state survives a crash with the journal.
    home.commit()
    again = open_part(AnyPartitionTable.recovered(table.changelog), partition=2, now_ms=2)
    assert not again.apply_forwarded("tickets", reroute, 4, resolved,
                                     decode("tickets", b"T-9", resolved.value, now=NOW))
    assert again.outcomes == {"support.tickets|processed": 2}


def test_two_partitions_writing_the_same_ticket_id_keep_separate_state() -> None:
    """One table holds every partition a worker has (the memory store): a ticket's
    messages on two partitions must not read or overwrite each other's facts."""
    table = AnyPartitionTable()
    p0 = open_part(table, partition=0)
    p1 = open_part(table, partition=1)
    p0.apply("tickets", 0, decoded("created", "T-1", 0))
    p0.commit()
    p1.apply("tickets", 0, decoded("resolved", "T-1", 30))
    p1.commit()
    mine = p0.store.get("T-1")
    theirs = p1.store.get("T-1")
    assert mine is not None and mine.known and mine.resolutions == []
    assert theirs is not None and not theirs.known and len(theirs.held) == 1
    assert [t for t, _ in p0.store.items()] == ["T-1"]
    assert [t for t, _ in p1.store.items()] == ["T-1"]
    # And after recovery each partition gets back its own.
    recovered = AnyPartitionTable.recovered(table.changelog)
    again = open_part(recovered, partition=0, now_ms=2)
    facts = again.store.get("T-1")
    assert facts is not None and facts.known and facts.held == []


def test_tickets_of_the_unprefixed_layout_are_moved_to_their_partitions_keys() -> None:
    """kpimon 0.1 kept a ticket under its bare id with the partition in the value."""
    table = AnyPartitionTable()
    part = open_part(table, partition=1)
    part.apply("tickets", 0, decoded("created", "T-7", 0))
    part.commit()
    [(key, value)] = [(k, v) for k, v in table.data.items() if not k.startswith(b"\x00")]
    old = AnyPartitionTable.recovered([(b"T-7", b"1 " + value), (b"T-8", b"3 " + value)])
    again = open_part(old, partition=1, now_ms=2)
    facts = again.store.get("T-7")
    assert facts is not None and facts.known
    assert b"T-7" not in old.data and b"T-8" in old.data  # partition 3's is not ours
    moved = AnyPartitionTable.recovered(old.changelog)
    assert moved.data.get(key) == value


def test_held_events_wait_for_the_slowest_partition_that_may_forward_their_created(
) -> None:
    rules = KpiRules()
    proc = TicketProcessor(DictStore(), rules)
    proc.peers = float("-inf")  # nothing heard from the other partitions yet
    proc.process("tickets", event("resolved", "T-1", 0))
    proc.process("tickets", event("created", "T-2", 2000))  # watermark far past +600 s
    step = proc.process("tickets", event("resolved", "T-3", 10))
    assert not step.outcomes.get(("tickets", "orphaned"))
    step = proc.advance_peers(T0 + 500)  # the slowest partition read up to +500 s
    assert not step.outcomes.get(("tickets", "orphaned"))
    # T-1's created arrives from another partition in time: applied, not orphaned.
    step = proc.process("tickets", event("created", "T-1", -5))
    assert step.outcomes[("tickets", "processed")] == 2
    step = proc.advance_peers(T0 + 700)
    assert step.outcomes[("tickets", "orphaned")] == 1  # T-3's resolved, +10 s
    # Without peers the watermark alone times held events out, as before.
    alone = TicketProcessor(DictStore(), rules)
    alone.process("tickets", event("resolved", "T-1", 0))
    step = alone.process("tickets", event("created", "T-2", 2000))
    assert step.outcomes[("tickets", "orphaned")] == 1


def test_progress_heard_from_every_partition_releases_held_events_and_survives_recovery(
) -> None:
    table = RecordingTable()
    part = open_part(table, partitions=3)
    part.apply("tickets", 0, decoded("resolved", "T-1", 0))
    part.apply("tickets", 1, decoded("created", "T-2", 2000))
    part.commit()
    assert part.outcomes.get("support.tickets|orphaned") is None
    part.heard(0, T0 + 2000)
    part.heard(1, T0 + 3000)
    assert part.outcomes.get("support.tickets|orphaned") is None  # partition 2 unheard
    part.commit()
    again = open_part(RecordingTable.recovered(table.changelog), now_ms=2, partitions=3)
    again.heard(2, T0 + 650)
    assert again.outcomes["support.tickets|orphaned"] == 1
