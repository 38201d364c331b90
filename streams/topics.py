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
        # Input sent to another partition than its ticket's, on its way home.
        InternalTopic(f"{app_id}-reroute", n),
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
            checked = [name for name in checked_topics(settings) if name in existing]
            problems = partition_problems(settings, await _partition_counts(admin, checked))
            if problems:
                raise PartitionCountError(
                    "topics with the wrong partition count (kpimon reads each ticket's "
                    "events, surveys and state on one partition number, so they must all "
                    f"have kafka.partitions = {settings.kafka.partitions}):\n  "
                    + "\n  ".join(problems))
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


class PartitionCountError(RuntimeError):
    """An input or internal topic exists with another partition count than configured."""


def partition_problems(settings: Settings, counts: dict[str, int]) -> list[str]:
    """One line per existing topic whose partition count is not `kafka.partitions`.

    Faust would group the input topics by count and hand one ticket's events and its
    surveys to different workers, and stage 1 would send to partitions that do not
    exist. `counts`: topic -> partitions, of the topics that exist.
    """
    n = settings.kafka.partitions
    topics = settings.topics
    problems = []
    for name in checked_topics(settings):
        count = counts.get(name)
        if count is not None and count != n:
            hint = ("create it again with that count, or set kafka.partitions to match"
                    if name in (topics.tickets, topics.surveys) else
                    "an internal topic of this app_id from another configuration: use "
                    "another worker.app_id, or delete it")
            problems.append(f"{name} has {count} partitions, not {n}: {hint}")
    return problems


def checked_topics(settings: Settings) -> list[str]:
    """The topics whose partition counts must all be `kafka.partitions`."""
    topics = settings.topics
    return [topics.tickets, topics.surveys, *(t.name for t in internal_topics(settings))]


async def _partition_counts(admin: AIOKafkaAdminClient, names: list[str]) -> dict[str, int]:
    if not names:
        return {}
    described = await admin.describe_topics(names)
    return {t["topic"]: len(t["partitions"]) for t in described if not t["error_code"]}


async def _create(admin: AIOKafkaAdminClient, topics: list[InternalTopic],
                  replication: int) -> None:
    new = [
        NewTopic(t.name, t.partitions, replication,
                 topic_configs={"cleanup.policy": "compact"} if t.compacted else {})
        for t in topics
    ]
    with contextlib.suppress(TopicAlreadyExistsError):  # another worker was first
        await admin.create_topics(new)
