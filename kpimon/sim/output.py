"""Where records go: JSON lines files and Kafka."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import math
import os
import sys
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import IO, Any

import orjson

from kpimon.sim.config import KINDS, SimRecord, format_ms


def _record_line(rec: SimRecord) -> dict[str, Any]:
    line: dict[str, Any] = {"topic": rec.topic}
    if rec.key is None:
        line["key"] = None
    else:
        try:
            line["key"] = rec.key.decode("utf-8")
        except UnicodeDecodeError:
            line["key_b64"] = base64.b64encode(rec.key).decode("ascii")
    try:
        line["value"] = rec.value.decode("utf-8")
    except UnicodeDecodeError:
        line["value_b64"] = base64.b64encode(rec.value).decode("ascii")
    line["kind"] = rec.kind
    line["at"] = round(rec.at, 6)
    return line


def write_jsonl(records: Iterable[SimRecord], path: str | os.PathLike[str]) -> int:
    """Write one JSON line per record (``-`` for stdout); return how many were written."""
    n = 0
    with contextlib.ExitStack() as stack:
        out: IO[bytes] = (
            sys.stdout.buffer if str(path) == "-" else stack.enter_context(open(path, "wb"))
        )
        for rec in records:
            out.write(orjson.dumps(_record_line(rec)) + b"\n")
            n += 1
        out.flush()
    return n


def read_jsonl(path: str | os.PathLike[str]) -> Iterator[SimRecord]:
    """Read records written by `write_jsonl` (lines without kind/at read as valid/0)."""
    with open(path, "rb") as f:
        for raw in f:
            if not raw.strip():
                continue
            line = orjson.loads(raw)
            if "key_b64" in line:
                key: bytes | None = base64.b64decode(line["key_b64"])
            else:
                key = None if line.get("key") is None else str(line["key"]).encode()
            if "value_b64" in line:
                value = base64.b64decode(line["value_b64"])
            else:
                value = str(line["value"]).encode()
            kind = str(line.get("kind", "valid"))
            yield SimRecord(str(line["topic"]), key, value, kind, float(line.get("at", 0.0)))


@dataclass(frozen=True)
class Pace:
    """When a record is due in realtime mode: event time `event_zero` is sent at
    wall-clock `wall_zero`, and event time advances `speed` times as fast as the clock.

    The default sends each record at its own arrival time (speed 1, no offset).
    """

    speed: float = 1.0
    event_zero: float = 0.0
    wall_zero: float = 0.0

    def due(self, at: float) -> float:
        """Wall-clock time at which a record arriving at event time `at` is sent."""
        return self.wall_zero + (at - self.event_zero) / self.speed


@dataclass
class RunStats:
    """What a run has done so far; the summary reads it, also after Ctrl-C."""

    sent: int = 0
    kinds: Counter[str] = field(default_factory=Counter)
    first_at: float | None = None
    last_at: float | None = None
    started: float = field(default_factory=time.monotonic)

    def count(self, records: Iterable[SimRecord]) -> Iterator[SimRecord]:
        """Pass records through, counting each once its consumer asks for the next."""
        for rec in records:
            yield rec
            # Counted after the consumer came back: a record still in hand when the run
            # is interrupted was not delivered.
            self.kinds[rec.kind] += 1
            if self.first_at is None:
                self.first_at = rec.at
            self.last_at = rec.at

    def summary(self, verb: str) -> str:
        elapsed = time.monotonic() - self.started
        kinds = ", ".join(f"{k}={self.kinds[k]}" for k in KINDS if self.kinds[k])
        rate = self.sent / elapsed if elapsed > 0 else 0.0
        text = f"simulate: {verb} {self.sent} messages in {elapsed:.1f} s ({rate:.0f}/s)"
        if self.first_at is not None and self.last_at is not None:
            first, last = (format_ms(math.floor(t * 1000)) for t in (self.first_at, self.last_at))
            text += f"; arrival time {first} .. {last}"
        return text + (f"\n  {kinds}" if kinds else "")


async def produce(
    records: Iterable[SimRecord],
    bootstrap: str,
    *,
    realtime: bool,
    progress: bool = True,
    client_options: Mapping[str, Any] | None = None,
    pace: Pace | None = None,
) -> int:
    """Send records to Kafka in order; in realtime mode each at its arrival time.

    `client_options` go to the producer as well, e.g. the security settings of
    `kpimon.kafka_security.aiokafka_options`; `pace` maps arrival (event) time to the
    wall-clock time of sending in realtime mode (default: send at the arrival time).
    """
    return await send_records(
        records, bootstrap, realtime=realtime, progress=progress, stats=RunStats(),
        client_options=client_options, pace=pace,
    )


async def send_records(
    records: Iterable[SimRecord],
    bootstrap: str,
    *,
    realtime: bool,
    progress: bool,
    stats: RunStats,
    client_options: Mapping[str, Any] | None = None,
    pace: Pace | None = None,
) -> int:
    from aiokafka import AIOKafkaProducer  # imported late: file output needs no client

    config: dict[str, Any] = {
        "bootstrap_servers": bootstrap,
        "client_id": "kpimon-simulator",
        "acks": "all",
        "enable_idempotence": True,
        # Batching buys throughput in fast mode; live messages should leave at once.
        "linger_ms": 5 if realtime else 50,
        "max_batch_size": 64 * 1024 if realtime else 512 * 1024,
    }
    producer = AIOKafkaProducer(**{**config, **(client_options or {})})
    in_flight: list[asyncio.Future[Any]] = []
    next_report = time.monotonic() + 5.0
    last_sent, last_report = 0, time.monotonic()
    try:
        await producer.start()
        for rec in records:
            if realtime:
                delay = (rec.at if pace is None else pace.due(rec.at)) - time.time()
                if delay > 0:
                    if in_flight:  # surface errors while waiting anyway
                        await asyncio.gather(*in_flight)
                        in_flight.clear()
                    await asyncio.sleep(delay)
            in_flight.append(await producer.send(rec.topic, rec.value, key=rec.key))
            stats.sent += 1
            if len(in_flight) >= 10_000:
                await asyncio.gather(*in_flight)
                in_flight.clear()
            if progress and time.monotonic() >= next_report:
                now = time.monotonic()
                rate = (stats.sent - last_sent) / (now - last_report)
                print(
                    f"simulate: {stats.sent} sent, event time {format_ms(int(rec.at * 1000))}, "
                    f"{rate:.0f} msg/s",
                    file=sys.stderr,
                    flush=True,
                )
                last_sent, last_report, next_report = stats.sent, now, now + 5.0
        if in_flight:
            await asyncio.gather(*in_flight)
    finally:
        await producer.stop()  # flushes what was handed over, also on Ctrl-C
    return stats.sent
