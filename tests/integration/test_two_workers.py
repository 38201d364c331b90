"""Two workers share 4 partitions; one stops mid-run and the other takes over.

While both run, every KPI series is exported by exactly one of them and together they
equal the batch computation. After one stops, the remaining worker alone exports every
series, equal to the batch over all events, with no series left over from before.
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from kpimon.sim import SimConfig, generate, produce
from tests.integration.kafka_env import LocalKafka, Topics, Worker, events_total
from tests.reference.batch import BatchConfig, compute
from tests.support.compare import Samples, metric_problems

pytestmark = pytest.mark.integration

KPI_PREFIXES = ("support_rolling_", "support_tickets_", "support_sla_at_risk",
                "support_oldest_waiting")


def _kpi_series(metrics: Samples) -> set[tuple[str, tuple[tuple[str, str], ...]]]:
    return {key for key in metrics if key[0].startswith(KPI_PREFIXES)}


def _watermarks(*scrapes: Samples) -> dict[int, float]:
    return {int(dict(labels)["partition"]): v for m in scrapes
            for (name, labels), v in m.items() if name == "support_watermark_timestamp_seconds"}


def _matches(records: list[Any], topics: Topics, now: float,
             *scrapes: Samples) -> tuple[bool, str]:
    marks = _watermarks(*scrapes)
    if len(marks) != 4:
        return False, f"watermarks of partitions {sorted(marks)}"
    batch = compute([(r.topic, r.key, r.value) for r in records], now=now,
                    config=BatchConfig(tickets_topic=topics.tickets, surveys_topic=topics.surveys),
                    partitions=4, watermarks=marks)
    union: Samples = {}
    for m in scrapes:
        union.update(m)
    end_bucket = int(max(marks.values()) // 60) * 60
    checked, problems = metric_problems(union, batch, end_bucket=end_bucket)
    return not problems and checked > 1000, "\n".join(problems[:10])


def _wait_equal(records: list[Any], topics: Topics, now: float, workers: list[Worker],
                timeout: float) -> list[Samples]:
    deadline = time.monotonic() + timeout
    why = ""
    while time.monotonic() < deadline:
        scrapes = [w.metrics() for w in workers]
        ok, why = _matches(records, topics, now, *scrapes)
        if ok:
            return scrapes
        time.sleep(2)
    raise AssertionError(f"workers never matched the batch: {why}\n{workers[0].tail()}")


def _api(worker: Worker) -> dict[str, Any]:
    url = f"http://127.0.0.1:{worker.port}/api/kpis"
    with urllib.request.urlopen(url, timeout=5) as resp:
        return dict(json.loads(resp.read()))


def _same_centre_on_both(one: Worker, two: Worker, records: list[Any], topics: Topics,
                         now: float) -> None:
    """Each worker owns half, yet both APIs show the whole centre, identically."""
    batch = compute([(r.topic, r.key, r.value) for r in records], now=now,
                    config=BatchConfig(tickets_topic=topics.tickets, surveys_topic=topics.surveys))
    created = sum(w["tickets_created"] for w in batch.windows.values())
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        docs = [_api(one), _api(two)]
        views = [(d["overall"], d["queues"], d["as_of"]) for d in docs]
        if views[0] == views[1] and docs[0]["overall"]["values"]["created"] == created:
            return
        time.sleep(1)
    raise AssertionError(f"the two APIs differ or miss tickets: {views}")


def test_two_workers_then_one(kafka: LocalKafka, tmp_path: Path) -> None:
    topics = Topics.named("multi")
    kafka.create_topics(topics, partitions=4)
    now = time.time()
    start = (now // 86400) * 86400 - 86400 + 9 * 3600
    records = list(generate(SimConfig(
        seed=11, start=start, duration=2 * 3600, rate=12, duplicates=0.01, now=now,
        tickets_topic=topics.tickets, surveys_topic=topics.surveys,
    )))
    half = len(records) // 2
    first, rest = records[:half], records[half:]

    env = {"KPIMON_WALLBOARD__WINDOW": "24h"}  # the API then covers the whole run
    one = Worker(kafka, topics, "kpimon-multi", tmp_path / "one", env)
    two = Worker(kafka, topics, "kpimon-multi", tmp_path / "two", env)
    try:
        one.wait_ready()
        two.wait_ready()
        asyncio.run(produce(first, kafka.bootstrap, realtime=False, progress=False))
        scrapes = _wait_equal(first, topics, now, [one, two], timeout=180)
        owned = [_kpi_series(m) for m in scrapes]
        assert owned[0] and owned[1], "both workers own part of the centre"
        assert not owned[0] & owned[1], "a series exported by both workers"
        _same_centre_on_both(one, two, first, topics, now)
        both = sum(sum(events_total(m).values()) for m in scrapes)
        print(f"\ntwo workers: {len(owned[0])} + {len(owned[1])} KPI series, disjoint; "
              f"{both} messages between them")

        two.stop()  # mid-run: its partitions move to the first worker
        asyncio.run(produce(rest, kafka.bootstrap, realtime=False, progress=False))
        (final,) = _wait_equal(records, topics, now, [one], timeout=240)
        assert len(_watermarks(final)) == 4
        assert _kpi_series(final) >= owned[0] | owned[1], "the survivor exports every series"
        print(f"one worker after the other stopped: {len(_kpi_series(final))} KPI series "
              "equal the batch over all events")
    finally:
        two.stop()
        one.stop()
