"""kpimon.catalogue: the committed KPI catalogue loads, and a bad file fails clearly."""

from __future__ import annotations

from pathlib import Path
from typing import get_args

import pytest

from kpimon.catalogue import (
    LEVELS,
    WINDOWS,
    Catalogue,
    CatalogueError,
    Channel,
    GaugeKpi,
    QuantileKpi,
    RatioKpi,
    TrendKpi,
    format_duration,
    load_catalogue,
    parse_catalogue,
    parse_duration,
)
from models.events import CHANNELS

REPO = Path(__file__).resolve().parents[2]
CATALOGUE = REPO / "deploy" / "kpi-catalogue.toml"

# A small valid catalogue; tests break one thing at a time.
PIPELINE = """
[pipeline.no_events]
alert = "NoEvents"
severity = "critical"
range = "5m"
for = "10m"
description = "d"
runbook = "r"
[pipeline.watermark_stalled]
alert = "Stalled"
severity = "critical"
range = "10m"
for = "5m"
description = "d"
runbook = "r"
[pipeline.worker_down]
alert = "Down"
severity = "critical"
for = "2m"
description = "d"
runbook = "r"
[pipeline.workers_absent]
alert = "Absent"
severity = "critical"
for = "5m"
description = "d"
runbook = "r"
[pipeline.consumer_lag]
alert = "Lag"
range = "10m"
for = "10m"
warning = 10
description = "d"
runbook = "r"
[pipeline.dead_letters]
alert = "Dead"
range = "10m"
for = "10m"
critical = 0.1
description = "d"
runbook = "r"
"""
SLA = """
[[kpi]]
id = "sla"
title = "Service level"
category = "lagging"
kind = "ratio"
metric = "support_sla_compliance"
operation = "ratio"
numerator = ["sla_met"]
denominator = ["sla_met", "sla_breached"]
unit = "ratio"
direction = "higher_is_better"
target = 0.8
warning = 0.8
critical = 0.7
description = "d"
runbook = "r"
alert = { name = "SlaLow", window = "1h", min_count = 20, for = "10m" }
"""
WAITING = """
[[kpi]]
id = "waiting"
title = "Waiting"
category = "leading"
kind = "gauge"
metric = "support_tickets_waiting"
aggregate = "sum"
unit = "tickets"
direction = "lower_is_better"
target = 5
warning = 15
critical = 30
description = "d"
runbook = "r"
"""
GOOD = "schema_version = 1\n" + SLA + WAITING + PIPELINE


def _error(text: str) -> str:
    with pytest.raises(CatalogueError) as info:
        parse_catalogue(text, "cat.toml")
    return str(info.value)


def test_the_committed_catalogue_declares_every_kpi_of_the_issue() -> None:
    cat = load_catalogue(CATALOGUE)
    kpis = cat.kpis_by_id
    for kpi_id in ("sla_compliance", "frt_mean", "frt_p90", "aht", "fcr", "csat", "nps", "ces",
                   "abandonment", "sla_at_risk", "oldest_waiting", "backlog_growth", "waiting"):
        assert kpi_id in kpis, kpi_id
        assert kpis[kpi_id].runbook.strip() and kpis[kpi_id].unit
    # SPEC section 3's ratios, numerator over denominator.
    nps = cat.kpi("nps")
    assert isinstance(nps, RatioKpi)
    assert (nps.numerator, nps.denominator, nps.scale) == (
        ("nps_promoters", "-nps_detractors"), ("nps_responses",), 100)
    sla = cat.kpi("sla_compliance")
    assert isinstance(sla, RatioKpi)
    assert sla.denominator == ("sla_met", "sla_breached")
    assert {k.id for k in cat.kpis if isinstance(k, QuantileKpi)} >= {"frt_p90", "aht_p90"}
    assert isinstance(cat.kpi("backlog_growth"), TrendKpi)
    assert isinstance(cat.kpi("sla_at_risk"), GaugeKpi)


def test_channel_literal_matches_the_spec_channels() -> None:
    assert set(get_args(Channel)) == set(CHANNELS)


def test_recording_rule_names_per_kpi_level_and_window() -> None:
    cat = load_catalogue(CATALOGUE)
    series = cat.recorded_series()
    names = [s.record for s in series]
    assert len(names) == len(set(names))
    sla = cat.kpi("sla_compliance")
    assert sla.record("queue", "15m") == "queue:support_sla_compliance:ratio15m"
    assert sla.record("centre", "24h") == "centre:support_sla_compliance:ratio24h"
    assert cat.kpi("frt_p90").record("queue_channel", "5m") == (
        "queue_channel:support_frt_seconds:p90_5m")
    assert cat.kpi("nps").record("channel", "1h") == "channel:support_nps:score1h"
    assert cat.kpi("aht").record("queue", "1h") == "queue:support_aht_seconds:mean1h"
    assert cat.kpi("waiting").record("queue") == "queue:support_tickets_waiting:sum"
    assert cat.kpi("backlog_growth").record("queue") == "queue:support_tickets_waiting:deriv15m"
    # Every windowed KPI has all levels and windows; live ones have no window.
    sla_series = {(s.level, s.window) for s in series if s.kpi == "sla_compliance"}
    assert sla_series == {(level, w) for level in LEVELS for w in WINDOWS}
    assert {s.window for s in series if s.kpi == "oldest_waiting"} == {None}
    assert next(s for s in series if s.record.startswith("queue_channel:")).labels == (
        "queue", "channel")
    with pytest.raises(ValueError, match="window"):
        sla.record("queue")
    with pytest.raises(KeyError, match="no KPI"):
        cat.kpi("nope")


