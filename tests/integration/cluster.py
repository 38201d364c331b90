"""Polling helpers for tests with several worker processes."""

from __future__ import annotations

import time
from typing import Any

import orjson

from models.timestamps import parse_rfc3339
from tests.integration.kafka_env import Topics, Worker, read_topic
from tests.reference.batch import BatchConfig, compute
from tests.support.compare import Samples, metric_problems

KPI_PREFIXES = ("support_rolling_", "support_tickets_", "support_sla_at_risk",
                "support_oldest_waiting")


def kpi_series(metrics: Samples) -> set[tuple[str, tuple[tuple[str, str], ...]]]:
    return {key for key in metrics if key[0].startswith(KPI_PREFIXES)}


def watermarks(*scrapes: Samples) -> dict[int, float]:
    return {int(dict(labels)["partition"]): v for m in scrapes
            for (name, labels), v in m.items() if name == "support_watermark_timestamp_seconds"}


def matches(records: list[Any], topics: Topics, now: float,
             *scrapes: Samples) -> tuple[bool, str]:
    marks = watermarks(*scrapes)
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


def wait_equal(records: list[Any], topics: Topics, now: float, workers: list[Worker],
                timeout: float) -> list[Samples]:
    deadline = time.monotonic() + timeout
    why = ""
    while time.monotonic() < deadline:
        scrapes = [w.metrics() for w in workers]
        ok, why = matches(records, topics, now, *scrapes)
        if ok:
            return scrapes
        time.sleep(2)
    raise AssertionError(f"workers never matched the batch: {why}\n{stuck_report(workers)}")


def stuck_report(workers: list[Worker]) -> str:
    """Each worker's task stacks (mode's SIGUSR1 dump) and log tail, for a hung test."""
    import signal

    for w in workers:
        if w.proc.poll() is None:
            w.proc.send_signal(signal.SIGUSR1)
    time.sleep(3)
    return "\n".join(f"--- worker {i} ({w.log_path}):\n{w.tail(25)}"
                     for i, w in enumerate(workers))


def latest_windows(bootstrap: str, topic: str) -> dict[tuple[str, str, int], dict[str, Any]]:
    """The highest-revision record of every window on a KPI topic, by (q, c, start)."""
    latest: dict[bytes | None, dict[str, Any]] = {}
    for key, value in read_topic(bootstrap, topic):
        record = orjson.loads(value or b"{}")
        if key not in latest or record["revision"] >= latest[key]["revision"]:
            latest[key] = record
    return {(r["queue"], r["channel"], int(parse_rfc3339(r["window_start"]))): r
            for r in latest.values()}


def wait_settled(workers: list[Worker], partitions: int = 4, timeout: float = 120) -> None:
    """Until the group's assignment is settled: every worker ready, and the input and
    stage-2 partitions each split between them with no gap and no overlap."""
    import json
    import urllib.error
    import urllib.request

    deadline = time.monotonic() + timeout
    why = ""
    while time.monotonic() < deadline:
        try:
            states = []
            for w in workers:
                url = f"http://127.0.0.1:{w.port}/readyz"
                try:
                    with urllib.request.urlopen(url, timeout=5) as resp:
                        states.append(json.loads(resp.read()))
                except urllib.error.HTTPError as exc:
                    states.append(json.loads(exc.read()))
        except OSError as exc:
            why = str(exc)
        else:
            why = str(states)
            if all(s["ready"] for s in states):
                for field in ("input_partitions", "stage2_partitions"):
                    owned = [p for s in states for p in s[field]]
                    if sorted(owned) != list(range(partitions)):
                        break
                else:
                    return
        time.sleep(0.5)
    raise AssertionError(f"the group never settled: {why}")
