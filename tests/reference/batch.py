"""Batch reference computation of SPEC sections 2, 3 and 5.

An independent, whole-input implementation used to check the streaming engine.
It reads only ``shared/SPEC.md`` and ``docs/semantics.md``; it favours clarity over speed.

Pipeline: classify/validate every raw message, deduplicate in arrival order, group the
valid events by ticket, compute per-ticket facts, then add contributions to 60 s buckets.

Simplifications (sound for the test data, which is compared only well before the end of
the stream):

* Without ``watermarks`` the input has fully drained and the watermark is far past
  everything relevant, so every SLA deadline counts as reached: a ticket that is not
  excluded and has no reply at or before its deadline is breached (bucket of the deadline).
  With ``partitions`` and ``watermarks`` (the per-partition watermarks at the end of the
  stream) the result is exact at the end instead: a ticket lives on the partition Kafka's
  default partitioner picks for its key (murmur2 of the UTF-8 ``ticket_id``, positive,
  modulo the partition count), it is breached only once that partition's watermark has
  reached its deadline, and the live gauges of SPEC section 6 (``BatchResult.live``,
  ``BatchResult.oldest_waiting``) are computed against that watermark.
* A ticket event (other than ``ticket.created``) whose ticket has no ``ticket.created``
  anywhere in the input is ``orphaned``; if the ticket is created anywhere in the input
  the event is ``processed`` (the orphan timeout is never hit by the test data).
* A survey whose ticket has no ``ticket.created`` anywhere is attributed to its own
  ``queue``/``channel``, each ``unknown`` when absent.
* Hence ``BatchConfig.orphan_timeout`` is carried for parity but not used.

Decisions where neither the SPEC nor semantics.md is explicit:

* Check order (first failing check wins): ``too_large`` -> ``invalid_json`` (bytes not
  UTF-8, text not JSON, including the non-standard literals ``NaN``/``Infinity``) ->
  ``not_an_object`` -> ``schema_version`` (``unsupported_version`` if an integer other
  than 1, ``schema`` if missing or not an integer; checked first because another
  version may have another layout) -> ``schema`` for the other common fields
  (``event_id``, ``ticket_id``, ``type``, ``occurred_at`` present and a string) ->
  ``bad_timestamp`` -> ``future_timestamp`` -> ``key_mismatch`` -> unknown type
  (``ignored``) -> ``wrong_topic`` -> ``schema`` for the type-specific fields.
  So the "valid envelope" that makes an unknown type ``ignored`` includes a good
  timestamp, no future timestamp and a matching key.
* JSON ``null`` in an optional field means the same as leaving it out (docs/semantics.md);
  in a required field it is a ``schema`` violation.
* The JSON parser is the standard library's, so a number too large for a float
  (``1e999``) parses as infinity and is a ``schema`` violation where a number is expected;
  huge integers parse and then fail their range check.
* RFC 3339: ``T``/``t`` separator and ``Z``/``z`` are accepted (RFC 3339 5.6 note);
  a space separator, a missing offset, more than 6 fractional digits, an out-of-range
  field and the leap second ``:60`` (POSIX time cannot represent it) are
  ``bad_timestamp``. ``-00:00`` is UTC.
* ``future_timestamp`` means strictly more than ``max_clock_skew`` ahead of ``now``.
* Deduplication uses one set of ``(ticket_id, event_id)`` per ticket across both input
  topics. Only valid events of known types enter it; dead-lettered and ignored messages
  do not. The first copy to arrive wins.
* An ``sla_targets`` mapping that lacks a cell falls back to the SPEC default for it.
* CSAT satisfied is ``score >= scale_max - 1`` except on the 3-point scale, where the
  SPEC's own example says only ``score = 3`` is satisfied (2 of 3 is not "satisfied").
* ``ces_score_sum`` is a sum, so like the other sums it is a float.
* Times are kept as integer microseconds so that boundary comparisons are exact. A
  watermark (float epoch seconds) is rounded to the nearest microsecond, the precision of
  the event times it comes from.
* Live gauges (SPEC section 6), per created ticket with facts from all its events and W
  the watermark of its partition: *open* = no ``ticket.abandoned`` and either no
  ``ticket.resolved`` or its latest ``ticket.reopened`` strictly later than its latest
  ``ticket.resolved``; *waiting* = open with no ``ticket.agent_replied`` at all;
  *at_risk* = waiting and ``deadline - at_risk_fraction * target <= W < deadline``;
  ``oldest_waiting[(queue, channel)]`` = max over its waiting tickets of ``W - created_at``.
  Orphans (never created) are never live. Zero gauge counts are left out.
* Rolling windows (``rolling``): the sum of the buckets whose start is in
  ``(end_bucket - length_seconds, end_bucket]``.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date
from fractions import Fraction
from types import MappingProxyType
from typing import Any

from aiokafka.partitioner import murmur2

US_PER_S = 1_000_000

TICKET_TYPES = frozenset(
    {
        "ticket.created",
        "ticket.agent_replied",
        "ticket.handled",
        "ticket.abandoned",
        "ticket.resolved",
        "ticket.reopened",
    }
)
SURVEY_TYPE = "survey.responded"
CHANNELS = frozenset({"phone", "chat", "email", "messaging", "web", "social"})
PRIORITIES = frozenset({"low", "normal", "high", "urgent"})
CSAT_SCALES = frozenset({3, 5, 7, 10})
QUEUE_RE = re.compile(r"[A-Za-z0-9_.-]{1,64}", re.ASCII)

HIST_BOUNDS: tuple[float, ...] = (
    15, 30, 60, 120, 300, 600, 1800, 3600, 7200, 14400, 28800, 86400, math.inf,
)
HIST_KEYS: tuple[str, ...] = tuple("+Inf" if math.isinf(b) else str(int(b)) for b in HIST_BOUNDS)

COUNT_FIELDS: tuple[str, ...] = (
    "tickets_created",
    "tickets_resolved",
    "tickets_abandoned",
    "tickets_reopened",
    "frt_count",
    "aht_count",
    "sla_met",
    "sla_breached",
    "fcr_resolved",
    "fcr_first_contact",
    "csat_responses",
    "csat_satisfied",
    "nps_responses",
    "nps_promoters",
    "nps_detractors",
    "ces_responses",
)
SUM_FIELDS: tuple[str, ...] = ("frt_sum_seconds", "aht_sum_seconds", "ces_score_sum")
HIST_FIELDS: tuple[str, ...] = ("frt_hist", "aht_hist")


def _default_sla_targets() -> dict[tuple[str, str], float]:
    """The first-response target matrix of SPEC section 3, keyed (channel, priority)."""
    by_channel: dict[str, tuple[float, float, float, float]] = {
        # urgent, high, normal, low
        "phone": (20, 20, 20, 20),
        "chat": (60, 60, 60, 60),
        "messaging": (300, 600, 900, 1800),
        "email": (3600, 14400, 28800, 86400),
        "web": (3600, 14400, 28800, 86400),
        "social": (3600, 14400, 28800, 86400),
    }
    targets: dict[tuple[str, str], float] = {}
    for channel, row in by_channel.items():
        for priority, seconds in zip(("urgent", "high", "normal", "low"), row, strict=True):
            targets[(channel, priority)] = float(seconds)
    return targets


DEFAULT_SLA_TARGETS: Mapping[tuple[str, str], float] = MappingProxyType(_default_sla_targets())


@dataclass(frozen=True)
class BatchConfig:
    """Knobs of the computation, defaults as in the SPEC."""

    tickets_topic: str = "support.tickets"
    surveys_topic: str = "support.surveys"
    max_clock_skew: float = 300.0
    orphan_timeout: float = 600.0
    fcr_window: float = 7 * 86400.0
    sla_targets: Mapping[tuple[str, str], float] = field(
        default_factory=lambda: DEFAULT_SLA_TARGETS
    )
    max_message_bytes: int = 64 * 1024
    at_risk_fraction: float = 0.25


LIVE_GAUGES: tuple[str, ...] = ("open", "waiting", "at_risk")


@dataclass
class BatchResult:
    """Windows keyed (queue, channel, window_start), outcome and dead-letter counts.

    ``live`` (keyed (queue, channel, priority, gauge), gauge one of ``LIVE_GAUGES``, zero
    counts left out) and ``oldest_waiting`` (seconds, keyed (queue, channel)) are filled
    only when ``compute`` is given ``watermarks``.
    """

    windows: dict[tuple[str, str, int], dict[str, Any]]
    outcomes: Counter[tuple[str, str]]
    dead_letter_reasons: Counter[str]
    live: dict[tuple[str, str, str, str], int] = field(default_factory=dict)
    oldest_waiting: dict[tuple[str, str], float] = field(default_factory=dict)


@dataclass(frozen=True)
class Event:
    """A valid event of a known type, with its type-specific fields normalised."""

    topic: str
    type: str
    event_id: str
    ticket_id: str
    at_us: int
    queue: str | None = None
    channel: str | None = None
    priority: str | None = None
    handled_seconds: float | None = None
    metric: str | None = None
    score: int | None = None
    scale_max: int | None = None


class Rejected(Exception):
    """A message that is dead-lettered (reason) or ignored (reason ``ignored``)."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


