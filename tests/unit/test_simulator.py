"""The traffic simulator: deterministic, realistic, and truthful about what it emits.

The contract checks below are written from SPEC section 2 and docs/semantics.md, not
imported from the product, so that the simulator and the decoder are checked against
the same text independently.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import math
import re
import statistics
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

import kpimon.sim as sim
from kpimon.sim import (
    SimConfig,
    SimRecord,
    Surge,
    generate,
    read_jsonl,
    write_jsonl,
)

START = 1763798400.0  # 2025-11-22T08:00:00Z: the morning ramp, busy enough for everything
HOUR = 3600.0
TICKETS, SURVEYS = "support.tickets", "support.surveys"
REASONS = {
    "invalid_json",
    "not_an_object",
    "too_large",
    "schema",
    "bad_timestamp",
    "future_timestamp",
    "unsupported_version",
    "key_mismatch",
    "wrong_topic",
}

# --- the contract, from SPEC section 2 -----------------------------------------------

TICKET_TYPES = {
    "ticket.created",
    "ticket.agent_replied",
    "ticket.handled",
    "ticket.abandoned",
    "ticket.resolved",
    "ticket.reopened",
}
CHANNELS = {"phone", "chat", "email", "messaging", "web", "social"}
PRIORITIES = {"low", "normal", "high", "urgent"}
QUEUE = re.compile(r"[A-Za-z0-9_.-]{1,64}")
RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d{1,6})?([Zz]|[+-]\d{2}:\d{2})")
SCALES = {"csat": {3, 5, 7, 10}, "nps": {10}, "ces": {7}}
DEFAULT_SCALE = {"csat": 5, "nps": 10, "ces": 7}


def is_int(v: Any) -> bool:
    return type(v) is int  # `true` is not 1


def is_number(v: Any) -> bool:
    return type(v) in (int, float) and math.isfinite(v)


def is_id(v: Any) -> bool:
    return isinstance(v, str) and 1 <= len(v) <= 128


def epoch(text: str) -> float:
    return datetime.fromisoformat(text.replace("z", "Z")).timestamp()


def violations(topic: str, key: bytes | None, value: bytes, now: float) -> tuple[set[str], Any]:
    """Every rule of SPEC 2 / semantics.md this message breaks, and its type."""
    broken: set[str] = set()
    if len(value) > 64 * 1024:
        broken.add("too_large")  # and go on: the rest must be fine for a clean label
    try:
        obj = json.loads(value.decode("utf-8"), parse_constant=lambda c: 1 / 0)
    except (UnicodeDecodeError, ValueError, ZeroDivisionError):
        return broken | {"invalid_json"}, None
    if not isinstance(obj, dict):
        return broken | {"not_an_object"}, None
    version = obj.get("schema_version")
    if not is_int(version):
        broken.add("schema")
    elif version != 1:
        broken.add("unsupported_version")
    if not is_id(obj.get("event_id")) or not isinstance(obj.get("type"), str):
        broken.add("schema")
    if not is_id(obj.get("ticket_id")):
        broken.add("schema")
    elif key is None or key != obj["ticket_id"].encode():
        broken.add("key_mismatch")
    stamp = obj.get("occurred_at")
    if not isinstance(stamp, str):
        broken.add("schema")
    elif not RFC3339.fullmatch(stamp):
        broken.add("bad_timestamp")
    else:
        try:
            moment = epoch(stamp)
        except ValueError:
            broken.add("bad_timestamp")
        else:
            if moment > now + 300:
                broken.add("future_timestamp")
    etype = obj.get("type")
    if etype in TICKET_TYPES:
        if topic != TICKETS:
            broken.add("wrong_topic")
        if not ticket_fields_ok(etype, obj):
            broken.add("schema")
    elif etype == "survey.responded":
        if topic != SURVEYS:
            broken.add("wrong_topic")
        if not survey_fields_ok(obj):
            broken.add("schema")
    return broken, etype


def optional(obj: dict[str, Any], name: str, ok: Any) -> bool:
    return name not in obj or obj[name] is None or bool(ok(obj[name]))


def ticket_fields_ok(etype: str, obj: dict[str, Any]) -> bool:
    agent_ok = optional(obj, "agent_id", is_id)
    if etype == "ticket.created":
        return (
            isinstance(obj.get("queue"), str)
            and bool(QUEUE.fullmatch(obj["queue"]))
            and obj.get("channel") in CHANNELS
            and optional(obj, "priority", lambda p: p in PRIORITIES)
            and optional(obj, "customer_id", lambda c: isinstance(c, str))
        )
    if etype == "ticket.handled":
        return agent_ok and all(
            is_number(obj.get(f)) and 0 <= obj[f] <= 86400
            for f in ("talk_seconds", "hold_seconds", "wrap_seconds")
        )
    return agent_ok


def survey_fields_ok(obj: dict[str, Any]) -> bool:
    metric: Any = obj.get("metric")
    score: Any = obj.get("score")
    if metric not in SCALES or not is_int(score):
        return False
    scale: Any = obj.get("scale_max", DEFAULT_SCALE[metric])
    if not is_int(scale) or scale not in SCALES[metric]:
        return False
    low = 0 if metric == "nps" else 1
    return (
        low <= score <= scale
        and optional(obj, "comment", lambda c: isinstance(c, str) and len(c) <= 4096)
        and optional(obj, "queue", lambda q: isinstance(q, str) and QUEUE.fullmatch(q))
        and optional(obj, "channel", lambda c: c in CHANNELS)
        and optional(obj, "agent_id", is_id)
    )


# --- fixtures --------------------------------------------------------------------------


def cfg(**kw: Any) -> SimConfig:
    base: dict[str, Any] = {"seed": 42, "start": START, "duration": 2 * HOUR}
    base |= kw
    base.setdefault("now", base["start"] + base["duration"])
    return SimConfig(**base)


NOISY = cfg(duplicates=0.05, bad=0.02, unknown_types=0.02, orphans=0.02)


@pytest.fixture(scope="module")
def noisy() -> list[SimRecord]:
    return list(generate(NOISY))


@pytest.fixture(scope="module")
def quiet() -> list[SimRecord]:
    return list(generate(cfg()))


def events(records: list[SimRecord], *kinds: str) -> Iterator[tuple[SimRecord, dict[str, Any]]]:
    for rec in records:
        if rec.kind in (kinds or ("valid",)):
            yield rec, json.loads(rec.value)


def by_ticket(records: list[SimRecord]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for _, ev in events(records):
        out[ev["ticket_id"]].append(ev)
    return out


# --- tests -----------------------------------------------------------------------------


def test_same_seed_gives_the_same_records(noisy: list[SimRecord]) -> None:
    assert list(generate(NOISY)) == noisy
    other = list(generate(cfg(seed=43, duplicates=0.05, bad=0.02, orphans=0.02)))
    assert other != noisy
    ids = {json.loads(r.value)["ticket_id"] for r in noisy if r.kind in ("valid", "orphan")}
    other_ids = {json.loads(r.value)["ticket_id"] for r in other if r.kind in ("valid", "orphan")}
    assert ids.isdisjoint(other_ids)


def test_every_record_is_what_its_label_says(noisy: list[SimRecord]) -> None:
    assert NOISY.now is not None
    kinds = Counter(r.kind for r in noisy)
    assert {"valid", "duplicate", "ignored", "orphan"} <= set(kinds)
    for rec in noisy:
        broken, etype = violations(rec.topic, rec.key, rec.value, NOISY.now)
        known = etype in TICKET_TYPES or etype == "survey.responded"
        if rec.kind in ("valid", "duplicate", "orphan"):
            assert not broken and known, (rec, broken)
        elif rec.kind == "ignored":
            assert not broken and not known, (rec, broken)
        else:
            assert rec.kind.startswith("bad:")
            assert broken == {rec.kind[4:]}, (rec, broken)


def test_valid_events_are_well_formed_and_unique(noisy: list[SimRecord]) -> None:
    end = START + 2 * HOUR
    seen: set[str] = set()
    for rec, ev in events(noisy):
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", ev["occurred_at"])
        assert START <= epoch(ev["occurred_at"]) <= end
        assert rec.topic == (SURVEYS if ev["type"] == "survey.responded" else TICKETS)
        assert ev["event_id"] not in seen
        seen.add(ev["event_id"])
        if ev["type"] == "ticket.created":
            assert ev["queue"] in sim.DEFAULT_QUEUES and ev["customer_id"]
        if "agent_id" in ev:
            assert re.fullmatch(r"agent-(billing|tech|sales|returns)-\d{2,}", ev["agent_id"])


def test_tickets_follow_a_plausible_lifecycle(quiet: list[SimRecord]) -> None:
    tickets = by_ticket(quiet)
    types = Counter(ev["type"] for evs in tickets.values() for ev in evs)
    assert types["ticket.created"] == len(tickets)  # no valid event without its ticket
    for name in TICKET_TYPES | {"survey.responded"}:
        assert types[name] > 0, name
    assert types["ticket.resolved"] > 0.5 * types["ticket.created"]
    assert types["ticket.handled"] > types["ticket.created"] * 0.8  # second touches exist
    assert types["ticket.reopened"] < 0.1 * types["ticket.resolved"]
    aht: dict[str, list[float]] = defaultdict(list)
    for evs in tickets.values():
        evs.sort(key=lambda e: epoch(e["occurred_at"]))
        created = evs[0]
        assert created["type"] == "ticket.created"
        assert sum(e["type"] == "ticket.created" for e in evs) == 1
        kinds = [e["type"] for e in evs]
        if "ticket.reopened" in kinds:
            assert "ticket.resolved" in kinds[: kinds.index("ticket.reopened")]
        if "survey.responded" in kinds:
            assert "ticket.resolved" in kinds[: kinds.index("survey.responded")]
        for e in evs:
            if e["type"] == "ticket.handled":
                aht[created["channel"]].append(
                    e["talk_seconds"] + e["hold_seconds"] + e["wrap_seconds"]
                )
    # Calls take minutes; an e-mail reply is written faster.
    assert 180 < statistics.median(aht["phone"]) < 900
    assert statistics.median(aht["email"]) < statistics.median(aht["phone"])


def test_abandonment_only_on_live_channels(quiet: list[SimRecord]) -> None:
    abandoned: Counter[str] = Counter()
    for evs in by_ticket(quiet).values():
        kinds = [e["type"] for e in evs]
        if "ticket.abandoned" in kinds:
            abandoned[next(e["channel"] for e in evs if e["type"] == "ticket.created")] += 1
            assert kinds.count("ticket.abandoned") == 1
            assert "ticket.agent_replied" not in kinds  # gone before anyone answered
    assert abandoned and set(abandoned) <= {"phone", "chat", "messaging"}


def test_every_dead_letter_reason_appears_even_in_a_short_run() -> None:
    records = list(generate(cfg(duration=HOUR / 2, bad=0.001)))
    reasons = {r.kind[4:] for r in records if r.kind.startswith("bad:")}
    assert reasons == REASONS
    bad_utf8 = [r for r in records if r.kind == "bad:invalid_json" and not is_utf8(r.value)]
    assert bad_utf8, "an invalid UTF-8 message is expected too"
    assert all(len(r.value) > 64 * 1024 for r in records if r.kind == "bad:too_large")
    assert sum(r.kind.startswith("bad:") for r in records) < 0.01 * len(records) + 12


def is_utf8(value: bytes) -> bool:
    try:
        value.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def test_noise_fractions_are_as_asked(noisy: list[SimRecord]) -> None:
    kinds = Counter(r.kind for r in noisy)
    bad = sum(n for k, n in kinds.items() if k.startswith("bad:"))
    # Counts follow the fractions closely (plus one of each reason at the start).
    assert abs(bad - 0.02 * kinds["valid"]) <= 3 + len(REASONS) + 1
    assert abs(kinds["ignored"] - 0.02 * kinds["valid"]) <= 3
    assert abs(kinds["duplicate"] - 0.05 * kinds["valid"]) <= 3


def test_disorder_is_bounded(noisy: list[SimRecord]) -> None:
    latest: dict[str, float] = {}
    watermark = -math.inf
    for rec, ev in events(noisy, "valid", "duplicate", "ignored", "orphan"):
        t = epoch(ev["occurred_at"])
        assert t <= rec.at <= t + 60 + 1e-6
        # Within a ticket, never more than `disorder` out of event-time order ...
        assert latest.get(ev["ticket_id"], -math.inf) - t <= 60 + 1e-6
        latest[ev["ticket_id"]] = max(latest.get(ev["ticket_id"], t), t)
        # ... and never later than that behind everything seen so far (the watermark).
        assert watermark - t <= 60 + 1e-6
        watermark = max(watermark, t)
    ats = [r.at for r in noisy]
    assert ats == sorted(ats)
    inversions = sum(
        1 for a, b in itertools.pairwise(events(noisy)) if b[1]["occurred_at"] < a[1]["occurred_at"]
    )
    assert inversions > 0  # the jitter is really there


def test_no_disorder_keeps_event_time_order() -> None:
    records = list(generate(cfg(duration=HOUR / 2, disorder=0.0, duplicates=0.05)))
    stamps = [json.loads(r.value)["occurred_at"] for r in records]
    assert stamps == sorted(stamps)


def test_duplicates_are_late_exact_copies() -> None:
    records = list(generate(cfg(duplicates=0.1)))
    kinds = Counter(r.kind for r in records)
    assert abs(kinds["duplicate"] - 0.1 * kinds["valid"]) <= 3
    seen: set[tuple[str, bytes | None, bytes]] = set()
    for rec in records:
        ident = (rec.topic, rec.key, rec.value)
        if rec.kind == "duplicate":
            assert ident in seen  # the original went first
        else:
            assert ident not in seen
            seen.add(ident)


def test_noise_never_changes_the_traffic(noisy: list[SimRecord], quiet: list[SimRecord]) -> None:
    def valid(records: list[SimRecord]) -> Counter[tuple[str, bytes | None, bytes]]:
        return Counter((r.topic, r.key, r.value) for r in records if r.kind == "valid")

    assert valid(noisy) == valid(quiet)


def test_surge_raises_arrivals_and_waits() -> None:
    surge = Surge("billing", HOUR / 2, HOUR / 2, 3.0)
    base = first_waits(list(generate(cfg(seed=5))))
    surged = first_waits(list(generate(cfg(seed=5, surge=surge))))
    window = (START + HOUR / 2, START + HOUR)

    def in_window(stats: list[tuple[str, float, float]], queue: str) -> list[float]:
        return [w for q, t, w in stats if q == queue and window[0] <= t < window[1]]

    assert len(in_window(surged, "billing")) > 2 * len(in_window(base, "billing"))
    assert statistics.mean(in_window(surged, "billing")) > 3 * statistics.mean(
        in_window(base, "billing")
    )
    # Other queues keep their traffic and service.
    assert len(in_window(surged, "tech")) == pytest.approx(len(in_window(base, "tech")), rel=0.2)


def first_waits(records: list[SimRecord]) -> list[tuple[str, float, float]]:
    """(queue, created_at, wait until the first reply or abandonment) per ticket."""
    out = []
    for evs in by_ticket(records).values():
        created = next(e for e in evs if e["type"] == "ticket.created")
        t0 = epoch(created["occurred_at"])
        ends = [
            epoch(e["occurred_at"])
            for e in evs
            if e["type"] in ("ticket.agent_replied", "ticket.abandoned")
        ]
        if ends:
            out.append((created["queue"], t0, min(ends) - t0))
    return out


def test_orphans_settle_before_the_end(noisy: list[SimRecord]) -> None:
    created = {ev["ticket_id"] for _, ev in events(noisy) if ev["type"] == "ticket.created"}
    orphans = [ev for _, ev in events(noisy, "orphan")]
    assert orphans
    for ev in orphans:
        assert epoch(ev["occurred_at"]) < START + 2 * HOUR - 20 * 60
        assert ev["ticket_id"] not in created
    surveys = [ev for ev in orphans if ev["type"] == "survey.responded"]
    assert any("queue" in ev for ev in surveys) and any("queue" not in ev for ev in surveys)
    assert any(ev["type"] in TICKET_TYPES for ev in orphans)


def test_surveys_reflect_the_service() -> None:
    records = list(generate(cfg(duration=6 * HOUR)))
    tickets = by_ticket(records)
    happy: list[float] = []
    unhappy: list[float] = []
    for evs in tickets.values():
        reopened = any(e["type"] == "ticket.reopened" for e in evs)
        for e in evs:
            if e["type"] == "survey.responded" and e["metric"] == "csat":
                scale = e.get("scale_max", 5)
                (unhappy if reopened else happy).append((e["score"] - 1) / (scale - 1))
    assert happy and unhappy
    assert statistics.mean(unhappy) < statistics.mean(happy) - 0.2
    scales = Counter(
        e.get("scale_max", 5)
        for evs in tickets.values()
        for e in evs
        if e["type"] == "survey.responded" and e["metric"] == "csat"
    )
    assert scales.most_common(1)[0][0] == 5 and len(scales) >= 3
    assert any("comment" in e for evs in tickets.values() for e in evs)


def test_jsonl_round_trip(tmp_path: Path, noisy: list[SimRecord]) -> None:
    path = tmp_path / "run.jsonl"
    assert write_jsonl(noisy, path) == len(noisy)
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert all(("value" in line) != ("value_b64" in line) for line in lines)
    assert any("value_b64" in line for line in lines)  # the invalid UTF-8 ones
    assert any(line["key"] is None for line in lines)
    back = list(read_jsonl(path))
    assert [(r.topic, r.key, r.value, r.kind) for r in back] == [
        (r.topic, r.key, r.value, r.kind) for r in noisy
    ]
    assert all(abs(a.at - b.at) < 1e-5 for a, b in zip(back, noisy, strict=True))


def test_fast_mode_never_reaches_the_future() -> None:
    before = time.time()
    records = list(generate(SimConfig(seed=9, duration=1800, bad=0.01)))
    after = time.time()
    stamps = [epoch(ev["occurred_at"]) for _, ev in events(records, "valid", "duplicate")]
    assert stamps and max(stamps) <= after
    assert min(stamps) >= before - 1800 - 1
    future = [ev for _, ev in events(records, "bad:future_timestamp")]
    assert future and all(epoch(ev["occurred_at"]) > after + 3600 for ev in future)


def test_volume_of_six_hours_at_rate_20() -> None:
    # 09:00-15:00 UTC: morning peak, lunch dip, afternoon peak (see the module docstring).
    start = START + HOUR
    n = sum(1 for _ in generate(SimConfig(seed=1, start=start, duration=6 * HOUR, now=start)))
    assert 20_000 <= n <= 40_000


def test_unbounded_run_is_lazy() -> None:
    now = time.time()
    began = time.monotonic()
    records = list(itertools.islice(generate(SimConfig(seed=2, duration=0, rate=50)), 500))
    assert time.monotonic() - began < 5
    assert len(records) == 500
    assert now - 1 <= records[0].at <= now + 3600


@pytest.mark.parametrize(
    "argv",
    [
        ["--disorder", "120"],
        ["--rate", "0"],
        ["--bad", "1.5"],
        ["--duplicates", "x"],
        ["--surge", "billing:10:20"],
        ["--surge", "billing:10:0:2"],
        ["--start", "2026-01-01T00:00:00"],
        ["--start", "yesterday"],
        ["--start", "nan"],
        ["--seed", "-1"],
        ["--queues", "billing desk"],
    ],
)
def test_cli_rejects_bad_options(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser(prog="kpimon simulate")
    sim.add_arguments(parser)
    with pytest.raises(SystemExit) as exc:
        parser.parse_args(argv)
    assert exc.value.code == 2
    assert "error" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv",
    [
        ["--duration", "0"],
        ["--surge", "nosuch:0:60:2"],
        ["--realtime", "--out", "x.jsonl"],
        ["--realtime", "--start", "1700000000"],
        ["--backfill", "60"],
    ],
)
def test_cli_rejects_bad_combinations(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert sim.main([*argv, "--seed", "1"]) == 2
    assert "error" in capsys.readouterr().err


def test_cli_writes_jsonl(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "sim.jsonl"
    argv = ["--seed", "3", "--start", "2025-11-22T08:00:00Z", "--duration", "900"]
    assert sim.main([*argv, "--out", str(out), "--bad", "0.01"]) == 0
    records = list(read_jsonl(out))
    assert records and {r.kind for r in records} >= {"valid", "bad:schema"}
    assert "wrote" in capsys.readouterr().err
    again = tmp_path / "again.jsonl"
    assert sim.main([*argv, "--out", str(again), "--bad", "0.01", "--quiet"]) == 0

    def stable(path: Path) -> list[SimRecord]:  # future timestamps follow the wall-clock
        return [r for r in read_jsonl(path) if r.kind != "bad:future_timestamp"]

    assert stable(again) == stable(out)


# --- produce, against a stand-in producer (no broker in unit tests) ---------------------


class FakeProducer:
    instances: list[FakeProducer] = []
    fail_after: int | None = None

    def __init__(self, **config: Any) -> None:
        self.config = config
        self.sent: list[tuple[str, bytes | None, bytes, float]] = []
        self.started = self.stopped = False
        FakeProducer.instances.append(self)

    async def start(self) -> None:
        self.started = True

    async def stop(self) -> None:
        self.stopped = True

    async def send(self, topic: str, value: bytes, key: bytes | None = None) -> asyncio.Future[Any]:
        if self.fail_after is not None and len(self.sent) >= self.fail_after:
            raise KeyboardInterrupt
        self.sent.append((topic, key, value, time.time()))
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        fut.set_result(None)
        return fut


@pytest.fixture
def fake_kafka(monkeypatch: pytest.MonkeyPatch) -> type[FakeProducer]:
    import aiokafka

    FakeProducer.instances = []
    FakeProducer.fail_after = None
    monkeypatch.setattr(aiokafka, "AIOKafkaProducer", FakeProducer)
    return FakeProducer


def test_produce_sends_everything_in_order(
    fake_kafka: type[FakeProducer], quiet: list[SimRecord]
) -> None:
    assert asyncio.run(sim.produce(quiet, "broker:9092", realtime=False, progress=False)) == len(
        quiet
    )
    (producer,) = fake_kafka.instances
    assert producer.config["acks"] == "all" and producer.config["enable_idempotence"] is True
    assert producer.config["bootstrap_servers"] == "broker:9092"
    assert producer.started and producer.stopped
    assert [s[:3] for s in producer.sent] == [(r.topic, r.key, r.value) for r in quiet]


def test_produce_in_realtime_waits_for_each_arrival(fake_kafka: type[FakeProducer]) -> None:
    now = time.time()
    records = [SimRecord(TICKETS, b"k", b"{}", "valid", now + d) for d in (-10, 0.2, 0.4)]
    assert asyncio.run(sim.produce(records, "b", realtime=True, progress=False)) == 3
    sent_at = [s[3] for s in fake_kafka.instances[0].sent]
    assert sent_at[0] < now + 0.1  # backfill: at once
    assert sent_at[1] >= now + 0.19 and sent_at[2] >= now + 0.39  # timers may fire a hair early


def test_unbounded_demo_stops_cleanly_on_ctrl_c(
    fake_kafka: type[FakeProducer], capsys: pytest.CaptureFixture[str]
) -> None:
    fake_kafka.fail_after = 50
    argv = ["--realtime", "--duration", "0", "--backfill", "1800", "--rate", "300", "--seed", "4"]
    assert sim.main(argv) == 0
    assert fake_kafka.instances[0].stopped
    err = capsys.readouterr().err
    assert "interrupted; sent 50 messages" in err
