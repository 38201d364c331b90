"""HTTP tokens, and personal data kept out of logs, metric labels and the API."""

from __future__ import annotations

import asyncio
import time
import urllib.error
import urllib.request
from pathlib import Path

import orjson
import pytest

from kpimon.sim import SimRecord, produce
from models.timestamps import format_rfc3339
from tests.integration.kafka_env import LocalKafka, Topics, Worker

pytestmark = pytest.mark.integration

API_TOKEN = "api-token-0123456789abcdef"
KIOSK_TOKEN = "kiosk-token-0123456789abcdef"
COMMENT = "PII-COMMENT-7f3a the agent was rude, call me on 555-0100"
CUSTOMER = "PII-CUSTOMER-9c1b"


def _status(url: str, token: str | None = None, header: bool = True) -> int:
    if token and not header:
        url += ("&" if "?" in url else "?") + f"token={token}"
    request = urllib.request.Request(url)
    if token and header:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=5) as resp:
            if "/api/events" not in url:
                resp.read()
            return int(resp.status)
    except urllib.error.HTTPError as err:
        return int(err.code)
    except urllib.error.URLError:
        return 0  # not listening yet


def _messages(topics: Topics, now: float) -> list[SimRecord]:
    def rec(topic: str, ticket: str, body: dict[str, object]) -> SimRecord:
        value = orjson.dumps({"schema_version": 1, "ticket_id": ticket,
                              "occurred_at": format_rfc3339(now - 60), **body})
        return SimRecord(topic, ticket.encode(), value, "valid", now)

    return [
        rec(topics.tickets, "p-1", {"event_id": "p-1-c", "type": "ticket.created",
                                    "queue": "billing", "channel": "chat",
                                    "customer_id": CUSTOMER}),
        rec(topics.surveys, "p-1", {"event_id": "p-1-s", "type": "survey.responded",
                                    "metric": "csat", "score": 1, "comment": COMMENT}),
        # Malformed ones carrying the same data take the dead-letter path (and its log).
        rec(topics.surveys, "p-1", {"event_id": "p-1-x", "type": "survey.responded",
                                    "metric": "csat", "score": 99, "comment": COMMENT}),
        rec(topics.tickets, "p-2", {"event_id": "p-2-c", "type": "ticket.created",
                                    "queue": "bad queue!", "channel": "chat",
                                    "customer_id": CUSTOMER}),
    ]


def test_tokens_and_personal_data(kafka: LocalKafka, tmp_path: Path) -> None:
    topics = Topics.named("security")
    kafka.create_topics(topics, partitions=1)
    worker = Worker(kafka, topics, "kpimon-security", tmp_path, {
        "KPIMON_PARTITIONS": "1", "KPIMON_HTTP__TOKEN": API_TOKEN,
        "KPIMON_HTTP__KIOSK_TOKEN": KIOSK_TOKEN, "KPIMON_WORKER__LOG_LEVEL": "info",
    })
    base = f"http://127.0.0.1:{worker.port}"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and _status(f"{base}/readyz") != 200:
            time.sleep(0.5)
        # Probes are open; everything else needs a token of the right scope.
        assert _status(f"{base}/healthz") == 200
        assert _status(f"{base}/metrics") == 401
        assert _status(f"{base}/metrics", KIOSK_TOKEN) == 401
        assert _status(f"{base}/metrics", "wrong-token-0123456789") == 401
        assert _status(f"{base}/metrics", API_TOKEN) == 200
        assert _status(f"{base}/wallboard") == 401
        assert _status(f"{base}/wallboard", KIOSK_TOKEN, header=False) == 200
        assert _status(f"{base}/api/kpis", KIOSK_TOKEN, header=False) == 200
        assert _status(f"{base}/api/kpis", API_TOKEN) == 200
        assert _status(f"{base}/api/events", KIOSK_TOKEN, header=False) == 200

        messages = _messages(topics, time.time())
        asyncio.run(produce(messages, kafka.bootstrap, realtime=False, progress=False))

        def scrape() -> str:
            request = urllib.request.Request(f"{base}/metrics")
            request.add_header("Authorization", f"Bearer {API_TOKEN}")
            with urllib.request.urlopen(request, timeout=5) as resp:
                return str(resp.read().decode())

        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            text = scrape()
            if 'outcome="dead_letter",topic="security.surveys"} 1.0' in text and \
                    'outcome="dead_letter",topic="security.tickets"} 1.0' in text:
                break
            time.sleep(0.5)
        else:
            raise AssertionError(worker.tail())
        time.sleep(2)
        request = urllib.request.Request(f"{base}/api/kpis?token={KIOSK_TOKEN}")
        with urllib.request.urlopen(request, timeout=5) as resp:
            api = resp.read().decode()
    finally:
        worker.stop()

    log = worker.log_path.read_text(errors="replace")
    assert "dead-lettered" in log  # the rejected messages were logged, by coordinates
    for secret in (COMMENT, "PII-COMMENT", CUSTOMER, "555-0100"):
        assert secret not in log, f"{secret!r} in the worker log"
        assert secret not in text, f"{secret!r} in /metrics"
        assert secret not in api, f"{secret!r} in /api/kpis"
    assert API_TOKEN not in log and KIOSK_TOKEN not in log
