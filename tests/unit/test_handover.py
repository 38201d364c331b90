"""A worker that takes a stage-2 partition over publishes all of its windows again
(streams/handover.py and `KpiWorker._reemit_gained`).

The worker-level tests force the interleaving of the failing soak (issue: windows of
the last chunk missing from the KPI topic, one stale, FCR too high in two older ones):
worker K owns a partition, a new worker takes it in the next rebalance, merges the
last input (new windows, an FCR retraction in an old one) and stops before publishing
it, and K gets the partition back; K was never ready while it did not own it.
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest
from faust.types import TP

from kpimon.config import load_settings
from streams.handover import Handover
from streams.windows import CELL_INDEX, CELLS, MergedWindow


def test_the_first_assignment_is_gained() -> None:
    handover = Handover()
    handover.assigned(5, {0, 1})
    assert handover.take() == {0, 1}
    assert handover.take() == set()


def test_a_partition_kept_through_consecutive_generations_is_not_gained() -> None:
    handover = Handover()
    handover.assigned(1, {0, 1})
    handover.take()
    handover.assigned(2, {0, 1, 2})
    assert handover.take() == {2}


def test_lost_and_regained_between_two_looks_is_gained() -> None:
    handover = Handover()
    handover.assigned(1, {0, 1})
    handover.take()
    handover.assigned(2, {1})  # another worker owns 0 in generation 2
    handover.assigned(3, {0, 1})
    assert handover.take() == {0}


def test_a_skipped_generation_counts_as_another_owner() -> None:
    # This worker missed generation 2 (its sync failed, or it was out of the group):
    # someone else may have held its partitions then.
    handover = Handover()
    handover.assigned(1, {0, 1})
    handover.take()
    handover.assigned(3, {0, 1})
    assert handover.take() == {0, 1}


def test_gained_then_lost_before_the_state_was_restored_needs_nothing() -> None:
    handover = Handover()
    handover.assigned(1, {0})
    handover.take()
    handover.assigned(2, {0, 3})
    handover.assigned(3, {0})
    assert handover.take() == set()
    assert handover.held == frozenset({0})


class Consumer:
    def __init__(self) -> None:
        self.tps: set[TP] = set()

    def assignment(self) -> set[TP]:
        return set(self.tps)


class Producer:
    """Faust's producer: nothing is staged in these tests, so nothing is sent."""

    should_stop = False

    def _ensure_producer(self) -> Any:
        return None

    async def flush(self) -> None:
        pass


READY: dict[int, bool] = {}  # id(worker) -> has its state been restored


@pytest.fixture
def worker(monkeypatch: pytest.MonkeyPatch) -> Any:
    from streams import app

    worker = app.KpiWorker(load_settings(None, {"KPIMON_WORKER__APP_ID": "unit-handover"}))
    worker.app.consumer = Consumer()  # type: ignore[assignment]
    worker.app.producer = Producer()  # type: ignore[assignment]
    READY[id(worker)] = False

    def readiness() -> tuple[bool, str]:
        ready = READY[id(worker)]
        return ready, "consuming" if ready else "rebalancing"

    monkeypatch.setattr(worker, "readiness", readiness)
    return worker


def rebalance(worker: Any, generation: int, stage2: set[int]) -> None:
    """What Faust does in a rebalance, as far as stage 2's publication goes: the
    revocation (eager: everything), then the new assignment; not ready until the
    state is restored."""
    READY[id(worker)] = False
    revoked = worker.app.consumer.assignment()
    asyncio.run(worker.app.on_partitions_revoked.send(revoked))
    assigned = {TP(worker.deltas_name, p) for p in stage2}
    worker.app.consumer.tps = assigned
    worker.app.consumer_generation_id = generation
    asyncio.run(worker.app.on_partitions_assigned.send(assigned))


def restored(worker: Any) -> None:
    """Recovery finished: the worker is ready, and its heartbeat timer runs."""
    READY[id(worker)] = True
    worker._reemit_gained()


def window(first_contact: int) -> bytes:
    values = [0.0] * len(CELLS)
    values[CELL_INDEX["tickets_resolved"]] = 1
    values[CELL_INDEX["fcr_resolved"]] = 1
    values[CELL_INDEX["fcr_first_contact"]] = first_contact
    merged = MergedWindow()
    merged.offer("0", (1, 1), values)
    return orjson.dumps(merged.to_list())


def keys_of(worker: Any, partition: int, count: int) -> list[bytes]:
    from streams.app import stage2_partition

    n = worker.settings.kafka.partitions
    found = []
    for queue in ("sales", "billing", "tech", "returns", "vip", "general"):
        for channel in ("chat", "email", "messaging", "phone", "social", "web"):
            if stage2_partition(queue, channel, n) == partition:
                found.append(f"{queue}|{channel}|".encode())
    assert len(found) >= count, "not enough (queue, channel) pairs on the partition"
    return found[:count]


