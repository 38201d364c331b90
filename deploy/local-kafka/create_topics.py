#!/usr/bin/env python3
"""Create the kpimon topics on a Kafka broker in one go (idempotent).

Used by ``kafkactl topics`` / ``kafkactl start`` so that creating all topics costs one
Python start instead of one JVM start per topic. Standard library + aiokafka only.

Usage::

    create_topics.py --bootstrap 127.0.0.1:9092 --partitions 4 \
        support.tickets support.surveys support.kpis:cleanup.policy=compact ...

Each positional argument is ``NAME`` or ``NAME:key=value[,key=value...]`` (topic
configs). Topics that already exist are left alone (a warning is printed if their
partition count or requested configs differ). The script waits, up to ``--timeout``
seconds in total, for the broker to answer and for every topic to have a leader on all
partitions, so a producer can use them right after it returns. Exit status 0 on
success, 1 on failure (with a one-line reason on stderr).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

PROG = "create_topics"

# Kafka protocol error codes that matter here.
NO_ERROR = 0
TOPIC_ALREADY_EXISTS = 36
RETRIABLE = {
    3,  # UNKNOWN_TOPIC_OR_PARTITION (metadata not propagated yet)
    5,  # LEADER_NOT_AVAILABLE
    7,  # REQUEST_TIMED_OUT
    8,  # BROKER_NOT_AVAILABLE
    41,  # NOT_CONTROLLER
}


@dataclass
class TopicSpec:
    name: str
    configs: dict[str, str] = field(default_factory=dict)


def say(msg: str) -> None:
    print(f"{PROG}: {msg}", file=sys.stderr, flush=True)


def parse_spec(text: str) -> TopicSpec:
    name, _, rest = text.partition(":")
    if not name:
        raise argparse.ArgumentTypeError(f"empty topic name in {text!r}")
    configs: dict[str, str] = {}
    for item in filter(None, rest.split(",")):
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise argparse.ArgumentTypeError(f"bad topic config {item!r} in {text!r}")
        configs[key] = value
    return TopicSpec(name, configs)


async def connect(bootstrap: str, deadline: float) -> AIOKafkaAdminClient:
    last: BaseException | None = None
    while time.monotonic() < deadline:
        admin = AIOKafkaAdminClient(
            bootstrap_servers=bootstrap, request_timeout_ms=15000, client_id="kpimon-kafkactl"
        )
        try:
            await admin.start()
            return admin
        except Exception as exc:
            last = exc
            await admin.close()
            await asyncio.sleep(0.5)
    raise RuntimeError(f"broker at {bootstrap} did not answer in time ({last!r})")


async def topic_metadata(admin: AIOKafkaAdminClient, names: list[str]) -> dict[str, dict[str, Any]]:
    # Ask for *all* topics: a metadata request naming topics lets the broker auto-create
    # them (auto.create.topics.enable=true, aiokafka asks for it by default), which would
    # create them without their configs (e.g. the compacted KPI topic).
    wanted = set(names)
    return {t["topic"]: t for t in await admin.describe_topics() if t["topic"] in wanted}


def ready(meta: dict[str, Any] | None) -> bool:
    if not meta or meta.get("error_code", 0) != NO_ERROR or not meta.get("partitions"):
        return False
    return all(
        p.get("error_code", 0) == NO_ERROR and p.get("leader", -1) >= 0 for p in meta["partitions"]
    )


async def topic_configs(
    admin: AIOKafkaAdminClient, specs: list[TopicSpec]
) -> dict[str, dict[str, Any]]:
    """Current values of the requested config keys of each topic (best effort)."""
    wanted = [s for s in specs if s.configs]
    if not wanted:
        return {}
    resources = [
        ConfigResource(ConfigResourceType.TOPIC, s.name, configs=dict(s.configs)) for s in wanted
    ]
    result: dict[str, dict[str, Any]] = {}
    for response in await admin.describe_configs(resources):
        for res in response.to_object()["resources"]:
            result[res["resource_name"]] = {
                c["config_names"]: c["config_value"] for c in res["config_entries"]
            }
    return result


async def run(args: argparse.Namespace) -> None:
    specs: list[TopicSpec] = args.topics
    names = [s.name for s in specs]
    deadline = time.monotonic() + args.timeout
    admin = await connect(args.bootstrap, deadline)
    try:
        created: set[str] = set()
        while True:
            meta = await topic_metadata(admin, names)
            missing = [
                s
                for s in specs
                if s.name not in created and meta.get(s.name, {}).get("error_code", 3) == 3
            ]
            if not missing:
                break
            response = await admin.create_topics(
                [
                    NewTopic(
                        s.name, args.partitions, args.replication_factor, topic_configs=s.configs
                    )
                    for s in missing
                ],
                timeout_ms=15000,
            )
            retry = False
            for topic, code, *message in response.topic_errors:
                if code == NO_ERROR:
                    created.add(topic)
                elif code == TOPIC_ALREADY_EXISTS:
                    pass  # created concurrently (another kafkactl, or auto-create)
                elif code in RETRIABLE and time.monotonic() < deadline:
                    retry = True
                else:
                    detail = message[0] if message and message[0] else f"error code {code}"
                    raise RuntimeError(f"could not create topic {topic}: {detail}")
            if not retry:
                break
            await asyncio.sleep(0.5)

        # Wait until every topic has a leader on every partition.
        while True:
            meta = await topic_metadata(admin, names)
            if all(ready(meta.get(n)) for n in names):
                break
            if time.monotonic() >= deadline:
                bad = [n for n in names if not ready(meta.get(n))]
                raise RuntimeError(f"topics not ready in time: {', '.join(bad)}")
            await asyncio.sleep(0.2)

        configs = await topic_configs(admin, specs)
        for spec in specs:
            count = len(meta[spec.name]["partitions"])
            extra = "".join(f", {k}={v}" for k, v in spec.configs.items())
            state = "created" if spec.name in created else "exists"
            say(f"topic {spec.name}: {state} ({count} partitions{extra})")
            if count != args.partitions:
                say(
                    f"warning: {spec.name} has {count} partitions, wanted {args.partitions}"
                    " (existing topic left as it is; 'kafkactl reset' to start over)"
                )
            have = configs.get(spec.name, {})
            for key, value in spec.configs.items():
                if have.get(key) != value:
                    say(f"warning: {spec.name} has {key}={have.get(key)}, wanted {value}")
    finally:
        await admin.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    parser.add_argument("--bootstrap", default="127.0.0.1:9092", help="host:port[,...]")
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--replication-factor", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds, in total")
    parser.add_argument("topics", nargs="+", type=parse_spec, metavar="NAME[:k=v,...]")
    args = parser.parse_args(argv)
    if args.partitions < 1:
        parser.error("--partitions must be >= 1")
    # aiokafka logs every failed connection attempt while the broker is starting up.
    logging.basicConfig(level=logging.CRITICAL)
    try:
        asyncio.run(run(args))
    except Exception as exc:
        say(f"error: {exc}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