# ---------------------------------------------------------------------------
# Step 1: classification and validation


def _is_int(value: Any) -> bool:
    # bool is a subclass of int, but `true` is not the integer 1.
    return type(value) is int


def _is_number(value: Any) -> bool:
    return _is_int(value) or (type(value) is float and math.isfinite(value))


def _require_str(obj: Mapping[str, Any], name: str, *, max_len: int | None = None) -> str:
    if name not in obj:
        raise Rejected("schema", f"missing field {name!r}")
    value = obj[name]
    if type(value) is not str:
        raise Rejected("schema", f"{name!r} must be a string")
    if max_len is not None and not 1 <= len(value) <= max_len:
        raise Rejected("schema", f"{name!r} must be 1-{max_len} characters")
    return value


def _optional_str(obj: Mapping[str, Any], name: str) -> str | None:
    if obj.get(name) is None:
        return None
    value = obj[name]
    if type(value) is not str:
        raise Rejected("schema", f"{name!r} must be a string")
    return value


def _check_queue(value: str) -> str:
    if QUEUE_RE.fullmatch(value) is None:
        raise Rejected("schema", "'queue' must be 1-64 characters of [A-Za-z0-9_.-]")
    return value


def _check_channel(value: str) -> str:
    if value not in CHANNELS:
        raise Rejected("schema", f"unknown channel {value!r}")
    return value


