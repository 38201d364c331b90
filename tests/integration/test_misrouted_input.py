"""Producers with another partitioner than murmur2 break co-partitioning; kpimon holds.

librdkafka (confluent-kafka here, as kcat and the Go and .NET clients) hashes keys with
CRC32 by default (`consistent_random`), Java clients, Kafka Connect and aiokafka with
murmur2. Here real confluent-kafka producers with their default settings send part of
the workload, so some of a ticket's messages land on another partition than its state.
After the input drains, the last record per key equals the batch computation, every
message is exactly one outcome, and `support_input_misrouted_total` counts exactly the
messages whose CRC32 and murmur2 partitions differ.
"""

from __future__ import annotations

import asyncio
import random
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from aiokafka.partitioner import murmur2

from kpimon.sim import SimConfig, generate, produce
from tests.integration.cluster import latest_windows, stuck_report, wait_settled
from tests.integration.kafka_env import LocalKafka, Topics, Worker, events_total
from tests.reference.batch import BatchConfig, compute
from tests.support.compare import compare_windows, metric_problems

pytestmark = pytest.mark.integration

PARTITIONS = 4


def workload(topics: Topics, seed: int, hours: float = 3) -> tuple[list[Any], float]:
    now = time.time()
    start = (now // 86400) * 86400 - 86400 + 9 * 3600
    records = list(generate(SimConfig(
        seed=seed, start=start, duration=int(hours * 3600), rate=12, duplicates=0.01,
        disorder=60, bad=0.002, unknown_types=0.003, orphans=0.003, now=now,
        tickets_topic=topics.tickets, surveys_topic=topics.surveys,
    )))
    return records, now


def produce_librdkafka(records: list[Any], bootstrap: str, crc32: Callable[[Any], bool]
                       ) -> list[tuple[bytes | None, int]]:
    """Send in order with two confluent-kafka producers: the records `crc32` picks with
    librdkafka's default partitioner, the others with `murmur2_random` (Java's rule).
    (key, partition) of every record the default partitioner placed.

    Both are flushed every 30 s of arrival time, as two producers sending live would
    interleave on a partition: sent flat out, each producer's batches would land
    hours of event time apart, far beyond the lateness the contract allows."""
    from confluent_kafka import Producer

    placed: list[tuple[bytes | None, int]] = []
    errors: list[Any] = []

    def report(err: Any, msg: Any) -> None:
        if err is not None:
            errors.append(err)
        else:
            placed.append((msg.key(), msg.partition()))

    default = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    java = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5,
                     "partitioner": "murmur2_random"})
    flushed_at = records[0].at if records else 0.0
    for r in records:
        if r.at - flushed_at >= 30:
            assert default.flush(60) == 0 and java.flush(60) == 0
            flushed_at = r.at
        if crc32(r):
            default.produce(r.topic, key=r.key, value=r.value, on_delivery=report)
        else:
            java.produce(r.topic, key=r.key, value=r.value)
        default.poll(0)
        java.poll(0)
    assert default.flush(60) == 0 and java.flush(60) == 0
    assert errors == []
    return placed


def expected_misrouted(placed: list[tuple[bytes | None, int]]) -> tuple[int, int]:
    """(messages placed by CRC32 whose murmur2 partition differs, all keyed ones)."""
    keyed = [(key, p) for key, p in placed if key]
    # The default partitioner really is CRC32 of the key: the premise of this test.
    assert all(p == zlib.crc32(key) % PARTITIONS for key, p in keyed)
    wrong = sum(1 for key, p in keyed if p != (murmur2(key) & 0x7FFFFFFF) % PARTITIONS)
    return wrong, len(keyed)


def misrouted_total(metrics: dict[tuple[str, tuple[tuple[str, str], ...]], float]
                    ) -> dict[str, int]:
    return {dict(lb)["topic"]: int(v) for (name, lb), v in metrics.items()
            if name == "support_input_misrouted_total"}


