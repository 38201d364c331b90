"""models.records: dead-letter records (SPEC section 5) and KPI windows (section 4)."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from models.records import (
    COUNT_FIELDS,
    HIST_FIELDS,
    HIST_KEYS,
    SUM_FIELDS,
    DeadLetterRecord,
    KpiWindow,
    empty_window_values,
)
from streams.windows import CELLS, WindowState, apply_deltas, render

# Every field of SPEC section 3, written out independently of models.records.
SECTION_3_COUNTS = {
    "tickets_created", "tickets_resolved", "tickets_abandoned", "tickets_reopened",
    "frt_count", "aht_count", "sla_met", "sla_breached", "fcr_resolved", "fcr_first_contact",
    "csat_responses", "csat_satisfied", "nps_responses", "nps_promoters", "nps_detractors",
    "ces_responses", "ces_score_sum",
}
SECTION_3_SUMS = {"frt_sum_seconds", "aht_sum_seconds"}
SECTION_3_HISTS = {"frt_hist", "aht_hist"}
SPEC_HIST_KEYS = [
    "15", "30", "60", "120", "300", "600", "1800", "3600", "7200", "14400", "28800", "86400",
    "+Inf",
]


def build(key: bytes | None, value: bytes | None, **overrides: Any) -> DeadLetterRecord:
    args: dict[str, Any] = {
        "reason": "invalid_json",
        "detail": "unexpected character: line 1 column 2 (char 1)",
        "topic": "support.tickets",
        "partition": 3,
        "offset": 41,
        "key": key,
        "value": value,
        "received_at": "2026-11-22T10:00:01Z",
        **overrides,
    }
    return DeadLetterRecord.build(**args)


def original_key(record: DeadLetterRecord) -> bytes | None:
    if record.key_base64 is not None:
        return base64.b64decode(record.key_base64)
    return None if record.key is None else record.key.encode()


# --- DeadLetterRecord ----------------------------------------------------------------


def test_utf8_payload_and_key_are_kept_as_text() -> None:
    value = '{"comment": "très bien ✓", "n": 1}'.encode()
    record = build("tïcket-1".encode(), value)
    assert (record.payload, record.payload_base64) == ('{"comment": "très bien ✓", "n": 1}', None)
    assert (record.key, record.key_base64) == ("tïcket-1", None)
    assert record.original_value() == value
    assert original_key(record) == "tïcket-1".encode()


@pytest.mark.parametrize(
    "value",
    [b'{"a": "\xff"}', b"\x80", b"\xed\xa0\x80", b"\xc3\x28", b"\x00\xfe\xff", bytes(range(256))],
)
def test_non_utf8_payload_is_kept_as_base64(value: bytes) -> None:
    record = build(b"t1", value)
    assert record.payload is None
    assert record.payload_base64 == base64.b64encode(value).decode("ascii")
    assert record.original_value() == value


def test_non_utf8_key_is_kept_as_base64() -> None:
    record = build(b"t\xff1", b"{}")
    assert record.key is None
    assert record.key_base64 is not None
    assert base64.b64decode(record.key_base64) == b"t\xff1"
    assert (record.payload, record.payload_base64) == ("{}", None)


def test_missing_key_and_tombstone_value_stay_none() -> None:
    record = build(None, None)
    assert (record.key, record.key_base64, record.payload, record.payload_base64) == (
        None, None, None, None,
    )
    assert record.original_value() is None


def test_empty_bytes_are_empty_text_not_none() -> None:
    record = build(b"", b"")
    assert (record.key, record.payload) == ("", "")
    assert record.original_value() == b""


def test_record_carries_source_position_reason_and_detail() -> None:
    record = build(b"t1", b"[1]", reason="not_an_object", detail="top-level JSON value is an array")
    assert record.reason == "not_an_object"
    assert record.detail == "top-level JSON value is an array"
    assert (record.source_topic, record.partition, record.offset) == ("support.tickets", 3, 41)
    assert record.received_at == "2026-11-22T10:00:01Z"


def test_record_json_round_trip_and_strictness() -> None:
    record = build(b"t\xff", b'{"x": "\xfe"}')
    text = record.model_dump_json()
    assert DeadLetterRecord.model_validate_json(text) == record
    assert json.loads(text)["payload"] is None
    with pytest.raises(ValidationError):
        DeadLetterRecord.model_validate({**json.loads(text), "surprise": 1})
    with pytest.raises(ValidationError):
        record.reason = "other"  # frozen


@settings(max_examples=300, deadline=None)
@given(key=st.one_of(st.none(), st.binary(max_size=64)), value=st.one_of(st.none(), st.binary()))
def test_any_bytes_round_trip(key: bytes | None, value: bytes | None) -> None:
    record = build(key, value)
    assert record.original_value() == value
    assert original_key(record) == key
    # Exactly one representation is used for a present value.
    if value is not None:
        assert (record.payload is None) != (record.payload_base64 is None)
    again = DeadLetterRecord.model_validate_json(record.model_dump_json())
    assert again.original_value() == value


@settings(max_examples=100, deadline=None)
@given(text=st.text())
def test_text_that_is_valid_utf8_stays_text(text: str) -> None:
    try:
        raw = text.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates are not UTF-8
        return
    record = build(raw, raw)
    assert (record.payload, record.key) == (text, text)
    assert record.payload_base64 is None and record.key_base64 is None


# --- empty windows ---------------------------------------------------------------------


def test_empty_window_values_has_every_section_3_field() -> None:
    values = empty_window_values()
    assert set(values) == SECTION_3_COUNTS | SECTION_3_SUMS | SECTION_3_HISTS
    for name in SECTION_3_COUNTS:
        assert values[name] == 0 and type(values[name]) is int, name
    for name in SECTION_3_SUMS:
        assert values[name] == 0.0 and type(values[name]) is float, name
    for name in SECTION_3_HISTS:
        assert list(values[name]) == SPEC_HIST_KEYS, name
        assert set(values[name].values()) == {0}


def test_empty_window_values_are_fresh_each_call() -> None:
    first = empty_window_values()
    first["frt_hist"]["15"] = 5
    first["tickets_created"] = 9
    second = empty_window_values()
    assert second["frt_hist"]["15"] == 0 and second["tickets_created"] == 0
    assert second["frt_hist"] is not second["aht_hist"]


def test_field_tuples_agree_with_the_spec() -> None:
    assert set(COUNT_FIELDS) == SECTION_3_COUNTS
    assert set(SUM_FIELDS) == SECTION_3_SUMS
    assert set(HIST_FIELDS) == SECTION_3_HISTS
    assert list(HIST_KEYS) == SPEC_HIST_KEYS


# --- KPI window records ------------------------------------------------------------------


def _rendered(**deltas: float) -> dict[str, Any]:
    state = WindowState()
    apply_deltas(state, list(deltas.items()))
    return render(("billing", "chat", 1_795_341_600), state, updated_at=1_795_341_661.25)


def test_kpi_window_validates_a_rendered_record() -> None:
    # The engine counts each value in its own cell; the record is cumulative.
    record = _rendered(tickets_created=3, frt_count=2, frt_sum_seconds=95.5,
                       **{"frt_hist:60": 1, "frt_hist:120": 1})
    window = KpiWindow.model_validate(record)
    assert (window.queue, window.channel) == ("billing", "chat")
    assert (window.window_start, window.window_end) == (
        "2026-11-22T10:00:00Z", "2026-11-22T10:01:00Z",
    )
    assert (window.tickets_created, window.frt_count, window.frt_sum_seconds) == (3, 2, 95.5)
    upper = SPEC_HIST_KEYS[SPEC_HIST_KEYS.index("120"):]
    assert window.frt_hist == {"15": 0, "30": 0, "60": 1} | dict.fromkeys(upper, 2)
    assert window.revision == 1
    assert window.updated_at == "2026-11-22T10:01:01.250000Z"
    # The rendered record is exactly the model's fields: nothing missing, nothing extra.
    assert set(record) == set(KpiWindow.model_fields)
    assert json.loads(window.model_dump_json()) == record


def test_kpi_window_validates_an_all_zero_record_with_every_field() -> None:
    record = _rendered()
    window = KpiWindow.model_validate(record)
    assert set(record) - {"queue", "channel", "window_start", "window_end", "revision",
                          "updated_at"} == SECTION_3_COUNTS | SECTION_3_SUMS | SECTION_3_HISTS
    assert list(window.aht_hist) == SPEC_HIST_KEYS
    assert window.revision == 0


@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(CELLS), st.integers(min_value=-5, max_value=50)), max_size=30
    )
)
def test_kpi_window_validates_any_rendered_record(deltas: list[tuple[str, int]]) -> None:
    state = WindowState()
    apply_deltas(state, [(cell, float(d)) for cell, d in deltas])
    record = render(("q.1", "email", 0), state, updated_at=5.0)
    window = KpiWindow.model_validate(record)
    for name in COUNT_FIELDS:
        assert type(record[name]) is int
    assert window.window_start == "1970-01-01T00:00:00Z"


@pytest.mark.parametrize("drop", ["frt_hist", "tickets_created", "revision", "updated_at"])
def test_kpi_window_rejects_a_record_missing_a_field(drop: str) -> None:
    record = _rendered()
    del record[drop]
    with pytest.raises(ValidationError):
        KpiWindow.model_validate(record)


def test_kpi_window_rejects_unknown_fields() -> None:
    with pytest.raises(ValidationError):
        KpiWindow.model_validate({**_rendered(), "frt_mean": 1.0})
