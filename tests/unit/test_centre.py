"""The whole-centre view behind /api/kpis and the wallboard (pure, no Kafka)."""

from __future__ import annotations

from typing import Any

import pytest

from exporters.centre import OVERALL, CentreView, quantile
from kpimon.config import Threshold
from models.records import empty_window_values
from models.timestamps import format_rfc3339

T0 = 1_795_341_600  # a bucket start
THRESHOLDS = {"service_level": Threshold(good=0.8, warn=0.7),
              "waiting": Threshold(good=5, warn=15, higher_is_better=False)}


def window(queue: str, start: int, revision: int = 1, **values: Any) -> dict[str, Any]:
    record = {"queue": queue, "channel": "chat", "window_start": format_rfc3339(start),
              "window_end": format_rfc3339(start + 60), "revision": revision,
              **empty_window_values()}
    record.update(values)
    return record


def live(queue: str, watermark: float, **gauges: Any) -> dict[str, Any]:
    return {"queue": queue, "channel": "chat", "watermark": watermark,
            "open": {"normal": gauges.get("open", 0)},
            "waiting": {"normal": gauges.get("waiting", 0)},
            "at_risk": {}, "oldest_waiting_seconds": gauges.get("oldest", 0.0)}


@pytest.mark.parametrize(("q", "expected"), [(0.5, 15.0), (0.9, 27.0), (1.0, 30.0)])
def test_quantile_interpolates_like_histogram_quantile(q: float, expected: float) -> None:
    # 10 values: 5 in (0, 15], 5 in (15, 30].
    cumulative = {"15": 5, "30": 10, "60": 10, "+Inf": 10}
    assert quantile(q, cumulative) == pytest.approx(expected)


def test_quantile_in_the_infinite_bucket_is_the_highest_finite_bound() -> None:
    cells = dict.fromkeys(["15", "30", "60", "120", "300", "600", "1800", "3600", "7200",
                           "14400", "28800", "86400"], 0)
    assert quantile(0.9, {**cells, "+Inf": 3}) == 86400
    assert quantile(0.9, {**cells, "+Inf": 0}) is None


def test_rolling_window_sums_the_buckets_ending_with_the_watermark() -> None:
    view = CentreView()
    view.apply_live(live("billing", T0 + 30, waiting=3, open=4, oldest=90.0))
    view.apply_window(window("billing", T0, sla_met=3, sla_breached=1))
    view.apply_window(window("billing", T0 - 840, sla_met=1))  # 15th bucket back: inside
    view.apply_window(window("billing", T0 - 900, sla_breached=5))  # 16th: outside 15m
    doc = view.document("15m", THRESHOLDS, now=view.received_at)
    billing = doc["queues"][0]
    assert billing["values"]["service_level"] == 4 / 5
    assert billing["status"]["service_level"] == "green"
    assert (billing["values"]["waiting"], billing["values"]["oldest_waiting_seconds"]) == (3, 90)
    assert doc["overall"]["queue"] == OVERALL
    assert doc["as_of"] == format_rfc3339(T0 + 30)


def test_overall_sums_numerators_and_denominators_never_averages() -> None:
    view = CentreView()
    view.apply_live(live("a", T0))
    view.apply_window(window("a", T0, sla_met=1, sla_breached=0))
    view.apply_window(window("b", T0, sla_met=1, sla_breached=9))
    overall = view.document("5m", THRESHOLDS, now=view.received_at)["overall"]
    assert overall["values"]["service_level"] == 2 / 11  # not (1.0 + 0.1) / 2
    assert overall["status"]["service_level"] == "red"


def test_older_revision_never_replaces_a_newer_one() -> None:
    view = CentreView()
    view.apply_window(window("a", T0, revision=5, tickets_created=5))
    view.apply_window(window("a", T0, revision=4, tickets_created=4))
    assert view.windows[("a", "chat", T0)]["tickets_created"] == 5


def test_stale_after_the_configured_quiet_time_and_queue_filter() -> None:
    view = CentreView(stale_after=10)
    view.apply_live(live("a", T0, waiting=20))
    view.apply_live(live("b", T0))
    assert view.received_at is not None
    fresh = view.document("5m", THRESHOLDS, now=view.received_at + 9)
    assert not fresh["stale"]
    assert fresh["overall"]["status"]["waiting"] == "red"
    assert view.document("5m", THRESHOLDS, now=view.received_at + 11)["stale"]
    only_b = view.document("5m", THRESHOLDS, queue="b", now=view.received_at)
    assert [q["queue"] for q in only_b["queues"]] == ["b"]


def test_expire_forgets_windows_behind_the_horizon_once_it_moved_a_minute() -> None:
    view = CentreView()
    keep = 3600
    for minute in range(5):
        view.apply_window(window("billing", T0 + 60 * minute))
    view.apply_live(live("billing", T0 + keep + 90))  # horizon T0 + 90
    view.expire(keep)
    assert sorted(k[2] for k in view.windows) == [T0 + 120, T0 + 180, T0 + 240]

    view.apply_live(live("billing", T0 + keep + 140))  # moved 50 s: no sweep yet
    view.expire(keep)
    assert len(view.windows) == 3
    view.apply_live(live("billing", T0 + keep + 200))  # a minute on from the last sweep
    view.expire(keep)
    assert sorted(k[2] for k in view.windows) == [T0 + 240]
