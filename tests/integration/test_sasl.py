"""SASL/PLAIN against the real broker: kafkactl's SASL listener, kpimon's client options
(aiokafka clients and the simulator), a refused wrong password, and Faust credentials."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.conn import create_conn
from aiokafka.errors import KafkaConnectionError, SaslAuthenticationFailed

from kpimon.config import KafkaConfig, load_settings
from kpimon.kafka_security import aiokafka_options, faust_broker_credentials
from kpimon.sim import SimRecord, produce
from tests.integration.kafka_env import KAFKACTL, KPIMON, LocalKafka, free_port, local_kafka

pytestmark = pytest.mark.integration

USER, PASSWORD = "kpimon", "s3cret:pw with spaces"


@pytest.fixture(scope="module")
def sasl_kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LocalKafka, str]]:
    """A broker of its own with a SASL_PLAINTEXT listener; yields it and the SASL address."""
    sasl_port = free_port()
    extra = {"KAFKA_SASL_USERS": f"{USER}:{PASSWORD},other:other-pw",
             "KAFKA_SASL_PORT": str(sasl_port)}
    with local_kafka(tmp_path_factory.mktemp("kafka-sasl"), extra_env=extra) as broker:
        yield broker, f"127.0.0.1:{sasl_port}"


def sasl_env(bootstrap: str, password: str = PASSWORD) -> dict[str, str]:
    """kpimon's own settings, the way an operator would give them."""
    return {
        "KPIMON_BOOTSTRAP": bootstrap,
        "KPIMON_KAFKA__SECURITY_PROTOCOL": "SASL_PLAINTEXT",
        "KPIMON_KAFKA__SASL_MECHANISM": "PLAIN",
        "KPIMON_KAFKA__SASL_USERNAME": USER,
        "KPIMON_KAFKA__SASL_PASSWORD": password,
    }


def settings_kafka(bootstrap: str, password: str = PASSWORD) -> KafkaConfig:
    return load_settings(None, sasl_env(bootstrap, password)).kafka


async def read_all(bootstrap: str, options: dict[str, Any], topic: str,
                   want: int) -> list[tuple[bytes | None, bytes | None]]:
    """At least `want` records of `topic` (fewer if they do not come within 20 s)."""
    # The producer's partitions_for is the public call that fetches a topic's metadata.
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, **options)
    await producer.start()
    try:
        partitions = sorted(await producer.partitions_for(topic))
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                                **options)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in partitions]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        out: list[tuple[bytes | None, bytes | None]] = []
        deadline = time.monotonic() + 20
        while len(out) < want and time.monotonic() < deadline:
            for records in (await consumer.getmany(timeout_ms=500)).values():
                out.extend((r.key, r.value) for r in records)
        return out
    finally:
        with contextlib.suppress(asyncio.CancelledError):
            await consumer.stop()


def test_status_shows_the_sasl_address(sasl_kafka: tuple[LocalKafka, str]) -> None:
    broker, sasl = sasl_kafka
    env = {k: v for k, v in broker.env.items() if not k.startswith("KAFKA_SASL")}
    out = subprocess.run([str(KAFKACTL), "status"], env=env, capture_output=True, text=True,
                         timeout=30, check=True).stdout
    assert f"bootstrap={broker.bootstrap} sasl={sasl} " in out
    assert PASSWORD not in out


def test_admin_producer_and_consumer_round_trip_with_the_right_credentials(
    sasl_kafka: tuple[LocalKafka, str],
) -> None:
    _, sasl = sasl_kafka
    kafka = settings_kafka(sasl)
    topic = "sasl.roundtrip"

    async def run() -> list[tuple[bytes | None, bytes | None]]:
        admin = AIOKafkaAdminClient(bootstrap_servers=kafka.bootstrap, **aiokafka_options(kafka))
        await admin.start()
        try:
            await admin.create_topics([NewTopic(topic, num_partitions=2, replication_factor=1)])
        finally:
            await admin.close()
        records = [SimRecord(topic, f"k{i}".encode(), f"v{i}".encode(), "valid", 0.0)
                   for i in range(20)]
        sent = await produce(records, kafka.bootstrap, realtime=False, progress=False,
                             client_options=aiokafka_options(kafka))
        assert sent == 20
        return await read_all(kafka.bootstrap, aiokafka_options(kafka), topic, want=20)

    got = asyncio.run(run())
    assert sorted(got) == sorted((f"k{i}".encode(), f"v{i}".encode()) for i in range(20))


