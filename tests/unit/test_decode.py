"""models.decode: raw input message -> event, Ignored or DeadLetter (SPEC 2 and 5).

Parity with the independent batch reference (tests/reference), every dead-letter
reason, personal data kept out of the dead-letter detail, edge cases, and hypothesis
properties: `decode` never raises and always returns exactly one of the three results.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from models.decode import (
    DEAD_LETTER_REASONS,
    MAX_MESSAGE_BYTES,
    DeadLetter,
    Decoded,
    Ignored,
    TopicKind,
    decode,
)
from models.events import (
    MODEL_BY_TYPE,
    SURVEY_TYPES,
    TICKET_TYPES,
    Envelope,
    Handled,
    SurveyResponded,
    TicketCreated,
)
from tests.reference.batch import BatchConfig, Rejected, classify
from tests.reference.test_batch import (
    BAD_CASES,
    NOW,
    SURVEYS,
    TICKETS,
    VALID_CASES,
    Message,
    base,
    raw,
)

KIND: dict[str, TopicKind] = {TICKETS: "tickets", SURVEYS: "surveys"}
TOPIC_OF_KIND: dict[TopicKind, str] = {"tickets": TICKETS, "surveys": SURVEYS}
T0 = 1_795_341_600  # 2026-11-22T10:00:00Z

# The reasons docs/semantics.md lists, in its order.
DOCUMENTED_REASONS = (
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

# Personal data that must never reach a dead-letter detail (it gets logged).
SECRET_COMMENT = "Sup3rSecretComment-Jane-Doe-0471"
SECRET_CUSTOMER = "Cust0merSecret-ID-99XQ7"
MAX_DETAIL_CHARS = 600

_REFERENCE_CONFIG = BatchConfig()


# --- helpers ------------------------------------------------------------------------


def iso(epoch: float) -> str:
    """RFC 3339 UTC text of epoch seconds (microsecond precision)."""
    moment = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=round(epoch * 1e6))
    return moment.isoformat().replace("+00:00", "Z")


def body(type_: str = "ticket.resolved", **changes: Any) -> dict[str, Any]:
    """A valid event of `type_` for ticket t1 at T0; `...` as a value removes the field."""
    required: dict[str, dict[str, Any]] = {
        "ticket.created": {"queue": "billing", "channel": "chat"},
        "ticket.handled": {"talk_seconds": 30, "hold_seconds": 5.5, "wrap_seconds": 0},
        "survey.responded": {"metric": "csat", "score": 4},
    }
    extra = required.get(type_, {})
    obj: dict[str, Any] = {
        "schema_version": 1,
        "event_id": "e1",
        "type": type_,
        "occurred_at": iso(T0),
        "ticket_id": "t1",
        **extra,
        **changes,
    }
    return {k: v for k, v in obj.items() if v is not ...}


def kind_of(type_: str) -> TopicKind:
    return "surveys" if type_ in SURVEY_TYPES else "tickets"


def dec(obj: Any, *, kind: TopicKind | None = None, key: bytes | None = b"t1",
        now: float = NOW, **kwargs: Any) -> Decoded:
    """Decode a JSON-serialisable value (on the topic its type belongs to by default)."""
    if kind is None:
        type_ = obj.get("type") if isinstance(obj, dict) else None
        kind = kind_of(type_) if isinstance(type_, str) else "tickets"
    return decode(kind, key, json.dumps(obj).encode(), now=now, **kwargs)


def reason_of(result: Decoded) -> str:
    assert isinstance(result, DeadLetter), f"expected a dead letter, got {result!r}"
    return result.reason


def outcome(result: Decoded) -> str:
    """'processed', 'ignored' or the dead-letter reason."""
    if isinstance(result, DeadLetter):
        return result.reason
    if isinstance(result, Ignored):
        return "ignored"
    return "processed"


def reference_outcome(topic: str, key: bytes | None, value: bytes) -> str:
    """The same classification by the independent batch reference."""
    try:
        classify(topic, key, value, now=NOW, config=_REFERENCE_CONFIG)
    except Rejected as rejected:
        return rejected.reason
    return "processed"


def check_result(result: object, kind: TopicKind, key: bytes | None) -> None:
    """Exactly one of the three result types, each internally consistent."""
    kinds = [
        isinstance(result, DeadLetter),
        isinstance(result, Ignored),
        isinstance(result, Envelope),
    ]
    assert sum(kinds) == 1, f"not exactly one result type: {result!r}"
    if isinstance(result, DeadLetter):
        assert result.reason in DEAD_LETTER_REASONS
        assert_readable(result.detail)
    elif isinstance(result, Ignored):
        assert isinstance(result.type, str)
        assert result.type not in MODEL_BY_TYPE
    else:
        assert isinstance(result, Envelope)
        assert type(result) is MODEL_BY_TYPE[result.type]
        assert result.type in (TICKET_TYPES if kind == "tickets" else SURVEY_TYPES)
        assert key == result.ticket_id.encode()
        assert result.schema_version == 1


def assert_readable(detail: str) -> None:
    """A dead-letter detail is one short line of printable text, no personal data."""
    assert isinstance(detail, str)
    assert detail.strip(), "empty detail"
    assert detail.isprintable(), f"detail is not printable text: {detail!r}"
    assert len(detail) <= MAX_DETAIL_CHARS, f"detail is {len(detail)} chars long"
    assert SECRET_COMMENT not in detail
    assert SECRET_CUSTOMER not in detail


# --- parity with the batch reference --------------------------------------------------


def _case_id(message: Message) -> str:
    return message[2][:60].decode("utf-8", "replace")


@pytest.mark.parametrize("message", VALID_CASES, ids=_case_id)
def test_reference_valid_cases_decode_to_events(message: Message) -> None:
    topic, key, value = message
    result = decode(KIND[topic], key, value, now=NOW)
    check_result(result, KIND[topic], key)
    assert isinstance(result, Envelope), f"reference processes it, decoder says {result!r}"
    assert type(result) is MODEL_BY_TYPE[json.loads(value)["type"]]


@pytest.mark.parametrize(
    ("message", "reason"), BAD_CASES, ids=[f"{r}-{i}" for i, (_, r) in enumerate(BAD_CASES)]
)
def test_reference_bad_cases_give_the_same_dead_letter_reason(
    message: Message, reason: str
) -> None:
    topic, key, value = message
    result = decode(KIND[topic], key, value, now=NOW)
    check_result(result, KIND[topic], key)
    assert reason_of(result) == reason, result


@pytest.mark.parametrize("topic", [TICKETS, SURVEYS])
def test_reference_unknown_type_is_ignored_on_either_topic(topic: str) -> None:
    topic_, key, value = raw(base(type="ticket.escalated"), topic=topic)
    result = decode(KIND[topic_], key, value, now=NOW)
    assert result == Ignored("ticket.escalated")


def test_reference_lists_match_the_reference_itself() -> None:
    # Guard against the imported lists drifting from what the reference computes.
    for topic, key, value in VALID_CASES:
        assert reference_outcome(topic, key, value) == "processed"
    for (topic, key, value), reason in BAD_CASES:
        assert reference_outcome(topic, key, value) == reason


# --- every reason, readable details, no personal data ---------------------------------


def test_dead_letter_reasons_are_the_documented_ones() -> None:
    assert tuple(DEAD_LETTER_REASONS) == DOCUMENTED_REASONS


def test_every_reason_is_produced_by_a_reference_case_with_a_readable_detail() -> None:
    seen: set[str] = set()
    for (topic, key, value), _ in BAD_CASES:
        result = decode(KIND[topic], key, value, now=NOW)
        assert isinstance(result, DeadLetter)
        assert_readable(result.detail)
        seen.add(result.reason)
    assert seen == set(DEAD_LETTER_REASONS)


def _pii_survey(**changes: Any) -> dict[str, Any]:
    return body("survey.responded", **{"comment": SECRET_COMMENT, **changes})


def _pii_created(**changes: Any) -> dict[str, Any]:
    return body("ticket.created", **{"customer_id": SECRET_CUSTOMER, **changes})


PII_CASES: list[tuple[str, TopicKind, bytes | None, bytes]] = [
    # (expected reason, topic kind, key, value)
    ("schema", "surveys", b"t1", json.dumps(_pii_survey(comment=SECRET_COMMENT * 200)).encode()),
    ("schema", "surveys", b"t1", json.dumps(_pii_survey(comment=[SECRET_COMMENT])).encode()),
    ("schema", "surveys", b"t1", json.dumps(_pii_survey(comment={SECRET_COMMENT: 1})).encode()),
    ("schema", "surveys", b"t1", json.dumps(_pii_survey(score=99)).encode()),
    ("schema", "surveys", b"t1", json.dumps(_pii_survey(metric="stars")).encode()),
    ("schema", "surveys", b"t1", json.dumps(_pii_survey(agent_id=7)).encode()),
    ("bad_timestamp", "surveys", b"t1", json.dumps(_pii_survey(occurred_at="now")).encode()),
    ("future_timestamp", "surveys", b"t1",
     json.dumps(_pii_survey(occurred_at=iso(NOW + 3600))).encode()),
    ("key_mismatch", "surveys", b"t2", json.dumps(_pii_survey()).encode()),
    ("wrong_topic", "tickets", b"t1", json.dumps(_pii_survey()).encode()),
    ("unsupported_version", "surveys", b"t1",
     json.dumps(_pii_survey(schema_version=2)).encode()),
    ("invalid_json", "surveys", b"t1", json.dumps(_pii_survey()).encode()[:-1]),
    ("invalid_json", "surveys", b"t1",
     json.dumps(_pii_survey()).encode().replace(b'"csat"', b'"cs\xffat"')),
    ("too_large", "surveys", b"t1",
     json.dumps(_pii_survey(pad=SECRET_COMMENT * 5000)).encode()),
    ("schema", "tickets", b"t1", json.dumps(_pii_created(customer_id=[SECRET_CUSTOMER])).encode()),
    ("schema", "tickets", b"t1", json.dumps(_pii_created(channel="fax")).encode()),
    ("schema", "tickets", b"t1", json.dumps(_pii_created(queue="bad queue")).encode()),
    ("key_mismatch", "tickets", None, json.dumps(_pii_created()).encode()),
    ("schema", "tickets", b"t1",
     json.dumps(_pii_created(event_id=SECRET_CUSTOMER * 20)).encode()),
    # A comment pasted into the timestamp (found by the mutation test below).
    ("bad_timestamp", "tickets", b"t1",
     json.dumps(_pii_created(occurred_at=SECRET_COMMENT * 3)).encode()),
]


@pytest.mark.parametrize(
    ("reason", "kind", "key", "value"), PII_CASES,
    ids=[f"{c[0]}-{i}" for i, c in enumerate(PII_CASES)],
)
def test_detail_never_contains_comment_or_customer_id(
    reason: str, kind: TopicKind, key: bytes | None, value: bytes
) -> None:
    result = decode(kind, key, value, now=NOW)
    assert reason_of(result) == reason
    assert isinstance(result, DeadLetter)
    assert_readable(result.detail)


def test_comment_is_kept_out_of_the_event_repr() -> None:
    # Events get logged at INFO in places; the comment field is repr=False.
    result = dec(_pii_survey(), kind="surveys")
    assert isinstance(result, SurveyResponded)
    assert result.comment == SECRET_COMMENT
    assert SECRET_COMMENT not in repr(result)


# --- size, tombstone, JSON syntax ------------------------------------------------------


def test_tombstone_is_a_dead_letter() -> None:
    # A null value is not JSON: invalid_json, with the original (absent) payload kept.
    result = decode("tickets", b"t1", None, now=NOW)
    assert reason_of(result) == "invalid_json"
    assert isinstance(result, DeadLetter)
    assert "tombstone" in result.detail


def _padded(size: int) -> bytes:
    """A valid ticket.resolved of exactly `size` bytes (padding in an unknown field)."""
    empty = json.dumps(body(pad="")).encode()
    value = empty.replace(b'"pad": ""', b'"pad": "' + b"x" * (size - len(empty)) + b'"')
    assert len(value) == size
    return value


def test_exactly_64_kib_is_accepted_and_one_byte_more_is_too_large() -> None:
    assert MAX_MESSAGE_BYTES == 64 * 1024
    assert isinstance(decode("tickets", b"t1", _padded(65536), now=NOW), Envelope)
    assert reason_of(decode("tickets", b"t1", _padded(65537), now=NOW)) == "too_large"


def test_size_is_checked_before_parsing_and_max_bytes_is_honoured() -> None:
    assert reason_of(decode("tickets", b"t1", b"\xff" * 65537, now=NOW)) == "too_large"
    value = json.dumps(body()).encode()
    assert reason_of(decode("tickets", b"t1", value, now=NOW, max_bytes=len(value) - 1)) == (
        "too_large"
    )
    assert isinstance(decode("tickets", b"t1", value, now=NOW, max_bytes=len(value)), Envelope)


@pytest.mark.parametrize("depth", [1025, 10_000, 32_000])
def test_deep_nesting_is_a_dead_letter_not_a_crash(depth: int) -> None:
    # orjson stops at depth 1024 ("depth limit exceeded"): not JSON we can read.
    top = b"[" * depth + b"]" * depth
    assert reason_of(decode("tickets", b"t1", top, now=NOW)) == "invalid_json"
    nested = json.dumps(body(pad=0)).encode().replace(b'"pad": 0', b'"pad": ' + top)
    assert len(nested) <= MAX_MESSAGE_BYTES
    result = decode("tickets", b"t1", nested, now=NOW)
    assert reason_of(result) == "invalid_json"
    assert isinstance(result, DeadLetter)
    assert_readable(result.detail)


def test_moderate_nesting_in_an_unknown_field_is_ignored_like_any_extra_field() -> None:
    deep = b"[" * 500 + b"]" * 500
    nested = json.dumps(body(pad=0)).encode().replace(b'"pad": 0', b'"pad": ' + deep)
    assert isinstance(decode("tickets", b"t1", nested, now=NOW), Envelope)


def test_deep_nesting_in_a_known_field_is_a_schema_error() -> None:
    nested = json.dumps(body(agent_id=0)).encode().replace(
        b'"agent_id": 0', b'"agent_id": ' + b"[" * 1000 + b"]" * 1000
    )
    assert reason_of(decode("tickets", b"t1", nested, now=NOW)) == "schema"


@pytest.mark.parametrize("literal", [b"NaN", b"Infinity", b"-Infinity", b"nan", b"inf"])
def test_nan_and_infinity_literals_are_invalid_json(literal: bytes) -> None:
    value = json.dumps(body("ticket.handled", talk_seconds=0)).encode().replace(
        b'"talk_seconds": 0', b'"talk_seconds": ' + literal
    )
    assert reason_of(decode("tickets", b"t1", value, now=NOW)) == "invalid_json"


@pytest.mark.parametrize("number", [b"1e999", b"-1e999", b"1E400"])
def test_number_overflowing_a_double_is_a_schema_error(number: bytes) -> None:
    # Valid JSON syntax whose value is out of range: a field rule (semantics.md: numbers
    # may not be Infinity), as in the reference, not invalid_json.
    value = json.dumps(body("ticket.handled", talk_seconds=0)).encode().replace(
        b'"talk_seconds": 0', b'"talk_seconds": ' + number
    )
    result = decode("tickets", b"t1", value, now=NOW)
    assert reason_of(result) == "schema"
    assert isinstance(result, DeadLetter)
    assert_readable(result.detail)


def test_underflowing_number_is_zero() -> None:
    value = json.dumps(body("ticket.handled", talk_seconds=0)).encode().replace(
        b'"talk_seconds": 0', b'"talk_seconds": 1e-999'
    )
    result = decode("tickets", b"t1", value, now=NOW)
    assert isinstance(result, Handled)
    assert result.talk_seconds == 0.0


@pytest.mark.parametrize(
    "value",
    [b"", b" ", b"\xef\xbb\xbf{}", b'{"a": "\\ud800"}', b'{"a": "\x00"}', b"{}{}", b"{'a': 1}"],
)
def test_other_unreadable_json_is_invalid_json(value: bytes) -> None:
    result = decode("tickets", b"t1", value, now=NOW)
    assert reason_of(result) == "invalid_json"
    assert isinstance(result, DeadLetter)
    assert_readable(result.detail)


@pytest.mark.parametrize(
    ("value", "word"),
    [(b"[]", "array"), (b'"x"', "string"), (b"null", "null"), (b"true", "boolean"),
     (b"1.5", "number"), (b"7", "number")],
)
def test_non_objects_name_their_json_type(value: bytes, word: str) -> None:
    result = decode("tickets", b"t1", value, now=NOW)
    assert reason_of(result) == "not_an_object"
    assert isinstance(result, DeadLetter)
    assert word in result.detail


def test_duplicate_json_keys_last_one_wins() -> None:
    # Documented behaviour (orjson, like the stdlib json the reference uses): the last
    # occurrence of a repeated key is the value.
    good_last = (
        b'{"schema_version": 2, "event_id": "e", "type": "ticket.resolved",'
        b' "occurred_at": "2026-11-22T10:00:00Z", "ticket_id": "t2", "ticket_id": "t1",'
        b' "schema_version": 1}'
    )
    result = decode("tickets", b"t1", good_last, now=NOW)
    assert isinstance(result, Envelope)
    assert (result.ticket_id, result.schema_version) == ("t1", 1)
    assert reference_outcome(TICKETS, b"t1", good_last) == "processed"

    bad_last = good_last.replace(b'"ticket_id": "t1"', b'"ticket_id": "t3"')
    assert reason_of(decode("tickets", b"t1", bad_last, now=NOW)) == "key_mismatch"


# --- envelope and field rules ---------------------------------------------------------


def test_missing_or_non_string_occurred_at_is_schema_not_bad_timestamp() -> None:
    # semantics.md: bad_timestamp is a string that is not RFC 3339; a missing field or a
    # wrong type is `schema`, like every other field rule (and as in the reference).
    assert reason_of(dec(body(occurred_at=...))) == "schema"
    assert reason_of(dec(body(occurred_at=T0))) == "schema"
    assert reason_of(dec(body(occurred_at=None))) == "schema"
    assert reason_of(dec(body(occurred_at=["2026-11-22T10:00:00Z"]))) == "schema"


@pytest.mark.parametrize("version", [0, 2, -1, 9_223_372_036_854_775_807])
def test_other_integer_versions_are_unsupported(version: int) -> None:
    result = dec(body(schema_version=version))
    assert reason_of(result) == "unsupported_version"
    assert isinstance(result, DeadLetter)
    assert str(version) in result.detail


@pytest.mark.parametrize("version", ["1", 1.0, True, None, [1]])
def test_non_integer_versions_are_schema(version: Any) -> None:
    assert reason_of(dec(body(schema_version=version))) == "schema"


def test_null_optional_fields_mean_not_given() -> None:
    created = dec(body("ticket.created", priority=None, customer_id=None))
    assert isinstance(created, TicketCreated)
    assert (created.priority, created.customer_id) == ("normal", None)
    survey = dec(body("survey.responded", metric="ces", score=7, scale_max=None, comment=None,
                      queue=None, channel=None, agent_id=None))
    assert isinstance(survey, SurveyResponded)
    assert survey.scale_max == 7


def test_unknown_extra_fields_are_ignored() -> None:
    result = dec(body("ticket.created", extra={"nested": [1, 2]}, future_field="x"))
    assert isinstance(result, TicketCreated)
    assert "future_field" not in result.model_dump()


@pytest.mark.parametrize(
    ("field", "value"),
    [("agent_id", "a" * 300), ("agent_id", ""), ("customer_id", "c" * 1000), ("customer_id", "")],
)
def test_agent_and_customer_ids_have_no_length_rule(field: str, value: str) -> None:
    # SPEC section 2 gives them no length rule (only event_id/ticket_id are 1-128).
    type_ = "ticket.created" if field == "customer_id" else "ticket.resolved"
    obj = body(type_, **{field: value})
    assert isinstance(dec(obj), Envelope)
    assert reference_outcome(TICKETS, b"t1", json.dumps(obj).encode()) == "processed"


def test_valid_envelope_with_unknown_type_still_needs_a_matching_key() -> None:
    assert dec(body(type="ticket.escalated")) == Ignored("ticket.escalated")
    assert reason_of(dec(body(type="ticket.escalated"), key=b"t2")) == "key_mismatch"
    assert reason_of(dec(body(type="ticket.escalated", occurred_at="x"))) == "bad_timestamp"


def test_key_must_be_the_utf8_ticket_id() -> None:
    ticket = "tïcket-€"
    obj = body(ticket_id=ticket)
    assert isinstance(dec(obj, key=ticket.encode()), Envelope)
    assert reason_of(dec(obj, key=ticket.encode("latin-1", "replace"))) == "key_mismatch"
    assert reason_of(dec(obj, key=b"")) == "key_mismatch"


@pytest.mark.parametrize("type_", sorted(TICKET_TYPES | SURVEY_TYPES))
def test_every_known_type_decodes_on_its_topic_and_is_wrong_on_the_other(type_: str) -> None:
    obj = body(type_)
    result = dec(obj)
    assert type(result) is MODEL_BY_TYPE[type_]
    other: TopicKind = "tickets" if kind_of(type_) == "surveys" else "surveys"
    assert reason_of(dec(obj, kind=other)) == "wrong_topic"


# --- timestamps --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "epoch"),
    [
        ("2026-11-22T10:00:00Z", T0),
        ("2026-11-22T15:30:00+05:30", T0),
        ("2026-11-22T04:15:00-05:45", T0),
        ("2026-11-22T10:00:00-00:00", T0),  # RFC 3339 "unknown local offset": still UTC
        ("2026-11-22T10:00:00+00:00", T0),
        ("2026-11-22t10:00:00z", T0),
        ("2026-11-22T10:00:00.5Z", T0 + 0.5),
        ("2026-11-22T10:00:00.123456+00:00", T0 + 0.123456),
        ("2026-11-23T09:59:00+23:59", T0),
        ("1969-12-31T23:59:59.999999Z", -0.000001),
        ("0001-01-01T00:00:00Z", -62_135_596_800),
        ("0001-01-01T00:00:00+05:30", -62_135_596_800 - 19_800),  # before year 1 in UTC
    ],
)
def test_valid_timestamps_and_their_epoch(text: str, epoch: float) -> None:
    result = dec(body(occurred_at=text))
    assert isinstance(result, Envelope), result
    assert result.occurred_at == pytest.approx(epoch, abs=1e-6)
    assert reference_outcome(TICKETS, b"t1", json.dumps(body(occurred_at=text)).encode()) == (
        "processed"
    )


@pytest.mark.parametrize(
    "text",
    [
        "2026-11-22T10:00:00.1234567Z",  # 7 fraction digits: finer than microseconds
        "2026-11-22T10:00:00.000000000Z",
        "2016-12-31T23:59:60Z",  # leap second: not representable, rejected
        "2026-11-22T10:00:00",  # no offset
        "2026-11-22T10:00:00.Z",
        "2026-11-22T10:00Z",
        "2026-11-22 10:00:00Z",
        "2026-11-22T10:00:00+0530",
        "2026-11-22T10:00:00+05",
        "2026-11-22T10:00:00+24:00",
        "2026-11-22T10:00:00+05:60",
        "2026-11-22T10:00:00UTC",
        "2026-11-22T10:00:00 Z",
        " 2026-11-22T10:00:00Z",
        "2026-11-22T10:00:00Z\n",
        "2026-13-01T10:00:00Z",
        "2026-02-29T10:00:00Z",
        "2026-11-22T24:00:00Z",
        "2026-11-22T10:60:00Z",
        "0000-01-01T00:00:00Z",  # year 0 does not exist in datetime / RFC 3339 practice
        "+2026-11-22T10:00:00Z",
        "20261122T100000Z",
        "2026-W47-7T10:00:00Z",
        "\uff12\uff10\uff12\uff16-11-22T10:00:00Z",  # fullwidth digits: not ASCII
        "\u0662\u0660\u0662\u0666-11-22T10:00:00Z",  # Arabic-Indic digits
        "",
        "yesterday",
    ],
)
def test_bad_timestamps(text: str) -> None:
    result = dec(body(occurred_at=text))
    assert reason_of(result) == "bad_timestamp"
    assert isinstance(result, DeadLetter)
    assert_readable(result.detail)
    assert reference_outcome(TICKETS, b"t1", json.dumps(body(occurred_at=text)).encode()) == (
        "bad_timestamp"
    )


def test_year_9999_is_in_the_future_unless_the_clock_is_there_too() -> None:
    late = "9999-12-31T23:59:59.999999Z"
    assert reason_of(dec(body(occurred_at=late))) == "future_timestamp"
    assert isinstance(dec(body(occurred_at=late), now=253_402_300_800.0), Envelope)
    assert reason_of(dec(body(occurred_at="9999-12-31T23:59:59-23:59"))) == "future_timestamp"


@pytest.mark.parametrize(
    ("ahead", "accepted"),
    [(-86400.0, True), (0.0, True), (299.999999, True), (300.0, True),
     (300.000001, False), (301.0, False), (86400.0, False)],
)
def test_future_within_skew_is_accepted_beyond_is_rejected(ahead: float, accepted: bool) -> None:
    result = dec(body(occurred_at=iso(NOW + ahead)))
    if accepted:
        assert isinstance(result, Envelope)
    else:
        assert reason_of(result) == "future_timestamp"


def test_max_clock_skew_is_a_parameter() -> None:
    obj = body(occurred_at=iso(NOW + 10))
    assert reason_of(dec(obj, max_clock_skew=0)) == "future_timestamp"
    assert reason_of(dec(obj, max_clock_skew=9.999999)) == "future_timestamp"
    assert isinstance(dec(obj, max_clock_skew=10), Envelope)
    assert isinstance(dec(body(occurred_at=iso(NOW)), max_clock_skew=0), Envelope)


def test_future_offset_timestamp_is_judged_in_utc() -> None:
    # NOW + 200 s written with a +05:30 offset: within the 300 s skew.
    moment = datetime.fromtimestamp(NOW + 200, UTC).astimezone(
        timezone(timedelta(hours=5, minutes=30))
    )
    assert isinstance(dec(body(occurred_at=moment.isoformat())), Envelope)
    moment = datetime.fromtimestamp(NOW + 400, UTC).astimezone(
        timezone(timedelta(hours=-3))
    )
    assert reason_of(dec(body(occurred_at=moment.isoformat()))) == "future_timestamp"


# --- hypothesis: never raises, exactly one result --------------------------------------

FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

kinds: st.SearchStrategy[TopicKind] = st.sampled_from(["tickets", "surveys"])
keys: st.SearchStrategy[bytes | None] = st.one_of(
    st.none(), st.just(b"t1"), st.binary(max_size=12)
)
json_scalars: st.SearchStrategy[Any] = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
)
json_values: st.SearchStrategy[Any] = st.recursive(
    json_scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=5),
        st.dictionaries(st.text(max_size=12), children, max_size=5),
    ),
    max_leaves=25,
)


@FAST
@given(kind=kinds, key=keys, value=st.one_of(st.none(), st.binary(max_size=300)))
def test_arbitrary_bytes_never_raise(
    kind: TopicKind, key: bytes | None, value: bytes | None
) -> None:
    check_result(decode(kind, key, value, now=NOW), kind, key)


@FAST
@given(kind=kinds, key=keys, value=json_values)
def test_arbitrary_json_values_never_raise(kind: TopicKind, key: bytes | None, value: Any) -> None:
    result = decode(kind, key, json.dumps(value).encode(), now=NOW)
    check_result(result, kind, key)
    if not isinstance(value, dict):
        assert isinstance(result, DeadLetter)
        assert result.reason == "not_an_object"
    else:
        assert outcome(result) not in ("invalid_json", "not_an_object", "too_large")


# Valid templates, one per type, with personal data in the fields that carry it.
TEMPLATES: list[dict[str, Any]] = [
    body("ticket.created", priority="high", customer_id=SECRET_CUSTOMER),
    body("ticket.agent_replied", agent_id="a1"),
    body("ticket.handled", agent_id="a1"),
    body("ticket.abandoned"),
    body("ticket.resolved"),
    body("ticket.reopened"),
    body("survey.responded", metric="nps", score=9, scale_max=10, comment=SECRET_COMMENT,
         queue="billing", channel="email", agent_id="a1"),
]
FIELDS = sorted({name for template in TEMPLATES for name in template} | {"scale_max", "priority"})
DELETE = object()
interesting_values: st.SearchStrategy[Any] = st.sampled_from(
    [
        None, True, False, 0, 1, -1, 2, 1.0, 0.5, 86400, 86400.5, 1e300, -0.0, "", "x", "t1",
        "a" * 65, "e" * 129, "bad queue", "billing", "chat", "fax", "urgent", "asap", "csat",
        "nps", "ces", "stars", 3, 5, 7, 10, 11, [], {}, [1], {"a": 1},
        "2026-11-22T10:00:00Z", "2026-11-22T10:00:00", "2099-01-01T00:00:00Z", "x.y",
        SECRET_COMMENT * 300, 9_223_372_036_854_775_807,
    ]
)
field_values: st.SearchStrategy[Any] = st.one_of(
    st.just(DELETE), interesting_values, json_values
)
mutations = st.lists(
    st.tuples(st.one_of(st.sampled_from(FIELDS), st.text(max_size=8)), field_values),
    min_size=1,
    max_size=4,
)


def mutate(template: dict[str, Any], changes: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(template)
    for name, value in changes:
        if value is DELETE:
            obj.pop(name, None)
        else:
            obj[name] = value
    return obj


@FAST
@given(
    template=st.sampled_from(TEMPLATES),
    changes=mutations,
    kind=st.one_of(st.none(), kinds),
    key=st.one_of(st.just(b"t1"), keys),
)
def test_mutated_events_never_raise_nor_leak_personal_data(
    template: dict[str, Any],
    changes: list[tuple[str, Any]],
    kind: TopicKind | None,
    key: bytes | None,
) -> None:
    obj = mutate(template, changes)
    topic = kind if kind is not None else kind_of(template["type"])
    result = decode(topic, key, json.dumps(obj).encode(), now=NOW)
    check_result(result, topic, key)  # includes: no comment / customer_id in the detail


@FAST
@given(template=st.sampled_from(TEMPLATES), change=st.tuples(st.sampled_from(FIELDS), field_values))
def test_single_field_mutation_matches_the_reference(
    template: dict[str, Any], change: tuple[str, Any]
) -> None:
    # With one broken rule (right topic, right key) the reason is unambiguous, so the
    # decoder and the reference must agree. A known type swapped in for `type` breaks two
    # rules at once (wrong topic and missing fields); their order is not specified.
    name, value = change
    swapped_type = isinstance(value, str) and value in MODEL_BY_TYPE and value != template["type"]
    assume(not (name == "type" and swapped_type))
    obj = mutate(template, [change])
    kind = kind_of(template["type"])
    value_bytes = json.dumps(obj).encode()
    result = decode(kind, b"t1", value_bytes, now=NOW)
    assert outcome(result) == reference_outcome(TOPIC_OF_KIND[kind], b"t1", value_bytes), obj


timestamp_texts = st.from_regex(
    r"\A\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d{0,8})?([Zz]|[+-]\d{2}:?\d{2})?\Z"
)


@FAST
@given(text=st.one_of(timestamp_texts, st.text(max_size=40)))
def test_timestamp_classification_matches_the_reference(text: str) -> None:
    value = json.dumps(body(occurred_at=text)).encode()
    result = decode("tickets", b"t1", value, now=NOW)
    assert outcome(result) == reference_outcome(TICKETS, b"t1", value)


@FAST
@given(
    moment=st.datetimes(
        min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30),
        timezones=st.sampled_from(
            [UTC, timezone(timedelta(hours=5, minutes=30)),
             timezone(timedelta(hours=-23, minutes=-59))]
        ),
    )
)
def test_any_rfc3339_moment_round_trips_to_its_epoch(moment: datetime) -> None:
    result = dec(body(occurred_at=moment.isoformat()), now=300_000_000_000.0)
    assert isinstance(result, Envelope)
    expected = (moment - datetime(1970, 1, 1, tzinfo=UTC)) / timedelta(seconds=1)
    # Epoch seconds as a float: microseconds exact in this century, ~30 us near 9999.
    assert result.occurred_at == pytest.approx(expected, rel=0, abs=1e-4)
