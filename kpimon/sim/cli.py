"""The ``kpimon simulate`` command: options, validation and the run itself."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import signal
import sys
import time
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from kpimon.config import ConfigError, load_settings
from kpimon.kafka_security import aiokafka_options
from kpimon.sim.config import (
    ALLOWED_LATENESS,
    DEFAULT_QUEUES,
    QUEUE_NAME,
    SimConfig,
    SimRecord,
    Surge,
)
from kpimon.sim.noise import generate
from kpimon.sim.output import Pace, RunStats, send_records, write_jsonl


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"must be a fraction between 0 and 1, got {text}")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"must be >= 0 seconds, got {text}")
    return value


def _disorder(text: str) -> float:
    value = _seconds(text)
    if value >= ALLOWED_LATENESS:
        raise argparse.ArgumentTypeError(
            f"must stay below the {ALLOWED_LATENESS:.0f} s allowed lateness, got {text}"
        )
    return value


def _rate(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not (math.isfinite(value) and 0 < value <= 100_000):
        raise argparse.ArgumentTypeError(f"must be > 0 tickets per minute, got {text}")
    return value


def _speed(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not (math.isfinite(value) and 0 < value <= 1000):
        raise argparse.ArgumentTypeError(f"must be > 0 and at most 1000, got {text}")
    return value


def _seed(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError("must be >= 0")
    return value


def _start(text: str) -> float:
    try:
        epoch = float(text)
    except ValueError:
        pass
    else:
        if not (math.isfinite(epoch) and epoch >= 0):
            raise argparse.ArgumentTypeError(f"not a usable epoch time: {text!r}")
        return epoch
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected RFC 3339 (e.g. 2026-11-22T08:00:00Z) or epoch seconds, got {text!r}"
        ) from None
    if moment.tzinfo is None:
        raise argparse.ArgumentTypeError(f"needs an offset (Z or +hh:mm): {text!r}")
    return moment.timestamp()


def _surge(text: str) -> Surge:
    try:
        return Surge.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _queues(text: str) -> tuple[str, ...]:
    names = tuple(q.strip() for q in text.split(",") if q.strip())
    bad = [q for q in names if not QUEUE_NAME.fullmatch(q)]
    if not names or bad:
        raise argparse.ArgumentTypeError(
            f"comma-separated queue names (A-Z a-z 0-9 _ . -): {text!r}"
        )
    return names


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the options of ``kpimon simulate``."""
    parser.description = parser.description or (
        "Simulate contact-centre traffic and send it to Kafka (or a JSONL file). "
        "Volume: about rate*60*hours*day_factor*4.5 messages; day_factor is 0.07 at "
        "night, 1 at the peaks, 0.49 over a whole day (UTC hours)."
    )
    out = parser.add_argument_group("output")
    out.add_argument(
        "--bootstrap",
        help="Kafka bootstrap servers (default: kafka.bootstrap of the configuration, "
        "i.e. $KPIMON_BOOTSTRAP, the config file, or localhost:9092)",
    )
    out.add_argument(
        "--config",
        help="TOML configuration file for the Kafka connection: bootstrap and security "
        "(SASL/TLS) settings of [kafka] (default: $KPIMON_CONFIG; KPIMON_KAFKA__* apply)",
    )
    out.add_argument("--out", metavar="FILE.jsonl", help="write JSON lines here (- for stdout)")
    out.add_argument("--tickets-topic", default="support.tickets", metavar="TOPIC")
    out.add_argument("--surveys-topic", default="support.surveys", metavar="TOPIC")
    out.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    model = parser.add_argument_group("traffic")
    model.add_argument(
        "--seed", type=_seed, help="random seed (default: from the clock, printed on stderr)"
    )
    model.add_argument(
        "--rate", type=_rate, default=20.0, help="tickets per minute at peak (default 20)"
    )
    model.add_argument(
        "--duration",
        type=_seconds,
        default=3600.0,
        help="seconds of event time (default 3600; 0 with --realtime: until interrupted)",
    )
    model.add_argument(
        "--start", type=_start, help="event-time start, RFC 3339 or epoch (default: now - duration)"
    )
    model.add_argument(
        "--queues",
        type=_queues,
        default=DEFAULT_QUEUES,
        help=f"comma-separated queues (default {','.join(DEFAULT_QUEUES)})",
    )
    model.add_argument(
        "--surge",
        type=_surge,
        metavar="QUEUE:START_OFFSET_S:DURATION_S:FACTOR",
        help="multiply one queue's arrivals for a while; the offset counts from the "
        "event-time start (with --backfill: from the start of the backfill)",
    )
    timing = parser.add_argument_group("timing")
    timing.add_argument(
        "--realtime", action="store_true", help="send at wall-clock pace (default: fast)"
    )
    timing.add_argument(
        "--backfill",
        type=_seconds,
        default=0.0,
        metavar="SECONDS",
        help="with --realtime: first send the last SECONDS of event time at once",
    )
    timing.add_argument(
        "--speed",
        type=_speed,
        default=1.0,
        metavar="FACTOR",
        help="with --realtime: event time advances FACTOR times as fast as the wall-clock "
        "(default 1), e.g. to watch alerts of a scaled rule set fire in minutes",
    )
    timing.add_argument(
        "--behind",
        type=_seconds,
        default=0.0,
        metavar="SECONDS",
        help="with --realtime: the live part starts SECONDS of event time behind the "
        "wall-clock (default 0); with --speed above 1 it must cover the catch-up, since "
        "events ahead of the clock are dead-lettered as future_timestamp",
    )
    noise = parser.add_argument_group("noise")
    noise.add_argument("--duplicates", type=_fraction, default=0.0, help="fraction redelivered")
    noise.add_argument(
        "--disorder",
        type=_disorder,
        default=60.0,
        help="max seconds of arrival jitter (default 60, below 120)",
    )
    noise.add_argument("--bad", type=_fraction, default=0.0, help="fraction of malformed messages")
    noise.add_argument(
        "--unknown-types", type=_fraction, default=0.0, help="fraction of unknown event types"
    )
    noise.add_argument(
        "--orphans",
        type=_fraction,
        default=0.0,
        help="fraction of events of unknown tickets (until 20 min before the end)",
    )


