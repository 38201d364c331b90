"""End to end: simulator -> Kafka -> kpimon worker -> Prometheus -> Alertmanager -> webhook.

Everything is real and local: the session's Kafka broker, a `kpimon worker`, `kpimon
simulate`, Prometheus scraping the worker every second with the generated recording and
alert rules, and Alertmanager with the generated routing, posting to a small HTTP server
of this test that notes when each alert arrives.

Time runs SPEED times faster than the clock: the simulator's event time advances SPEED x
the wall-clock (`--speed`), starting far enough in the past (`--behind`) never to look
like the future, and the rules are generated with `time_scale = 1/SPEED`, so `for:`,
PromQL ranges, evaluation interval and Alertmanager timers shrink by the same factor
(rolling windows are event time in the worker, untouched). 20 minutes of history go in
at once (`--backfill`: the 15-minute windows the alerts read are full), then live
traffic; Prometheus starts once the worker has caught up with it, and the run stops as
soon as the service level has dropped, about 10 minutes of event time into the live
part (about 2.5 minutes of wall-clock time for the whole test).

SPEED is 4, not more, because every wall-clock delay inside the pipeline is multiplied
by it in event time: the oldest-waiting gauge of a queue is its partition's watermark
minus the oldest waiting ticket as last handed to the worker's second stage, so a second
of hand-over latency reads as SPEED seconds of extra wait, against a 15-second warning
threshold on the phone.

One simulator run holds both scenarios, on separate queues of the same centre:

- surge: 3 minutes into the live part, `billing` starts receiving twice its arrivals.
  A *leading* alert for billing, caused by the surge (it fires after the surge began),
  must reach the webhook while billing's 15-minute service level
  (`queue:support_sla_compliance:ratio15m`, read from Prometheus) still meets the
  catalogue's target, and the service level must then really fall below it in the run;
- calm: `tech`, `sales` and `returns` run their normal traffic all along: no KPI alert
  (leading or lagging) for them reaches the webhook, nor fires in Prometheus (which also
  sees alerts that Alertmanager might inhibit). Prometheus watches for about two minutes
  (8 to 9 minutes of event time), so this covers the alerts whose `for:` fits in that
  time (oldest waiting, SLA at-risk, FRT p90); the others (10 and 30 minutes) cannot
  complete their `for:` here, and `deploy/prometheus/tests/calm.test.yml` covers a
  healthy centre with them over hours.

In the same run, every query of every panel of the committed Grafana dashboards is sent
to that Prometheus (template variables filled in) and must return data.

The traffic is the simulator's seeded model (fixed seed, rate and time of day), so it is
the same each run. Calibrated against the reference batch computation, the oldest phone
call of billing waits over 15 s from about 2 minutes after the surge began, without a
dip below, and the service level falls below 80% about 6.6 minutes after. Measured end to
end, the warning arrives about 3.5 minutes after the surge began (the `for:` minute,
rule evaluation and Alertmanager's grouping add their share): about 3 minutes of event
time, 45 s of wall-clock time, ahead of the drop.
"""

from __future__ import annotations

import contextlib
import json
import math
import re
import signal
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest
import yaml

from kpimon.catalogue import Catalogue, format_duration, load_catalogue, parse_duration
from kpimon.generate import ALERTMANAGER, ALERTS, CATALOGUE, RECORDING, generate
from tests.deploy.tools import tool
from tests.integration.kafka_env import KPIMON, REPO, LocalKafka, Topics, Worker, free_port

pytestmark = pytest.mark.integration

SPEED = 4  # event seconds per wall second; the rules are scaled by 1/SPEED
SEED = 24
RATE = 120  # tickets per minute at the daily peak, all queues
SURGE_QUEUE = "billing"
CALM_QUEUES = ("tech", "sales", "returns")
BACKFILL = 20 * 60  # event seconds sent at once: fills the 15-minute windows
CALM_LEAD = 3 * 60  # event seconds of live traffic before the surge
LIVE = 16 * 60  # event seconds of live traffic at most (4 minutes of wall time)
SURGE_FACTOR = 2
DAY_START = 9.5 * 3600  # event time of day (UTC) the backfill starts: the morning peak
DASHBOARDS = REPO / "grafana" / "dashboards"


