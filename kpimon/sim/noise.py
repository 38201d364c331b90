"""The noise layer (what real pipes add) and the arrival-ordered record stream."""

from __future__ import annotations

import heapq
import itertools
import math
import random
import time
from collections.abc import Iterator
from typing import Any

import orjson

from kpimon.sim.config import (
    CHANNELS,
    DEAD_LETTER_REASONS,
    MAX_VALUE_BYTES,
    ORPHAN_SETTLE,
    SimConfig,
    SimRecord,
    format_ms,
)
from kpimon.sim.model import Model, Msg

_UNKNOWN_TYPES = (
    ("ticket.note_added", False),
    ("ticket.tagged", False),
    ("ticket.assigned", False),
    ("survey.sent", True),
)


class _Share:
    """Picks `fraction` of the items offered, at random places but never off by more
    than a couple in total, so that a test can rely on the fraction asked for."""

    def __init__(self, fraction: float, rng: random.Random) -> None:
        self.fraction = fraction
        self.rng = rng
        self.credit = fraction

    def take(self) -> bool:
        if not self.fraction:
            return False
        # The credit grows by the fraction per item and is spent on a pick; picking with
        # probability = credit keeps it near the fraction, so the count stays within
        # about one of fraction * items.
        self.credit += self.fraction
        if self.credit >= self.rng.random():
            self.credit -= 1
            return True
        return False


