"""Memory stays bounded: old buckets expire, and a late correction cannot revive one."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import orjson
import pytest

from kpimon.sim import SimRecord, produce
from models.timestamps import format_rfc3339
from tests.integration.kafka_env import LocalKafka, Topics, Worker, read_topic

pytestmark = pytest.mark.integration


def _event(kind: str, ticket: str, at: float, topics: Topics, n: int = 0) -> SimRecord:
    body = {"schema_version": 1, "event_id": f"{ticket}-{kind}-{n}", "type": f"ticket.{kind}",
            "occurred_at": format_rfc3339(at), "ticket_id": ticket}
    if kind == "created":
        body.update(queue="archive", channel="email")
    return SimRecord(topics.tickets, ticket.encode(), orjson.dumps(body), "valid", at)


def _metric(worker: Worker, name: str) -> float:
    return sum(v for (n, _), v in worker.metrics().items() if n == name)


def test_expired_buckets_are_deleted_and_late_deltas_dropped(
    kafka: LocalKafka, tmp_path: Path
) -> None:
    topics = Topics.named("expiry")
    kafka.create_topics(topics, partitions=1)
    now = time.time()
    old = now - 30 * 3600
    worker = Worker(kafka, topics, "kpimon-expiry", tmp_path, {
        "KPIMON_PARTITIONS": "1", "KPIMON_RULES__FCR_WINDOW": "0",
    })
    try:
        worker.wait_ready()
        asyncio.run(produce([_event("created", "old-1", old, topics),
                             _event("agent_replied", "old-1", old + 30, topics),
                             _event("created", "new-1", now - 60, topics)],
                            kafka.bootstrap, realtime=False, progress=False))
        deadline = time.monotonic() + 90  # the expiry pass runs once a minute
        while time.monotonic() < deadline and _metric(worker, "support_window_buckets") != 1:
            time.sleep(1)
        assert _metric(worker, "support_window_buckets") == 1, worker.tail()

        # A late second reply for the expired ticket would touch its old bucket.
        asyncio.run(produce([_event("agent_replied", "old-1", old + 10, topics, 2)],
                            kafka.bootstrap, realtime=False, progress=False))
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not _metric(
                worker, "support_late_deltas_dropped_total"):
            time.sleep(0.5)
        assert _metric(worker, "support_late_deltas_dropped_total") >= 1
        assert _metric(worker, "support_window_buckets") == 1
        time.sleep(2)
    finally:
        worker.stop()

    old_bucket = format_rfc3339(int(old // 60) * 60)
    records = [orjson.loads(v or b"{}") for k, v in read_topic(kafka.bootstrap, topics.kpis)
               if k and old_bucket in k.decode()]
    # Published while it was alive, never again after expiry with partial values.
    assert records and all(r["frt_count"] >= 0 and r["tickets_created"] == 1 for r in records)