def test_durations_parse_and_format() -> None:
    assert parse_duration("1h30m") == 5400
    assert parse_duration("500ms") == 0.5
    assert format_duration(5400) == "1h30m"
    assert format_duration(1.8) == "1s800ms"
    assert format_duration(0.0001) == "1ms"
    assert format_duration(0) == "0s"
    assert parse_duration("0s") == 0
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration("5 minutes")


def test_a_minimal_catalogue_is_valid() -> None:
    cat = parse_catalogue(GOOD)
    assert isinstance(cat, Catalogue)
    assert cat.routing.default_team == "cc-ops"  # routing has defaults
    assert cat.pipeline.stall_alerts == ("NoEvents", "Stalled", "Down", "Absent")


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(CatalogueError, match="cannot read the catalogue"):
        load_catalogue(tmp_path / "missing.toml")


def test_not_toml_names_file_and_line() -> None:
    message = _error(GOOD + "\nthis is = = wrong\n")
    assert message.startswith("cat.toml: not valid TOML")
    assert "line" in message


def test_unknown_field_of_the_spec_is_rejected_with_its_location() -> None:
    message = _error(GOOD.replace('numerator = ["sla_met"]', 'numerator = ["sla_mett"]'))
    assert "kpi[0] sla: " in message
    assert "'sla_mett' is not a window field of SPEC section 3" in message


def test_typo_in_a_key_is_rejected() -> None:
    message = _error(GOOD.replace("warning = 15", "warnng = 15"))
    assert "kpi[1] waiting.warnng: Extra inputs are not permitted" in message
    assert "kpi[1] waiting.warning: Field required" in message


def test_critical_must_be_at_least_as_bad_as_warning() -> None:
    message = _error(GOOD.replace("critical = 0.7", "critical = 0.9"))
    assert "critical threshold 0.9 is not at least as bad as the warning threshold 0.8" in message


def test_every_problem_is_listed() -> None:
    text = GOOD.replace("critical = 0.7", "critical = 0.9").replace('for = "2m"', 'for = "2 min"')
    message = _error(text)
    assert message.splitlines()[0] == "cat.toml: 2 problem(s)", message
    assert "pipeline.worker_down.for: Value error, not a duration: '2 min'" in message


def test_cross_checks() -> None:
    assert "KPI ids must be distinct" in _error(GOOD + WAITING)
    duplicate_alert = GOOD.replace('alert = "Lag"', 'alert = "SlaLow"')
    assert "alert names must be distinct" in _error(duplicate_alert)
    no_window = GOOD.replace('window = "1h", ', "")
    assert "alert needs window" in _error(no_window)
    trend = WAITING.replace('id = "waiting"', 'id = "growth"').replace(
        'kind = "gauge"', 'kind = "trend"').replace('aggregate = "sum"',
                                                    'source = "sla"\nrange = "15m"')
    assert "source 'sla' is not a gauge KPI" in _error(GOOD + trend)
    channels = WAITING.replace('id = "waiting"', 'id = "w2"').replace(
        'metric = "support_tickets_waiting"', 'metric = "support_tickets_open"') + (
        'alert = { name = "W", for = "1m" }\n'
        "[kpi.channels]\nphone = { target = 1, warning = 2, critical = 3 }\n")
    assert "alerts at level queue_channel" in _error(GOOD + channels)
    not_a_gauge = WAITING.replace('metric = "support_tickets_waiting"',
                                  'metric = "support_rolling_sla_met"')
    assert "is not a live gauge" in _error(GOOD.replace(WAITING, not_a_gauge))


def test_bad_enum_and_version() -> None:
    assert "kpi: Field required" in _error("schema_version = 1\n" + PIPELINE)
    assert "declares no KPI" in _error("schema_version = 1\nkpi = []\n" + PIPELINE)
    assert "schema_version" in _error(GOOD.replace("schema_version = 1", "schema_version = 2"))
    assert "direction" in _error(GOOD.replace('"higher_is_better"', '"up"'))
    bad_channel = WAITING + "[kpi.channels]\nfax = { target = 1, warning = 2, critical = 3 }\n"
    assert "channels.fax" in _error(GOOD.replace(WAITING, bad_channel))
