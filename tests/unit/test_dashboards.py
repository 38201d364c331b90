"""Grafana dashboards generated from the KPI catalogue (kpimon/dashboards.py).

Checked without Grafana: the committed JSON is what `kpimon generate` produces, every
panel names a provisioned data source, every KPI panel is coloured by exactly the
catalogue's thresholds (with the alert rules' meaning of "worse than"), and every query
reads only metrics a worker exports or recording rules that exist. That the queries also
return data from a real Prometheus is tests/integration/test_alerting_e2e.py.
"""

from __future__ import annotations

import itertools
import json
import math
import re
import shutil
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from kpimon.catalogue import (
    LEVEL_LABELS,
    AnyKpi,
    Catalogue,
    Level,
    Thresholds,
    load_catalogue,
)
from kpimon.cli import main
from kpimon.dashboards import OVERVIEW, PIPELINE, QUEUE, dashboard_files
from kpimon.generate import CATALOGUE, RECORDING, stale_files
from models.records import SCALAR_FIELDS

REPO = Path(__file__).resolve().parents[2]
GRAFANA = REPO / "grafana"
DASHBOARDS = (OVERVIEW, QUEUE, PIPELINE)

# SPEC section 6: the exported names that are part of the contract.
SPEC_METRICS = {
    *(f"support_rolling_{f}" for f in SCALAR_FIELDS),
    "support_rolling_frt_seconds_bucket",
    "support_rolling_aht_seconds_bucket",
    "support_tickets_open",
    "support_tickets_waiting",
    "support_oldest_waiting_seconds",
    "support_sla_at_risk_tickets",
    "support_events_total",
    "support_watermark_timestamp_seconds",
    "support_event_lag_seconds",
}
# Series Prometheus makes itself for every scrape target.
PROMETHEUS_METRICS = {"up"}
PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or",
                "unless", "bool", "offset", "inf", "nan"}


@cache
def catalogue() -> Catalogue:
    return load_catalogue(REPO / CATALOGUE)


