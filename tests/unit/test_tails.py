"""Input that Faust dropped with nothing after it is read again (streams/app.py,
`KpiWorker._tail_progress` and `_reread_tail`).

A hole is noticed when a later message arrives; these are the messages that no later
message reveals, like the end of a partition cleared from an agent's queue by a
rebalance after the consumer had read past it.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from faust.types import TP

from kpimon.config import load_settings

TICKETS = TP("support.tickets", 0)
SURVEYS = TP("support.surveys", 0)
OTHER = TP("support.tickets", 1)  # assigned, but nothing applied from it yet


class Consumer:
    """Faust's consumer as the worker's tail check uses it."""

    def __init__(self, highwaters: dict[TP, int]) -> None:
        self.highwaters = highwaters
        self.seeks: list[tuple[TP, int]] = []

    def assignment(self) -> set[TP]:
        return set(self.highwaters)

    def highwater(self, tp: TP) -> int:
        return self.highwaters[tp]

    async def seek(self, tp: TP, offset: int) -> None:
        self.seeks.append((tp, offset))


class Producer:
    should_stop = False


@pytest.fixture
def worker(monkeypatch: pytest.MonkeyPatch) -> Any:
    from streams import app

    worker = app.KpiWorker(load_settings(None, {"KPIMON_WORKER__APP_ID": "unit-tails"}))
    worker.app.consumer = Consumer({TICKETS: 1200, SURVEYS: 61, OTHER: 40})  # type: ignore[assignment]
    worker.app.producer = Producer()  # type: ignore[assignment]
    monkeypatch.setattr(worker, "readiness", lambda: (True, "consuming"))
    part = worker._partition(0)
    part.position.update({TICKETS.topic: 673, SURVEYS.topic: 58})
    # The broker: tickets hold records from 674 on; surveys 59 and 60 are transaction
    # markers (read_committed consumers see no record there).
    first = {TICKETS: 674, SURVEYS: None}
    probes: list[tuple[TP, int]] = []

    async def first_record(topic: str, partition: int, offset: int) -> int | None:
        probes.append((TP(topic, partition), offset))
        return first[TP(topic, partition)]

    monkeypatch.setattr(worker, "_first_record", first_record)
    worker.probes = probes
    clock = [1000.0]
    monkeypatch.setattr(app.time, "monotonic", lambda: clock[0])
    worker.clock = clock
    return worker


def tick(worker: Any, seconds: float) -> None:
    worker.clock[0] += seconds
    asyncio.run(worker._retry_holes())


def test_a_partition_stopped_short_of_its_highwater_is_read_again(worker: Any) -> None:
    from streams.app import TAIL_STALL

    tick(worker, 0)
    tick(worker, TAIL_STALL - 1)
    assert worker.app.consumer.seeks == [] and worker.probes == []
    tick(worker, 1)
    assert worker.app.consumer.seeks == [(TICKETS, 674)]
    assert worker.registry.get_sample_value("support_input_holes_total",
                                            {"kind": "reread"}) == 1
    # The surveys' tail holds only markers: nothing is missing, and it is not asked
    # about again until the partition's highwater moves.
    assert sorted(worker.probes) == [(SURVEYS, 59), (TICKETS, 674)]
    tick(worker, TAIL_STALL)
    assert worker.probes.count((SURVEYS, 59)) == 1
    assert worker.app.consumer.seeks == [(TICKETS, 674)] * 2  # the re-read was lost too
    worker.app.consumer.highwaters[SURVEYS] = 63
    tick(worker, 0)
    tick(worker, TAIL_STALL)
    assert worker.probes.count((SURVEYS, 59)) == 2


def test_a_partition_that_goes_on_applying_is_left_alone(worker: Any) -> None:
    from streams.app import TAIL_STALL

    part = worker.partitions[0]
    for step in range(6):
        part.position[TICKETS.topic] = 673 + 100 * step  # a backlog being applied
        part.position[SURVEYS.topic] = 60  # all read
        tick(worker, TAIL_STALL / 2)
    assert worker.app.consumer.seeks == [] and worker.probes == []


def test_a_hole_is_left_to_the_gap_guard(worker: Any) -> None:
    assert set(worker._tail_progress()) == {TICKETS, SURVEYS}
    worker.gaps.check((SURVEYS.topic, 0), 59, 65, now=0.0)  # 65 arrived after 58
    assert set(worker._tail_progress()) == {TICKETS}


def test_nothing_is_read_again_while_the_worker_is_not_consuming(
    worker: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from streams.app import TAIL_STALL

    monkeypatch.setattr(worker, "readiness", lambda: (False, "recovering table state"))
    tick(worker, 0)
    tick(worker, 3 * TAIL_STALL)
    assert worker.app.consumer.seeks == [] and worker.probes == []