def _config(args: argparse.Namespace, now: float) -> SimConfig:
    """The run's config from the options; raises ValueError on a bad combination."""
    if args.realtime:
        if args.out:
            raise ValueError("--realtime sends to Kafka; it does not combine with --out")
        if args.start is not None:
            raise ValueError("--realtime runs at wall-clock time; use --backfill, not --start")
        if args.speed > 1:
            if args.duration == 0:
                raise ValueError("--speed above 1 needs a --duration (event time would "
                                 "overtake the wall-clock)")
            catch_up = args.duration * (1 - 1 / args.speed)
            if catch_up > args.behind:
                raise ValueError(
                    f"at --speed {args.speed:g} event time gains {catch_up:.0f} s on the "
                    f"wall-clock over --duration {args.duration:g}: use --behind "
                    f"{math.ceil(catch_up)} or more"
                )
        start = now - args.behind - args.backfill
        duration = args.backfill + args.duration if args.duration > 0 else 0.0
    else:
        if args.backfill:
            raise ValueError("--backfill only applies with --realtime")
        if args.speed != 1 or args.behind:
            raise ValueError("--speed and --behind only apply with --realtime")
        if args.duration == 0:
            raise ValueError("--duration 0 (until interrupted) needs --realtime")
        start = args.start if args.start is not None else now - args.duration
        duration = args.duration
    cfg = SimConfig(
        seed=args.seed,
        start=start,
        duration=duration,
        rate=args.rate,
        queues=args.queues,
        surge=args.surge,
        duplicates=args.duplicates,
        disorder=args.disorder,
        bad=args.bad,
        unknown_types=args.unknown_types,
        orphans=args.orphans,
        tickets_topic=args.tickets_topic,
        surveys_topic=args.surveys_topic,
        now=now,
    )
    cfg.check()
    return cfg


def run(args: argparse.Namespace) -> int:
    """Entry point of ``kpimon simulate``; returns the process exit code."""
    now = time.time()
    if args.seed is None:
        args.seed = int(now)  # a fresh seed per run, so reruns never repeat ticket ids
        print(f"simulate: seed {args.seed} (pass --seed {args.seed} to repeat)", file=sys.stderr)
    try:
        cfg = _config(args, now)
    except ValueError as exc:
        print(f"kpimon simulate: error: {exc}", file=sys.stderr)
        return 2
    assert cfg.start is not None
    if not args.realtime and cfg.start + cfg.duration > now + 300 and not args.out:
        print(
            "simulate: warning: the run ends in the future; events beyond the 300 s clock "
            "skew will be dead-lettered as future_timestamp",
            file=sys.stderr,
        )
    stats = RunStats()
    records = stats.count(generate(cfg))
    if args.out:
        try:
            stats.sent = write_jsonl(records, args.out)
        except KeyboardInterrupt:
            print(stats.summary(f"interrupted; wrote to {args.out}:"), file=sys.stderr)
            return 130
        except OSError as exc:
            print(f"kpimon simulate: error: {exc}", file=sys.stderr)
            return 1
        if not args.quiet:
            print(stats.summary(f"wrote to {args.out}:"), file=sys.stderr)
        return 0
    try:
        bootstrap, client_options = kafka_connection(args)
    except ConfigError as exc:
        print(f"kpimon simulate: error: {exc}", file=sys.stderr)
        return 2
    # The live part starts at event time `now - behind`, sent at `now`.
    pace = Pace(args.speed, now - args.behind, now)
    try:
        asyncio.run(
            _main(records, bootstrap, args.realtime, not args.quiet, stats, client_options,
                  pace)
        )
    except (KeyboardInterrupt, asyncio.CancelledError):
        print(stats.summary("interrupted; sent"), file=sys.stderr)
        # Stopping an unbounded demo is its normal end.
        return 0 if cfg.duration == 0 else 130
    except Exception as exc:
        print(f"kpimon simulate: error: {type(exc).__name__}: {exc}", file=sys.stderr)
        print(stats.summary("sent"), file=sys.stderr)
        return 1
    print(stats.summary("sent"), file=sys.stderr)
    return 0


def kafka_connection(args: argparse.Namespace) -> tuple[str, dict[str, Any]]:
    """Bootstrap (``--bootstrap`` wins) and producer options from the configuration."""
    settings = load_settings(args.config)
    return args.bootstrap or settings.kafka.bootstrap, aiokafka_options(settings.kafka)


async def _main(
    records: Iterable[SimRecord],
    bootstrap: str,
    realtime: bool,
    progress: bool,
    stats: RunStats,
    client_options: Mapping[str, Any] | None = None,
    pace: Pace | None = None,
) -> None:
    task = asyncio.current_task()
    loop = asyncio.get_running_loop()
    if task is not None:
        with contextlib.suppress(NotImplementedError):  # no signal handlers on Windows
            loop.add_signal_handler(signal.SIGTERM, task.cancel)  # docker stop = Ctrl-C
    await send_records(
        records, bootstrap, realtime=realtime, progress=progress, stats=stats,
        client_options=client_options, pace=pace,
    )


def main(argv: list[str] | None = None) -> int:
    """Entry point with the same options as ``kpimon simulate``."""
    parser = argparse.ArgumentParser(prog="kpimon simulate")
    add_arguments(parser)
    return run(parser.parse_args(argv))
