"""`kpimon` command line: worker, simulator, JSON Schema."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from kpimon.config import ConfigError, load_settings


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="kpimon", description="Streaming real-time KPI monitor for contact centres."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    worker = sub.add_parser("worker", help="run a stream worker (consumes, computes, exports)")
    worker.add_argument("--config", help="TOML configuration file (default: $KPIMON_CONFIG)")

    check = sub.add_parser("check-config", help="validate the configuration and print it")
    check.add_argument("--config", help="TOML configuration file (default: $KPIMON_CONFIG)")

    schema = sub.add_parser("schema", help="write the JSON Schema of the input events")
    schema.add_argument("--out", type=Path, help="file to write (default: standard output)")

    from kpimon import sim, tail

    simulate = sub.add_parser("simulate", help="produce realistic contact-centre traffic")
    sim.add_arguments(simulate)

    follow = sub.add_parser("tail", help="print KPI window records as they are published")
    tail.add_arguments(follow)

    from kpimon import generate

    gen = sub.add_parser("generate", help="write Prometheus rules, Alertmanager "
                         "configuration and Grafana dashboards from deploy/kpi-catalogue.toml")
    generate.add_arguments(gen)

    args = parser.parse_args(argv)
    try:
        if args.command == "worker":
            return _worker(args)
        if args.command == "check-config":
            shown = load_settings(args.config).model_dump(mode="json")
            # Never print credentials.
            for section, secret in (("http", "token"), ("http", "kiosk_token"),
                                    ("kafka", "sasl_password")):
                if shown[section][secret]:
                    shown[section][secret] = "<set>"
            print(json.dumps(shown, indent=2))
            return 0
        if args.command == "schema":
            return _schema(args)
        if args.command == "tail":
            return tail.run(args)
        if args.command == "generate":
            return generate.run(args)
        return sim.run(args)
    except ConfigError as exc:
        print(f"kpimon: {exc}", file=sys.stderr)
        return 2


def _worker(args: argparse.Namespace) -> int:
    settings = load_settings(args.config)
    from faust.worker import Worker

    from streams.app import KpiWorker
    from streams.topics import ensure_internal_topics

    # Faust runs on the current event loop: create the topics on that same loop.
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        loop.run_until_complete(ensure_internal_topics(settings))
    except RuntimeError as exc:
        print(f"kpimon worker: {exc}", file=sys.stderr)
        return 1
    kpi = KpiWorker(settings)
    worker = Worker(kpi.app, loglevel=settings.worker.log_level)
    # Faust warns each time its fixed 100-message changelog buffer makes a stream wait:
    # that is backpressure working, and under load it floods the log many times a second.
    logging.getLogger("faust.transport.producer").setLevel(logging.ERROR)
    worker.execute_from_commandline()
    return 0


def _schema(args: argparse.Namespace) -> int:
    from models.schema import input_events_schema_text

    text = input_events_schema_text()
    if args.out:
        args.out.write_text(text)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
