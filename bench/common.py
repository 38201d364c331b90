"""Shared plumbing of the benchmark: the broker, processes, metrics, offsets, /proc."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from prometheus_client.parser import text_string_to_metric_families

# The integration tests' topic names and port picker (run.py puts the repository on
# sys.path; with --ref, the exported revision's copy).
from tests.integration.kafka_env import Topics, free_port

REPO = Path(__file__).resolve().parents[1]
BENCH_DIR = REPO / ".local" / "bench"
KAFKACTL = REPO / "deploy" / "local-kafka" / "kafkactl"
CREATE_TOPICS = REPO / "deploy" / "local-kafka" / "create_topics.py"
PYTHON = Path(sys.executable)
KPIMON = PYTHON.with_name("kpimon")
CLK_TCK = os.sysconf("SC_CLK_TCK")

_T0 = time.monotonic()
# Which kpimon code the contenders run: empty for the working tree; with --ref,
# PYTHONPATH / KPIMON_SRC point at that revision exported under .local/bench/src.
SOURCE_ENV: dict[str, str] = {}


def say(msg: str) -> None:
    """A progress line on stderr, stamped with seconds since the bench started."""
    print(f"[bench {time.monotonic() - _T0:7.1f}s] {msg}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------ /proc


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far (0 when it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    # after the ")": state is field 3, utime 14 and stime 15 (1-based in proc(5))
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def memory_kib(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak RSS) of a process, in KiB."""
    out: dict[str, int] = {}
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            name, _, rest = line.partition(":")
            if name in ("VmRSS", "VmHWM"):
                out[name] = int(rest.split()[0])
    return out


