"""A quiet partition still breaches SLA: the watermark follows wall-clock when idle."""

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


def _created(ticket: str, at: float, topics: Topics) -> SimRecord:
    value = orjson.dumps({
        "schema_version": 1, "event_id": f"{ticket}-c", "type": "ticket.created",
        "occurred_at": format_rfc3339(at), "ticket_id": ticket, "queue": "night",
        "channel": "phone", "priority": "normal",
    })
    return SimRecord(topics.tickets, ticket.encode(), value, "valid", at)


def _breaches(kafka: LocalKafka, topics: Topics) -> int:
    latest: dict[bytes | None, dict[str, int]] = {}
    for key, value in read_topic(kafka.bootstrap, topics.kpis):
        latest[key] = orjson.loads(value or b"{}")
    return sum(r.get("sla_breached", 0) for r in latest.values())


def test_sla_breach_appears_with_no_later_event(kafka: LocalKafka, tmp_path: Path) -> None:
    topics = Topics.named("idle")
    kafka.create_topics(topics, partitions=2)
    worker = Worker(kafka, topics, "kpimon-idle", tmp_path,
                    {"KPIMON_RULES__WATERMARK_IDLE_SECONDS": "2", "KPIMON_PARTITIONS": "2"})
    try:
        worker.wait_ready()
        created_at = time.time() - 5  # phone target 20 s: deadline in about 15 s
        asyncio.run(produce([_created("night-1", created_at, topics)], kafka.bootstrap,
                            realtime=False, progress=False))
        deadline = created_at + 20
        while time.time() < deadline - 1:
            assert _breaches(kafka, topics) == 0, "breached before the deadline"
            time.sleep(2)
        waited_from = time.time()
        while time.time() < waited_from + 30 and _breaches(kafka, topics) == 0:
            time.sleep(1)
        assert _breaches(kafka, topics) == 1, worker.tail()
        print(f"\nidle breach published {time.time() - deadline:.1f} s after the deadline")
    finally:
        worker.stop()