_RFC3339_RE = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?"
    r"(?:[Zz]|([+-])(\d{2}):(\d{2}))",
    re.ASCII,
)
_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()


def parse_rfc3339_us(text: str) -> int:
    """RFC 3339 with offset and at most microsecond precision -> epoch microseconds."""
    m = _RFC3339_RE.fullmatch(text)
    if m is None:
        raise Rejected("bad_timestamp", f"not RFC 3339 with an offset: {text!r}")
    year, month, day, hour, minute, second = (int(g) for g in m.group(1, 2, 3, 4, 5, 6))
    fraction, sign, off_h, off_m = m.group(7, 8, 9, 10)
    if fraction is not None and len(fraction) > 6:
        raise Rejected("bad_timestamp", f"finer than microseconds: {text!r}")
    try:
        day_ordinal = date(year, month, day).toordinal()
    except ValueError:
        raise Rejected("bad_timestamp", f"no such date: {text!r}") from None
    if hour > 23 or minute > 59 or second > 59:
        raise Rejected("bad_timestamp", f"time of day out of range: {text!r}")
    offset = 0
    if sign is not None:
        if int(off_h) > 23 or int(off_m) > 59:
            raise Rejected("bad_timestamp", f"offset out of range: {text!r}")
        offset = (int(off_h) * 3600 + int(off_m) * 60) * (1 if sign == "+" else -1)
    seconds = (day_ordinal - _EPOCH_ORDINAL) * 86400 + hour * 3600 + minute * 60 + second
    micros = int(fraction.ljust(6, "0")) if fraction is not None else 0
    return (seconds - offset) * US_PER_S + micros


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _parse_object(value: bytes, max_bytes: int) -> dict[str, Any]:
    if len(value) > max_bytes:
        raise Rejected("too_large", f"{len(value)} bytes > {max_bytes}")
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise Rejected("invalid_json", f"not UTF-8: {exc}") from None
    try:
        obj = json.loads(text, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:
        raise Rejected("invalid_json", f"not JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise Rejected("not_an_object", f"top level is {type(obj).__name__}")
    return obj


def _parse_created(obj: Mapping[str, Any]) -> dict[str, Any]:
    queue = _check_queue(_require_str(obj, "queue"))
    channel = _check_channel(_require_str(obj, "channel"))
    priority = _optional_str(obj, "priority")
    if priority is None:
        priority = "normal"
    elif priority not in PRIORITIES:
        raise Rejected("schema", f"unknown priority {priority!r}")
    _optional_str(obj, "customer_id")
    return {"queue": queue, "channel": channel, "priority": priority}


def _parse_handled(obj: Mapping[str, Any]) -> dict[str, Any]:
    total = 0.0
    for name in ("talk_seconds", "hold_seconds", "wrap_seconds"):
        if name not in obj:
            raise Rejected("schema", f"missing field {name!r}")
        value = obj[name]
        if not _is_number(value):
            raise Rejected("schema", f"{name!r} must be a finite number")
        if not 0 <= value <= 86400:
            raise Rejected("schema", f"{name!r} must be within 0..86400")
        total += float(value)
    _optional_str(obj, "agent_id")
    return {"handled_seconds": total}


def _parse_survey(obj: Mapping[str, Any]) -> dict[str, Any]:
    metric = _require_str(obj, "metric")
    if metric not in ("csat", "nps", "ces"):
        raise Rejected("schema", f"unknown metric {metric!r}")
    if "score" not in obj:
        raise Rejected("schema", "missing field 'score'")
    score = obj["score"]
    if not _is_int(score):
        raise Rejected("schema", "'score' must be an integer")
    default_scale = {"csat": 5, "nps": 10, "ces": 7}[metric]
    scale_max = obj.get("scale_max")
    if scale_max is None:
        scale_max = default_scale
    if not _is_int(scale_max):
        raise Rejected("schema", "'scale_max' must be an integer")
    allowed_scales = CSAT_SCALES if metric == "csat" else frozenset({default_scale})
    if scale_max not in allowed_scales:
        raise Rejected("schema", f"scale_max {scale_max} not allowed for {metric}")
    low = 0 if metric == "nps" else 1
    if not low <= score <= scale_max:
        raise Rejected("schema", f"{metric} score {score} outside {low}..{scale_max}")
    comment = _optional_str(obj, "comment")
    if comment is not None and len(comment) > 4096:
        raise Rejected("schema", "'comment' longer than 4096 characters")
    queue = _optional_str(obj, "queue")
    if queue is not None:
        _check_queue(queue)
    channel = _optional_str(obj, "channel")
    if channel is not None:
        _check_channel(channel)
    _optional_str(obj, "agent_id")
    return {
        "metric": metric,
        "score": score,
        "scale_max": scale_max,
        "queue": queue,
        "channel": channel,
    }


def classify(
    topic: str, key: bytes | None, value: bytes, *, now: float, config: BatchConfig
) -> Event:
    """Validate one raw message; raise Rejected for dead letters and ignored messages."""
    obj = _parse_object(value, config.max_message_bytes)

    if "schema_version" not in obj:
        raise Rejected("schema", "missing field 'schema_version'")
    version = obj["schema_version"]
    if not _is_int(version):
        raise Rejected("schema", "'schema_version' must be an integer")
    if version != 1:
        raise Rejected("unsupported_version", f"schema_version {version}")

    event_id = _require_str(obj, "event_id", max_len=128)
    event_type = _require_str(obj, "type")
    occurred_at = _require_str(obj, "occurred_at")
    ticket_id = _require_str(obj, "ticket_id", max_len=128)

    at_us = parse_rfc3339_us(occurred_at)
    if at_us / US_PER_S > now + config.max_clock_skew:
        raise Rejected("future_timestamp", f"{occurred_at} is ahead of wall-clock")

    try:
        key_text = key.decode("utf-8") if key is not None else None
    except UnicodeDecodeError:
        key_text = None
    if key_text != ticket_id:
        raise Rejected("key_mismatch", f"key {key!r} != ticket_id {ticket_id!r}")

    if event_type in TICKET_TYPES:
        expected_topic = config.tickets_topic
    elif event_type == SURVEY_TYPE:
        expected_topic = config.surveys_topic
    else:
        raise Rejected("ignored", f"unknown type {event_type!r}")
    if topic != expected_topic:
        raise Rejected("wrong_topic", f"{event_type} on {topic}")

    extra: dict[str, Any] = {}
    if event_type == "ticket.created":
        extra = _parse_created(obj)
    elif event_type == "ticket.handled":
        extra = _parse_handled(obj)
    elif event_type == SURVEY_TYPE:
        extra = _parse_survey(obj)
    elif event_type in ("ticket.agent_replied", "ticket.resolved"):
        _optional_str(obj, "agent_id")
    return Event(
        topic=topic,
        type=event_type,
        event_id=event_id,
        ticket_id=ticket_id,
        at_us=at_us,
        **extra,
    )


# ---------------------------------------------------------------------------
# Steps 3 and 4: per-ticket facts and bucket contributions


def bucket_of(at_us: int) -> int:
    """Start (epoch seconds) of the 60 s bucket holding ``at_us``."""
    return (at_us // (60 * US_PER_S)) * 60


def _empty_window() -> dict[str, Any]:
    window: dict[str, Any] = {}
    for name in COUNT_FIELDS:
        window[name] = 0
    for name in SUM_FIELDS:
        window[name] = 0.0
    for name in HIST_FIELDS:
        window[name] = dict.fromkeys(HIST_KEYS, 0)
    return window


class Windows:
    """Accumulates contributions per (queue, channel, window_start)."""

    def __init__(self) -> None:
        self.data: dict[tuple[str, str, int], dict[str, Any]] = {}

    def _window(self, queue: str, channel: str, at_us: int) -> dict[str, Any]:
        key = (queue, channel, bucket_of(at_us))
        if key not in self.data:
            self.data[key] = _empty_window()
        return self.data[key]

    def add(self, queue: str, channel: str, at_us: int, name: str, amount: float = 1) -> None:
        self._window(queue, channel, at_us)[name] += amount

    def observe(self, queue: str, channel: str, at_us: int, prefix: str, seconds: float) -> None:
        """One histogram observation: count, sum and cumulative buckets."""
        window = self._window(queue, channel, at_us)
        window[f"{prefix}_count"] += 1
        window[f"{prefix}_sum_seconds"] += seconds
        for bound, label in zip(HIST_BOUNDS, HIST_KEYS, strict=True):
            if seconds <= bound:
                window[f"{prefix}_hist"][label] += 1

    def non_zero(self) -> dict[tuple[str, str, int], dict[str, Any]]:
        def has_value(window: dict[str, Any]) -> bool:
            scalars = [window[n] for n in COUNT_FIELDS + SUM_FIELDS]
            hists = [c for n in HIST_FIELDS for c in window[n].values()]
            return any(v != 0 for v in scalars + hists)

        return {k: w for k, w in self.data.items() if has_value(w)}


def _sla_target_us(config: BatchConfig, channel: str, priority: str) -> int:
    target = config.sla_targets.get((channel, priority))
    if target is None:
        target = DEFAULT_SLA_TARGETS[(channel, priority)]
    return round(target * US_PER_S)


def _earliest(events: list[Event], event_type: str) -> int | None:
    times = [e.at_us for e in events if e.type == event_type]
    return min(times) if times else None


def _latest(events: list[Event], event_type: str) -> int | None:
    times = [e.at_us for e in events if e.type == event_type]
    return max(times) if times else None


def partition_of(ticket_id: str, partitions: int) -> int:
    """The partition Kafka's default partitioner picks for the key ``ticket_id`` (UTF-8)."""
    if partitions < 1:
        raise ValueError(f"partitions must be at least 1, not {partitions}")
    hashed: int = murmur2(ticket_id.encode("utf-8"))
    return (hashed & 0x7FFFFFFF) % partitions


def watermark_us(seconds: float) -> int:
    """A watermark in epoch seconds -> epoch microseconds (nearest microsecond)."""
    if not math.isfinite(seconds):
        raise ValueError(f"watermark must be finite, not {seconds}")
    return round(Fraction(seconds) * US_PER_S)


def _ticket_contributions(
    created: Event,
    events: list[Event],
    config: BatchConfig,
    windows: Windows,
    watermark: int | None = None,
) -> None:
    """Add the contributions of one created ticket (its counted ticket events).

    ``watermark`` (epoch microseconds) is that of the ticket's partition; None means far
    past every deadline.
    """
    assert created.queue is not None and created.channel is not None
    assert created.priority is not None
    queue, channel = created.queue, created.channel
    created_at = created.at_us

    windows.add(queue, channel, created_at, "tickets_created")
    for event in events:
        if event.type == "ticket.resolved":
            windows.add(queue, channel, event.at_us, "tickets_resolved")
        elif event.type == "ticket.abandoned":
            windows.add(queue, channel, event.at_us, "tickets_abandoned")
        elif event.type == "ticket.reopened":
            windows.add(queue, channel, event.at_us, "tickets_reopened")
        elif event.type == "ticket.handled":
            assert event.handled_seconds is not None
            windows.observe(queue, channel, event.at_us, "aht", event.handled_seconds)

    first_reply_at = _earliest(events, "ticket.agent_replied")
    first_resolved_at = _earliest(events, "ticket.resolved")
    first_abandoned_at = _earliest(events, "ticket.abandoned")

    if first_reply_at is not None:
        frt_seconds = max(0, first_reply_at - created_at) / US_PER_S
        windows.observe(queue, channel, first_reply_at, "frt", frt_seconds)

    deadline = created_at + _sla_target_us(config, channel, created.priority)
    excluded = (
        first_abandoned_at is not None
        and first_abandoned_at <= deadline
        and not (first_reply_at is not None and first_reply_at < first_abandoned_at)
    )
    if not excluded:
        if first_reply_at is not None and first_reply_at <= deadline:
            windows.add(queue, channel, first_reply_at, "sla_met")
        elif watermark is None or watermark >= deadline:
            # Without a watermark it is assumed past every deadline (module docstring).
            windows.add(queue, channel, deadline, "sla_breached")

    if first_resolved_at is not None:
        replies = [
            e for e in events if e.type == "ticket.agent_replied" and e.at_us <= first_resolved_at
        ]
        if replies:
            windows.add(queue, channel, first_resolved_at, "fcr_resolved")
            window_end = first_resolved_at + round(config.fcr_window * US_PER_S)
            reopened = any(
                e.type == "ticket.reopened" and first_resolved_at < e.at_us <= window_end
                for e in events
            )
            if len(replies) == 1 and not reopened:
                windows.add(queue, channel, first_resolved_at, "fcr_first_contact")


def _live_contributions(
    created: Event,
    events: list[Event],
    config: BatchConfig,
    watermark: int,
    live: Counter[tuple[str, str, str, str]],
    oldest_waiting_us: dict[tuple[str, str], int],
) -> None:
    """Add one created ticket to the live gauges, at its partition's ``watermark`` (us)."""
    assert created.queue is not None and created.channel is not None
    assert created.priority is not None
    queue, channel, priority = created.queue, created.channel, created.priority

    if any(e.type == "ticket.abandoned" for e in events):
        return
    latest_resolved = _latest(events, "ticket.resolved")
    latest_reopened = _latest(events, "ticket.reopened")
    is_open = latest_resolved is None or (
        latest_reopened is not None and latest_reopened > latest_resolved
    )
    if not is_open:
        return
    live[(queue, channel, priority, "open")] += 1

    if any(e.type == "ticket.agent_replied" for e in events):
        return
    live[(queue, channel, priority, "waiting")] += 1
    age = watermark - created.at_us
    key = (queue, channel)
    oldest_waiting_us[key] = max(age, oldest_waiting_us.get(key, age))

    target = _sla_target_us(config, channel, priority)
    deadline = created.at_us + target
    if deadline - round(config.at_risk_fraction * target) <= watermark < deadline:
        live[(queue, channel, priority, "at_risk")] += 1


def _survey_contribution(survey: Event, queue: str, channel: str, windows: Windows) -> None:
    assert survey.score is not None and survey.scale_max is not None
    at, score = survey.at_us, survey.score
    if survey.metric == "csat":
        windows.add(queue, channel, at, "csat_responses")
        # Top-two-box, except that the SPEC names the 3-point scale top-box only (score 3).
        threshold = 3 if survey.scale_max == 3 else survey.scale_max - 1
        if score >= threshold:
            windows.add(queue, channel, at, "csat_satisfied")
    elif survey.metric == "nps":
        windows.add(queue, channel, at, "nps_responses")
        if score >= 9:
            windows.add(queue, channel, at, "nps_promoters")
        elif score <= 6:
            windows.add(queue, channel, at, "nps_detractors")
    elif survey.metric == "ces":
        windows.add(queue, channel, at, "ces_responses")
        windows.add(queue, channel, at, "ces_score_sum", float(score))


# ---------------------------------------------------------------------------
# The whole computation


def compute(
    messages: Iterable[tuple[str, bytes | None, bytes]],
    *,
    now: float,
    config: BatchConfig = BatchConfig(),
    partitions: int | None = None,
    watermarks: Mapping[int, float] | None = None,
) -> BatchResult:
    """Compute every KPI window and outcome count of the whole input.

    With ``watermarks`` (epoch seconds per partition number, as at the end of the stream;
    needs ``partitions``, the partition count of the input topics) a ticket is breached
    only once its partition's watermark reaches its deadline, and the live gauges are
    computed. Every partition holding a created ticket must have a watermark.
    """
    if partitions is not None and partitions < 1:
        raise ValueError(f"partitions must be at least 1, not {partitions}")
    if watermarks is not None and partitions is None:
        raise ValueError("watermarks need partitions")
    outcomes: Counter[tuple[str, str]] = Counter()
    reasons: Counter[str] = Counter()

    # Steps 1 and 2: validate, then deduplicate in arrival order.
    seen: set[tuple[str, str]] = set()
    accepted: list[Event] = []
    for topic, key, value in messages:
        try:
            event = classify(topic, key, value, now=now, config=config)
        except Rejected as rejected:
            if rejected.reason == "ignored":
                outcomes[(topic, "ignored")] += 1
            else:
                outcomes[(topic, "dead_letter")] += 1
                reasons[rejected.reason] += 1
            continue
        identity = (event.ticket_id, event.event_id)
        if identity in seen:
            outcomes[(topic, "duplicate")] += 1
            continue
        seen.add(identity)
        accepted.append(event)

    # Step 3: group by ticket; the first ticket.created to arrive defines the ticket.
    created_by_ticket: dict[str, Event] = {}
    ticket_events: defaultdict[str, list[Event]] = defaultdict(list)
    surveys: list[Event] = []
    for event in accepted:
        if event.type == "ticket.created":
            created_by_ticket.setdefault(event.ticket_id, event)
        elif event.type == SURVEY_TYPE:
            surveys.append(event)
        else:
            ticket_events[event.ticket_id].append(event)

    for event in accepted:
        if event.type == "ticket.created":
            # Only the first ticket.created to arrive counts; later ones are ignored.
            first = created_by_ticket[event.ticket_id] is event
            outcomes[(event.topic, "processed" if first else "ignored")] += 1
            continue
        orphan = event.type in TICKET_TYPES and event.ticket_id not in created_by_ticket
        outcomes[(event.topic, "orphaned" if orphan else "processed")] += 1

    # Step 4: facts and contributions.
    windows = Windows()
    live: Counter[tuple[str, str, str, str]] = Counter()
    oldest_waiting_us: dict[tuple[str, str], int] = {}
    for ticket_id, created in created_by_ticket.items():
        events = ticket_events.get(ticket_id, [])
        watermark: int | None = None
        if watermarks is not None:
            assert partitions is not None
            partition = partition_of(ticket_id, partitions)
            if partition not in watermarks:
                raise ValueError(f"no watermark for partition {partition} (ticket {ticket_id!r})")
            watermark = watermark_us(watermarks[partition])
        _ticket_contributions(created, events, config, windows, watermark)
        if watermark is not None:
            _live_contributions(created, events, config, watermark, live, oldest_waiting_us)
    for survey in surveys:
        ticket = created_by_ticket.get(survey.ticket_id)
        if ticket is not None:
            assert ticket.queue is not None and ticket.channel is not None
            queue, channel = ticket.queue, ticket.channel
        else:
            queue, channel = survey.queue or "unknown", survey.channel or "unknown"
        _survey_contribution(survey, queue, channel, windows)

    return BatchResult(
        windows=windows.non_zero(),
        outcomes=outcomes,
        dead_letter_reasons=reasons,
        live={k: n for k, n in live.items() if n},
        oldest_waiting={k: us / US_PER_S for k, us in oldest_waiting_us.items()},
    )


# ---------------------------------------------------------------------------
# Rolling windows (SPEC section 3, exported as gauges in section 6)


def rolling(
    windows: Mapping[tuple[str, str, int], Mapping[str, Any]],
    *,
    end_bucket: int,
    length_seconds: int,
) -> dict[tuple[str, str], dict[str, Any]]:
    """Per (queue, channel), the sum of the windows starting in
    ``(end_bucket - length_seconds, end_bucket]``: the ``length_seconds/60`` buckets that
    end with ``end_bucket``. Counts are ints, sums floats, histograms summed cell-wise.
    A (queue, channel) without a window in range is left out.
    """
    if end_bucket % 60 != 0:
        raise ValueError(f"end_bucket {end_bucket} is not a bucket start")
    if length_seconds <= 0 or length_seconds % 60 != 0:
        raise ValueError(f"length_seconds {length_seconds} is not a positive multiple of 60")
    totals: dict[tuple[str, str], dict[str, Any]] = {}
    for (queue, channel, start), window in windows.items():
        if not end_bucket - length_seconds < start <= end_bucket:
            continue
        total = totals.setdefault((queue, channel), _empty_window())
        for name in COUNT_FIELDS:
            total[name] += int(window[name])
        for name in SUM_FIELDS:
            total[name] += float(window[name])
        for name in HIST_FIELDS:
            for label in HIST_KEYS:
                total[name][label] += int(window[name][label])
    return totals
