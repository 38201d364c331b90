"""The ceiling: a bare aiokafka consumer that reads and JSON-decodes every input message.

No state, no output, no validation beyond orjson: what one Python process can pull out
of the broker. Run by bench/run.py in its own process; writes its times as JSON to
--result (also on SIGTERM, then marked partial).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
import time
from pathlib import Path

import orjson
from aiokafka import AIOKafkaConsumer


async def consume(args: argparse.Namespace) -> dict[str, object]:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    consumer = AIOKafkaConsumer(
        *args.topics.split(","), bootstrap_servers=args.bootstrap, group_id=args.group,
        auto_offset_reset="earliest", enable_auto_commit=True,
    )
    began = time.time()
    await consumer.start()
    first: float | None = None
    count = decoded = errors = 0
    next_report = time.monotonic() + 5
    try:
        while count < args.expect and not stop.is_set():
            batch = await consumer.getmany(timeout_ms=500)
            if first is None and batch:
                first = time.time()  # the first messages arrived (not yet decoded)
            for records in batch.values():
                for record in records:
                    try:
                        orjson.loads(record.value)
                        decoded += 1
                    except (orjson.JSONDecodeError, TypeError):
                        errors += 1
                count += len(records)
            if time.monotonic() >= next_report:
                next_report = time.monotonic() + 5
                print(f"raw: {count:,} of {args.expect:,}", file=sys.stderr, flush=True)
    finally:
        end = time.time()
        with contextlib.suppress(asyncio.CancelledError):
            await consumer.stop()
    return {"began": began, "first": first, "end": end, "count": count, "decoded": decoded,
            "errors": errors, "partial": count < args.expect, "cpu": time.process_time()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topics", required=True, help="comma-separated")
    parser.add_argument("--group", required=True)
    parser.add_argument("--expect", type=int, required=True)
    parser.add_argument("--result", type=Path, required=True)
    args = parser.parse_args()
    result = asyncio.run(consume(args))
    args.result.write_bytes(orjson.dumps(result))


if __name__ == "__main__":
    main()
