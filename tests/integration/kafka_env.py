"""Real local Kafka and real worker processes for integration tests."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from prometheus_client.parser import text_string_to_metric_families

REPO = Path(__file__).resolve().parents[2]
KAFKACTL = REPO / "deploy" / "local-kafka" / "kafkactl"
KPIMON = Path(sys.executable).with_name("kpimon")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class Topics:
    """One test's own topic names, so tests never see each other's data."""

    tickets: str
    surveys: str
    kpis: str
    deadletter: str

    @classmethod
    def named(cls, prefix: str) -> Topics:
        return cls(f"{prefix}.tickets", f"{prefix}.surveys", f"{prefix}.kpis",
                   f"{prefix}.deadletter")

    def env(self) -> dict[str, str]:
        return {
            "KPIMON_TOPIC_TICKETS": self.tickets,
            "KPIMON_TOPIC_SURVEYS": self.surveys,
            "KPIMON_TOPIC_KPIS": self.kpis,
            "KPIMON_TOPIC_DEADLETTER": self.deadletter,
        }


@dataclass
class LocalKafka:
    """A broker started by the project's own script."""

    port: int
    env: dict[str, str]

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def create_topics(self, topics: Topics, partitions: int = 4) -> None:
        env = {**self.env, **topics.env(), "KPIMON_PARTITIONS": str(partitions)}
        subprocess.run([str(KAFKACTL), "topics"], env=env, check=True, timeout=120)


@contextlib.contextmanager
def local_kafka(data_dir: Path, extra_env: Mapping[str, str] | None = None) -> Iterator[LocalKafka]:
    """`extra_env` goes to kafkactl too (e.g. KAFKA_SASL_USERS and KAFKA_SASL_PORT)."""
    port = free_port()
    env = {
        **os.environ,
        "KAFKA_PORT": str(port),
        "KAFKA_CONTROLLER_PORT": str(free_port()),
        "KAFKA_DATA_DIR": str(data_dir),
        "KPIMON_PYTHON": sys.executable,
        **(extra_env or {}),
    }
    subprocess.run([str(KAFKACTL), "start"], env=env, check=True, timeout=600)
    try:
        yield LocalKafka(port, env)
    finally:
        subprocess.run([str(KAFKACTL), "stop"], env=env, timeout=120, check=False)


class Worker:
    """A `kpimon worker` subprocess with its own HTTP port and state directory."""

    def __init__(self, kafka: LocalKafka, topics: Topics, app_id: str, state: Path,
                 extra_env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.log_path = state / f"{app_id}-{self.port}.log"
        state.mkdir(parents=True, exist_ok=True)
        env = {
            **os.environ,
            **topics.env(),
            "KPIMON_BOOTSTRAP": kafka.bootstrap,
            "KPIMON_HTTP_PORT": str(self.port),
            "KPIMON_WORKER__APP_ID": app_id,
            "KPIMON_WORKER__DATA_DIR": str(state / f"data-{self.port}"),
            # Replayed history: the watermark must follow event time only.
            "KPIMON_RULES__WATERMARK_IDLE_SECONDS": "0",
            # Killed workers must not hold their partitions for long in tests.
            "KPIMON_WORKER__SESSION_TIMEOUT": "6",
            **(extra_env or {}),
        }
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [str(KPIMON), "worker"], env=env, stdout=self._log, stderr=subprocess.STDOUT,
            cwd=state,
        )

    def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        url = f"http://127.0.0.1:{self.port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as resp:
            text = resp.read().decode()
        out: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
        return out

    def wait_ready(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"worker exited early, see {self.log_path}:\n{self.tail()}")
            with contextlib.suppress(OSError):
                self.metrics()
                return
            time.sleep(0.5)
        raise TimeoutError(f"worker not ready in {timeout} s:\n{self.tail()}")

    def tail(self, lines: int = 40) -> str:
        self._log.flush()
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def kill(self) -> None:
        """kill -9: no shutdown, no flush, no commit."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._log.close()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if not self._log.closed:
            self._log.close()


def events_total(metrics: dict[tuple[str, tuple[tuple[str, str], ...]], float]) -> dict[
        tuple[str, str], int]:
    """`support_events_total` as {(topic, outcome): count}."""
    out: dict[tuple[str, str], int] = {}
    for (name, labels), value in metrics.items():
        if name == "support_events_total" and value:
            d = dict(labels)
            out[(d["topic"], d["outcome"])] = int(value)
    return out


def read_topic(bootstrap: str, topic: str) -> list[tuple[bytes | None, bytes | None]]:
    """Every record of a topic, in partition order, up to its current end."""
    return [(r.key, r.value) for r in read_records(bootstrap, topic)]


def read_records(bootstrap: str, topic: str) -> list[Any]:
    """Every record of a topic as aiokafka's ConsumerRecord (partition, offset,
    timestamp in ms, key, value), in partition order, up to its current end."""
    return asyncio.run(_read_records(bootstrap, topic))


async def _read_records(bootstrap: str, topic: str) -> list[Any]:
    partitions = await _partitions(bootstrap, topic)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        out: list[Any] = []
        remaining = {tp for tp in tps if ends[tp] > 0}
        while remaining:
            batch = await consumer.getmany(timeout_ms=1000)
            for tp, records in batch.items():
                out.extend(records)
                if records and records[-1].offset >= ends[tp] - 1:
                    remaining.discard(tp)
            for tp in list(remaining):
                if await consumer.position(tp) >= ends[tp]:
                    remaining.discard(tp)
        return out
    finally:
        await _stop(consumer)


def topic_end(bootstrap: str, topic: str) -> int:
    """Sum of the end offsets of a topic's partitions (grows with every record)."""
    return asyncio.run(_topic_end(bootstrap, topic))


async def _topic_end(bootstrap: str, topic: str) -> int:
    partitions = await _partitions(bootstrap, topic)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in partitions]
        return sum((await consumer.end_offsets(tps)).values()) if tps else 0
    finally:
        await _stop(consumer)


async def _partitions(bootstrap: str, topic: str) -> set[int]:
    # The producer's partitions_for is the public call that fetches a topic's metadata.
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        return set(await producer.partitions_for(topic))
    finally:
        await producer.stop()


async def _stop(consumer: AIOKafkaConsumer) -> None:
    # A consumer stopped right after start cancels its own committed-offset routine,
    # and aiokafka lets that CancelledError escape from stop(); nothing is lost.
    with contextlib.suppress(asyncio.CancelledError):
        await consumer.stop()