def http_json(url: str, timeout: float = 5) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return json.loads(response.read())


def reachable(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


# --------------------------------------------------------------------------- processes


@dataclass
class Process:
    """A subprocess with its output in a log file; `stop` ends it, `kill -9` if need be."""

    name: str
    args: list[str]
    log_path: Path
    env: dict[str, str] | None = None
    proc: subprocess.Popen[bytes] = field(init=False)

    def __post_init__(self) -> None:
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(self.args, stdout=self._log, stderr=subprocess.STDOUT,
                                     env=self.env)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def tail(self, lines: int = 30) -> str:
        self._log.flush()
        text = self.log_path.read_text(errors="replace").splitlines()[-lines:]
        return f"--- {self.name} ({self.log_path}) ---\n" + "\n".join(text)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


def wait_for(check: Callable[[], bool], what: str, timeout: float,
             *watched: Process | Worker) -> None:
    """Poll `check` until it holds; fail early when a watched process has died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for p in watched:
            if p.proc.poll() is not None:
                pytest.fail(f"exited (code {p.proc.returncode}) while waiting for {what}:\n"
                            f"{p.tail()}")
        if check():
            return
        time.sleep(0.25)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")


# --------------------------------------------------------------------------- the receiver


@dataclass(frozen=True)
class Received:
    """One alert of an Alertmanager notification, with its arrival time."""

    at: float
    status: str
    labels: dict[str, str]

    @property
    def name(self) -> str:
        return self.labels.get("alertname", "")


class _Hook(BaseHTTPRequestHandler):
    received: ClassVar[list[Received]]

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        now = time.time()
        for alert in body.get("alerts", []):
            self.received.append(Received(now, alert["status"], dict(alert["labels"])))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        """Quiet."""


@contextlib.contextmanager
def webhook() -> Iterator[tuple[str, list[Received]]]:
    received: list[Received] = []
    handler = type("Hook", (_Hook,), {"received": received})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/alerts", received
    finally:
        server.shutdown()
        server.server_close()


# --------------------------------------------------------------------------- Prometheus


@dataclass
class Prometheus:
    """HTTP API of the test's Prometheus."""

    url: str

    def query(self, expr: str, at: float | None = None) -> list[dict[str, Any]]:
        params = {"query": expr, **({"time": f"{at:.3f}"} if at is not None else {})}
        data = http_json(f"{self.url}/api/v1/query?{urllib.parse.urlencode(params)}")
        assert data["status"] == "success", (expr, data)
        result: list[dict[str, Any]] = data["data"]["result"]
        return result

    def value(self, expr: str, at: float | None = None) -> float | None:
        result = self.query(expr, at)
        return float(result[0]["value"][1]) if result else None

    def samples(self, expr: str, seconds: float) -> list[tuple[float, float]]:
        """The raw samples of a single series over the last `seconds` (range selector)."""
        result = self.query(f"{expr}[{math.ceil(seconds)}s]")
        assert len(result) <= 1, result
        return [(float(t), float(v)) for t, v in result[0]["values"]] if result else []


def prometheus_config(worker_port: int, am_port: int, catalogue: Catalogue,
                      rule_files: list[Path]) -> dict[str, Any]:
    interval = format_duration(parse_duration(catalogue.evaluation_interval) / SPEED)
    return {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s",
                   "evaluation_interval": interval},
        "rule_files": [str(p) for p in rule_files],
        "alerting": {"alertmanagers": [
            {"static_configs": [{"targets": [f"127.0.0.1:{am_port}"]}]}]},
        "scrape_configs": [{"job_name": catalogue.pipeline.job,
                            "static_configs": [{"targets": [f"127.0.0.1:{worker_port}"]}]}],
    }


# --------------------------------------------------------------------------- dashboards


