"""The worker's internal topics, created before Faust subscribes to them.

Faust declares internal topics while its consumer is already joining the group; a topic
that does not exist yet at subscription time is only noticed at the next metadata
refresh (up to five minutes), and until then stage 2 owns no partition at all. Creating
them first makes the first assignment complete.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError

from kpimon.config import Settings
from kpimon.kafka_security import aiokafka_options

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class InternalTopic:
    name: str
    partitions: int
    compacted: bool = False


# The worker's tables (streams/app.py); Faust names their changelogs after them.
TABLES = ("tickets", "windows", "live", "counters")


def internal_topics(settings: Settings) -> list[InternalTopic]:
    """Stage 2's input (partial sums), the live snapshots every worker follows, and
    the tables' changelogs (compacted, as Faust would create them)."""
    app_id, n = settings.worker.app_id, settings.kafka.partitions
    return [
        InternalTopic(f"{app_id}-deltas", n),
        InternalTopic(f"{app_id}-live", n, compacted=True),
        *(InternalTopic(f"{app_id}-{table}-changelog", n, compacted=True) for table in TABLES),
    ]


async def ensure_internal_topics(settings: Settings, within: float = 60.0) -> None:
    """Create the missing internal topics; raises RuntimeError if Kafka stays away."""
    deadline = time.monotonic() + within
    wanted = internal_topics(settings)
    last: Exception | None = None
    while time.monotonic() < deadline:
        admin = AIOKafkaAdminClient(
            bootstrap_servers=settings.kafka.bootstrap, client_id="kpimon-topics",
            **aiokafka_options(settings.kafka),
        )
        try:
            await admin.start()
            existing = set(await admin.list_topics())
            missing = [t for t in wanted if t.name not in existing]
            if missing:
                await _create(admin, missing, settings.kafka.replication_factor)
                log.info("created internal topics %s", ", ".join(t.name for t in missing))
            return
        except KafkaError as exc:
            last = exc
            log.warning("waiting for Kafka at %s to create internal topics: %s",
                        settings.kafka.bootstrap, exc)
            await asyncio.sleep(1.0)
        finally:
            await admin.close()
    raise RuntimeError(
        f"could not create the internal topics on {settings.kafka.bootstrap} "
        f"within {within:.0f} s: {last}"
    )


async def _create(admin: AIOKafkaAdminClient, topics: list[InternalTopic],
                  replication: int) -> None:
    new = [
        NewTopic(t.name, t.partitions, replication,
                 topic_configs={"cleanup.policy": "compact"} if t.compacted else {})
        for t in topics
    ]
    with contextlib.suppress(TopicAlreadyExistsError):  # another worker was first
        await admin.create_topics(new)
