"""deploy/alertmanager/alertmanager.yml: valid, routes as documented, inhibits as intended.

Routing is checked with `amtool config routes test`; inhibition both statically (the
rules name real alerts and categories) and live, against a real Alertmanager on a free
loopback port with the same generated configuration (durations shortened).
"""

from __future__ import annotations

import json
import socket
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from kpimon.catalogue import load_catalogue
from kpimon.generate import ALERTMANAGER, CATALOGUE, generate
from tests.deploy.tools import ALERTMANAGER_CONFIG, REPO, RULES, run, tool

# (labels of an alert, the receiver it must reach)
ROUTES = [
    ({"alertname": "KpimonNoEvents", "category": "pipeline", "severity": "critical"},
     "platform-page"),
    ({"alertname": "KpimonConsumerLagGrowing", "category": "pipeline", "severity": "warning",
      "topic": "support.tickets"}, "platform-ticket"),
    ({"alertname": "KpimonSlaAtRisk", "category": "leading", "severity": "critical",
      "queue": "billing"}, "billing-page"),
    ({"alertname": "KpimonSlaAtRisk", "category": "leading", "severity": "warning",
      "queue": "billing"}, "billing-ticket"),
    ({"alertname": "KpimonCsatLow", "category": "lagging", "severity": "warning",
      "queue": "returns"}, "billing-ticket"),
    ({"alertname": "KpimonOldestWaitingNearTarget", "category": "leading",
      "severity": "critical", "queue": "tech", "channel": "phone"}, "tech-page"),
    ({"alertname": "KpimonFcrLow", "category": "lagging", "severity": "warning",
      "queue": "tech"}, "tech-ticket"),
    # Queues of no team go to the contact-centre operations team.
    ({"alertname": "KpimonServiceLevelLow", "category": "lagging", "severity": "critical",
      "queue": "sales"}, "cc-ops-page"),
    ({"alertname": "KpimonServiceLevelLow", "category": "lagging", "severity": "warning",
      "queue": "sales"}, "cc-ops-ticket"),
    # Matchers are anchored: "technical" is not "tech".
    ({"alertname": "KpimonBacklogGrowing", "category": "leading", "severity": "critical",
      "queue": "technical"}, "cc-ops-page"),
]


def test_amtool_accepts_the_configuration() -> None:
    result = run(tool("amtool"), "check-config", ALERTMANAGER_CONFIG)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


@pytest.mark.parametrize(("labels", "receiver"), ROUTES,
                         ids=[f"{r}-{i}" for i, (_, r) in enumerate(ROUTES)])
def test_route(labels: dict[str, str], receiver: str) -> None:
    result = run(tool("amtool"), "config", "routes", "test",
                 f"--config.file={ALERTMANAGER_CONFIG}", f"--verify.receivers={receiver}",
                 *(f"{k}={v}" for k, v in labels.items()))
    assert result.returncode == 0, f"{labels}: {result.stdout}{result.stderr}"
    assert result.stdout.strip() == receiver


def test_inhibit_rules_name_real_alerts_and_categories() -> None:
    config = yaml.safe_load(ALERTMANAGER_CONFIG.read_text())
    alerts = yaml.safe_load((RULES / "kpimon-alerts.yml").read_text())
    rules = [r for g in alerts["groups"] for r in g["rules"]]
    names = {r["alert"] for r in rules}
    categories = {r["labels"]["category"] for r in rules}
    stall, severity = config["inhibit_rules"]

    (source,) = stall["source_matchers"]
    assert source.startswith('alertname=~"')
    stall_names = set(source.removeprefix('alertname=~"').removesuffix('"').split("|"))
    assert stall_names == {"KpimonNoEvents", "KpimonWatermarkStalled", "KpimonWorkerDown",
                           "KpimonWorkersAbsent"}
    assert stall_names <= names
    # The stalled-pipeline alerts are pipeline alerts; they mute every KPI alert.
    assert {r["labels"]["category"] for r in rules if r["alert"] in stall_names} == {"pipeline"}
    (target,) = stall["target_matchers"]
    assert target == 'category=~"leading|lagging"'
    assert {"leading", "lagging"} <= categories

    assert severity["source_matchers"] == ['severity="critical"']
    assert severity["target_matchers"] == ['severity="warning"']
    # Every alert with both severities can be inhibited by its own critical.
    assert {"alertname", "queue", "channel", "topic"} <= set(severity["equal"])


