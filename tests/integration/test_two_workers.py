"""A second worker joins, the two share 4 partitions, then one stops and the other
takes over.

The second worker joins once the first has read everything so far, so no watermark
moves while partitions change hands: what the joining worker exports must come from
recovered state alone. While both run, every KPI series is exported by exactly one of
them and together they equal the batch computation. After one stops, the remaining
worker alone exports every series, equal to the batch over all events, with no series
left over from before.
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
from tests.integration.cluster import kpi_series, wait_equal, wait_settled, watermarks
from tests.integration.kafka_env import LocalKafka, Topics, Worker, events_total
from tests.reference.batch import BatchConfig, compute

pytestmark = pytest.mark.integration

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
    two: Worker | None = None
    try:
        one.wait_ready()
        wait_settled([one])
        asyncio.run(produce(first, kafka.bootstrap, realtime=False, progress=False))
        wait_equal(first, topics, now, [one], timeout=180)
        # Joins a quiet stream: nothing moves the watermarks now.
        two = Worker(kafka, topics, "kpimon-multi", tmp_path / "two", env)
        two.wait_ready()
        wait_settled([one, two])
        scrapes = wait_equal(first, topics, now, [one, two], timeout=180)
        owned = [kpi_series(m) for m in scrapes]
        assert owned[0] and owned[1], "both workers own part of the centre"
        assert not owned[0] & owned[1], "a series exported by both workers"
        _same_centre_on_both(one, two, first, topics, now)
        both = sum(sum(events_total(m).values()) for m in scrapes)
        print(f"\ntwo workers: {len(owned[0])} + {len(owned[1])} KPI series, disjoint; "
              f"{both} messages between them")

        two.stop()  # mid-run: its partitions move to the first worker
        asyncio.run(produce(rest, kafka.bootstrap, realtime=False, progress=False))
        (final,) = wait_equal(records, topics, now, [one], timeout=240)
        assert len(watermarks(final)) == 4
        assert kpi_series(final) >= owned[0] | owned[1], "the survivor exports every series"
        print(f"one worker after the other stopped: {len(kpi_series(final))} KPI series "
              "equal the batch over all events")
    finally:
        if two is not None:
            two.stop()
        one.stop()
