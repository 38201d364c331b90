#!/usr/bin/env python
"""Soak kpimon on a real local Kafka: crashes, restarts and rebalances under load.

A longer, randomised version of tests/integration/test_crash_recovery.py and
test_rebalance.py. It starts its own broker (tests/integration/kafka_env.local_kafka,
data under .local/soak/<run>/), creates topics with a unique prefix and generates a
realistic noisy stream with kpimon.sim (duplicates 1 %, bad 0.2 %, unknown types 0.2 %,
orphans 0.3 %, default disorder). The stream is produced in chunks, one every ~30 s over
about --minutes, and after each chunk a seeded chaos loop does one action at a random
point while the workers are working through it (once they have counted a random 10-90 %
of the chunk, so every worker gets to recover and make progress between actions; if
the workers fall behind, the run takes longer than --minutes):

  kill   kill -9 a random worker (no shutdown, no flush, no commit)
  start  start a new worker (up to --max-workers)
  stop   stop a random worker gracefully (SIGTERM)

If the last worker goes down, a new one is started right after. The first three actions
are the three kinds in random order, so even a short run exercises each. Every action
is logged to stderr with a timestamp; peak worker memory (VmHWM/VmRSS from
/proc/<pid>/status) is sampled while workers are alive.

At the end one worker is kept (the others stop gracefully), and the script waits until,
on two polls in a row, its consumer lag is 0, every exported KPI series equals the
batch computation (tests/reference/batch.compute) at the exported watermarks, its
outcome counts equal the batch's and no changed window waits for publication
(support_windows_unpublished). Then it stops that worker too (a graceful stop
publishes every changed window first) and checks:

  - the last KPI record per window on the KPI topic against the batch, for every
    window settled before (min watermark - 900 s); this is the only check of the
    fields with no Prometheus series, such as FCR;
  - every exported KPI metric against the batch (metric_problems);
  - outcome accounting: sum(support_events_total) == messages produced, and equal to
    the batch outcomes per (topic, outcome).

A summary goes to stdout; the exit code is 0 only if there are no mismatches, the
metrics are equal and the accounting balances (else 1, with the first 20 problems).
A failed run also explains the first windows that differ (tests/support/soak_report.py):
their records on the KPI topic, their last state in stage 2's windows changelog (right
state and wrong record: a publication fault; wrong state: a computation fault), which
worker held their stage-2 partition in each group generation around their last change
(from the workers' "assigned in generation" log lines), and the actions around it.
Workers and the broker are stopped on exit, also on Ctrl-C or an error. The run
directory (broker data, worker logs) is deleted after a passing run unless --keep.

Run from the repository root:

  .venv/bin/python scripts/soak.py --minutes 20 --rate 30 --hours 8 --seed 7
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import http.client
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

REPO = Path(__file__).resolve().parents[1]
# The test helpers (tests.*) are imported as a package from the repository root.
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import orjson  # noqa: E402
from aiokafka import AIOKafkaConsumer, TopicPartition  # noqa: E402
from aiokafka.admin import AIOKafkaAdminClient  # noqa: E402

from kpimon.sim import SimConfig, SimRecord, generate, produce  # noqa: E402
from models.timestamps import parse_rfc3339  # noqa: E402
from tests.integration.cluster import latest_windows  # noqa: E402
from tests.integration.kafka_env import (  # noqa: E402
    KAFKACTL,
    LocalKafka,
    Topics,
    Worker,
    events_total,
    local_kafka,
    read_records,
)
from tests.reference.batch import BatchConfig, BatchResult, compute, partition_of  # noqa: E402
from tests.support.compare import Samples, compare_windows, metric_problems  # noqa: E402
from tests.support.soak_report import (  # noqa: E402
    Assignment,
    Happening,
    Record,
    explain,
    parse_assignments,
    window_key,
)

CHUNK_SECONDS = 30.0  # one chunk of input (and one chaos action) about this often
KINDS = ("kill", "start", "stop")
WEIGHTS = (0.45, 0.25, 0.30)  # after the first three actions
ACTION_TIMEOUT = 300.0  # longest wait for the workers to reach an action's point
POLL_SECONDS = 0.5  # scrapes cost the workers CPU; the machine may be busy
SETTLE_MARGIN = 900  # KPI windows are compared up to min watermark - this (as the tests)
DIAGNOSED = 12  # bad windows explained in full on a failure

T0 = time.monotonic()


def log(message: str) -> None:
    """A progress line on stderr: wall-clock time and seconds since the start."""
    stamp = time.strftime("%H:%M:%S")
    print(f"[{stamp} +{time.monotonic() - T0:7.1f}s] {message}", file=sys.stderr, flush=True)


@dataclass
class Action:
    at: float  # seconds since the start of the script
    kind: str  # kill, stop, start, restart, exited (by itself)
    worker: str
    detail: str = ""
    wall: float = field(default_factory=time.time)

    def line(self) -> str:
        return f"+{self.at:7.1f}s {self.kind:<7} {self.worker:<4} {self.detail}".rstrip()


class MemoryPeak:
    """Peak memory of the worker processes, sampled from /proc/<pid>/status.

    VmHWM is the kernel's own resident high-water mark, so a sample shortly before a
    process ends catches its peak even if it happened between samples.
    """

    def __init__(self, interval: float = 0.5) -> None:
        self.hwm_kib = 0
        self.rss_kib = 0
        self.hwm_worker = ""
        self._workers: dict[str, Worker] = {}
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(interval,), daemon=True)
        self._thread.start()

    def watch(self, name: str, worker: Worker) -> None:
        with self._lock:
            self._workers[name] = worker

    def forget(self, name: str) -> None:
        """Sample one last time, then stop watching (call before the process ends)."""
        with self._lock:
            worker = self._workers.pop(name, None)
            if worker is not None:
                self._sample(name, worker)

    def close(self) -> None:
        self._done.set()
        self._thread.join(timeout=5)

    def _run(self, interval: float) -> None:
        while not self._done.wait(interval):
            with self._lock:
                for name, worker in self._workers.items():
                    self._sample(name, worker)

    def _sample(self, name: str, worker: Worker) -> None:
        # Only while not reaped: a reaped pid may already belong to another process.
        if worker.proc.returncode is not None:
            return
        try:
            text = Path(f"/proc/{worker.proc.pid}/status").read_text()
        except OSError:
            return
        for line in text.splitlines():
            key, _, rest = line.partition(":")
            if key in ("VmHWM", "VmRSS"):
                kib = int(rest.split()[0])
                if key == "VmHWM" and kib > self.hwm_kib:
                    self.hwm_kib, self.hwm_worker = kib, name
                elif key == "VmRSS":
                    self.rss_kib = max(self.rss_kib, kib)


@dataclass
class Counts:
    kills: int = 0
    stops: int = 0
    starts: int = 0  # every start after the initial workers, restarts included
    restarts: int = 0  # starts right after the last worker went down
    exited: int = 0  # workers that died without being told to
    membership: int = 0  # kills + stops + starts + exits: each one is a rebalance


@dataclass
class Outcome:
    """What the final check found."""

    settled: bool = False
    windows_compared: int = 0
    window_mismatches: list[str] = field(default_factory=list)
    metrics_checked: int = 0
    metric_problems: list[str] = field(default_factory=list)
    outcomes: dict[tuple[str, str], int] = field(default_factory=dict)
    batch_outcomes: dict[tuple[str, str], int] = field(default_factory=dict)
    settle_seconds: float = 0.0
    # For each window that differs: its records, state, owners and the actions around
    # its last change (tests/support/soak_report.py).
    diagnosis: list[str] = field(default_factory=list)
    group_lag: int | None = None  # from the group's committed offsets
    metric_lag: int = 0  # sum of the last worker's support_consumer_lag_messages

    @property
    def balanced(self) -> bool:
        return bool(self.outcomes) and self.outcomes == self.batch_outcomes

    def problems(self) -> list[str]:
        out = [f"window {m}" for m in self.window_mismatches]
        out += [f"metric {p}" for p in self.metric_problems]
        for key in sorted(set(self.outcomes) | set(self.batch_outcomes)):
            got, want = self.outcomes.get(key, 0), self.batch_outcomes.get(key, 0)
            if got != want:
                out.append(f"outcome {key}: exported {got}, batch {want}")
        if not self.settled:
            out.append("the last worker never reached lag 0 with metrics equal to the batch")
        return out


def scrape(worker: Worker) -> Samples | None:
    """The worker's metrics, or None while it is down or not answering."""
    if worker.proc.poll() is not None:
        return None
    try:
        return worker.metrics()
    except (OSError, http.client.HTTPException, ValueError):
        return None


