"""A time-scaled rule set (end-to-end tests) keeps trend thresholds per scaled minute.

`deriv()` is per second of Prometheus time. When `generate(time_scale=s)` makes every
duration s times shorter, a backlog that grows 1 ticket per (scaled) minute grows 1/s
tickets per Prometheus minute, so the per-minute factor must shrink by s as well, or a
scaled test would alert on trends 1/s times smaller than the catalogue's thresholds.
"""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from kpimon.catalogue import TrendKpi, load_catalogue
from kpimon.generate import ALERTS, CATALOGUE, generate

REPO = Path(__file__).resolve().parents[2]


def _trend_exprs(text: str) -> list[str]:
    groups = yaml.safe_load(text)["groups"]
    return [rule["expr"] for g in groups for rule in g["rules"]
            if "alert" in rule and ":deriv" in rule["expr"]]


def test_trend_alerts_compare_per_minute_of_the_scaled_time() -> None:
    catalogue = load_catalogue(REPO / CATALOGUE)
    trend = next(k for k in catalogue.kpis if isinstance(k, TrendKpi))
    normal = _trend_exprs(generate(catalogue)[ALERTS])
    fast = _trend_exprs(generate(catalogue, time_scale=0.25)[ALERTS])
    assert normal and len(normal) == len(fast)
    for slow_expr, fast_expr in zip(normal, fast, strict=True):
        slow_factor = re.search(r":deriv\w+ \* ([0-9.]+) >", slow_expr)
        fast_factor = re.search(r":deriv\w+ \* ([0-9.]+) >", fast_expr)
        assert slow_factor and fast_factor, (slow_expr, fast_expr)
        assert float(slow_factor.group(1)) == 60
        assert float(fast_factor.group(1)) == 15  # 60 * 0.25
        # The thresholds themselves are the catalogue's, unscaled.
        assert {f"> {trend.warning:g}", f"> {trend.critical:g}"} & {
            m.group(0) for m in re.finditer(r"> [0-9.]+", fast_expr)}