def machine_busy() -> float:
    """CPU-seconds all processes of the machine have used (/proc/stat, not idle/iowait)."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[:8])
    return (user + nice + system + irq + softirq + steal) / CLK_TCK


class CpuWatch:
    """How busy the machine was during a run, to tell the contenders' share from others'.

    The benchmark owns only its broker, its contender processes and itself; anything
    else using CPU meanwhile (other people's tests on a shared machine) shows up as
    `others_cores` and makes the figures of that run less trustworthy.
    """

    def __init__(self) -> None:
        self.wall = time.time()
        self.busy = machine_busy()
        self.harness = time.process_time()
        self.load = os.getloadavg()[0]

    def report(self, contender_cpu: float, broker_cpu: float) -> dict[str, float]:
        wall = time.time() - self.wall
        busy = machine_busy() - self.busy
        harness = time.process_time() - self.harness
        others = max(0.0, busy - contender_cpu - broker_cpu - harness)
        return {
            "wall_s": wall,
            "machine_busy_cores": busy / wall if wall > 0 else 0.0,
            "harness_cpu_s": harness,
            "others_cores": others / wall if wall > 0 else 0.0,
            "loadavg_start": self.load,
        }


# ---------------------------------------------------------------------------- broker


@dataclass
class Broker:
    """One local Kafka started with the project's kafkactl, on free ports."""

    data_dir: Path
    partitions: int
    port: int = field(default_factory=free_port)
    controller_port: int = field(default_factory=free_port)

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def env(self, **extra: str) -> dict[str, str]:
        return {
            **os.environ,
            "KAFKA_PORT": str(self.port),
            "KAFKA_CONTROLLER_PORT": str(self.controller_port),
            "KAFKA_DATA_DIR": str(self.data_dir),
            "KAFKA_HEAP": os.environ.get("KAFKA_HEAP", "1g"),
            "KPIMON_PYTHON": str(PYTHON),
            "KPIMON_PARTITIONS": str(self.partitions),
            **extra,
        }

    def start(self, topic_env: Mapping[str, str]) -> None:
        if self.data_dir.exists():
            shutil.rmtree(self.data_dir)
        self.data_dir.mkdir(parents=True)
        say(f"starting Kafka on {self.bootstrap} (data {self.data_dir})")
        subprocess.run(
            [str(KAFKACTL), "start"], env=self.env(**topic_env), check=True, timeout=600,
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )

    def stop(self) -> None:
        say("stopping Kafka")
        subprocess.run([str(KAFKACTL), "stop"], env=self.env(), timeout=120, check=False,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def pid(self) -> int | None:
        with contextlib.suppress(OSError, ValueError):
            return int((self.data_dir / "kafka.pid").read_text().strip())
        return None

    def cpu(self) -> float:
        pid = self.pid()
        return cpu_seconds(pid) if pid else 0.0

    def create_topics(self, specs: Iterable[str], partitions: int | None = None) -> None:
        """`specs`: NAME or NAME:key=value,... (see create_topics.py)."""
        subprocess.run(
            [str(PYTHON), str(CREATE_TOPICS), "--bootstrap", self.bootstrap,
             "--partitions", str(partitions or self.partitions), "--replication-factor", "1",
             "--timeout", "60", *specs],
            check=True, timeout=120, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )


def topic_specs(topics: Topics) -> list[str]:
    """`create_topics` arguments for a scenario's topics (the KPI topic compacted)."""
    return [topics.tickets, topics.surveys, f"{topics.kpis}:cleanup.policy=compact",
            topics.deadletter]


# --------------------------------------------------------------------------- offsets


async def _end_offsets(bootstrap: str, topics: Iterable[str]) -> dict[tuple[str, int], int]:
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        tps: list[TopicPartition] = []
        for topic in topics:
            parts = consumer.partitions_for_topic(topic)
            if parts is None:
                await consumer._client.force_metadata_update()
                parts = consumer.partitions_for_topic(topic) or set()
            tps.extend(TopicPartition(topic, p) for p in parts)
        ends = await consumer.end_offsets(tps) if tps else {}
        return {(tp.topic, tp.partition): off for tp, off in ends.items()}
    finally:
        with contextlib.suppress(asyncio.CancelledError):
            await consumer.stop()


def end_offsets(bootstrap: str, topics: Iterable[str]) -> dict[tuple[str, int], int]:
    return asyncio.run(_end_offsets(bootstrap, list(topics)))


async def _committed(bootstrap: str, group: str) -> dict[tuple[str, int], int]:
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(group)
        return {(tp.topic, tp.partition): meta.offset for tp, meta in offsets.items()}
    finally:
        await admin.close()


def committed(bootstrap: str, group: str) -> dict[tuple[str, int], int]:
    """Committed offsets of a consumer group, by (topic, partition)."""
    return asyncio.run(_committed(bootstrap, group))


def lag(bootstrap: str, group: str, topics: Iterable[str]) -> int:
    """Messages of `topics` beyond the group's committed offsets."""
    topics = list(topics)
    ends = end_offsets(bootstrap, topics)
    done = committed(bootstrap, group)
    return sum(max(0, end - max(0, done.get(tp, 0))) for tp, end in ends.items())


# -------------------------------------------------------------------------- metrics

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(port: int, timeout: float = 30) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=timeout) as resp:
        return str(resp.read().decode())


def parse(text: str) -> Samples:
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def events_total(text: str) -> int:
    """Sum of `support_events_total` over topics and outcomes (stage-2 counts)."""
    total = 0.0
    for line in text.splitlines():
        if line.startswith("support_events_total{"):
            total += float(line.rsplit(" ", 1)[1])
    return int(total)


def consumer_lag(text: str) -> dict[tuple[str, int], int]:
    """`support_consumer_lag_messages` by (topic, partition): input not yet read."""
    out: dict[tuple[str, int], int] = {}
    for line in text.splitlines():
        if line.startswith("support_consumer_lag_messages{"):
            labels, _, value = line[len("support_consumer_lag_messages{"):].partition("} ")
            d = dict(part.split("=", 1) for part in labels.split(","))
            out[(d["topic"].strip('"'), int(d["partition"].strip('"')))] = int(float(value))
    return out


def outcomes(text: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for (name, labels), value in parse(text).items():
        if name == "support_events_total" and value:
            outcome = dict(labels)["outcome"]
            out[outcome] = out.get(outcome, 0) + int(value)
    return out


# --------------------------------------------------------------------------- workers


class Proc:
    """A subprocess with its log file, stopped politely (SIGTERM, then SIGKILL)."""

    def __init__(self, argv: list[str], env: Mapping[str, str], log_path: Path,
                 cwd: Path | None = None) -> None:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self.log_path = log_path
        self._log: IO[bytes] = log_path.open("wb")
        self.started = time.time()
        self.proc = subprocess.Popen(argv, env=dict(env), stdout=self._log,
                                     stderr=subprocess.STDOUT, cwd=cwd)
        self.pid = self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def tail(self, lines: int = 30) -> str:
        self._log.flush()
        text = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])

    def cpu(self) -> float:
        return cpu_seconds(self.pid)

    def memory(self) -> dict[str, int]:
        return memory_kib(self.pid)

    def stop(self, timeout: float = 60) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if not self._log.closed:
            self._log.close()