def drain_and_compare(records: list[Any], topics: Topics, now: float, workers: list[Worker],
                      kafka: LocalKafka, expect_misrouted: dict[str, int]) -> str:
    """Wait until the workers' metrics equal the batch, then compare the KPI topic."""
    config = BatchConfig(tickets_topic=topics.tickets, surveys_topic=topics.surveys)
    deadline = time.monotonic() + 300
    why = ""
    while True:
        if time.monotonic() > deadline:
            raise AssertionError(f"never equal to the batch:\n{why}\n{stuck_report(workers)}")
        scrapes = [w.metrics() for w in workers]
        union: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
        for m in scrapes:
            union.update(m)
        outcomes: dict[tuple[str, str], int] = {}
        misrouted: dict[str, int] = {}
        for m in scrapes:
            for k, n in events_total(m).items():
                outcomes[k] = outcomes.get(k, 0) + n
            for topic, n in misrouted_total(m).items():
                misrouted[topic] = misrouted.get(topic, 0) + n
        marks = {int(dict(lb)["partition"]): v for (n, lb), v in union.items()
                 if n == "support_watermark_timestamp_seconds"}
        why = f"{sum(outcomes.values())} of {len(records)} outcomes, watermarks {marks}"
        if sum(outcomes.values()) == len(records) and len(marks) == PARTITIONS:
            exact = compute([(r.topic, r.key, r.value) for r in records], now=now,
                            config=config, partitions=PARTITIONS, watermarks=marks)
            end = int(max(marks.values()) // 60) * 60
            checked, problems = metric_problems(union, exact, end_bucket=end)
            if not problems:
                break
            diff = {k: (n, exact.outcomes.get(k, 0)) for k, n in outcomes.items()
                    if n != exact.outcomes.get(k, 0)}
            why = f"outcomes (streamed, batch) {diff}\n" + "\n".join(problems[:10])
        time.sleep(2)
    time.sleep(3)  # the debounced emission of the last windows
    batch = compute([(r.topic, r.key, r.value) for r in records], now=now, config=config)
    # Every message exactly one outcome, the one the batch predicts, and the mis-routed
    # ones counted once each, whatever crashed in between.
    assert outcomes == {k: n for k, n in batch.outcomes.items() if n}
    want = {topics.tickets: 0, topics.surveys: 0, **expect_misrouted}
    assert misrouted == want
    streamed = latest_windows(kafka.bootstrap, topics.kpis)
    result = compare_windows(streamed, batch.windows, until=min(marks.values()) - 900)
    assert result.compared > 2000
    assert result.mismatches == [], "\n".join(result.mismatches[:20])
    return (f"{len(records)} messages, {result.compared} windows and {checked} metric "
            f"values equal to the batch, mis-routed {misrouted}")


def run_and_compare(records: list[Any], topics: Topics, now: float, kafka: LocalKafka,
                    app_id: str, state: Path, workers: int,
                    expect_misrouted: dict[str, int]) -> str:
    """Start `workers` workers, let them drain, compare with the batch, stop them."""
    procs = [Worker(kafka, topics, app_id, state / f"w{i}") for i in range(workers)]
    try:
        for w in procs:
            w.wait_ready()
        if workers > 1:
            wait_settled(procs)
        return drain_and_compare(records, topics, now, procs, kafka, expect_misrouted)
    finally:
        for w in procs:
            w.stop()


@pytest.mark.parametrize("workers", [1, 2])
def test_surveys_from_librdkafka_default_partitioner(
    kafka: LocalKafka, tmp_path: Path, workers: int
) -> None:
    topics = Topics.named(f"misrouted-surveys-{workers}")
    kafka.create_topics(topics, partitions=PARTITIONS)
    records, now = workload(topics, seed=40 + workers)
    tickets = [r for r in records if r.topic == topics.tickets]
    surveys = [r for r in records if r.topic == topics.surveys]
    assert asyncio.run(produce(tickets, kafka.bootstrap, realtime=False,
                               progress=False)) == len(tickets)
    placed = produce_librdkafka(surveys, kafka.bootstrap, crc32=lambda r: True)
    wrong, keyed = expected_misrouted(placed)
    print(f"\nsurveys: {keyed} keyed, {wrong} on another partition by CRC32 than murmur2 "
          f"({len(surveys)} surveys)")
    assert wrong > 100

    summary = run_and_compare(records, topics, now, kafka, f"kpimon-misrouted-s{workers}",
                              tmp_path, workers, {topics.surveys: wrong})
    print(f"{workers} worker(s): {summary}; expected mis-routed surveys {wrong}")


def test_ticket_events_split_by_two_producers_with_kill_nine(
    kafka: LocalKafka, tmp_path: Path
) -> None:
    """A ticket's own events split across partitions (half of them sent by librdkafka's
    default partitioner), a worker killed with SIGKILL mid-stream, then two workers."""
    topics = Topics.named("misrouted-tickets")
    kafka.create_topics(topics, partitions=PARTITIONS)
    records, now = workload(topics, seed=47)
    rng = random.Random(47)
    picks = {id(r): r.topic == topics.tickets and rng.random() < 0.5 for r in records}
    half = len(records) // 2
    placed = produce_librdkafka(records[:half], kafka.bootstrap, lambda r: picks[id(r)])

    first = Worker(kafka, topics, "kpimon-misrouted-t", tmp_path / "first")
    first.wait_ready()
    # Killed once it has applied part of the input, forwards in flight or not.
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        applied = sum(events_total(first.metrics()).values())
        if applied > half // 3:
            break
        time.sleep(0.05)
    else:
        raise AssertionError(f"the first worker never got going:\n{first.tail()}")
    first.kill()
    placed += produce_librdkafka(records[half:], kafka.bootstrap, lambda r: picks[id(r)])
    wrong, keyed = expected_misrouted(placed)
    print(f"\nticket events: {keyed} sent with CRC32, {wrong} of them on another partition "
          f"than murmur2; killed after {applied} outcomes")
    assert wrong > 1000

    summary = run_and_compare(records, topics, now, kafka, "kpimon-misrouted-t", tmp_path,
                              2, {topics.tickets: wrong})
    print(f"after kill -9, two workers: {summary}; expected mis-routed tickets {wrong}")


def test_input_topics_with_different_partition_counts_stop_the_worker_clearly(
    kafka: LocalKafka, tmp_path: Path
) -> None:
    topics = Topics.named("partition-counts")
    kafka.create_topics(topics, partitions=PARTITIONS)
    other = Topics.named("partition-counts-8")
    kafka.create_topics(other, partitions=8)
    mixed = Topics(topics.tickets, other.surveys, topics.kpis, topics.deadletter)
    worker = Worker(kafka, mixed, "kpimon-partition-counts", tmp_path)
    try:
        assert worker.proc.wait(timeout=60) == 1
    finally:
        worker.stop()
    log = worker.log_path.read_text()
    assert f"{other.surveys} has 8 partitions, not 4: create it again" in log, log
    assert "Traceback" not in log, log
