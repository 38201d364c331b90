"""Pipeline health metrics: message outcomes, dead-letter reasons, watermark and lag."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from models.decode import DEAD_LETTER_REASONS

OUTCOMES = ("processed", "duplicate", "ignored", "orphaned", "dead_letter")


Counts = Iterable[tuple[str, str, int]]
TopicCounts = Iterable[tuple[str, int]]


class PipelineMetrics:
    """The SPEC section 6 pipeline series of one worker.

    Outcome, dead-letter and mis-routed counts come from `counts()`: the persisted,
    exactly-once counters of the input partitions whose stage-2 partition this worker
    owns, so they survive restarts and sum across workers.
    """

    def __init__(
        self,
        registry: CollectorRegistry,
        input_topics: Iterable[str],
        counts: Callable[[], tuple[Counts, Counts, TopicCounts]],
    ) -> None:
        self.input_topics = tuple(input_topics)
        self.counts = counts
        # partition -> watermark, exported with the lag computed at scrape time, so an
        # outage (nothing arrives, the watermark stands still) shows as a growing lag.
        self._watermarks: dict[int, float] = {}
        registry.register(_WatermarkCollector(self._watermarks))
        registry.register(_OutcomeCollector(self))

    def watermark(self, partition: int, watermark: float) -> None:
        self._watermarks[partition] = watermark

    def forget_partition(self, partition: int) -> None:
        """Drop the series of a partition this worker no longer owns."""
        self._watermarks.pop(partition, None)


class _OutcomeCollector(Collector):
    def __init__(self, pipeline: PipelineMetrics) -> None:
        self.pipeline = pipeline

    def collect(self) -> Iterator[Metric]:
        events = CounterMetricFamily(
            "support_events",
            "Input messages by topic and final outcome (each message counts once).",
            labels=["topic", "outcome"],
        )
        dead = CounterMetricFamily(
            "support_dead_letters",
            "Dead-lettered input messages by topic and machine-readable reason.",
            labels=["topic", "reason"],
        )
        # Every labelled series exists from the start, so rate() and absence alerts work.
        outcome_totals = {(t, o): 0 for t in self.pipeline.input_topics for o in OUTCOMES}
        reason_totals = {(t, r): 0 for t in self.pipeline.input_topics
                         for r in DEAD_LETTER_REASONS}
        misrouted = CounterMetricFamily(
            "support_input_misrouted",
            "Input messages that arrived on another partition than Kafka's default "
            "partitioner (murmur2 of the key) gives: a producer uses another partitioner. "
            "They are routed to their ticket's partition and counted right.",
            labels=["topic"],
        )
        misrouted_totals = dict.fromkeys(self.pipeline.input_topics, 0)
        outcomes, reasons, wrong = self.pipeline.counts()
        for topic, n in wrong:
            misrouted_totals[topic] = misrouted_totals.get(topic, 0) + n
        for topic, outcome, n in outcomes:
            outcome_totals[(topic, outcome)] = outcome_totals.get((topic, outcome), 0) + n
        for topic, reason, n in reasons:
            reason_totals[(topic, reason)] = reason_totals.get((topic, reason), 0) + n
        for (topic, outcome), n in sorted(outcome_totals.items()):
            events.add_metric([topic, outcome], n)
        for (topic, reason), n in sorted(reason_totals.items()):
            dead.add_metric([topic, reason], n)
        for topic, n in sorted(misrouted_totals.items()):
            misrouted.add_metric([topic], n)
        yield events
        yield dead
        yield misrouted


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