def series(metrics: Samples, name: str) -> list[tuple[dict[str, str], float]]:
    return [(dict(labels), v) for (n, labels), v in metrics.items() if n == name]


def group_lag(bootstrap: str, group: str, topics: list[str], partitions: int) -> int:
    """Messages of `topics` past the consumer group's committed offsets.

    Taken from the broker, not from the workers: a worker's own lag metric stays at the
    whole partition when it resumes at the end of one and reads nothing after that.
    """
    return asyncio.run(_group_lag(bootstrap, group, topics, partitions))


async def _group_lag(bootstrap: str, group: str, topics: list[str], partitions: int) -> int:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await admin.start()
    try:
        await consumer.start()
        committed = await admin.list_consumer_group_offsets(group)
        tps = [TopicPartition(t, p) for t in topics for p in range(partitions)]
        ends = await consumer.end_offsets(tps)
        done = {tp: meta.offset for tp, meta in committed.items() if meta.offset >= 0}
        return sum(max(0, ends[tp] - done.get(tp, 0)) for tp in tps)
    finally:
        await admin.close()
        # aiokafka may let the CancelledError of its commit routine escape from stop().
        with contextlib.suppress(asyncio.CancelledError):
            await consumer.stop()


class Soak:
    """One run: broker, topics, stream, workers, chaos, final check."""

    def __init__(self, args: argparse.Namespace, kafka: LocalKafka, run_dir: Path,
                 prefix: str) -> None:
        self.args = args
        self.kafka = kafka
        self.run_dir = run_dir
        self.topics = Topics.named(prefix)
        self.app_id = f"kpimon-{prefix}"
        self.rng = random.Random(args.seed)
        self.memory = MemoryPeak()
        self.alive: list[tuple[str, Worker]] = []
        self.everyone: list[Worker] = []
        self.names: list[str] = []  # of `everyone`
        self.counts = Counts()
        self.actions: list[Action] = []
        self.records: list[SimRecord] = []
        self.now = time.time()
        self.start = 0.0
        self.produced = 0
        self.chaos_seconds = 0.0
        self._serial = 0

    # -- workers ---------------------------------------------------------------------

    def act(self, kind: str, name: str, detail: str = "") -> None:
        action = Action(time.monotonic() - T0, kind, name, detail)
        self.actions.append(action)
        log(f"ACTION {action.kind} {name} {detail}".rstrip())

    def start_worker(self, kind: str | None, why: str = "") -> tuple[str, Worker]:
        """Start a worker and wait until it serves metrics; `kind` None: initial one."""
        self._serial += 1
        name = f"w{self._serial}"
        extra = {"KPIMON_PARTITIONS": str(self.args.partitions)}
        worker = Worker(self.kafka, self.topics, self.app_id,
                        self.run_dir / "workers" / name, extra)
        self.everyone.append(worker)
        self.names.append(name)
        self.memory.watch(name, worker)
        if kind is not None:
            self.counts.starts += 1
            self.counts.membership += 1
            self.counts.restarts += kind == "restart"
            self.act(kind, name, f"pid {worker.proc.pid} port {worker.port} "
                     f"({len(self.alive) + 1} alive){why}")
        else:
            log(f"started {name}: pid {worker.proc.pid} port {worker.port}")
        self.alive.append((name, worker))
        worker.wait_ready(timeout=300)
        return name, worker

    def remove(self, kind: str, index: int, why: str = "", *, count: bool = True) -> None:
        """kill -9 or SIGTERM the worker at `index` of the alive list."""
        name, worker = self.alive.pop(index)
        self.memory.forget(name)
        began = time.monotonic()
        if kind == "kill":
            worker.kill()
        else:
            worker.stop()
        if count:
            self.counts.kills += kind == "kill"
            self.counts.stops += kind == "stop"
            self.counts.membership += 1
        took = ""
        if kind == "stop":
            # Worker.stop falls back to SIGKILL after 60 s; say so, it is then a crash.
            forced = ", did not exit, SIGKILLed" if worker.proc.returncode == -9 else ""
            took = f" in {time.monotonic() - began:.1f}s (rc {worker.proc.returncode}{forced})"
        self.act(kind, name, f"pid {worker.proc.pid}{took} ({len(self.alive)} alive){why}")

    def reap(self) -> None:
        """Notice workers that died by themselves; keep one alive."""
        for name, worker in list(self.alive):
            rc = worker.proc.poll()
            if rc is not None:
                self.alive.remove((name, worker))
                self.memory.forget(name)
                self.counts.exited += 1
                self.counts.membership += 1
                self.act("exited", name, f"rc {rc}, log {worker.log_path}")
        if not self.alive:
            self.start_worker("restart", ", none was alive")

    def shutdown(self, graceful: bool) -> None:
        """Stop every worker process still running (used on every exit path)."""
        for worker in self.everyone:
            if worker.proc.poll() is None:
                if graceful:
                    worker.stop()
                else:
                    worker.kill()
            with contextlib.suppress(Exception):
                worker.stop()  # closes the log file of one that already ended
        self.memory.close()

    def processed(self) -> tuple[int, str]:
        """Sum of support_events_total over the live workers, and their consumer lag.

        The counts travel through stage 2, so they trail the reading a little; the lag
        covers only assigned partitions, hence the partition count next to it.
        """
        done = lag = reported = 0
        for _, worker in self.alive:
            metrics = scrape(worker)
            if metrics is None:
                continue
            done += sum(events_total(metrics).values())
            lags = series(metrics, "support_consumer_lag_messages")
            lag += int(sum(v for _, v in lags))
            reported += len(lags)
        return done, f"lag {lag} on {reported}/{2 * self.args.partitions} partitions"

    # -- the run ---------------------------------------------------------------------

    def make_stream(self) -> None:
        a = self.args
        # 08:00 UTC yesterday (busy hours), moved back by whole days until the stream
        # ends an hour before now: no event may be in the future.
        self.start = (self.now // 86400) * 86400 - 86400 + 8 * 3600
        while self.start + a.hours * 3600 > self.now - 3600:
            self.start -= 86400
        config = SimConfig(
            seed=a.seed, start=self.start, duration=a.hours * 3600, rate=a.rate,
            duplicates=0.01, bad=0.002, unknown_types=0.002, orphans=0.003, now=self.now,
            tickets_topic=self.topics.tickets, surveys_topic=self.topics.surveys,
        )
        self.records = list(generate(config))
        log(f"generated {len(self.records)} messages: {a.hours:g} h of event time from "
            f"{time.strftime('%Y-%m-%d %H:%M', time.gmtime(self.start))} UTC at rate {a.rate:g}")

    def chaos(self) -> None:
        """Produce the stream in chunks; one random action per chunk while it is read."""
        a = self.args
        n = max(3, round(a.minutes * 60 / CHUNK_SECONDS))
        interval = a.minutes * 60 / n
        chunks = [self.records[i * len(self.records) // n:(i + 1) * len(self.records) // n]
                  for i in range(n)]
        for _ in range(min(2, a.max_workers)):
            self.start_worker(None)
        first = self.rng.sample(KINDS, len(KINDS))
        began = time.monotonic()
        log(f"chaos: {n} chunks of ~{len(self.records) // n} messages, one every "
            f"{interval:.0f}s; workers {[nm for nm, _ in self.alive]}")
        for i, chunk in enumerate(chunks):
            time.sleep(max(0.0, began + i * interval - time.monotonic()))
            self.reap()
            before = self.produced
            asyncio.run(produce(chunk, self.kafka.bootstrap, realtime=False, progress=False))
            self.produced += len(chunk)
            log(f"produced chunk {i + 1}/{n}: {len(chunk)} messages ({self.produced} in all)")
            kind = first[i] if i < len(first) else self.rng.choices(KINDS, WEIGHTS)[0]
            # Drawn now, whatever happens later, so a seed gives the same decisions.
            share = self.rng.uniform(0.1, 0.9)
            pick = self.rng.random()
            if kind == "start" and len(self.alive) >= a.max_workers:
                kind = self.rng.choice(("kill", "stop"))
            # A random point inside this chunk's processing: once the workers have counted
            # everything before it and that share of it. Waiting for the count (not a
            # fixed delay) gives each worker a chance to recover and make progress before
            # the next action; otherwise back-to-back kills starve the run.
            target = before + int(share * len(chunk))
            waited = time.monotonic()
            deadline, next_note = waited + ACTION_TIMEOUT, waited + 30
            done, lag = self.processed()
            while done < target and time.monotonic() < deadline:
                time.sleep(POLL_SECONDS)
                self.reap()
                done, lag = self.processed()
                if time.monotonic() >= next_note:
                    next_note += 30
                    log(f"waiting to act: {done}/{self.produced} messages counted, aiming "
                        f"at {target}; {lag}")
            late = "" if done >= target else f", NOT reached in {ACTION_TIMEOUT:.0f}s"
            busy = (f"chunk {i + 1}: {done}/{self.produced} counted (aimed {target}{late}) "
                    f"after {time.monotonic() - waited:.0f}s, {lag}")
            self.reap()
            if kind == "start":
                self.start_worker("start", f"; {busy}")
                continue
            index = int(pick * len(self.alive))
            self.remove(kind, index, f"; {busy}")
            if not self.alive:
                self.start_worker("restart", f" right after the {kind}")
        self.chaos_seconds = time.monotonic() - began

    def settle(self, timeout: float) -> Outcome:
        """Keep one worker, wait for lag 0 and metrics equal to the batch, then check."""
        result = Outcome()
        self.reap()
        while len(self.alive) > 1:
            self.remove("stop", len(self.alive) - 1, " (final: keep one)")
        name, worker = self.alive[0]
        log(f"settling on {name} (timeout {timeout:.0f}s)")
        batch_config = BatchConfig(tickets_topic=self.topics.tickets,
                                   surveys_topic=self.topics.surveys)
        inputs = [(r.topic, r.key, r.value) for r in self.records]
        inputs_topics = [self.topics.tickets, self.topics.surveys]
        parts = self.args.partitions
        began = time.monotonic()
        deadline = began + timeout
        next_report = began
        exact: BatchResult | None = None
        exact_marks: dict[int, float] = {}
        marks: dict[int, float] = {}
        metrics: Samples = {}
        why = "no scrape yet"
        calm = 0  # consecutive polls that found everything final
        while time.monotonic() < deadline:
            if worker.proc.poll() is not None:
                self.reap()
                name, worker = self.alive[0]
            scraped = scrape(worker)
            if scraped is not None:
                metrics = scraped
                marks = {int(lb["partition"]): v for lb, v in
                         series(metrics, "support_watermark_timestamp_seconds")}
                lags = [v for _, v in series(metrics, "support_consumer_lag_messages")]
                result.metric_lag = int(sum(lags))
                try:
                    result.group_lag = group_lag(self.kafka.bootstrap, self.app_id, inputs_topics,
                                                 parts)
                except Exception as e:  # the broker is busy; try again next round
                    result.group_lag, why = None, f"group lag unavailable: {e!r}"
                if len(marks) == parts and result.group_lag == 0:
                    if exact is None or marks != exact_marks:
                        exact = compute(inputs, now=self.now, config=batch_config,
                                        partitions=parts, watermarks=marks)
                        exact_marks = dict(marks)
                    end = int(max(marks.values()) // 60) * 60
                    checked, problems = metric_problems(metrics, exact, end_bucket=end)
                    counted = events_total(metrics)
                    unpublished = sum(v for _, v in series(metrics, "support_windows_unpublished"))
                    if problems or not checked:
                        calm, why = 0, f"{len(problems)} metric problems, first: {problems[:1]}"
                    elif counted != dict(+exact.outcomes):
                        # Held events time out on the slowest partition's progress,
                        # shared every few seconds: the last outcomes trail the KPIs.
                        calm = 0
                        why = (f"outcomes not final yet: {sum(counted.values())} counted of "
                               f"{len(self.records)}")
                    elif unpublished:
                        calm, why = 0, f"{unpublished:.0f} changed windows not published yet"
                    else:
                        # Twice in a row: a worker that just took partitions over is
                        # still merging what their new generations send.
                        calm += 1
                        why = "all equal once"
                        if calm >= 2:
                            result.settled = True
                            break
                elif result.group_lag is not None:
                    calm = 0
                    why = (f"watermarks {len(marks)}/{parts}, group lag {result.group_lag} "
                           f"(the worker's lag metric: {result.metric_lag} on {len(lags)}/"
                           f"{2 * parts} partitions)")
            if time.monotonic() >= next_report:
                log(f"settling on {name}: {why}")
                next_report = time.monotonic() + 15
            time.sleep(2)
        result.settle_seconds = time.monotonic() - began
        log(f"settled={result.settled} after {result.settle_seconds:.0f}s")
        time.sleep(3)  # the debounced emission of the last windows
        final = scrape(worker) or metrics
        result.metric_lag = int(sum(v for _, v in series(final, "support_consumer_lag_messages")))
        final_marks = {int(lb["partition"]): v for lb, v in
                       series(final, "support_watermark_timestamp_seconds")} or marks
        result.outcomes = events_total(final)
        if final_marks:
            if exact is None or final_marks != exact_marks:
                exact = compute(inputs, now=self.now, config=batch_config, partitions=parts,
                                watermarks=final_marks)
            end = int(max(final_marks.values()) // 60) * 60
            result.metrics_checked, result.metric_problems = metric_problems(
                final, exact, end_bucket=end)
        else:
            result.metric_problems = ["no watermark exported"]
        self.remove("stop", 0, " (final: checked, not counted)", count=False)

        streamed = latest_windows(self.kafka.bootstrap, self.topics.kpis)
        batch = compute(inputs, now=self.now, config=batch_config)
        result.batch_outcomes = dict(+batch.outcomes)
        until = min(final_marks.values()) - SETTLE_MARGIN if final_marks else 0.0
        comparison = compare_windows(streamed, batch.windows, until=until)
        result.windows_compared = comparison.compared
        result.window_mismatches = comparison.mismatches
        if not comparison.compared:
            result.window_mismatches = ["no window compared"]
        if comparison.bad:
            try:
                result.diagnosis = self.diagnose(comparison.bad, batch.windows)
            except Exception as exc:  # a diagnosis must never hide the verdict
                result.diagnosis = [f"no diagnosis: {exc!r}"]
        return result

    def diagnose(self, bad: list[tuple[str, str, int]],
                 batch: dict[tuple[str, str, int], dict[str, Any]]) -> list[str]:
        """tests/support/soak_report.py's account of the first DIAGNOSED bad windows."""
        bootstrap = self.kafka.bootstrap
        records: dict[tuple[str, str, int], list[Record]] = {}
        for r in read_records(bootstrap, self.topics.kpis):
            value = orjson.loads(r.value or b"{}")
            key = (value["queue"], value["channel"], int(parse_rfc3339(value["window_start"])))
            records.setdefault(key, []).append(
                Record(r.partition, r.offset, r.timestamp / 1000, r.key, r.value))
        writes: dict[tuple[str, str, int], list[Record]] = {}
        for r in read_records(bootstrap, f"{self.app_id}-windows-changelog"):
            window = window_key(r.key)
            if window is not None:
                writes.setdefault(window, []).append(
                    Record(r.partition, r.offset, r.timestamp / 1000, r.key, r.value))
        assignments: list[Assignment] = []
        for name, worker in zip(self.names, self.everyone, strict=True):
            if worker.log_path.exists():
                assignments += parse_assignments(name, worker.log_path.read_text(errors="replace"))
        happenings = [Happening(a.wall, a.line()) for a in self.actions]
        lines = []
        for key in bad[:DIAGNOSED]:
            # Stage 2's partition of a (queue, channel): the default partitioner's.
            partition = partition_of(f"{key[0]}|{key[1]}", self.args.partitions)
            lines += explain(key, partition, batch.get(key, {}), records.get(key, []),
                             writes.get(key, []), assignments, happenings)
        if len(bad) > DIAGNOSED:
            lines.append(f"(and {len(bad) - DIAGNOSED} more windows)")
        return lines


def summary(soak: Soak, result: Outcome, wall: float) -> bool:
    """Print the summary to stdout; True if the run passed."""
    c, a = soak.counts, soak.args
    produced = len(soak.records)
    exported = sum(result.outcomes.values())
    problems = result.problems()
    balanced = result.balanced and exported == produced
    mib = 1024.0
    passed = (not result.window_mismatches and not result.metric_problems and balanced
              and result.settled)
    lines = [
        "",
        "== kpimon soak summary ==",
        f"seed: {a.seed}  (rerun: .venv/bin/python scripts/soak.py --minutes {a.minutes:g} "
        f"--rate {a.rate:g} --hours {a.hours:g} --seed {a.seed} --max-workers {a.max_workers} "
        f"--partitions {a.partitions})",
        f"stream: {a.hours:g} h of event time from "
        f"{time.strftime('%Y-%m-%d %H:%M', time.gmtime(soak.start))} UTC, rate {a.rate:g}, "
        f"{a.partitions} partitions, topics {soak.topics.tickets} / {soak.topics.surveys}",
        f"events in: {produced}",
        f"crashes (kill -9): {c.kills}",
        f"graceful stops: {c.stops}",
        f"starts/restarts: {c.starts} (of which restarts with no worker left: {c.restarts})",
        f"unexpected worker exits: {c.exited}",
        f"rebalances (membership changes): {c.membership}",
        f"settled: {'yes' if result.settled else 'no'} ({result.settle_seconds:.0f}s; "
        f"group lag {result.group_lag}, the last worker's lag metric {result.metric_lag})",
        f"windows compared: {result.windows_compared}",
        f"mismatches: {len(result.window_mismatches)}",
        f"metric values compared: {result.metrics_checked}",
        f"metric values mismatching: {len(result.metric_problems)}",
        f"outcome accounting: balanced {'yes' if balanced else 'no'} "
        f"(sum support_events_total {exported}, messages produced {produced}, "
        f"per (topic, outcome) {'equal to' if result.balanced else 'DIFFERENT from'} "
        f"the batch: {dict(sorted(result.outcomes.items()))})",
        f"peak worker memory: {soak.memory.hwm_kib / mib:.1f} MiB VmHWM ({soak.memory.hwm_worker}),"
        f" highest sampled VmRSS {soak.memory.rss_kib / mib:.1f} MiB",
        f"wall time: {wall:.0f}s (chaos phase {soak.chaos_seconds:.0f}s, "
        f"planned {a.minutes * 60:.0f}s)",
        "actions:",
        *(f"  {act.line()}" for act in soak.actions),
        f"result: {'PASS' if passed else 'FAIL'}",
    ]
    if not passed:
        lines += [f"first {min(20, len(problems))} of {len(problems)} problems:",
                  *(f"  {p}" for p in problems[:20])]
        if result.diagnosis:
            lines += ["windows that differ, and why:", *(f"  {d}" for d in result.diagnosis)]
        lines.append(f"run directory kept: {soak.run_dir}")
    print("\n".join(lines), flush=True)
    return passed


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="scripts/soak.py", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--minutes", type=float, default=20.0,
                        help="length of the chaos phase in minutes (default 20); the broker "
                             "start and the final check come on top")
    parser.add_argument("--rate", type=float, default=30.0,
                        help="simulated tickets per minute at the daily peak (default 30)")
    parser.add_argument("--hours", type=float, default=8.0,
                        help="hours of event time in the stream (default 8)")
    parser.add_argument("--seed", type=int, default=None,
                        help="seed of the stream and the chaos (default: from the clock, "
                             "printed)")
    parser.add_argument("--max-workers", type=int, default=3,
                        help="most workers alive at once (default 3)")
    parser.add_argument("--partitions", type=int, default=4,
                        help="partitions of the input and KPI topics (default 4)")
    parser.add_argument("--settle-timeout", type=float, default=1200.0,
                        help="seconds the final worker may take to catch up and equal the "
                             "batch (default 1200)")
    parser.add_argument("--keep", action="store_true",
                        help="keep the run directory (broker data, worker logs) after a pass")
    args = parser.parse_args(argv)
    if args.seed is None:
        args.seed = int(time.time()) % 100_000
    if args.minutes <= 0 or args.rate <= 0 or args.hours <= 0:
        parser.error("--minutes, --rate and --hours must be > 0")
    if args.max_workers < 1 or args.partitions < 1:
        parser.error("--max-workers and --partitions must be >= 1")
    return args


def _interrupt(signum: int, frame: FrameType | None) -> None:
    # SIGTERM takes the same clean-up path as Ctrl-C.
    raise KeyboardInterrupt


@contextlib.contextmanager
def broker(data_dir: Path) -> Iterator[LocalKafka]:
    """local_kafka, plus a stop if the start itself fails or is interrupted.

    local_kafka's own clean-up covers only the time after the broker is up, and the
    broker runs in its own session, so a Ctrl-C during its start would leave it running.
    """
    up = False
    try:
        with local_kafka(data_dir) as kafka:
            up = True
            yield kafka
    except BaseException:
        if not up:
            env = {**os.environ, "KAFKA_DATA_DIR": str(data_dir)}
            subprocess.run([str(KAFKACTL), "stop"], env=env, timeout=120, check=False)
        raise


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupt)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    prefix = f"soak-{stamp}-s{args.seed}"
    run_dir = REPO / ".local" / "soak" / prefix
    run_dir.mkdir(parents=True, exist_ok=True)
    log(f"soak seed {args.seed}: {vars(args)}; run directory {run_dir}")
    passed = False
    try:
        with broker(run_dir / "kafka") as kafka:
            soak = Soak(args, kafka, run_dir, prefix)
            try:
                kafka.create_topics(soak.topics, partitions=args.partitions)
                soak.make_stream()
                soak.chaos()
                result = soak.settle(args.settle_timeout)
            except BaseException:
                soak.shutdown(graceful=False)
                raise
            soak.shutdown(graceful=True)
            passed = summary(soak, result, time.monotonic() - T0)
    except KeyboardInterrupt:
        log(f"interrupted; workers and broker stopped, run directory kept: {run_dir}")
        return 130
    if passed and not args.keep:
        shutil.rmtree(run_dir, ignore_errors=True)
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
