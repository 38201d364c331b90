"""Pipeline health metrics: message outcomes, dead-letter reasons, watermark and lag."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator

from prometheus_client import CollectorRegistry, Counter
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
        # partition -> watermark, exported with the lag computed at scrape time, so an
        # outage (nothing arrives, the watermark stands still) shows as a growing lag.
        self._watermarks: dict[int, float] = {}
        registry.register(_WatermarkCollector(self._watermarks))
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

    def watermark(self, partition: int, watermark: float) -> None:
        self._watermarks[partition] = watermark

    def forget_partition(self, partition: int) -> None:
        """Drop the series of a partition this worker no longer owns."""
        self._watermarks.pop(partition, None)


class _WatermarkCollector(Collector):
    def __init__(self, watermarks: dict[int, float]) -> None:
        self.watermarks = watermarks

    def collect(self) -> Iterator[Metric]:
        now = time.time()
        marks = GaugeMetricFamily(
            "support_watermark_timestamp_seconds",
            "Latest event time seen on an input partition owned by this worker.",
            labels=["partition"],
        )
        lag = GaugeMetricFamily(
            "support_event_lag_seconds",
            "Wall-clock now minus the partition watermark (grows while nothing arrives).",
            labels=["partition"],
        )
        for partition, watermark in sorted(self.watermarks.items()):
            marks.add_metric([str(partition)], watermark)
            lag.add_metric([str(partition)], max(0.0, now - watermark))
        yield marks
        yield lag


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
