"""Compare streaming window results with the independent batch computation."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

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
    return result
