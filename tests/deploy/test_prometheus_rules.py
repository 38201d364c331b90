"""The generated Prometheus rules: promtool checks them and runs their unit tests.

The unit tests live in deploy/prometheus/tests/*.test.yml (runnable by hand with
`promtool test rules FILE`); a meta-test makes sure every alert has a case that fires
and a case that stays silent.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from kpimon.catalogue import load_catalogue
from kpimon.generate import ALERTS, CATALOGUE, RECORDING, generate
from tests.deploy.tools import PROMTOOL_TESTS, REPO, RULES, run, tool

TEST_FILES = sorted(PROMTOOL_TESTS.glob("*.test.yml"))


def _alert_names() -> set[str]:
    data = yaml.safe_load((RULES / "kpimon-alerts.yml").read_text())
    return {rule["alert"] for group in data["groups"] for rule in group["rules"]}


def _alert_cases() -> list[dict[str, Any]]:
    return [case for path in TEST_FILES
            for test in yaml.safe_load(path.read_text())["tests"]
            for case in test.get("alert_rule_test", [])]


def test_promtool_checks_both_rule_files() -> None:
    result = run(tool("promtool"), "check", "rules",
                 RULES / "kpimon-recording.yml", RULES / "kpimon-alerts.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("SUCCESS") == 2


def test_promtool_accepts_time_scaled_rules(tmp_path: Path) -> None:
    # What an end-to-end test generates: `for:` and ranges in seconds or milliseconds.
    outputs = generate(load_catalogue(REPO / CATALOGUE), time_scale=0.01)
    paths = []
    for rel in (RECORDING, ALERTS):
        path = tmp_path / rel.name
        path.write_text(outputs[rel])
        paths.append(path)
    result = run(tool("promtool"), "check", "rules", *paths)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("path", TEST_FILES, ids=lambda p: p.name)
def test_promtool_unit_tests(path: Path) -> None:
    result = run(tool("promtool"), "test", "rules", path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_has_a_firing_and_a_silent_case() -> None:
    assert {p.name for p in TEST_FILES} >= {"recording.test.yml", "calm.test.yml"}
    cases = _alert_cases()
    fires = {c["alertname"] for c in cases if c.get("exp_alerts")}
    silent = {c["alertname"] for c in cases if not c.get("exp_alerts")}
    names = _alert_names()
    assert names - fires == set(), "alerts without a promtool case where they fire"
    assert names - silent == set(), "alerts without a promtool case where they stay silent"
    assert fires | silent <= names, "promtool cases of alerts that do not exist"


def test_the_calm_case_lists_every_alert() -> None:
    calm = yaml.safe_load((PROMTOOL_TESTS / "calm.test.yml").read_text())
    cases = [c for t in calm["tests"] for c in t["alert_rule_test"]]
    assert all(c["exp_alerts"] == [] for c in cases)
    assert {c["alertname"] for c in cases} == _alert_names()
