"""kpimon's pipeline written with Quix Streams: a benchmark comparison only.

Runs in its own venv (.local/bench/venv-quix: quixstreams, confluent-kafka, rocksdict)
and imports kpimon's pure, Faust-free code from the repository (`models.decode`,
`streams.tickets`, `streams.windows`), so both contenders do the same KPI work per
event and the difference is the framework around it:

    tickets + surveys (co-partitioned, keyed by ticket id; concat)
      -> decode (kpimon's models.decode; dead letters and unknown types counted, dropped)
      -> stage 1, stateful apply keyed by ticket id: kpimon's TicketProcessor over the
         Quix State of the current key (facts, dedup, watermark, contributions diff)
      -> one row per changed (queue, channel, bucket): cells and their deltas
      -> group_by "queue|channel" (Quix repartition topic)
      -> set_timestamp(bucket start) -> tumbling_window(60 s, grace 8 days)
         .reduce(kpimon's apply_deltas) .current()
      -> kpimon's render() -> support.kpis-like topic, key queue|channel|window_start

What Quix cannot express the same way is listed in bench/README.md (timers over other
keys, outcome counters, live gauges, debounced emission). The script stops by itself
once every input message went through stage 1 and every row it emitted went through
stage 2, and writes its times as JSON to --result (also on SIGTERM, then partial).
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

# kpimon's pure code: the repository, or the tree bench/run.py --ref exported.
SRC = Path(os.environ.get("KPIMON_SRC") or Path(__file__).resolve().parents[1])
sys.path.insert(0, str(SRC))

import orjson  # noqa: E402
from quixstreams import Application, State, message_context  # noqa: E402

from models.decode import DeadLetter, Ignored, TopicKind, decode  # noqa: E402
from streams.facts import TicketFacts  # noqa: E402
from streams.rules import KpiRules  # noqa: E402
from streams.tickets import SURVEYS, TICKETS, TicketProcessor  # noqa: E402
from streams.windows import CELLS, WindowState, apply_deltas, group_deltas, render  # noqa: E402

MAX_CLOCK_SKEW = 300.0
# kpimon keeps buckets for the longest rolling window plus the FCR window (1 day + 7
# days) so late corrections still land; a Quix window accepts updates until it closes.
GRACE_MS = 8 * 86400 * 1000


class KeyScopedStore:
    """kpimon's `TicketStore` over Quix `State`, which only reaches the current key.

    Timers of *other* tickets (SLA breach at the deadline, orphan timeout, retention)
    find nothing here and are dropped: Quix has no per-partition timers or access to
    other keys' state from a stateful function.
    """

    def __init__(self) -> None:
        self.key = ""
        self.state: State | None = None

    def bind(self, key: str, state: State) -> None:
        self.key, self.state = key, state

    def get(self, ticket_id: str) -> TicketFacts | None:
        if ticket_id != self.key or self.state is None:
            return None
        raw = self.state.get("f")
        return None if raw is None else TicketFacts.from_bytes(raw)

    def put(self, ticket_id: str, facts: TicketFacts) -> None:
        if ticket_id == self.key and self.state is not None:
            self.state.set("f", facts.to_bytes().decode())

    def delete(self, ticket_id: str) -> None:
        if ticket_id == self.key and self.state is not None:
            self.state.delete("f")

    def items(self) -> Iterator[tuple[str, TicketFacts]]:
        return iter(())


class Pipeline:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.rules = KpiRules()
        self.stores: dict[int, KeyScopedStore] = {}
        self.processors: dict[int, TicketProcessor] = {}
        self.read = 0  # input messages through stage 1
        self.rows = 0  # rows stage 1 emitted
        self.applied = 0  # rows through stage 2
        self.outcomes: Counter[str] = Counter()
        self.first: float | None = None
        self.done: float | None = None
        self.app: Application | None = None

    # stage 1 -----------------------------------------------------------------------

    def decode(self, value: bytes | None, key: bytes | None, timestamp: int,
               headers: Any) -> Any:
        if self.first is None:
            self.first = time.time()
        self.read += 1
        kind: TopicKind = (
            "tickets" if message_context().topic == self.args.tickets else "surveys"
        )
        decoded = decode(kind, key, value, now=time.time(), max_clock_skew=MAX_CLOCK_SKEW)
        if isinstance(decoded, DeadLetter):
            self.outcomes["dead_letter"] += 1
            return None
        if isinstance(decoded, Ignored):
            self.outcomes["ignored"] += 1
            return None
        return (kind, decoded)

    def keep(self, value: Any) -> bool:
        if value is None:
            self.check_done()
            return False
        return True

    def stage1(self, value: Any, key: bytes, timestamp: int, headers: Any,
               state: State) -> list[dict[str, Any]]:
        kind, event = value
        partition = message_context().partition
        processor = self.processors.get(partition)
        if processor is None:
            store = self.stores[partition] = KeyScopedStore()
            processor = self.processors[partition] = TicketProcessor(store, self.rules)
        self.stores[partition].bind(event.ticket_id, state)
        step = processor.process(TICKETS if kind == "tickets" else SURVEYS, event)
        for (_, outcome), n in step.outcomes.items():
            self.outcomes[outcome] += n
        rows = [
            {"q": queue, "c": channel, "b": start, "d": cells}
            for (queue, channel), buckets in group_deltas(step.deltas).items()
            for start, cells in buckets.items()
        ]
        self.rows += len(rows)
        self.check_done()
        return rows

    # stage 2 -----------------------------------------------------------------------

    def initializer(self, row: dict[str, Any]) -> list[Any]:
        return self.reducer([0, [0] * len(CELLS)], row)

    def reducer(self, agg: list[Any], row: dict[str, Any]) -> list[Any]:
        state = WindowState(values=agg[1], revision=agg[0])
        apply_deltas(state, row["d"])
        self.applied += 1
        return [state.revision, state.values]

    def render(self, window: dict[str, Any], key: str, timestamp: int,
               headers: Any) -> dict[str, Any]:
        queue, channel = key.split("|")
        revision, values = window["value"]
        record = render((queue, channel, window["start"] // 1000),
                        WindowState(values=values, revision=revision), time.time())
        self.check_done()
        return record

    def check_done(self) -> None:
        if (self.done is None and self.read >= self.args.expect
                and self.applied >= self.rows and self.app is not None):
            self.done = time.time()
            self.app.stop()

    # wiring ------------------------------------------------------------------------

    def build(self) -> Application:
        args = self.args
        app = Application(
            broker_address=args.bootstrap,
            consumer_group=args.group,
            auto_offset_reset="earliest",
            state_dir=args.state_dir,
            loglevel="WARNING",
            processing_guarantee="at-least-once",
        )
        self.app = app
        tickets = app.topic(args.tickets, key_deserializer="bytes", value_deserializer="bytes")
        surveys = app.topic(args.surveys, key_deserializer="bytes", value_deserializer="bytes")
        kpis = app.topic(args.kpis, key_serializer="str", value_serializer="json")
        sdf = app.dataframe(tickets).concat(app.dataframe(surveys))
        sdf = sdf.apply(self.decode, metadata=True).filter(self.keep)
        sdf = sdf.apply(self.stage1, stateful=True, expand=True, metadata=True)
        sdf = sdf.group_by(lambda row: f"{row['q']}|{row['c']}", name="qc")
        sdf = sdf.set_timestamp(lambda value, key, ts, headers: int(value["b"]) * 1000)
        windows = (
            sdf.tumbling_window(60_000, grace_ms=GRACE_MS)
            .reduce(self.reducer, self.initializer)
            .current()
        )
        windows = windows.apply(self.render, metadata=True)
        windows.to_topic(
            kpis, key=lambda r: f"{r['queue']}|{r['channel']}|{r['window_start']}"
        )
        return app

    def report(self, stop: threading.Event) -> None:
        while not stop.wait(5):
            print(f"quix: read {self.read:,} of {self.args.expect:,}, rows {self.rows:,}, "
                  f"applied {self.applied:,}", file=sys.stderr, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--tickets", required=True)
    parser.add_argument("--surveys", required=True)
    parser.add_argument("--kpis", required=True)
    parser.add_argument("--group", required=True)
    parser.add_argument("--state-dir", required=True)
    parser.add_argument("--expect", type=int, required=True)
    parser.add_argument("--result", type=Path, required=True)
    args = parser.parse_args()
    began = time.time()
    pipeline = Pipeline(args)
    app = pipeline.build()
    stop = threading.Event()
    threading.Thread(target=pipeline.report, args=(stop,), daemon=True).start()
    try:
        app.run()
    finally:
        stop.set()
        end = pipeline.done or time.time()
        args.result.write_bytes(orjson.dumps({
            "began": began, "first": pipeline.first, "end": end, "count": pipeline.read,
            "rows": pipeline.rows, "applied": pipeline.applied,
            "outcomes": dict(pipeline.outcomes), "partial": pipeline.done is None,
            "cpu": time.process_time(),
        }))


if __name__ == "__main__":
    main()