def test_a_partition_lost_and_regained_unseen_is_published_again(worker: Any) -> None:
    old_pair, new_pair = keys_of(worker, 1, 2)
    old = old_pair + b"1764750000"  # an older window: a late reopen retracts its FCR
    new = new_pair + b"1764776520"  # a window of the last minute, created by the other
    worker.windows.data[old] = window(first_contact=1)

    rebalance(worker, 1, {0, 1})
    restored(worker)
    assert old in worker.emission.due(1000.0)  # published by K

    # A new worker takes partition 1 over; K is not ready again before the next
    # rebalance, which follows at once: the new worker is stopped and K gets the
    # partition back. Its recovery reads what the other merged (and never published).
    rebalance(worker, 2, {0})
    rebalance(worker, 3, {0, 1})
    worker.windows.data[old] = window(first_contact=0)
    worker.windows.data[new] = window(first_contact=1)
    restored(worker)

    assert set(worker.emission.due(1010.0)) == {old, new}


def test_a_partition_kept_by_every_rebalance_is_not_published_again(worker: Any) -> None:
    (pair,) = keys_of(worker, 1, 1)
    key = pair + b"1764750000"
    worker.windows.data[key] = window(first_contact=1)
    rebalance(worker, 1, {0, 1})
    restored(worker)
    assert worker.emission.due(1000.0) == [key]

    rebalance(worker, 2, {1})  # a new worker took partition 0 only
    restored(worker)
    assert worker.emission.due(1010.0) == []


def published(worker: Any, monkeypatch: pytest.MonkeyPatch,
              stop_after: int | None = None) -> list[tuple[bytes, dict[str, Any]]]:
    """Records the worker sends to the KPI topic; the stop begins after `stop_after`."""
    sent: list[tuple[bytes, dict[str, Any]]] = []

    async def send(key: bytes, value: bytes) -> None:
        sent.append((key, orjson.loads(value)))
        if stop_after is not None and len(sent) == stop_after:
            worker.app._stopped.set()

    monkeypatch.setattr(worker.kpis, "send", send)
    return sent


def stop(worker: Any) -> None:
    """A graceful stop as Faust's App.on_stop runs it, once the agents are done."""
    worker.app._stopped.set()
    asyncio.run(worker._emit())  # the emission timer may still tick: it must not send
    asyncio.run(worker.app.on_before_shutdown.send())


def test_a_graceful_stop_publishes_every_changed_window_first(
        worker: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    # The last worker stops right after merging: one window changed within its
    # debounce interval, one new. No other worker takes over, so nobody else would.
    old_pair, new_pair = keys_of(worker, 1, 2)
    old, new = old_pair + b"1764750000", new_pair + b"1764776520"
    sent = published(worker, monkeypatch)
    worker.windows.data[old] = window(first_contact=1)
    rebalance(worker, 1, {0, 1})
    restored(worker)
    asyncio.run(worker._emit())
    assert [k for k, _ in sent] == [b"tech|chat|2025-12-03T08:20:00Z"]
    worker.windows.data[old] = window(first_contact=0)
    worker.emission.changed(old)  # held: published less than an interval ago
    worker.windows.data[new] = window(first_contact=1)
    worker.emission.changed(new)
    assert worker.registry.get_sample_value("support_windows_unpublished") == 2
    del sent[:]

    stop(worker)

    assert {k: r["fcr_first_contact"] for k, r in sent} == {
        b"tech|chat|2025-12-03T08:20:00Z": 0, b"tech|email|2025-12-03T15:42:00Z": 1}
    assert worker.registry.get_sample_value("support_windows_unpublished") == 0


def test_windows_taken_when_the_stop_began_are_published_by_it(
        worker: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    keys = [pair + b"1764750000" for pair in keys_of(worker, 1, 3)]
    for key in keys:
        worker.windows.data[key] = window(first_contact=1)
    rebalance(worker, 1, {0, 1})
    restored(worker)
    sent = published(worker, monkeypatch, stop_after=1)
    asyncio.run(worker._emit())  # the stop begins after its first record
    assert len(sent) == 1
    asyncio.run(worker.app.on_before_shutdown.send())
    assert len(sent) == 3 and len({k for k, _ in sent}) == 3


def test_a_worker_that_gave_its_partitions_up_while_stopping_publishes_nothing(
        worker: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    # `_fence`: a rebalance began during the stop; the next owner has the partitions
    # and publishes them from the newer state.
    (pair,) = keys_of(worker, 1, 1)
    worker.windows.data[pair + b"1764750000"] = window(first_contact=1)
    rebalance(worker, 1, {0, 1})
    restored(worker)
    sent = published(worker, monkeypatch)
    asyncio.run(worker.outbox.close())
    stop(worker)
    assert sent == []
