"""Bounded labels and health endpoints on a real worker."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.error
import urllib.request
from pathlib import Path

import orjson
import pytest

from kpimon.sim import SimRecord, produce
from models.timestamps import format_rfc3339
from tests.integration.kafka_env import LocalKafka, Topics, Worker, events_total

pytestmark = pytest.mark.integration

MAX_QUEUES = 50
NEW_QUEUES = 1000


def _created(i: int, at: float, topics: Topics) -> SimRecord:
    ticket = f"flood-{i}"
    value = orjson.dumps({
        "schema_version": 1, "event_id": f"{ticket}-c", "type": "ticket.created",
        "occurred_at": format_rfc3339(at), "ticket_id": ticket, "queue": f"team-{i:04d}",
        "channel": "email",
    })
    return SimRecord(topics.tickets, ticket.encode(), value, "valid", at)


def _get(url: str) -> tuple[int, dict[str, object]]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def test_a_flood_of_queue_names_keeps_labels_bounded(kafka: LocalKafka, tmp_path: Path) -> None:
    topics = Topics.named("labels")
    kafka.create_topics(topics, partitions=2)
    worker = Worker(kafka, topics, "kpimon-labels", tmp_path,
                    {"KPIMON_METRICS__MAX_QUEUES": str(MAX_QUEUES), "KPIMON_PARTITIONS": "2"})
    try:
        worker.wait_ready()
        base = f"http://127.0.0.1:{worker.port}"
        assert _get(f"{base}/healthz") == (200, {"status": "alive"})
        deadline = time.monotonic() + 60
        while _get(f"{base}/readyz")[0] != 200 and time.monotonic() < deadline:
            time.sleep(0.5)
        status, ready = _get(f"{base}/readyz")
        assert (status, ready["ready"], ready["reason"]) == (200, True, "consuming")
        # A single worker owns every stage-2 partition (input ones once data arrives).
        assert ready["stage2_partitions"] == [0, 1]

        start = time.time() - 3600
        records = [_created(i, start + i, topics) for i in range(NEW_QUEUES)]
        asyncio.run(produce(records, kafka.bootstrap, realtime=False, progress=False))
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            metrics = worker.metrics()
            if sum(events_total(metrics).values()) >= NEW_QUEUES:
                created = [v for (n, lb), v in metrics.items()
                           if n == "support_rolling_tickets_created" and ("window", "24h") in lb]
                if sum(created) == NEW_QUEUES:
                    break
            time.sleep(1)
        else:
            raise AssertionError(worker.tail())
    finally:
        worker.stop()

    queues = {dict(lb)["queue"] for (n, lb), _ in metrics.items() if "queue" in dict(lb)}
    assert len(queues) <= MAX_QUEUES + 1  # the admitted names plus "other"
    assert "other" in queues
    assert metrics[("support_queue_label_overflow_names", ())] == NEW_QUEUES - MAX_QUEUES
    # Nothing is lost by folding: the sums over all labels still count every ticket.
    by_queue = {dict(lb)["queue"]: v for (n, lb), v in metrics.items()
                if n == "support_rolling_tickets_created" and ("window", "24h") in lb}
    assert sum(by_queue.values()) == NEW_QUEUES
    assert by_queue["other"] == NEW_QUEUES - MAX_QUEUES
