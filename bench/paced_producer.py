"""The latency scenario's load: the realistic mix paced at a fixed rate, plus probe markers.

Runs in its own process (its own interpreter lock), so pacing does not compete with the
bench's consumer and /metrics poller. Writes what it sent, and every marker's send time,
as JSON to --result. See bench/latency.py for the method.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
if os.environ.get("KPIMON_SRC"):  # bench/run.py --ref: that revision's simulator
    sys.path.insert(0, os.environ["KPIMON_SRC"])

from bench.latency import PROBE_PREFIX, PROBES, QUIET_PROBES, load_records, prepare, retime
from kpimon.sim.config import format_ms


async def run(args: argparse.Namespace) -> dict[str, Any]:
    n = int(args.rate * args.seconds)
    began = time.time()
    load = prepare(load_records(n, args.tickets, args.surveys))
    print(f"paced: {len(load):,} messages ready in {time.time() - began:.1f} s",
          file=sys.stderr, flush=True)
    producer = AIOKafkaProducer(bootstrap_servers=args.bootstrap, linger_ms=5, acks="all",
                                enable_idempotence=True)
    await producer.start()
    t0 = time.time() + 0.5
    end = t0 + args.seconds
    markers: list[list[Any]] = []
    per_bucket: dict[tuple[int, int], int] = {}
    per_probe = [0] * (PROBES + QUIET_PROBES)
    behind: list[float] = []
    pending: list[asyncio.Future[Any]] = []
    m = q = i = 0

    def due(per_second: float) -> Callable[[int, float], bool]:
        # the n-th marker of a kind is due at t0 + n / rate; a rate of 0 sends none
        if per_second <= 0:
            return lambda n, now: False
        return lambda n, now: t0 + n / per_second <= now

    busy_due, quiet_due = due(args.markers), due(args.quiet_markers)
    await asyncio.sleep(max(0.0, t0 - time.time()))
    print(f"paced: load running for {args.seconds:.0f} s at {args.rate:,.0f}/s",
          file=sys.stderr, flush=True)
    try:
        while True:
            now = time.time()
            if now >= end and i >= len(load):
                break
            # everything due by now, each stamped with its own send time
            while i < len(load) and t0 + i / args.rate <= now:
                item = load[i]
                at = time.time()
                pending.append(await producer.send(item[0], retime(item, at), key=item[1]))
                if i % 500 == 0:
                    behind.append(at - (t0 + i / args.rate))
                i += 1
            while now < end and (busy_due(m, now) or quiet_due(q, now)):
                if busy_due(m, now):
                    probe, m = m % PROBES, m + 1
                else:
                    probe, q = PROBES + q % QUIET_PROBES, q + 1
                n_marker = m + q
                at = time.time()
                bucket = int(at // 60) * 60
                per_bucket[(probe, bucket)] = k = per_bucket.get((probe, bucket), 0) + 1
                per_probe[probe] += 1
                ticket = f"P{int(t0)}-{n_marker}"
                value = orjson.dumps({
                    "schema_version": 1, "event_id": f"p{int(t0)}-{n_marker}",
                    "type": "ticket.created", "occurred_at": format_ms(int(at * 1000)),
                    "ticket_id": ticket, "queue": f"{PROBE_PREFIX}{probe}", "channel": "phone",
                })
                pending.append(await producer.send(args.tickets, value, key=ticket.encode(),
                                                   partition=probe % args.partitions))
                markers.append([probe, per_probe[probe], bucket, k, at])
            if len(pending) > 5000:
                await asyncio.gather(*pending)
                pending.clear()
            await asyncio.sleep(0.002)
        await asyncio.gather(*pending)
    finally:
        load_end = time.time()
        with contextlib.suppress(Exception):
            await producer.stop()
    return {"t0": t0, "load_end": load_end, "sent": i, "markers": markers,
            "behind_max_s": max(behind, default=0.0),
            "rate_achieved": i / max(1e-9, load_end - t0), "cpu": time.process_time()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--tickets", required=True)
    parser.add_argument("--surveys", required=True)
    parser.add_argument("--partitions", type=int, required=True)
    parser.add_argument("--rate", type=float, required=True)
    parser.add_argument("--seconds", type=float, required=True)
    parser.add_argument("--markers", type=float, required=True,
                        help="busy probes' markers per second")
    parser.add_argument("--quiet-markers", type=float, required=True,
                        help="quiet probes' markers per second")
    parser.add_argument("--result", type=Path, required=True)
    args = parser.parse_args()
    args.result.write_bytes(orjson.dumps(asyncio.run(run(args))))


if __name__ == "__main__":
    main()
