"""The Faust floor: a no-op faust-streaming agent that reads and JSON-decodes every message.

One agent over both input topics, raw serializers, `take_events(1000, within=0.02)`
batches as kpimon's agents use, `orjson.loads` of every value, no state and no output:
what any Faust-based worker pays per message for Faust's consumer -> conductor ->
stream path on this machine. Run by bench/run.py in its own process (cwd under
.local/bench/work); writes its times as JSON to --result like raw_consumer.py, once it
has read --expect messages (then it stops itself) or on SIGTERM (then marked partial).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import faust
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # streams.drain

BATCH_SIZE = 1000
BATCH_WAIT = 0.02


class Floor:
    """The agent's counters and times, written to --result as raw_consumer.py does."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.began = time.time()
        self.first: float | None = None
        self.last: float | None = None
        self.end: float | None = None
        self.count = self.decoded = self.errors = 0
        self.written = False

    def write(self) -> None:
        if self.written:
            return
        self.written = True
        end = self.end or self.last or time.time()
        result = {"began": self.began, "first": self.first, "end": end, "count": self.count,
                  "decoded": self.decoded, "errors": self.errors,
                  "partial": self.count < self.args.expect, "cpu": time.process_time()}
        self.args.result.write_bytes(orjson.dumps(result))


class _KpimonDrainApp(faust.App):
    """A Faust app whose consumer runs kpimon's message loop (streams/drain.py)."""

    def _new_transport(self) -> Any:
        from streams.drain import Transport

        return Transport(self.conf.broker_consumer, self)


def build(args: argparse.Namespace, floor: Floor) -> faust.App:
    app_class = _KpimonDrainApp if args.drain == "kpimon" else faust.App
    app = app_class(
        args.app_id,
        broker=f"kafka://{args.bootstrap}",
        store="memory://",
        datadir=str(args.data_dir),
        web_enabled=False,
        producer_linger=0.005,
        consumer_auto_offset_reset="earliest",
        key_serializer="raw",
        value_serializer="raw",
    )
    inputs = app.topic(*args.topics.split(","), key_type=bytes, value_type=bytes,
                       key_serializer="raw", value_serializer="raw")

    async def agent(stream: Any) -> None:
        next_report = time.monotonic() + 5
        async for events in stream.take_events(BATCH_SIZE, within=BATCH_WAIT):
            if floor.first is None:
                floor.first = time.time()  # the first batch arrived (not yet decoded)
            for event in events:
                try:
                    orjson.loads(event.message.value)
                    floor.decoded += 1
                except (orjson.JSONDecodeError, TypeError):
                    floor.errors += 1
            floor.count += len(events)
            floor.last = time.time()
            if floor.count >= args.expect and floor.end is None:
                floor.end = floor.last
                floor.write()
                os.kill(os.getpid(), signal.SIGTERM)  # the worker's own graceful stop
            if time.monotonic() >= next_report:
                next_report = time.monotonic() + 5
                print(f"faust: {floor.count:,} of {args.expect:,}", file=sys.stderr, flush=True)

    app.agent(inputs, name="floor")(agent)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topics", required=True, help="comma-separated")
    parser.add_argument("--app-id", required=True, help="also the consumer group")
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--expect", type=int, required=True)
    parser.add_argument("--result", type=Path, required=True)
    parser.add_argument("--drain", choices=("faust", "kpimon"), default="faust",
                        help="the consumer's message loop: Faust's own, or kpimon's "
                             "(streams/drain.py)")
    args = parser.parse_args()
    floor = Floor(args)
    app = build(args, floor)
    sys.argv = [sys.argv[0], "worker", "-l", "warn"]
    try:
        app.main()
    finally:
        floor.write()  # SIGTERM before the end (cap): partial, up to the last batch


if __name__ == "__main__":
    main()
