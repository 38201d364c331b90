"""End-to-end latency under a steady paced load: produce -> support.kpis, -> /metrics.

The load (`paced_producer.py`, its own process) is the simulator's realistic mix, sent
at exactly `rate` messages per second, each event's `occurred_at` rewritten to its send
time minus its simulated arrival delay (event time is "now", with the simulator's
jitter). One simulated peak hour is compressed into the load's duration; that changes
durations inside a ticket, not the kinds of work per message.

Probe markers ride along: `ticket.created` events of dedicated queues `bench-probe-<j>`
(channel phone), each with `occurred_at` = its send time. Two kinds:

  - busy probes (j < PROBES) share `markers` per second, so each of their windows
    changes several times a second and the SPEC's debounce (one record per key per
    second) holds most changes back for up to a second;
  - quiet probes (PROBES <= j < PROBES + QUIET_PROBES) share `quiet_markers` per second,
    each getting one every few seconds: a change of a window that was quiet, as most
    (queue, channel) pairs of a real centre are between their events; what the
    debounce costs them is the emission timer's tick.

All markers of probe j go to input partition j % partitions, so they are applied in
send order, and the k-th marker of probe j in bucket b is visible exactly when

  - a `support.kpis` record `bench-probe-j|phone|b` has `tickets_created` >= k, and
  - `support_rolling_tickets_created{queue="bench-probe-j",window="24h"}` on /metrics
    reaches the marker's running number for probe j (the 24 h window holds them all).

This module's `Observer` (in the bench process) follows the KPI topic (fetch wait 20 ms)
and polls /metrics, and records when each count was first seen; markers are matched
afterwards. Latency is that moment minus the moment just before `send()`; markers never
seen count as infinitely late.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import re
import threading
import time
import urllib.request
from bisect import bisect_left
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

from bench.common import percentile
from kpimon.sim import SimConfig, SimRecord, generate
from kpimon.sim.config import format_ms
from models.timestamps import parse_rfc3339

PROBES = 4
QUIET_PROBES = 12
PROBE_PREFIX = "bench-probe-"
_METRIC = re.compile(r'^support_rolling_tickets_created\{([^}]*)\} (\S+)$', re.MULTILINE)
_PROBE = re.compile(rf'queue="{PROBE_PREFIX}(\d+)"')

# (topic, key, parsed event or None, raw value, simulated arrival delay in seconds)
Prepared = tuple[str, bytes | None, dict[str, Any] | None, bytes, float]


def load_records(n: int, tickets_topic: str, surveys_topic: str) -> list[SimRecord]:
    """`n` records of the mix: one peak hour of yesterday, enough tickets for `n`."""
    now = time.time()
    start = (now // 86400) * 86400 - 86400 + 10 * 3600  # yesterday 10:00 UTC, the peak
    rate = n / (60 * 4.2) * 1.15
    while True:
        cfg = SimConfig(seed=4242, start=start, duration=3600.0, rate=min(100_000.0, rate),
                        now=now, duplicates=0.01, disorder=60.0, unknown_types=0.002,
                        tickets_topic=tickets_topic, surveys_topic=surveys_topic)
        records = list(generate(cfg))
        if len(records) >= n or rate >= 100_000:
            return records[:n]
        rate *= n / max(1, len(records)) * 1.05


def prepare(records: list[SimRecord]) -> list[Prepared]:
    out: list[Prepared] = []
    for rec in records:
        obj: dict[str, Any] | None = None
        delay = 0.0
        with contextlib.suppress(orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            parsed = orjson.loads(rec.value)
            delay = max(0.0, rec.at - parse_rfc3339(parsed["occurred_at"]))
            obj = parsed
        out.append((rec.topic, rec.key, obj, rec.value, delay))
    return out


def retime(item: Prepared, now: float) -> bytes:
    """The message value with `occurred_at` = now minus its simulated arrival delay."""
    _, _, obj, raw, delay = item
    if obj is None:
        return raw
    obj["occurred_at"] = format_ms(int((now - delay) * 1000))
    return orjson.dumps(obj)


class Observer:
    """Records when each probe count first shows on support.kpis and on /metrics."""

    def __init__(self, bootstrap: str, kpis: str, metrics_port: int, partitions: int,
                 scrape_interval: float) -> None:
        self.bootstrap = bootstrap
        self.kpis = kpis
        self.metrics_port = metrics_port
        self.partitions = partitions
        self.scrape_interval = scrape_interval
        # (probe, bucket) -> [(count, first seen)], counts increasing
        self.kpis_seen: dict[tuple[int, int], list[tuple[int, float]]] = {}
        # probe -> [(total, first seen)], totals increasing
        self.metrics_seen: dict[int, list[tuple[int, float]]] = {}
        self.scrapes: list[float] = []
        self._stop = threading.Event()
        self._until = asyncio.Event()

    async def follow_kpis(self) -> None:
        consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, enable_auto_commit=False,
                                    fetch_max_wait_ms=20, auto_offset_reset="earliest")
        await consumer.start()
        try:
            parts = consumer.partitions_for_topic(self.kpis) or set(range(self.partitions))
            tps = [TopicPartition(self.kpis, p) for p in parts]
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            prefix = PROBE_PREFIX.encode()
            while not self._until.is_set():
                batch = await consumer.getmany(timeout_ms=100)
                now = time.time()
                for records in batch.values():
                    for rec in records:
                        if rec.key is None or not rec.key.startswith(prefix):
                            continue
                        queue, _, start = rec.key.decode().split("|")
                        key = (int(queue[len(PROBE_PREFIX):]), int(parse_rfc3339(start)))
                        count = int(orjson.loads(rec.value or b"{}").get("tickets_created", 0))
                        seen = self.kpis_seen.setdefault(key, [])
                        if not seen or count > seen[-1][0]:
                            seen.append((count, now))
        finally:
            with contextlib.suppress(asyncio.CancelledError):
                await consumer.stop()

    def poll_metrics(self) -> None:
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        while not self._stop.is_set():
            began = time.time()
            try:
                with urllib.request.urlopen(url, timeout=30) as resp:
                    text = resp.read().decode()
            except OSError:
                self._stop.wait(self.scrape_interval)
                continue
            now = time.time()
            self.scrapes.append(now - began)
            for labels, value in _METRIC.findall(text):
                match = _PROBE.search(labels)
                if match is None or 'window="24h"' not in labels:
                    continue
                seen = self.metrics_seen.setdefault(int(match.group(1)), [])
                total = int(float(value))
                if not seen or total > seen[-1][0]:
                    seen.append((total, now))
            self._stop.wait(max(0.0, self.scrape_interval - (time.time() - began)))

    def start(self) -> asyncio.Task[None]:
        threading.Thread(target=self.poll_metrics, daemon=True).start()
        return asyncio.create_task(self.follow_kpis())

    def stop(self) -> None:
        self._until.set()
        self._stop.set()

    # matching ----------------------------------------------------------------------

    @staticmethod
    def _first(seen: list[tuple[int, float]], at_least: int) -> float | None:
        i = bisect_left([c for c, _ in seen], at_least)
        return seen[i][1] if i < len(seen) else None

    def seen_kpis(self, marker: list[Any]) -> float | None:
        probe, _, bucket, k, _ = marker
        return self._first(self.kpis_seen.get((probe, bucket), []), k)

    def seen_metrics(self, marker: list[Any]) -> float | None:
        probe, number, _, _, _ = marker
        return self._first(self.metrics_seen.get(probe, []), number)

    def all_seen(self, markers: list[list[Any]]) -> bool:
        return all(self.seen_kpis(m) is not None and self.seen_metrics(m) is not None
                   for m in markers)


def summarize(obs: Observer, produced: dict[str, Any], warmup: float,
              waited: float) -> dict[str, Any]:
    t0 = produced["t0"]
    measured = [m for m in produced["markers"] if m[4] >= t0 + warmup]

    def stats(seen_at: Any, quiet: bool | None = None) -> dict[str, Any]:
        lat = []
        # p50 per 10 s of load: flat when the worker keeps up, rising when it falls behind
        slices: dict[int, list[float]] = {}
        for m in measured:
            if quiet is not None and (m[0] >= PROBES) != quiet:
                continue
            seen = seen_at(m)
            lat.append(math.inf if seen is None else seen - m[4])
            slices.setdefault(int((m[4] - t0) // 10), []).append(lat[-1])
        finite = [x for x in lat if math.isfinite(x)]
        return {"markers": len(lat), "unseen": len(lat) - len(finite),
                "p50": percentile(lat, 50), "p99": percentile(lat, 99),
                "max_seen": max(finite) if finite else None,
                "p50_per_10s": [round(percentile(v, 50), 3) for _, v in sorted(slices.items())]}

    return {
        "messages": produced["sent"],
        "rate_achieved": produced["rate_achieved"],
        "producer_behind_max_s": produced["behind_max_s"],
        "producer_cpu_s": produced["cpu"],
        "markers_sent": len(produced["markers"]),
        "waited_after_load_s": waited,
        "kpis": stats(obs.seen_kpis, quiet=False),
        "kpis_quiet": stats(obs.seen_kpis, quiet=True),
        "metrics": stats(obs.seen_metrics),
        "scrape_s_p50": percentile(obs.scrapes, 50),
        "scrape_s_max": max(obs.scrapes, default=float("nan")),
        "scrapes": len(obs.scrapes),
    }
