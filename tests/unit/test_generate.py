"""kpimon.generate: rules and Alertmanager config from the catalogue, `kpimon generate`."""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from kpimon.catalogue import LEVEL_LABELS, RatioKpi, load_catalogue, parse_duration
from kpimon.cli import main
from kpimon.generate import (
    ALERTMANAGER,
    ALERTS,
    CATALOGUE,
    HEADER,
    RECORDING,
    generate,
    stale_files,
)

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def outputs() -> dict[Path, str]:
    return generate(load_catalogue(REPO / CATALOGUE))


def _rules(text: str) -> list[dict[str, Any]]:
    return [rule for group in yaml.safe_load(text)["groups"] for rule in group["rules"]]


def test_committed_files_are_up_to_date(outputs: dict[Path, str]) -> None:
    stale = stale_files(REPO, outputs)
    assert not stale, (f"out of date: {', '.join(map(str, stale))}; run "
                       "`.venv/bin/kpimon generate` and commit the result")


def test_every_output_carries_the_do_not_edit_header(outputs: dict[Path, str]) -> None:
    assert set(outputs) == {RECORDING, ALERTS, ALERTMANAGER}
    for text in outputs.values():
        assert text.startswith(HEADER)
        assert "do not edit" in text.splitlines()[0]
        yaml.safe_load(text)  # and is YAML


def test_cli_check_lists_stale_files_and_generate_fixes_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "deploy").mkdir()
    shutil.copy(REPO / CATALOGUE, tmp_path / CATALOGUE)
    root = str(tmp_path)

    assert main(["generate", "--check", "--root", root]) == 1
    err = capsys.readouterr().err
    for rel in (RECORDING, ALERTS, ALERTMANAGER):
        assert f"out of date: {rel}" in err

    assert main(["generate", "--root", root]) == 0
    assert f"wrote {ALERTS}" in capsys.readouterr().out
    assert main(["generate", "--check", "--root", root]) == 0
    assert (tmp_path / ALERTS).read_text() == (REPO / ALERTS).read_text()

    # A hand edit of a generated file is caught, and only that file is listed.
    edited = tmp_path / ALERTMANAGER
    edited.write_text(edited.read_text().replace("repeat_interval: 4h", "repeat_interval: 1h"))
    assert main(["generate", "--check", "--root", root]) == 1
    err = capsys.readouterr().err
    assert f"out of date: {ALERTMANAGER}" in err
    assert str(ALERTS) not in err
    # Generating again writes only what changed.
    assert main(["generate", "--root", root]) == 0
    assert capsys.readouterr().out.strip() == f"wrote {ALERTMANAGER}"


