"""Pipeline health metrics: message outcomes, dead-letter reasons, watermark and lag."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from models.decode import DEAD_LETTER_REASONS

OUTCOMES = ("processed", "duplicate", "ignored", "orphaned", "dead_letter")


class PipelineMetrics:
    """The SPEC section 6 pipeline series of one worker."""

    def __init__(self, registry: CollectorRegistry, input_topics: Iterable[str]) -> None:
        self.events = Counter(
            "support_events",
            "Input messages by topic and final outcome (each message counts once).",
            ["topic", "outcome"],
            registry=registry,
        )
        self.dead_letters = Counter(
            "support_dead_letters",
            "Dead-lettered input messages by topic and machine-readable reason.",
            ["topic", "reason"],
            registry=registry,
        )
        self.watermarks = Gauge(
            "support_watermark_timestamp_seconds",
            "Latest event time seen on an input partition owned by this worker.",
            ["partition"],
            registry=registry,
        )
        self.lag = Gauge(
            "support_event_lag_seconds",
            "Wall-clock minus the partition watermark when it last moved.",
            ["partition"],
            registry=registry,
        )
        # Labelled series exist from the start, so rate() and absence alerts work.
        for topic in input_topics:
            for outcome in OUTCOMES:
                self.events.labels(topic, outcome)
            for reason in DEAD_LETTER_REASONS:
                self.dead_letters.labels(topic, reason)

    def outcome(self, topic: str, outcome: str, count: int = 1) -> None:
        self.events.labels(topic, outcome).inc(count)

    def dead_letter(self, topic: str, reason: str) -> None:
        self.outcome(topic, "dead_letter")
        self.dead_letters.labels(topic, reason).inc()

    def watermark(self, partition: int, watermark: float, now: float) -> None:
        label = str(partition)
        self.watermarks.labels(label).set(watermark)
        self.lag.labels(label).set(max(0.0, now - watermark))

    def forget_partition(self, partition: int) -> None:
        """Drop the series of a partition this worker no longer owns."""
        for gauge in (self.watermarks, self.lag):
            with contextlib.suppress(KeyError):  # never exported for that partition
                gauge.remove(str(partition))


class ConsumerLagCollector(Collector):
    """`support_consumer_lag_messages`: messages not yet read, per owned input partition.

    Computed from the current assignment at scrape time, so partitions this worker
    lost disappear with no bookkeeping.
    """

    def __init__(self, source: Callable[[], Iterable[tuple[str, int, int]]]) -> None:
        self.source = source

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(
            "support_consumer_lag_messages",
            "Input messages behind the partition's high-water mark (not yet read).",
            labels=["topic", "partition"],
        )
        for topic, partition, lag in sorted(self.source()):
            family.add_metric([topic, str(partition)], lag)
        yield family