def panel_queries() -> list[tuple[str, str]]:
    """(where, expr) of every query of every panel of the committed dashboards."""
    found = []
    for path in sorted(DASHBOARDS.glob("*.json")):
        for panel in json.loads(path.read_text(encoding="utf-8"))["panels"]:
            for target in panel.get("targets", []):
                found.append((f"{path.stem}: {panel['title']} {target['refId']}",
                              target["expr"]))
    return found


def substitute(expr: str, queue: str, range_seconds: float) -> str:
    """Grafana's variables as a dashboard viewer would get them for this short run."""
    values = {"queue": queue, "__rate_interval": "15s", "__interval": "5s",
              "__range": f"{max(60, math.floor(range_seconds))}s"}
    out = re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: values[m.group(1) or m.group(2)], expr)
    assert "$" not in out, out
    return out


# --------------------------------------------------------------------------- the test


def event_start(now: float) -> float:
    """Event time the backfill starts: DAY_START of the latest day that keeps the whole
    run at least 10 minutes in the past (fixed time of day: the same traffic every run)."""
    start = math.floor(now / 86400) * 86400 + DAY_START
    while start + BACKFILL + LIVE > now - 600:
        start -= 86400
    return start


def test_a_surge_raises_a_leading_alert_before_the_service_level_drops(
    kafka: LocalKafka, tmp_path: Path
) -> None:
    began = time.monotonic()
    catalogue = load_catalogue(REPO / CATALOGUE)
    target = catalogue.kpi("sla_compliance").target
    sla_record = catalogue.kpi("sla_compliance").record("queue", "15m")
    prometheus_bin = tool("prometheus")
    alertmanager_bin = tool("alertmanager", "prometheus-alertmanager")
    topics = Topics.named("alerting")
    kafka.create_topics(topics, partitions=4)

    with contextlib.ExitStack() as stack:
        hook_url, received = stack.enter_context(webhook())
        files = generate(catalogue, time_scale=1 / SPEED, webhook_url=hook_url)
        for rel in (RECORDING, ALERTS, ALERTMANAGER):
            (tmp_path / rel.name).write_text(files[rel])

        worker = Worker(kafka, topics, "kpimon-alerting", tmp_path / "worker")
        stack.callback(worker.stop)
        worker.wait_ready()

        am_port = free_port()
        alertmanager = Process("alertmanager", [
            alertmanager_bin, f"--config.file={tmp_path / ALERTMANAGER.name}",
            f"--storage.path={tmp_path / 'alertmanager'}",
            f"--web.listen-address=127.0.0.1:{am_port}", "--cluster.listen-address=",
        ], tmp_path / "alertmanager.log")
        stack.callback(alertmanager.stop)
        wait_for(lambda: reachable(f"http://127.0.0.1:{am_port}/-/ready"),
                 "Alertmanager to start", 30, alertmanager)

        # The simulator: BACKFILL of history at once, then live traffic at SPEED x.
        now = time.time()
        start = event_start(now)
        behind = now - start - BACKFILL
        live_start = start + BACKFILL
        sim = Process("simulate", [
            str(KPIMON), "simulate", "--realtime", f"--speed={SPEED}",
            f"--behind={behind:.3f}", f"--backfill={BACKFILL}", f"--duration={LIVE}",
            f"--rate={RATE}", f"--seed={SEED}",
            f"--queues={','.join((SURGE_QUEUE, *CALM_QUEUES))}",
            f"--surge={SURGE_QUEUE}:{BACKFILL + CALM_LEAD}:{LIVE}:{SURGE_FACTOR}",
            "--disorder=0", f"--bootstrap={kafka.bootstrap}",
            f"--tickets-topic={topics.tickets}", f"--surveys-topic={topics.surveys}",
        ], tmp_path / "simulate.log")
        stack.callback(sim.stop)
        sim_started = time.time()

        def caught_up() -> bool:
            """The backfill is in, the worker reads the live traffic as it comes, and its
            second stage has caught up with its first: before the surge no phone or chat
            contact of any queue waits half a minute, unless the hand-over lags."""
            metrics = worker.metrics()
            marks = [v for (name, _), v in metrics.items()
                     if name == "support_watermark_timestamp_seconds"]
            lag = sum(v for (name, _), v in metrics.items()
                      if name == "support_consumer_lag_messages")
            waits = [v for (name, labels), v in metrics.items()
                     if name == "support_oldest_waiting_seconds"
                     and dict(labels)["channel"] in ("phone", "chat")]
            return (len(marks) == 4 and min(marks) >= live_start and lag < 50
                    and bool(waits) and max(waits) < 30)

        # Prometheus starts once the worker has caught up: the backlog of an empty centre
        # filling up during the backfill is not a trend of the live centre, and while the
        # worker races through a backlog its watermarks run ahead of its second stage
        # (oldest waits spike for a moment).
        def settled() -> bool:
            if not caught_up():
                return False
            time.sleep(1)
            return caught_up()

        wait_for(settled, "the worker to catch up with the simulator", 150, sim, worker)
        ready = time.time()
        prom_port = free_port()
        config = tmp_path / "prometheus.yml"
        config.write_text(yaml.safe_dump(prometheus_config(
            worker.port, am_port, catalogue,
            [tmp_path / RECORDING.name, tmp_path / ALERTS.name])))
        prometheus = Process("prometheus", [
            prometheus_bin, f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'prometheus'}",
            f"--web.listen-address=127.0.0.1:{prom_port}",
        ], tmp_path / "prometheus.log")
        stack.callback(prometheus.stop)
        prom = Prometheus(f"http://127.0.0.1:{prom_port}")
        prom_started = time.time()
        wait_for(lambda: reachable(f"{prom.url}/-/ready"), "Prometheus to start", 60,
                 prometheus)
        wait_for(lambda: prom.value(f'up{{job="{catalogue.pipeline.job}"}}') == 1.0,
                 "Prometheus to scrape the worker", 30, prometheus)
        print(f"\nworker caught up in {ready - sim_started:.1f} s; Prometheus up "
              f"{time.time() - prom_started:.1f} s later")

        def leading(alert: Received) -> bool:
            return (alert.status == "firing" and alert.labels.get("category") == "leading"
                    and alert.labels.get("queue") == SURGE_QUEUE)

        # Run until the service level has dropped (or the live part is over).
        deadline = sim_started + LIVE / SPEED + 30
        crossed = False
        while time.time() < deadline and not crossed:
            for p in (prometheus, alertmanager):
                assert p.alive(), p.tail()
            assert sim.alive() or sim.proc.returncode == 0, sim.tail()
            value = prom.value(f'{sla_record}{{queue="{SURGE_QUEUE}"}}')
            crossed = value is not None and value < target
            time.sleep(1)
        problems: list[str] = []
        run = math.ceil(time.time() - prom_started + 5)  # seconds of Prometheus data
        surge_began = start + BACKFILL + CALM_LEAD

        def event_minute(at: float) -> str:
            """Event time at wall-clock `at`, as minutes after the surge began."""
            mark = prom.value("max(support_watermark_timestamp_seconds)", at)
            return "?" if mark is None else f"surge{(mark - surge_began) / 60:+.1f} min"

        # The timeline, printed first so that a failure shows what happened.
        samples = prom.samples(f'{sla_record}{{queue="{SURGE_QUEUE}"}}', run)
        print(f"{SURGE_QUEUE} service level (15m): " + ", ".join(
            f"{event_minute(t)} {v:.3f}" for t, v in samples[::max(1, len(samples) // 12)]))
        for alert in sorted(received, key=lambda a: a.at):
            print(f"webhook: {alert.status} {alert.name} {alert.labels.get('severity')} "
                  f"{alert.labels.get('queue', '')} {alert.labels.get('channel', '')} at "
                  f"{event_minute(alert.at)}")
        worst = prom.query('max by (queue, channel) (max_over_time(queue_channel:'
                           'support_oldest_waiting_seconds:max{channel=~"phone|chat"}'
                           f'[{run}s]))')
        print("longest waits (s): " + ", ".join(
            f"{r['metric']['queue']}/{r['metric']['channel']} {float(r['value'][1]):.0f}"
            for r in worst))
        pending = prom.query('max_over_time(ALERTS{alertstate="pending", category=~"leading|'
                             f'lagging", queue!="{SURGE_QUEUE}"}}[{run}s])')
        print("calm queues' alerts ever pending (not firing): " + ", ".join(sorted(
            {f"{r['metric']['alertname']}/{r['metric'].get('queue', '')}" for r in pending})))
        pipeline = prom.query(f'max_over_time(ALERTS{{category="pipeline", '
                              f'alertstate="firing"}}[{run}s])')
        print(f"pipeline alerts fired: {[r['metric']['alertname'] for r in pipeline]}")

        # Surge: a leading alert, caused by the surge, before the service level dropped.
        if not crossed:
            problems.append(f"{SURGE_QUEUE}'s 15-minute service level never fell below "
                            f"{target:.0%} during the surge")
        if not samples or samples[0][1] < target:
            problems.append(f"{SURGE_QUEUE}'s service level was not at target when "
                            f"Prometheus started: {samples[:3]}")
        alerts = sorted((a for a in received if leading(a)), key=lambda a: a.at)
        if not alerts:
            problems.append(f"no leading alert for {SURGE_QUEUE} reached the webhook")
        if alerts and crossed and samples:
            first = alerts[0]
            t_cross, sl_cross = next((t, v) for t, v in samples if v < target)
            sl_at_alert = prom.value(f'{sla_record}{{queue="{SURGE_QUEUE}"}}', first.at)
            event_alert = prom.value("max(support_watermark_timestamp_seconds)", first.at)
            event_cross = prom.value("max(support_watermark_timestamp_seconds)", t_cross)
            assert event_alert is not None and event_cross is not None
            print(f"first leading alert: {first.name} ({first.labels.get('severity')}, "
                  f"{first.labels.get('channel', 'all channels')}) at {event_minute(first.at)}, "
                  f"service level then {sl_at_alert}; service level below {target:.0%} "
                  f"({sl_cross:.3f}) at {event_minute(t_cross)}")
            print(f"LEAD TIME: {t_cross - first.at:.1f} s wall-clock, "
                  f"{(event_cross - event_alert) / 60:.1f} min event time")
            if event_alert < surge_began:
                problems.append(f"{first.name} fired for {SURGE_QUEUE} before the surge began")
            if not first.at < t_cross:
                problems.append(f"the leading alert arrived {first.at - t_cross:.1f} s after "
                                "the service level dropped")
            if sl_at_alert is None or sl_at_alert < target:
                problems.append(f"service level {sl_at_alert} when the leading alert arrived")

        # Calm queues: no KPI alert, neither delivered nor firing in Prometheus (which
        # also counts alerts that Alertmanager might have inhibited).
        kpi_alerts = [a for a in received if a.labels.get("category") in ("leading", "lagging")]
        calm = sorted({(a.name, a.labels.get("queue", ""), a.labels.get("channel", ""))
                       for a in kpi_alerts if a.labels.get("queue") != SURGE_QUEUE})
        if calm:
            problems.append(f"KPI alerts of the calm queues reached the webhook: {calm}")
        firing = prom.query('max_over_time(ALERTS{alertstate="firing", '
                            f'category=~"leading|lagging", queue!="{SURGE_QUEUE}"}}[{run}s])')
        if firing:
            problems.append("KPI alerts of the calm queues fired in Prometheus: "
                            f"{[r['metric'] for r in firing]}")

        # Every dashboard query returns data from this Prometheus.
        queries = panel_queries()
        for where, expr in queries:
            promql = substitute(expr, CALM_QUEUES[0], time.time() - prom_started)
            if not prom.query(promql):
                problems.append(f"dashboard query without data: {where}: {promql}")
        print(f"{len(queries)} dashboard queries sent; test took "
              f"{time.monotonic() - began:.0f} s")
        assert len(queries) >= 50
        assert not problems, "\n".join(problems)