# ------------------------------------------------------------------ a live Alertmanager


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _Webhook(BaseHTTPRequestHandler):
    received: list[dict[str, Any]]

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.received.append(json.loads(body))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def webhook() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    received: list[dict[str, Any]] = []
    handler = type("Handler", (_Webhook,), {"received": received})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/alerts", received
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def alertmanager(tmp_path: Path, webhook: tuple[str, list[dict[str, Any]]]) -> Iterator[str]:
    binary = tool("alertmanager", "prometheus-alertmanager")
    outputs = generate(load_catalogue(REPO / CATALOGUE), time_scale=0.01,
                       webhook_url=webhook[0])
    config = tmp_path / "alertmanager.yml"
    config.write_text(outputs[ALERTMANAGER])
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    log = (tmp_path / "alertmanager.log").open("w")
    proc = subprocess.Popen(
        [binary, f"--config.file={config}", f"--storage.path={tmp_path / 'data'}",
         f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address="],
        stdout=log, stderr=subprocess.STDOUT)
    try:
        _wait(lambda: _get(f"{url}/-/ready") is not None, "Alertmanager to start", proc)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def _get(url: str) -> Any:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            body = response.read()
    except OSError:
        return None
    return json.loads(body) if body.strip().startswith((b"[", b"{")) else body


def _post_alerts(url: str, *alerts: dict[str, str]) -> None:
    body = json.dumps([{"labels": a, "annotations": {"summary": "test"}} for a in alerts])
    request = urllib.request.Request(f"{url}/api/v2/alerts", data=body.encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=5) as response:
        assert response.status == 200


def _wait(check: Any, what: str, proc: subprocess.Popen[bytes] | None = None,
          timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"Alertmanager exited with {proc.returncode} while waiting for {what}")
        if check():
            return
        time.sleep(0.1)
    pytest.fail(f"timed out waiting for {what}")


def _states(url: str) -> dict[tuple[str, str, str], tuple[str, set[str]]]:
    """(alertname, severity, queue) -> (state, alertnames of the inhibiting alerts)."""
    alerts = _get(f"{url}/api/v2/alerts") or []
    by_fingerprint = {a["fingerprint"]: a["labels"]["alertname"] for a in alerts}
    return {
        (a["labels"]["alertname"], a["labels"]["severity"], a["labels"].get("queue", "")):
        (a["status"]["state"], {by_fingerprint.get(f, f) for f in a["status"]["inhibitedBy"]})
        for a in alerts
    }


def test_live_inhibition(alertmanager: str, webhook: tuple[str, list[dict[str, Any]]]) -> None:
    url, (_, received) = alertmanager, webhook
    backlog = {"alertname": "KpimonBacklogGrowing", "category": "leading", "kpi": "backlog_growth"}
    _post_alerts(url,
                 {**backlog, "severity": "warning", "queue": "sales"},
                 {**backlog, "severity": "critical", "queue": "sales"},
                 {**backlog, "severity": "warning", "queue": "tech"})
    # The critical alert of a queue mutes its own warning, not another queue's.
    expected = {
        ("KpimonBacklogGrowing", "warning", "sales"): ("suppressed", {"KpimonBacklogGrowing"}),
        ("KpimonBacklogGrowing", "critical", "sales"): ("active", set()),
        ("KpimonBacklogGrowing", "warning", "tech"): ("active", set()),
    }
    _wait(lambda: _states(url) == expected, "critical to inhibit warning")

    # A stalled pipeline mutes every KPI alert, leading and lagging, but no pipeline alert.
    _post_alerts(url,
                 {"alertname": "KpimonServiceLevelLow", "category": "lagging",
                  "severity": "critical", "queue": "billing"},
                 {"alertname": "KpimonConsumerLagGrowing", "category": "pipeline",
                  "severity": "warning", "topic": "support.tickets"},
                 {"alertname": "KpimonWatermarkStalled", "category": "pipeline",
                  "severity": "critical", "partition": "3"})

    def stalled() -> bool:
        states = _states(url)
        kpi = [v for k, v in states.items() if k[0] not in (
            "KpimonWatermarkStalled", "KpimonConsumerLagGrowing")]
        return (len(states) == 6
                and all(s == "suppressed" and "KpimonWatermarkStalled" in by for s, by in kpi)
                and states[("KpimonWatermarkStalled", "critical", "")] == ("active", set())
                and states[("KpimonConsumerLagGrowing", "warning", "")] == ("active", set()))

    _wait(stalled, "the stalled pipeline to inhibit the KPI alerts")

    # The pipeline alert reaches the platform team's pager through the webhook receiver.
    def delivered() -> bool:
        return any(n["receiver"] == "platform-page"
                   and n["commonLabels"].get("alertname") == "KpimonWatermarkStalled"
                   for n in received)

    _wait(delivered, "the webhook notification of the stalled watermark")
    for notification in received:
        for alert in notification["alerts"]:
            assert (alert["labels"]["alertname"], alert["labels"]["severity"]) != (
                "KpimonServiceLevelLow", "critical"), "an inhibited alert was notified"
