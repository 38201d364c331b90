"""Raw Kafka message -> validated event, ignored type, or dead-letter reason.

`decode` never raises: every input ends as exactly one of the three results, which is
what lets the worker account for every message (SPEC section 5).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import orjson
from pydantic import ValidationError

from models.events import (
    MODEL_BY_TYPE,
    SURVEY_TYPES,
    TICKET_TYPES,
    Envelope,
    SurveyResponded,
    TicketEvent,
)

MAX_MESSAGE_BYTES = 64 * 1024

TopicKind = Literal["tickets", "surveys"]

DEAD_LETTER_REASONS = (
    "too_large",
    "invalid_json",
    "not_an_object",
    "unsupported_version",
    "schema",
    "bad_timestamp",
    "future_timestamp",
    "key_mismatch",
    "wrong_topic",
)


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """Why a message was rejected: a machine-readable reason and a readable detail."""

    reason: str
    detail: str


@dataclass(frozen=True, slots=True)
class Ignored:
    """A valid envelope with a type this version does not know (forward compatible)."""

    type: str


Decoded = TicketEvent | SurveyResponded | Ignored | DeadLetter


def decode(
    topic: TopicKind,
    key: bytes | None,
    value: bytes | None,
    *,
    now: float,
    max_clock_skew: float = 300.0,
    max_bytes: int = MAX_MESSAGE_BYTES,
) -> Decoded:
    """Classify one input message; `now` is the wall-clock for the future check."""
    try:
        return _decode(topic, key, value, now, max_clock_skew, max_bytes)
    except Exception as exc:
        return DeadLetter("schema", f"unexpected validation failure: {type(exc).__name__}")


def _decode(
    topic: TopicKind,
    key: bytes | None,
    value: bytes | None,
    now: float,
    max_clock_skew: float,
    max_bytes: int,
) -> Decoded:
    if value is None:
        return DeadLetter("invalid_json", "message has no value (tombstone)")
    if len(value) > max_bytes:
        return DeadLetter("too_large", f"{len(value)} bytes exceeds the {max_bytes} byte limit")
    try:
        obj = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        if str(exc).startswith("number is infinity"):
            # Valid JSON syntax (e.g. 1e999) whose value no field accepts: a field
            # rule, like NaN/Infinity in a number field (docs/semantics.md).
            return DeadLetter("schema", f"number out of range: {exc}"[:200])
        return DeadLetter("invalid_json", str(exc)[:200])
    if not isinstance(obj, dict):
        return DeadLetter("not_an_object", f"top-level JSON value is {_json_type(obj)}")

    version = obj.get("schema_version")
    if type(version) is not int:  # bool is an int subclass; `true` is not version 1
        return DeadLetter("schema", "schema_version: must be the integer 1")
    if version != 1:
        return DeadLetter("unsupported_version", f"schema_version {version} (this worker reads 1)")

    event_type = obj.get("type")
    model = MODEL_BY_TYPE.get(event_type) if isinstance(event_type, str) else None
    try:
        event = (model or Envelope).model_validate(obj)
    except ValidationError as exc:
        return _validation_dead_letter(exc, obj)
    assert isinstance(event_type, str)

    if event.occurred_at > now + max_clock_skew:
        return DeadLetter(
            "future_timestamp",
            f"occurred_at is {event.occurred_at - now:.0f} s ahead of the worker clock "
            f"(max_clock_skew {max_clock_skew:.0f} s)",
        )
    if key is None or key != event.ticket_id.encode():
        return DeadLetter("key_mismatch", "message key must equal ticket_id")
    if model is None:
        return Ignored(event_type)
    expected = TICKET_TYPES if topic == "tickets" else SURVEY_TYPES
    if event_type not in expected:
        return DeadLetter("wrong_topic", f"{event_type} does not belong on the {topic} topic")
    return event  # type: ignore[return-value]


def _validation_dead_letter(exc: ValidationError, obj: dict[str, Any]) -> DeadLetter:
    errors = exc.errors(include_url=False, include_input=False)
    # bad_timestamp is for a string that is not RFC 3339; a missing or non-string
    # occurred_at breaks a field rule like any other (schema).
    if isinstance(obj.get("occurred_at"), str) and any(
        err["loc"][:1] == ("occurred_at",) for err in errors
    ):
        err = next(e for e in errors if e["loc"][:1] == ("occurred_at",))
        return DeadLetter("bad_timestamp", str(err["msg"])[:300])
    parts = [f"{'.'.join(str(p) for p in err['loc']) or '<event>'}: {err['msg']}" for err in errors]
    return DeadLetter("schema", "; ".join(parts)[:500])


def _json_type(obj: Any) -> str:
    if isinstance(obj, list):
        return "an array"
    if isinstance(obj, str):
        return "a string"
    if obj is None:
        return "null"
    if isinstance(obj, bool):
        return "a boolean"
    return "a number"