def kpimon_env(broker: Broker, topics: Topics, app_id: str, http_port: int, data_dir: Path,
               partitions: int, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    return {
        **os.environ,
        **SOURCE_ENV,
        **topics.env(),
        "KPIMON_BOOTSTRAP": broker.bootstrap,
        "KPIMON_PARTITIONS": str(partitions),
        "KPIMON_HTTP_PORT": str(http_port),
        "KPIMON_WORKER__APP_ID": app_id,
        "KPIMON_WORKER__DATA_DIR": str(data_dir),
        **(extra or {}),
    }


def start_kpimon(broker: Broker, topics: Topics, app_id: str, state: Path, partitions: int,
                 extra: Mapping[str, str] | None = None,
                 argv_prefix: list[str] | None = None) -> tuple[Proc, int]:
    """`kpimon worker` as a subprocess; returns it and its HTTP port."""
    port = free_port()
    env = kpimon_env(broker, topics, app_id, port, state / f"data-{port}", partitions, extra)
    argv = (argv_prefix or [str(KPIMON)]) + ["worker"]
    proc = Proc(argv, env, state / f"{app_id}-{port}.log", cwd=state)
    return proc, port


def export_ref(ref: str) -> tuple[str, Path]:
    """`git archive` a revision into .local/bench/src/<sha> (read-only for the repo)."""
    sha = subprocess.run(["git", "rev-parse", "--verify", f"{ref}^{{commit}}"], cwd=REPO,
                         check=True, capture_output=True, text=True).stdout.strip()
    target = BENCH_DIR / "src" / sha
    if not (target / "streams" / "app.py").exists():
        shutil.rmtree(target, ignore_errors=True)
        target.mkdir(parents=True)
        # bench/ itself always comes from the working tree (sys.path order in run.py)
        archive = subprocess.run(["git", "archive", sha, "--", ".", ":(exclude)bench"],
                                 cwd=REPO, check=True, capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", str(target)], input=archive, check=True)
    return sha, target


def source_label() -> str:
    """The working tree's commit, marked dirty when kpimon's code differs from it."""
    def git(*argv: str) -> str:
        return subprocess.run(["git", *argv], cwd=REPO, capture_output=True, text=True,
                              check=False).stdout.strip()

    sha = git("rev-parse", "--short", "HEAD")
    dirty = git("status", "--porcelain", "--", "streams", "models", "exporters", "kpimon")
    return f"working tree at {sha}" + (" + uncommitted changes" if dirty else "")


def try_scrape(port: int, timeout: float = 30) -> str | None:
    try:
        return scrape(port, timeout)
    except OSError:
        return None


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100); inf entries count as unseen."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, int(-(-q * len(ordered) // 100)))  # ceil(q/100 * n)
    return ordered[rank - 1]


def chunks(items: list[Any], n: int) -> Iterator[list[Any]]:
    for i in range(0, len(items), n):
        yield items[i:i + n]
