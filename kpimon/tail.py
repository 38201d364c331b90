"""`kpimon tail`: follow the KPI topic and print each window record as one line."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer

from kpimon.config import load_settings
from kpimon.kafka_security import aiokafka_options


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--bootstrap",
        help="Kafka bootstrap servers (default: kafka.bootstrap of the configuration, "
        "i.e. $KPIMON_BOOTSTRAP, the config file, or localhost:9092)",
    )
    parser.add_argument(
        "--topic",
        help="KPI topic (default: topics.kpis of the configuration, i.e. "
        "$KPIMON_TOPIC_KPIS, the config file, or support.kpis)",
    )
    parser.add_argument(
        "--config",
        help="TOML configuration file (default: $KPIMON_CONFIG); its [kafka] security "
        "settings (SASL/TLS, also KPIMON_KAFKA__*) apply to the connection",
    )
    parser.add_argument("--from-beginning", action="store_true", help="replay the whole topic")
    parser.add_argument("--queue", help="only this queue")


def _ratio(num: float, den: float, scale: float = 100.0, unit: str = "%") -> str:
    return f"{scale * num / den:.0f}{unit}" if den else "-"


def format_record(r: dict[str, Any]) -> str:
    """One readable line: volumes and the derived KPIs of SPEC section 3."""
    sla_den = r["sla_met"] + r["sla_breached"]
    frt = f"{r['frt_sum_seconds'] / r['frt_count']:.0f}s" if r["frt_count"] else "-"
    aht = f"{r['aht_sum_seconds'] / r['aht_count']:.0f}s" if r["aht_count"] else "-"
    return (
        f"{r['window_start'][:16]} {r['queue']:>12}/{r['channel']:<9} "
        f"new={r['tickets_created']:<3} solved={r['tickets_resolved']:<3} "
        f"abandoned={r['tickets_abandoned']:<2} SLA={_ratio(r['sla_met'], sla_den):>4} "
        f"FRT={frt:>5} AHT={aht:>5} FCR={_ratio(r['fcr_first_contact'], r['fcr_resolved']):>4} "
        f"CSAT={_ratio(r['csat_satisfied'], r['csat_responses']):>4} rev={r['revision']}"
    )


async def _follow(args: argparse.Namespace, client_options: dict[str, Any]) -> None:
    consumer = AIOKafkaConsumer(
        args.topic,
        bootstrap_servers=args.bootstrap,
        auto_offset_reset="earliest" if args.from_beginning else "latest",
        enable_auto_commit=False,
        **client_options,
    )
    await consumer.start()
    try:
        async for message in consumer:
            if message.value is None:
                continue
            record = orjson.loads(message.value)
            if args.queue and record.get("queue") != args.queue:
                continue
            print(format_record(record), flush=True)
    finally:
        await consumer.stop()


def run(args: argparse.Namespace) -> int:
    """Entry point of ``kpimon tail``; raises ConfigError on an unusable configuration."""
    settings = load_settings(getattr(args, "config", None))
    args.bootstrap = args.bootstrap or settings.kafka.bootstrap
    args.topic = args.topic or settings.topics.kpis
    client_options = aiokafka_options(settings.kafka)
    print(f"following {args.topic} on {args.bootstrap} (Ctrl-C to stop)", file=sys.stderr)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_follow(args, client_options))
    return 0
