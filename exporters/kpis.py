"""Prometheus series of the KPIs (SPEC section 6), computed at scrape time.

The collector yields only the state its worker owns: the bucket windows and live
gauges of the `(queue, channel)` pairs whose stage-2 partition is assigned to it. Each
series therefore has exactly one exporter, and the series of a partition that moves to
another worker disappear from this one without any bookkeeping.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Protocol

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from exporters.labels import QueueLabels
from models.events import PRIORITIES
from models.records import COUNT_FIELDS, HIST_FIELDS, HIST_KEYS, SUM_FIELDS, WINDOW_SECONDS
from streams.windows import cumulate

ROLLING: tuple[tuple[str, int], ...] = (("5m", 300), ("15m", 900), ("1h", 3600), ("24h", 86400))
LONGEST = max(seconds for _, seconds in ROLLING)
SCALARS = COUNT_FIELDS + SUM_FIELDS
_HIST_METRIC = {"frt_hist": "support_rolling_frt_seconds_bucket",
                "aht_hist": "support_rolling_aht_seconds_bucket"}
_LIVE = (("open", "support_tickets_open", "Open tickets: created, not abandoned, "
          "not resolved since their last reopen."),
         ("waiting", "support_tickets_waiting", "Open tickets with no agent reply yet."),
         ("at_risk", "support_sla_at_risk_tickets", "Waiting tickets not yet breached with at "
          "most at_risk_fraction of their first-response target left."))


class KpiSource(Protocol):
    """The owned state the collector reads; the worker implements it."""

    def watermark(self) -> float | None:
        """The event time that rolling windows end at (None before any event)."""

    def windows_items(self) -> Iterable[tuple[str, str, int, list[float]]]:
        """(queue, channel, bucket start, values in `streams.windows.CELLS` order)."""

    def live_items(
        self,
    ) -> Iterable[tuple[str, str, dict[tuple[str, str], int], float | None]]:
        """(queue, channel, {(priority, gauge): count}, oldest waiting seconds or None)."""


class KpiCollector(Collector):
    """Rolling window sums, rolling histograms and live gauges of one worker."""

    def __init__(self, source: KpiSource, labels: QueueLabels) -> None:
        self.source = source
        self.labels = labels

    def collect(self) -> Iterator[Metric]:
        yield from self._rolling()
        yield from self._live()
        # Last, so that it includes the names this scrape folded.
        yield GaugeMetricFamily(
            "support_queue_label_overflow_names",
            'Distinct queue names beyond max_queues, exported as queue="other".',
            value=self.labels.overflowed,
        )

    def _rolling(self) -> Iterator[Metric]:
        n_scalars = len(SCALARS)
        sums: dict[tuple[str, str, str], list[float]] = {}
        watermark = self.source.watermark()
        end = None if watermark is None else int(watermark // WINDOW_SECONDS) * WINDOW_SECONDS
        width = n_scalars + len(HIST_FIELDS) * len(HIST_KEYS)
        for queue, channel, start, values in self.source.windows_items():
            label = self.labels.label(queue)
            for name, _ in ROLLING:  # every known pair exports zeros rather than nothing
                sums.setdefault((label, channel, name), [0.0] * width)
            if end is None:
                continue
            age = end - start
            if not 0 <= age < LONGEST:
                continue
            for name, seconds in ROLLING:
                if age < seconds:
                    acc = sums[(label, channel, name)]
                    for i, v in enumerate(values):
                        if v:
                            acc[i] += v

        families = {
            field: GaugeMetricFamily(
                f"support_rolling_{field}",
                f"Sum of {field} over the rolling window ending with the watermark's bucket.",
                labels=["queue", "channel", "window"],
            )
            for field in SCALARS
        }
        hists = {
            hist: GaugeMetricFamily(
                _HIST_METRIC[hist],
                f"Cumulative count of {hist[:3].upper()} at or below `le` seconds over the "
                "rolling window (use histogram_quantile).",
                labels=["queue", "channel", "window", "le"],
            )
            for hist in HIST_FIELDS
        }
        for (queue, channel, window), acc in sorted(sums.items()):
            labels = [queue, channel, window]
            for i, field in enumerate(SCALARS):
                families[field].add_metric(labels, acc[i])
            offset = n_scalars
            for hist in HIST_FIELDS:
                counts = cumulate(acc[offset:offset + len(HIST_KEYS)])
                for le, n in zip(HIST_KEYS, counts, strict=True):
                    hists[hist].add_metric([*labels, le], n)
                offset += len(HIST_KEYS)
        yield from families.values()
        yield from hists.values()

    def _live(self) -> Iterator[Metric]:
        gauges = {
            gauge: GaugeMetricFamily(metric, doc, labels=["queue", "channel", "priority"])
            for gauge, metric, doc in _LIVE
        }
        oldest_family = GaugeMetricFamily(
            "support_oldest_waiting_seconds",
            "Watermark minus the earliest creation time of the waiting tickets.",
            labels=["queue", "channel"],
        )
        counts: dict[tuple[str, str, str, str], int] = {}
        oldest: dict[tuple[str, str], float] = {}
        for queue, channel, state, oldest_seconds in self.source.live_items():
            label = self.labels.label(queue)
            for priority in PRIORITIES:
                for gauge in gauges:
                    key = (label, channel, priority, gauge)
                    counts[key] = counts.get(key, 0) + state.get((priority, gauge), 0)
            current = oldest.get((label, channel), 0.0)
            oldest[(label, channel)] = max(current, oldest_seconds or 0.0)
        for (queue, channel, priority, gauge), n in sorted(counts.items()):
            gauges[gauge].add_metric([queue, channel, priority], n)
        for (queue, channel), seconds in sorted(oldest.items()):
            oldest_family.add_metric([queue, channel], seconds)
        yield from gauges.values()
        yield oldest_family
