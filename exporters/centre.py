"""The whole-centre view behind `/api/kpis` and the wallboard.

Every worker follows the KPI topic (window records) and the live topic (gauge
snapshots of each queue/channel) from the beginning, whatever partitions it owns, so
any worker answers for the whole centre. `CentreView` is pure: records in, a
dashboard document out; `follow` feeds it from Kafka.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer

from models.records import COUNT_FIELDS, HIST_FIELDS, HIST_KEYS, SUM_FIELDS, WINDOW_SECONDS
from models.timestamps import format_rfc3339, parse_rfc3339

log = logging.getLogger(__name__)

WINDOW_LENGTHS = {"5m": 300, "15m": 900, "1h": 3600, "24h": 86400}
_BOUNDS = [float("inf") if k == "+Inf" else float(k) for k in HIST_KEYS]
OVERALL = "all queues"


def quantile(q: float, cumulative: Mapping[str, float]) -> float | None:
    """Like PromQL histogram_quantile: linear inside the bucket holding the rank."""
    total = cumulative.get("+Inf", 0)
    if not total:
        return None
    rank = q * total
    lower, below = 0.0, 0.0
    for key, bound in zip(HIST_KEYS, _BOUNDS, strict=True):
        count = cumulative.get(key, 0)
        if count >= rank:
            if bound == float("inf"):
                return lower  # the highest finite bound, as Prometheus does
            inside = count - below
            return lower + (bound - lower) * ((rank - below) / inside if inside else 1.0)
        lower, below = bound, count
    return lower


def _ratio(num: float, den: float) -> float | None:
    return num / den if den else None


def derive(sums: Mapping[str, Any]) -> dict[str, float | None]:
    """The derived KPIs of SPEC section 3 from summed window fields."""
    return {
        "service_level": _ratio(sums["sla_met"], sums["sla_met"] + sums["sla_breached"]),
        "frt_mean_seconds": _ratio(sums["frt_sum_seconds"], sums["frt_count"]),
        "frt_p90_seconds": quantile(0.9, sums["frt_hist"]),
        "aht_seconds": _ratio(sums["aht_sum_seconds"], sums["aht_count"]),
        "fcr": _ratio(sums["fcr_first_contact"], sums["fcr_resolved"]),
        "csat": _ratio(sums["csat_satisfied"], sums["csat_responses"]),
        "nps": (
            100 * (sums["nps_promoters"] - sums["nps_detractors"]) / sums["nps_responses"]
            if sums["nps_responses"] else None
        ),
        "ces": _ratio(sums["ces_score_sum"], sums["ces_responses"]),
        "created": sums["tickets_created"],
        "resolved": sums["tickets_resolved"],
        "abandoned": sums["tickets_abandoned"],
    }


def _empty_sums() -> dict[str, Any]:
    sums: dict[str, Any] = dict.fromkeys(COUNT_FIELDS + SUM_FIELDS, 0)
    for hist in HIST_FIELDS:
        sums[hist] = dict.fromkeys(HIST_KEYS, 0)
    return sums


def _add(into: dict[str, Any], record: Mapping[str, Any]) -> None:
    for name in COUNT_FIELDS + SUM_FIELDS:
        into[name] += record[name]
    for hist in HIST_FIELDS:
        cells = into[hist]
        for key, n in record[hist].items():
            cells[key] += n


class CentreView:
    """Latest window records and live snapshots of every queue/channel."""

    def __init__(self, stale_after: float = 120.0) -> None:
        self.stale_after = stale_after
        self.windows: dict[tuple[str, str, int], dict[str, Any]] = {}
        self.live: dict[tuple[str, str], dict[str, Any]] = {}
        self.version = 0
        self.received_at: float | None = None
        self._swept_horizon = float("-inf")

    def apply_window(self, record: Mapping[str, Any]) -> None:
        key = (record["queue"], record["channel"], int(parse_rfc3339(record["window_start"])))
        current = self.windows.get(key)
        if current is None or record["revision"] >= current["revision"]:
            self.windows[key] = dict(record)
            self._changed()

    def apply_live(self, snapshot: Mapping[str, Any]) -> None:
        self.live[(snapshot["queue"], snapshot["channel"])] = dict(snapshot)
        self._changed()

    def _changed(self) -> None:
        self.version += 1
        self.received_at = time.time()

    def watermark(self) -> float | None:
        marks = [s["watermark"] for s in self.live.values() if s.get("watermark") is not None]
        return max(marks) if marks else None

    def expire(self, keep_seconds: float = 86400 + 3600) -> None:
        """Forget windows that no rolling window reaches any more."""
        watermark = self.watermark()
        if watermark is None:
            return
        horizon = watermark - keep_seconds
        # Windows are a minute long: sweeping (a scan of every window) more often than
        # the horizon moves by one finds nothing, and took a quarter of a replaying
        # worker's CPU when done after every read.
        if horizon < self._swept_horizon + 60:
            return
        self._swept_horizon = horizon
        for key in [k for k in self.windows if k[2] < horizon]:
            del self.windows[key]

    def document(
        self,
        window: str,
        thresholds: Mapping[str, Any],
        *,
        queue: str | None = None,
        now: float | None = None,
    ) -> dict[str, Any]:
        """What `/api/kpis` returns: per queue and overall, the tiles' values and colours."""
        now = time.time() if now is None else now
        watermark = self.watermark()
        length = WINDOW_LENGTHS[window]
        end = None if watermark is None else int(watermark // WINDOW_SECONDS) * WINDOW_SECONDS
        sums: dict[str, dict[str, Any]] = {}
        for (q, _c, start), record in self.windows.items():
            if queue is not None and q != queue:
                continue
            sums.setdefault(q, _empty_sums())
            if end is not None and end - length < start <= end:
                _add(sums[q], record)
        live: dict[str, dict[str, float]] = {}
        for (q, _c), snap in self.live.items():
            if queue is not None and q != queue:
                continue
            entry = live.setdefault(q, {"waiting": 0, "open": 0, "at_risk": 0,
                                        "oldest_waiting_seconds": 0.0})
            for gauge in ("waiting", "open", "at_risk"):
                entry[gauge] += sum(snap.get(gauge, {}).values())
            entry["oldest_waiting_seconds"] = max(
                entry["oldest_waiting_seconds"], snap.get("oldest_waiting_seconds") or 0.0
            )
            sums.setdefault(q, _empty_sums())

        overall_sums = _empty_sums()
        overall_live = {"waiting": 0.0, "open": 0.0, "at_risk": 0.0, "oldest_waiting_seconds": 0.0}
        queues = []
        for q in sorted(sums):
            _add(overall_sums, sums[q])
            q_live = live.get(q, {"waiting": 0, "open": 0, "at_risk": 0,
                                  "oldest_waiting_seconds": 0.0})
            for k, v in q_live.items():
                overall_live[k] = max(overall_live[k], v) if k.startswith("oldest") else (
                    overall_live[k] + v)
            queues.append(self._tiles(q, sums[q], q_live, thresholds))
        stale = self.received_at is None or now - self.received_at > self.stale_after
        return {
            "as_of": None if watermark is None else format_rfc3339(round(watermark, 3)),
            "received_at": (
                None if self.received_at is None else format_rfc3339(round(self.received_at, 3))
            ),
            "stale": stale,
            "stale_after_seconds": self.stale_after,
            "window": window,
            "queue_filter": queue,
            "overall": self._tiles(OVERALL, overall_sums, overall_live, thresholds),
            "queues": queues,
            "version": self.version,
        }

    @staticmethod
    def _tiles(
        name: str, sums: Mapping[str, Any], live: Mapping[str, float],
        thresholds: Mapping[str, Any],
    ) -> dict[str, Any]:
        values: dict[str, float | None] = {**derive(sums), **live}
        status = {k: _status(v, thresholds.get(k)) for k, v in values.items()}
        return {"queue": name, "values": values, "status": status}


def _status(value: float | None, threshold: Any) -> str:
    if value is None or threshold is None:
        return "none"
    good, warn, higher = threshold.good, threshold.warn, threshold.higher_is_better
    if higher:
        return "green" if value >= good else "amber" if value >= warn else "red"
    return "green" if value <= good else "amber" if value <= warn else "red"


async def follow(
    view: CentreView, bootstrap: str, kpis_topic: str, live_topic: str,
    client_options: Mapping[str, Any] | None = None,
) -> None:
    """Read both topics from the beginning into `view`, forever (cancel to stop)."""
    while True:
        consumer = AIOKafkaConsumer(
            kpis_topic, live_topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
            enable_auto_commit=False, **(client_options or {}),
        )
        try:
            await consumer.start()
            while True:
                batches = await consumer.getmany(timeout_ms=500, max_records=5000)
                for tp, messages in batches.items():
                    apply = view.apply_window if tp.topic == kpis_topic else view.apply_live
                    for message in messages:
                        if message.value is not None:
                            apply(orjson.loads(message.value))
                view.expire()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.warning("centre view: lost the KPI topics, retrying in 5 s", exc_info=True)
            await asyncio.sleep(5)
        finally:
            with contextlib.suppress(Exception):
                await consumer.stop()