def dashboard(rel: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((REPO / rel).read_text(encoding="utf-8"))
    return data


def panels(rel: Path) -> Iterator[dict[str, Any]]:
    """Every panel of a dashboard except rows (which hold no query)."""
    for panel in dashboard(rel)["panels"]:
        if panel["type"] != "row":
            yield panel


def all_panels() -> list[tuple[str, dict[str, Any]]]:
    return [(f"{rel.stem}#{p['id']}", p) for rel in DASHBOARDS for p in panels(rel)]


PANELS = all_panels()
PANEL_IDS = [name for name, _ in PANELS]


@cache
def exported_metrics() -> set[str]:
    """Metric names the worker exports: SPEC section 6 plus what the exporters register."""
    names = set(SPEC_METRICS)
    sources = [*(REPO / "exporters").glob("*.py"), REPO / "streams" / "app.py"]
    for path in sources:
        text = path.read_text(encoding="utf-8")
        counters = set(re.findall(
            r'(?:Counter|CounterMetricFamily)\(\s*"(support_[a-z0-9_]+)"', text))
        # Counters are exposed with the _total suffix only.
        names.update(set(re.findall(r'"(support_[a-z0-9_]+)"', text)) - counters)
        names.update(f"{n}_total" for n in counters)
    return names


@cache
def recording_rules() -> set[str]:
    groups = yaml.safe_load((REPO / RECORDING).read_text(encoding="utf-8"))["groups"]
    return {rule["record"] for g in groups for rule in g["rules"] if "record" in rule}


def metric_names(expr: str) -> list[tuple[str, set[str]]]:
    """(metric name, label names in its selector) of every series a PromQL query reads."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # string literals
    text = re.sub(r"\[[^\]]*\]", "", text)  # range durations
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", text)
    found = []
    for match in re.finditer(r"([A-Za-z_:][A-Za-z0-9_:]*)\s*(\{[^}]*\})?\s*(\()?", text):
        name, selector, call = match.groups()
        if call or name.lower() in PROMQL_WORDS:
            continue  # a function or aggregation, or a keyword
        labels = set(re.findall(r"([A-Za-z_][A-Za-z0-9_]*)\s*(?:=~|!~|!=|=)", selector or ""))
        found.append((name, labels))
    return found


def test_metric_name_parser_skips_functions_labels_and_strings() -> None:
    expr = ('sum by (topic) (rate(support_events_total{outcome="dead_letter"}[5m])) / '
            'histogram_quantile(0.9, sum by (le) (x_bucket)) and on (queue) up == 0')
    assert metric_names(expr) == [("support_events_total", {"outcome"}), ("x_bucket", set()),
                                  ("up", set())]


# --------------------------------------------------------------------------- up to date


def test_committed_dashboards_are_up_to_date() -> None:
    stale = stale_files(REPO, dashboard_files(catalogue()))
    assert not stale, (f"out of date: {', '.join(map(str, stale))}; run "
                       "`.venv/bin/kpimon generate` and commit the result")


def test_generate_check_covers_the_dashboards(tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "deploy").mkdir()
    shutil.copy(REPO / CATALOGUE, tmp_path / CATALOGUE)
    root = str(tmp_path)
    assert main(["generate", "--check", "--root", root]) == 1
    assert f"out of date: {OVERVIEW}" in capsys.readouterr().err
    assert main(["generate", "--root", root]) == 0
    assert f"wrote {QUEUE}" in capsys.readouterr().out
    for rel in DASHBOARDS:
        assert (tmp_path / rel).read_text() == (REPO / rel).read_text()
    edited = tmp_path / PIPELINE
    edited.write_text(edited.read_text().replace('"refresh": "30s"', '"refresh": "5s"'))
    assert main(["generate", "--check", "--root", root]) == 1
    err = capsys.readouterr().err
    assert f"out of date: {PIPELINE}" in err and str(OVERVIEW) not in err


# --------------------------------------------------------------------------- structure


@pytest.mark.parametrize("rel", DASHBOARDS, ids=lambda r: r.stem)
def test_dashboard_is_grafana_json_with_a_sound_layout(rel: Path) -> None:
    data = dashboard(rel)
    assert data["uid"] == rel.stem and data["title"].startswith("kpimon")
    assert data["schemaVersion"] == 39
    assert data["id"] is None and data["editable"] is False
    assert "do not edit" in data["description"]
    ids = [p["id"] for p in data["panels"]]
    assert len(ids) == len(set(ids))
    cells: set[tuple[int, int]] = set()
    for panel in data["panels"]:
        pos = panel["gridPos"]
        assert pos["x"] >= 0 and pos["w"] > 0 and pos["x"] + pos["w"] <= 24, panel["title"]
        mine = {(x, y) for x in range(pos["x"], pos["x"] + pos["w"])
                for y in range(pos["y"], pos["y"] + pos["h"])}
        assert not cells & mine, f"{panel['title']} overlaps another panel"
        cells |= mine
    assert len(list(panels(rel))) >= 10


def test_queue_dashboard_selects_the_queue_from_label_values() -> None:
    (variable,) = dashboard(QUEUE)["templating"]["list"]
    assert variable["name"] == "queue" and variable["type"] == "query"
    assert variable["datasource"]["uid"] == "prometheus"
    query = variable["query"]["query"]
    match = re.fullmatch(r"label_values\((\w+), queue\)", query)
    assert match and match.group(1) in exported_metrics()
    for _, panel in ((n, p) for n, p in PANELS if n.startswith("kpimon-queue#")):
        for target in panel["targets"]:
            assert 'queue="$queue"' in target["expr"], (panel["title"], target["expr"])


def test_overview_shows_every_headline_kpi_per_queue_and_overall() -> None:
    records = {s.record: s for s in catalogue().recorded_series()}
    shown: dict[str, set[Level]] = {}
    for panel in panels(OVERVIEW):
        for target in panel["targets"]:
            for name, _ in metric_names(target["expr"]):
                if name in records:
                    shown.setdefault(records[name].kpi, set()).add(records[name].level)
    for kpi_id in ("sla_compliance", "waiting", "oldest_waiting", "sla_at_risk", "frt_mean",
                   "frt_p90", "aht", "fcr", "csat", "nps"):
        levels = shown.get(kpi_id, set())
        assert {"queue", "queue_channel"} & levels, f"{kpi_id}: not shown per queue"
        assert {"centre", "channel"} & levels, f"{kpi_id}: not shown for the whole centre"


# --------------------------------------------------------------------------- data sources


def provisioned_datasources() -> dict[str, str]:
    """uid -> type of grafana/provisioning/datasources/*.yml."""
    found = {}
    for path in sorted((GRAFANA / "provisioning" / "datasources").glob("*.y*ml")):
        for source in yaml.safe_load(path.read_text(encoding="utf-8"))["datasources"]:
            found[source["uid"]] = source["type"]
    return found


@pytest.mark.parametrize(("name", "panel"), PANELS, ids=PANEL_IDS)
def test_panel_uses_a_provisioned_datasource(name: str, panel: dict[str, Any]) -> None:
    sources = provisioned_datasources()
    refs = [panel["datasource"], *(t["datasource"] for t in panel["targets"])]
    assert panel["targets"]
    for ref in refs:
        assert ref["uid"] in sources, f"{name}: data source uid {ref['uid']!r} not provisioned"
        assert ref["type"] == sources[ref["uid"]]


# --------------------------------------------------------------------------- thresholds


def grafana_colour(steps: list[dict[str, Any]], value: float) -> str:
    """The colour Grafana gives `value`: the last step whose value is at most it."""
    assert steps[0]["value"] is None
    values = [s["value"] for s in steps[1:]]
    assert values == sorted(values), "threshold steps must ascend"
    colour: str = steps[0]["color"]
    for step in steps[1:]:
        if value >= step["value"]:
            colour = step["color"]
    return colour


def expected_colour(higher_is_better: bool, t: Thresholds, value: float) -> str:
    """The alert rules' meaning: an alert fires while the value is worse than a threshold."""

    def worse(than: float) -> bool:
        return value < than if higher_is_better else value > than

    if worse(t.critical):
        return "red"
    if worse(t.warning):
        return "orange"
    return "yellow" if worse(t.target) else "green"


def check_steps(steps: list[dict[str, Any]], higher_is_better: bool, t: Thresholds,
                where: str) -> None:
    """Steps sit exactly at the thresholds and colour every value as the alerts judge it."""
    points = sorted({t.target, t.warning, t.critical})
    # A lower-is-better alert fires strictly above its threshold: the colour changes at
    # the next float up, which is still the catalogue's number.
    at = points if higher_is_better else [math.nextafter(p, math.inf) for p in points]
    values = [s["value"] for s in steps[1:]]
    assert set(values) <= set(at), f"{where}: steps {values} are not the thresholds {points}"
    spread = max(1.0, abs(points[-1] - points[0]))
    probes = {points[0] - spread, points[-1] + spread}
    for p in points:
        probes |= {p, math.nextafter(p, -math.inf), math.nextafter(p, math.inf),
                   p - spread / 100, p + spread / 100}
    for a, b in itertools.pairwise(points):
        probes.add((a + b) / 2)
    for value in sorted(probes):
        assert grafana_colour(steps, value) == expected_colour(higher_is_better, t, value), (
            f"{where}: value {value} shows {grafana_colour(steps, value)}")


def panel_kpis(panel: dict[str, Any]) -> set[str]:
    records = {s.record: s.kpi for s in catalogue().recorded_series()}
    return {records[name] for t in panel["targets"]
            for name, _ in metric_names(t["expr"]) if name in records}


def channels_of(expr: str, kpi: AnyKpi) -> list[str]:
    """Channels a per-channel query selects (all unlisted ones for `channel!~`)."""
    listed = list(kpi.channels)
    if m := re.search(r'channel="([^"]+)"', expr):
        return [m.group(1)]
    if m := re.search(r'channel=~"([^"]+)"', expr):
        return m.group(1).split("|")
    if m := re.search(r'channel!~"([^"]+)"', expr):
        assert set(m.group(1).split("|")) == set(listed)
        return []
    raise AssertionError(f"{expr}: a KPI with per-channel thresholds needs a channel matcher")


def pipeline_check(panel: dict[str, Any]) -> str | None:
    """The graded pipeline check a pipeline panel shows, if any."""
    exprs = " ".join(t["expr"] for t in panel["targets"])
    if "topic:support_consumer_lag_messages:sum" in exprs:
        return "consumer_lag"
    if 'outcome="dead_letter"' in exprs:
        return "dead_letters"
    return None


@pytest.mark.parametrize(("name", "panel"), PANELS, ids=PANEL_IDS)
def test_panel_thresholds_are_the_catalogues(name: str, panel: dict[str, Any]) -> None:
    defaults = panel["fieldConfig"]["defaults"]
    steps = defaults["thresholds"]["steps"]
    overrides = panel["fieldConfig"]["overrides"]
    kpis = panel_kpis(panel)
    check = pipeline_check(panel)
    if check:
        graded = catalogue().pipeline.checks()[check].graded()
        assert [(s["color"], s["value"]) for s in steps] == [
            ("green", None), *(("orange" if sev == "warning" else "red", v) for sev, v in graded)]
        return
    if len(kpis) != 1:
        # Raw breakdowns (volumes, priorities, pipeline gauges): no KPI, no colours.
        assert len(steps) == 1 and not overrides, f"{name}: thresholds without a KPI"
        return
    kpi = catalogue().kpi(kpis.pop())
    higher = kpi.direction == "higher_is_better"
    check_steps(steps, higher, kpi.thresholds, f"{name} defaults")
    by_ref = {o["matcher"]["options"]: o for o in overrides}
    for target in panel["targets"]:
        if not kpi.channels:
            assert target["refId"] not in by_ref
            continue
        # One query per group of channels with equal thresholds, and its own override.
        channels = channels_of(target["expr"], kpi)
        (t,) = {t for c, t in kpi.channels.items() if c in channels} or {kpi.thresholds}
        override = by_ref[target["refId"]]
        assert override["matcher"]["id"] == "byFrameRefID"
        (prop,) = override["properties"]
        assert prop["id"] == "thresholds"
        check_steps(prop["value"]["steps"], higher, t, f"{name} {target['refId']} {channels}")


def test_threshold_checks_cover_every_kind_of_panel() -> None:
    """The parametrized check above meets KPI, per-channel and pipeline panels."""
    kinds = {"kpi": 0, "per_channel": 0, "pipeline": 0}
    for _, panel in PANELS:
        if pipeline_check(panel):
            kinds["pipeline"] += 1
        elif len(kpis := panel_kpis(panel)) == 1:
            kinds["kpi"] += 1
            kinds["per_channel"] += bool(catalogue().kpi(next(iter(kpis))).channels)
    assert kinds["kpi"] >= 30 and kinds["per_channel"] >= 8 and kinds["pipeline"] >= 3, kinds
    # Every KPI of the catalogue appears on some dashboard.
    shown = {k for _, p in PANELS for k in panel_kpis(p)}
    assert shown == {k.id for k in catalogue().kpis}


# --------------------------------------------------------------------------- queries


@pytest.mark.parametrize(("name", "panel"), PANELS, ids=PANEL_IDS)
def test_panel_queries_read_existing_series(name: str, panel: dict[str, Any]) -> None:
    records = {s.record: s.level for s in catalogue().recorded_series()}
    known = exported_metrics() | recording_rules() | PROMETHEUS_METRICS
    for target in panel["targets"]:
        used = metric_names(target["expr"])
        assert used, f"{name}: {target['expr']} reads no series"
        for metric, labels in used:
            assert metric in known, f"{name}: {metric} is neither exported nor recorded"
            if metric in records:  # a recording rule has only its level's labels
                allowed = set(LEVEL_LABELS[records[metric]])
                assert labels <= allowed, f"{name}: {metric} has no label {labels - allowed}"
        # KPI ratios come from the recording rules: never divide raw window sums here.
        if "support_rolling_" in target["expr"]:
            assert "/" not in target["expr"], f"{name}: a ratio of raw sums"
        vars_used = set(re.findall(r"\$\{?(\w+)", target["expr"]))
        assert vars_used <= {"queue", "__rate_interval", "__range"}, vars_used


def test_every_recording_rule_a_dashboard_reads_is_generated() -> None:
    used = {m for _, p in PANELS for t in p["targets"] for m, _ in metric_names(t["expr"])}
    assert used & recording_rules(), "the dashboards read no recording rule"
    assert not {m for m in used if ":" in m} - recording_rules()