def test_cli_reports_a_bad_catalogue(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "deploy").mkdir()
    (tmp_path / CATALOGUE).write_text("schema_version = 1\n")
    assert main(["generate", "--root", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("kpimon generate: ")
    assert "pipeline: Field required" in err
    assert not (tmp_path / ALERTS).exists()


def test_ratios_are_sums_over_sums_at_their_own_level(outputs: dict[Path, str]) -> None:
    catalogue = load_catalogue(REPO / CATALOGUE)
    rules = {r["record"]: r["expr"] for r in _rules(outputs[RECORDING])}
    recorded = catalogue.recorded_series()
    assert set(rules) >= {s.record for s in recorded}
    for series in recorded:
        expr = rules[series.record]
        assert "avg" not in expr, series.record
        # Every aggregation in a rule groups by exactly the labels of its level.
        labels = LEVEL_LABELS[series.level]
        aggregations = re.findall(r"\b(?:sum|max)(?: by \(([^)]*)\) \(|\()", expr)
        assert aggregations or series.record.split(":")[2].startswith("deriv"), expr
        for by in aggregations:
            assert tuple(x for x in by.split(", ") if x and x != "le") == labels, expr
        kpi = catalogue.kpi(series.kpi)
        if isinstance(kpi, RatioKpi):
            numerator, denominator = expr.split(" / ")
            assert denominator.endswith(" > 0)")  # no series rather than NaN or +Inf
            for field in kpi.numerator:
                assert f"support_rolling_{field.removeprefix('-')}{{window=" in numerator
            for field in kpi.denominator:
                assert f"support_rolling_{field}{{window=\"{series.window}\"}}" in denominator
    assert rules["centre:support_nps:score15m"] == (
        '100 * (sum(support_rolling_nps_promoters{window="15m"}) - '
        'sum(support_rolling_nps_detractors{window="15m"})) / '
        '(sum(support_rolling_nps_responses{window="15m"}) > 0)')
    assert rules["queue:support_frt_seconds:p90_1h"] == (
        'histogram_quantile(0.9, sum by (queue, le) '
        '(support_rolling_frt_seconds_bucket{window="1h"})) and on (queue) '
        '(sum by (queue) (support_rolling_frt_count{window="1h"}) > 0)')


def test_alerts_carry_catalogue_thresholds_labels_and_annotations(
    outputs: dict[Path, str],
) -> None:
    catalogue = load_catalogue(REPO / CATALOGUE)
    alerts = _rules(outputs[ALERTS])
    by_name: dict[str, list[dict[str, Any]]] = {}
    for rule in alerts:
        by_name.setdefault(rule["alert"], []).append(rule)
        assert rule["labels"]["severity"] in ("warning", "critical")
        assert rule["labels"]["category"] in ("leading", "lagging", "pipeline")
        assert set(rule["annotations"]) == {"summary", "description", "runbook"}
        assert rule["annotations"]["runbook"].strip()
        assert parse_duration(rule["for"]) > 0
    expected = {k.alert.name for k in catalogue.kpis if k.alert}
    expected |= {c.alert for c in catalogue.pipeline.checks().values()}
    assert set(by_name) == expected

    for kpi in catalogue.kpis:
        if kpi.alert is None:
            continue
        rules = by_name[kpi.alert.name]
        assert [r["labels"]["severity"] for r in rules] == list(kpi.alert.severities)
        op = "<" if kpi.direction == "higher_is_better" else ">"
        for rule in rules:
            severity = rule["labels"]["severity"]
            assert rule["labels"]["kpi"] == kpi.id
            assert rule["for"] == kpi.alert.for_
            assert "$value" in rule["annotations"]["summary"]
            assert "{{ $labels.queue }}" in rule["annotations"]["summary"]
            for t in [kpi.thresholds, *kpi.channels.values()]:
                assert f"{op} {getattr(t, severity):g}" in rule["expr"], rule["expr"]
            if kpi.alert.min_count:
                assert f">= {kpi.alert.min_count:g})" in rule["expr"]

    sla = by_name["KpimonServiceLevelLow"]
    assert sla[1]["expr"] == (
        "queue:support_sla_compliance:ratio1h < 0.7 and on (queue) "
        '(sum by (queue) (support_rolling_sla_met{window="1h"}) + '
        'sum by (queue) (support_rolling_sla_breached{window="1h"}) >= 20)')
    assert by_name["KpimonWorkerDown"][0]["expr"] == 'up{job="kpimon"} == 0'


def test_time_scale_shortens_every_duration_but_keeps_names(outputs: dict[Path, str]) -> None:
    catalogue = load_catalogue(REPO / CATALOGUE)
    fast = generate(catalogue, time_scale=0.01, webhook_url="http://127.0.0.1:1/hook")

    def durations(text: str) -> dict[str, list[str]]:
        found: dict[str, list[str]] = {}
        for group in yaml.safe_load(text)["groups"]:
            found.setdefault(group["name"], []).append(group["interval"])
            for rule in group["rules"]:
                name = rule.get("record") or rule["alert"]
                found.setdefault(name, []).append(rule.get("for", ""))
                found[name] += re.findall(r"\[([0-9hms]+)\]", rule["expr"])
        return found

    for path in (RECORDING, ALERTS):
        slow, quick = durations(outputs[path]), durations(fast[path])
        assert slow.keys() == quick.keys()
        for name, values in slow.items():
            for a, b in zip(values, quick[name], strict=True):
                if a:
                    assert parse_duration(b) == pytest.approx(parse_duration(a) * 0.01), name
    # Rolling windows are labels of the data: never scaled.
    assert 'window="1h"' in fast[ALERTS]
    assert "Durations scaled by 0.01" in fast[ALERTS]

    am = yaml.safe_load(fast[ALERTMANAGER])
    assert (am["route"]["group_wait"], am["route"]["group_interval"]) == ("300ms", "3s")
    urls = {c["url"] for r in am["receivers"] for c in r["webhook_configs"]}
    assert urls == {"http://127.0.0.1:1/hook"}
    with pytest.raises(ValueError, match="positive"):
        generate(catalogue, time_scale=0)


def test_alertmanager_routes_every_team_and_inhibits_on_stalls(outputs: dict[Path, str]) -> None:
    catalogue = load_catalogue(REPO / CATALOGUE)
    am = yaml.safe_load(outputs[ALERTMANAGER])
    receivers = {r["name"] for r in am["receivers"]}
    teams = [catalogue.routing.default_team, catalogue.routing.pipeline_team,
             *(t.name for t in catalogue.routing.teams)]
    assert receivers == {f"{t}-{k}" for t in teams for k in ("page", "ticket")}

    def used(route: dict[str, Any]) -> set[str]:
        return {route["receiver"]}.union(*(used(r) for r in route.get("routes", [])))

    assert used(am["route"]) == receivers
    assert am["route"]["group_by"] == ["alertname", "queue"]
    stall = am["inhibit_rules"][0]
    assert stall["source_matchers"] == [
        'alertname=~"KpimonNoEvents|KpimonWatermarkStalled|KpimonWorkerDown|KpimonWorkersAbsent"']
    # Commented examples of real receivers ship with the file.
    for kind in ("pagerduty_configs", "opsgenie_configs", "slack_configs", "email_configs"):
        assert f"#     {kind}:" in outputs[ALERTMANAGER]
