"""Compare streaming window results with the independent batch computation."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from tests.reference.batch import rolling

REL_TOL = 1e-6
# The section-3 fields, spelled out here rather than imported from the code under test.
FIELDS = frozenset(
    [
        "tickets_created",
        "tickets_resolved",
        "tickets_abandoned",
        "tickets_reopened",
        "frt_count",
        "frt_sum_seconds",
        "frt_hist",
        "aht_count",
        "aht_sum_seconds",
        "aht_hist",
        "sla_met",
        "sla_breached",
        "fcr_resolved",
        "fcr_first_contact",
        "csat_responses",
        "csat_satisfied",
        "nps_responses",
        "nps_promoters",
        "nps_detractors",
        "ces_responses",
        "ces_score_sum",
    ]
)


def flatten(fields: Mapping[str, Any]) -> dict[str, float]:
    """Non-zero section-3 values of one window; histogram cells as `frt_hist:15`."""
    flat: dict[str, float] = {}
    for name, value in fields.items():
        if name.partition(":")[0] not in FIELDS:
            continue  # queue, channel, window bounds, revision, updated_at
        if isinstance(value, dict):
            for cell, n in value.items():
                if n:
                    flat[f"{name}:{cell}"] = n
        elif isinstance(value, int | float) and not isinstance(value, bool) and value:
            flat[name] = value
    return flat


@dataclass
class Comparison:
    compared: int = 0
    mismatches: list[str] = field(default_factory=list)
    bad: list[tuple[str, str, int]] = field(default_factory=list)  # their windows


def compare_windows(
    streamed: Mapping[tuple[str, str, int], Mapping[str, Any]],
    batch: Mapping[tuple[str, str, int], Mapping[str, Any]],
    *,
    until: float,
) -> Comparison:
    """Compare every window that ends at or before `until` (epoch seconds)."""
    result = Comparison()
    for key in sorted(set(streamed) | set(batch)):
        if key[2] + 60 > until:
            continue
        result.compared += 1
        got = flatten(streamed.get(key, {}))
        want = flatten(batch.get(key, {}))
        bad = {
            name: (want.get(name, 0), got.get(name, 0))
            for name in set(got) | set(want)
            if abs(want.get(name, 0) - got.get(name, 0))
            > REL_TOL * max(1.0, abs(want.get(name, 0)))
        }
        if bad:
            result.mismatches.append(f"{key}: (batch, streamed) {bad}")
            result.bad.append(key)
    return result


ROLLING = {"5m": 300, "15m": 900, "1h": 3600, "24h": 86400}
HIST_METRICS = {"support_rolling_frt_seconds_bucket": "frt_hist",
                "support_rolling_aht_seconds_bucket": "aht_hist"}
LIVE_METRICS = {"support_tickets_open": "open", "support_tickets_waiting": "waiting",
                "support_sla_at_risk_tickets": "at_risk"}


Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def metric_problems(metrics: Samples, batch: Any, *, end_bucket: int) -> tuple[int, list[str]]:
    """Every KPI series of a scrape against the batch: (values checked, problems)."""
    sums = {w: rolling(batch.windows, end_bucket=end_bucket, length_seconds=L)
            for w, L in ROLLING.items()}
    checked = 0
    problems: list[str] = []
    for (name, label_items), value in metrics.items():
        labels = dict(label_items)
        if name.startswith("support_rolling_"):
            window = sums[labels["window"]].get((labels["queue"], labels["channel"]), {})
            if name in HIST_METRICS:
                want = window.get(HIST_METRICS[name], {}).get(labels["le"], 0)
            else:
                want = window.get(name.removeprefix("support_rolling_"), 0)
        elif name in LIVE_METRICS:
            key = (labels["queue"], labels["channel"], labels["priority"], LIVE_METRICS[name])
            want = batch.live.get(key, 0)
        elif name == "support_oldest_waiting_seconds":
            want = batch.oldest_waiting.get((labels["queue"], labels["channel"]), 0.0)
        else:
            continue
        checked += 1
        if abs(value - want) > 1e-6 * max(1.0, abs(want)):
            problems.append(f"{name}{labels}: exported {value}, batch {want}")
    # Nothing the batch has may be missing from the scrape.
    exported_pairs = {(dict(lb)["queue"], dict(lb)["channel"]) for (n, lb), _ in metrics.items()
                      if n == "support_rolling_tickets_created"}
    missing = {qc for w in sums.values() for qc in w} - exported_pairs
    problems += [f"no series for {qc}" for qc in sorted(missing)]
    return checked, problems