def test_kpimon_simulate_sends_with_the_configured_credentials(
    sasl_kafka: tuple[LocalKafka, str],
) -> None:
    _, sasl = sasl_kafka
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("KPIMON_")},
           **sasl_env(sasl)}
    proc = subprocess.run(
        [str(KPIMON), "simulate", "--seed", "7", "--start", "2025-11-22T09:00:00Z",
         "--duration", "300", "--tickets-topic", "sasl.sim.tickets",
         "--surveys-topic", "sasl.sim.surveys", "--quiet"],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert PASSWORD not in proc.stdout + proc.stderr
    sent = int(proc.stderr.split("sent ")[1].split()[0])
    assert sent > 0
    got = asyncio.run(read_all(sasl, aiokafka_options(settings_kafka(sasl)), "sasl.sim.tickets",
                               want=1))
    assert got


def test_a_wrong_password_is_refused(sasl_kafka: tuple[LocalKafka, str]) -> None:
    broker, sasl = sasl_kafka
    wrong = settings_kafka(sasl, password="not-the-password")
    host, port = sasl.split(":")

    async def run() -> None:
        # The connection itself reports the broker's verdict ...
        with pytest.raises(SaslAuthenticationFailed, match="Invalid username or password"):
            await create_conn(host, int(port), **aiokafka_options(wrong))
        # ... which a client sees as "cannot bootstrap".
        producer = AIOKafkaProducer(bootstrap_servers=sasl, **aiokafka_options(wrong))
        try:
            with pytest.raises(KafkaConnectionError):
                await producer.start()
        finally:
            await producer.stop()
        # The right password still works, so the refusal was about the password.
        conn = await create_conn(host, int(port), **aiokafka_options(settings_kafka(sasl)))
        conn.close()

    asyncio.run(run())
    log = Path(broker.env["KAFKA_DATA_DIR"]) / "server.log"
    deadline = time.monotonic() + 10
    while "Invalid username or password" not in log.read_text(errors="replace"):
        assert time.monotonic() < deadline, "the broker did not log the failed authentication"
        time.sleep(0.2)


def test_faust_app_takes_the_credentials_and_authenticates(
    sasl_kafka: tuple[LocalKafka, str], tmp_path: Path
) -> None:
    import faust
    from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth

    _, sasl = sasl_kafka
    kafka = settings_kafka(sasl)
    credentials = faust_broker_credentials(kafka)
    app = faust.App("kpimon-sasl-test", broker=f"kafka://{kafka.bootstrap}",
                    broker_credentials=credentials, store="memory://",
                    datadir=str(tmp_path / "faust"))
    assert app.conf.broker_credentials is credentials
    auth = dict(credentials_to_aiokafka_auth(app.conf.broker_credentials, app.conf.ssl_context))
    assert auth == {**aiokafka_options(kafka), "ssl_context": None}

    async def run() -> Any:
        # Faust's own producer (the one a worker uses) authenticates on the SASL port.
        producer = app.producer
        await producer.start()
        try:
            return await producer.send_and_wait("sasl.faust", b"k", b"v", partition=None,
                                                timestamp=None, headers=None)
        finally:
            await producer.stop()

    metadata = asyncio.run(run())
    assert metadata.topic == "sasl.faust" and metadata.offset >= 0


def test_a_worker_runs_end_to_end_over_sasl(
    sasl_kafka: tuple[LocalKafka, str], tmp_path: Path
) -> None:
    """Every client of a worker (Faust's consumer, producer and admin, the wallboard's
    follower) connects with the credentials: the simulator's events come out as KPIs."""
    from kpimon.sim import SimConfig, generate
    from tests.integration.kafka_env import Topics, Worker, events_total

    broker, sasl = sasl_kafka
    topics = Topics.named("saslrun")
    broker.create_topics(topics, partitions=2)  # over the plain listener, as an admin would
    now = time.time()
    records = list(generate(SimConfig(
        seed=3, start=now - 1800, duration=1200, rate=10, now=now,
        tickets_topic=topics.tickets, surveys_topic=topics.surveys,
    )))
    env = {**sasl_env(sasl), "KPIMON_PARTITIONS": "2"}
    worker = Worker(broker, topics, "kpimon-sasl", tmp_path / "worker", env)
    try:
        worker.wait_ready()
        asyncio.run(produce(records, sasl, realtime=False, progress=False,
                            client_options=aiokafka_options(settings_kafka(sasl))))
        deadline = time.monotonic() + 120
        while sum(events_total(worker.metrics()).values()) < len(records):
            assert time.monotonic() < deadline, worker.tail()
            time.sleep(1)
        assert sum(events_total(worker.metrics()).values()) == len(records)
        kpis = asyncio.run(read_all(sasl, aiokafka_options(settings_kafka(sasl)), topics.kpis,
                                    want=1))
        assert kpis, "no KPI record published over SASL"
        log = worker.log_path.read_text(errors="replace")
        assert PASSWORD not in log
    finally:
        worker.stop()