class Noise:
    """Turns each valid event into its records: itself plus any noise it triggers."""

    def __init__(self, cfg: SimConfig, end: float, now: float) -> None:
        self.cfg = cfg
        self.end = end
        self.now = now
        # Own generators, so that noise knobs never change the traffic itself.
        self.rng = random.Random(f"kpimon-sim-noise-{cfg.seed}")
        self.jitter = random.Random(f"kpimon-sim-jitter-{cfg.seed}")
        self.ids = itertools.count(1)
        self.orphan_ids = itertools.count(1)
        self.share_dup = _Share(cfg.duplicates, self.rng)
        self.share_unknown = _Share(cfg.unknown_types, self.rng)
        self.share_orphan = _Share(cfg.orphans, self.rng)
        self.share_bad = _Share(cfg.bad, self.rng)
        self.reasons: list[str] = []
        self.forced = 0
        self.last_ticket = f"T{cfg.seed}-000000"

    def _event_id(self) -> str:
        return f"e{self.cfg.seed}-n{next(self.ids)}"

    def expand(self, msg: Msg) -> Iterator[SimRecord]:
        cfg, rng = self.cfg, self.rng
        t = msg.ms / 1000
        key = msg.ticket_id.encode()
        value = orjson.dumps(msg.event)
        at = t + self.jitter.uniform(0, cfg.disorder)
        yield SimRecord(msg.topic, key, value, "valid", at)
        if self.share_dup.take():
            # A redelivery: the same bytes again, a little later but within the jitter
            # bound, so it is never later than any other message may be.
            yield SimRecord(msg.topic, key, value, "duplicate", rng.uniform(at, t + cfg.disorder))
        if self.share_unknown.take():
            yield self._unknown(msg)
        if t < self.end - ORPHAN_SETTLE and self.share_orphan.take():
            yield self._orphan(msg)
        # The first messages carry one of every reason, so even a short run has them all.
        forced = cfg.bad > 0 and self.forced <= len(DEAD_LETTER_REASONS)
        if self.share_bad.take() or forced:
            self.forced += 1
            yield self._bad(msg)
        self.last_ticket = msg.ticket_id

    def _arrival(self, msg: Msg) -> float:
        return msg.ms / 1000 + self.jitter.uniform(0, self.cfg.disorder)

    def _unknown(self, msg: Msg) -> SimRecord:
        etype, on_surveys = self.rng.choice(_UNKNOWN_TYPES)
        event = {
            "schema_version": 1,
            "event_id": self._event_id(),
            "type": etype,
            "occurred_at": msg.event["occurred_at"],
            "ticket_id": msg.ticket_id,
            "note": "forward-compatible extra event",
        }
        topic = self.cfg.surveys_topic if on_surveys else self.cfg.tickets_topic
        return SimRecord(
            topic, msg.ticket_id.encode(), orjson.dumps(event), "ignored", self._arrival(msg)
        )

    def _orphan(self, msg: Msg) -> SimRecord:
        rng, cfg = self.rng, self.cfg
        tk_id = f"T{cfg.seed}-X{next(self.orphan_ids):05d}"
        event: dict[str, Any] = {
            "schema_version": 1,
            "event_id": self._event_id(),
            "type": "",
            "occurred_at": msg.event["occurred_at"],
            "ticket_id": tk_id,
        }
        if rng.random() < 0.5:
            event["type"] = "survey.responded"
            event["metric"] = "csat"
            event["score"] = rng.randint(1, 5)
            if rng.random() < 0.5:  # its own queue/channel, for attribution (SPEC 3)
                event["queue"] = rng.choice(cfg.queues)
                event["channel"] = rng.choice(CHANNELS)
            topic = cfg.surveys_topic
        else:
            etype = rng.choice(
                ("ticket.agent_replied", "ticket.handled", "ticket.resolved", "ticket.abandoned")
            )
            event["type"] = etype
            if etype == "ticket.handled":
                event.update(talk_seconds=180, hold_seconds=0, wrap_seconds=30)
            topic = cfg.tickets_topic
        return SimRecord(topic, tk_id.encode(), orjson.dumps(event), "orphan", self._arrival(msg))

    def _bad(self, msg: Msg) -> SimRecord:
        rng, cfg = self.rng, self.cfg
        if not self.reasons:
            # Shuffled rounds over every reason (and invalid UTF-8, a flavour of
            # invalid_json) keep all of them present in proportion.
            self.reasons = [*DEAD_LETTER_REASONS, "invalid_utf8"]
            rng.shuffle(self.reasons)
        reason = self.reasons.pop()
        key: bytes | None = msg.ticket_id.encode()
        topic = msg.topic
        # Each malformed message breaks exactly one rule, so its reason is unambiguous.
        event = {**msg.event, "event_id": self._event_id()}
        value: bytes
        if reason == "invalid_json":
            good = orjson.dumps(event)
            value = rng.choice(
                (good[: len(good) // 2], b"not json at all", good.replace(b'"', b"'"), good + b"}")
            )
        elif reason == "invalid_utf8":
            reason = "invalid_json"
            value = orjson.dumps(event)[:-1] + b',"note":"caf\xe9 cr\xe8me"}'  # Latin-1 bytes
        elif reason == "not_an_object":
            value = rng.choice((orjson.dumps([event]), b'"ticket"', b"42", b"null"))
        elif reason == "too_large":
            event["attachment"] = "x" * (MAX_VALUE_BYTES + 1024)  # unknown field, just big
            value = orjson.dumps(event)
        elif reason == "schema":
            topic, event = self._schema_violation(msg, event)
            value = orjson.dumps(event)
        elif reason == "bad_timestamp":
            stamp = msg.event["occurred_at"]
            event["occurred_at"] = rng.choice(
                (stamp[:-1], stamp[:-1] + "1234Z", "yesterday", stamp.replace("T", " ")[:-1])
            )
            value = orjson.dumps(event)
        elif reason == "future_timestamp":
            ahead = max(self.now, msg.ms / 1000) + 86400
            event["occurred_at"] = format_ms(math.floor(ahead * 1000))
            value = orjson.dumps(event)
        elif reason == "unsupported_version":
            event["schema_version"] = 2
            value = orjson.dumps(event)
        elif reason == "key_mismatch":
            other = self.last_ticket if self.last_ticket != msg.ticket_id else "T0-unrelated"
            key = rng.choice((None, other.encode()))
            value = orjson.dumps(event)
        else:  # wrong_topic: a known type on the other topic
            topic = cfg.surveys_topic if topic == cfg.tickets_topic else cfg.tickets_topic
            value = orjson.dumps(event)
        return SimRecord(topic, key, value, f"bad:{reason}", self._arrival(msg))

    def _schema_violation(self, msg: Msg, event: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        rng, cfg = self.rng, self.cfg
        base = {k: event[k] for k in ("schema_version", "event_id", "occurred_at", "ticket_id")}
        created = {**base, "type": "ticket.created", "queue": cfg.queues[0], "channel": "phone"}
        survey = {**base, "type": "survey.responded", "metric": "csat", "score": 4}
        handled = {
            **base,
            "type": "ticket.handled",
            "talk_seconds": 120,
            "hold_seconds": 0,
            "wrap_seconds": 30,
        }
        choice = rng.randrange(9)
        if choice == 0:
            del created["queue"]  # a missing field
        elif choice == 1:
            survey["score"] = 6  # out of range on the default 1..5 scale
        elif choice == 2:
            survey["score"] = True  # a bool where an integer belongs
        elif choice == 3:
            created["channel"] = "fax"
        elif choice == 4:
            handled["talk_seconds"] = -5
        elif choice == 5:
            survey["scale_max"] = 4
        elif choice == 6:
            created["queue"] = "billing desk"  # a space is not allowed
        elif choice == 7:
            created["schema_version"] = "1"  # a string where the integer 1 belongs
        else:
            del created["event_id"]
        if choice in (1, 2, 5):
            return cfg.surveys_topic, survey
        return cfg.tickets_topic, handled if choice == 4 else created


def generate(cfg: SimConfig) -> Iterator[SimRecord]:
    """Yield the run's records in arrival order, lazily (also for an unbounded run)."""
    cfg.check()
    now = time.time() if cfg.now is None else cfg.now
    start = now - cfg.duration if cfg.start is None else cfg.start
    end = start + cfg.duration if cfg.duration > 0 else math.inf
    noise = Noise(cfg, end, now)
    pending: list[tuple[float, int, SimRecord]] = []
    seq = itertools.count()
    for msg in Model(cfg, start, end).run():
        for rec in noise.expand(msg):
            heapq.heappush(pending, (rec.at, next(seq), rec))
        # Every later event occurs at or after this one and arrives no earlier than it
        # occurs, so whatever arrives by now is final in arrival order.
        t = msg.ms / 1000
        while pending and pending[0][0] <= t:
            yield heapq.heappop(pending)[2]
    while pending:
        yield heapq.heappop(pending)[2]
