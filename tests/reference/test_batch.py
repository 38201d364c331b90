"""Hand-worked cases for the batch reference (tests/reference/batch.py)."""

from __future__ import annotations

import itertools
import json
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiokafka.partitioner import DefaultPartitioner

from tests.reference.batch import (
    HIST_KEYS,
    BatchConfig,
    BatchResult,
    compute,
    parse_rfc3339_us,
    partition_of,
    rolling,
)

T0 = 1_795_341_600  # 2026-11-22T10:00:00Z, a bucket start
NOW = T0 + 30 * 86400  # far past every event: nothing is in the future
TICKETS = "support.tickets"
SURVEYS = "support.surveys"
DAY = 86400

Message = tuple[str, bytes | None, bytes]
_ids = itertools.count()


def at(offset: float) -> str:
    """RFC 3339 UTC text of T0 + offset seconds (microsecond precision)."""
    moment = datetime.fromtimestamp(T0, UTC) + timedelta(seconds=offset)
    return moment.isoformat().replace("+00:00", "Z")


def event(
    type_: str, ticket: str, offset: float, *, event_id: str | None = None, **fields: Any
) -> Message:
    """One valid message for the topic its type belongs on."""
    body: dict[str, Any] = {
        "schema_version": 1,
        "event_id": event_id if event_id is not None else f"e{next(_ids)}",
        "type": type_,
        "occurred_at": at(offset),
        "ticket_id": ticket,
        **fields,
    }
    topic = SURVEYS if type_ == "survey.responded" else TICKETS
    return (topic, ticket.encode(), json.dumps(body).encode())


def created(
    ticket: str, offset: float, *, queue: str = "billing", channel: str = "chat", **f: Any
) -> Message:
    return event("ticket.created", ticket, offset, queue=queue, channel=channel, **f)


def replied(ticket: str, offset: float, **f: Any) -> Message:
    return event("ticket.agent_replied", ticket, offset, **f)


def resolved(ticket: str, offset: float, **f: Any) -> Message:
    return event("ticket.resolved", ticket, offset, **f)


def abandoned(ticket: str, offset: float, **f: Any) -> Message:
    return event("ticket.abandoned", ticket, offset, **f)


def reopened(ticket: str, offset: float, **f: Any) -> Message:
    return event("ticket.reopened", ticket, offset, **f)


def handled(ticket: str, offset: float, talk: float, hold: float, wrap: float) -> Message:
    return event(
        "ticket.handled", ticket, offset, talk_seconds=talk, hold_seconds=hold, wrap_seconds=wrap
    )


def survey(ticket: str, offset: float, metric: str, score: int, **f: Any) -> Message:
    return event("survey.responded", ticket, offset, metric=metric, score=score, **f)


DEFAULT_CONFIG = BatchConfig()


def run(*messages: Message, config: BatchConfig = DEFAULT_CONFIG) -> BatchResult:
    return compute(messages, now=NOW, config=config)


def win(result: BatchResult, minute: int, queue: str = "billing", channel: str = "chat") -> Any:
    """The window of bucket T0 + minute*60; a missing window reads as all zeros."""
    return result.windows.get((queue, channel, T0 + minute * 60), _ZEROS)


class _Zeros(dict[str, Any]):
    def __missing__(self, key: str) -> Any:
        return {k: 0 for k in HIST_KEYS} if key.endswith("_hist") else 0


_ZEROS = _Zeros()


def hist_from(bound: str) -> dict[str, int]:
    """Cumulative histogram of one observation whose smallest bucket is ``bound``."""
    index = HIST_KEYS.index(bound)
    return {k: int(i >= index) for i, k in enumerate(HIST_KEYS)}


# --- FRT and SLA ------------------------------------------------------------


def test_reply_within_target_is_met_and_gives_frt() -> None:
    # chat target 60 s: created 0, reply 45 -> FRT 45 ("60" bucket and up), met at 45.
    r = run(created("t1", 0), replied("t1", 45))
    w = win(r, 0)
    assert w["tickets_created"] == 1
    assert (w["frt_count"], w["frt_sum_seconds"]) == (1, 45.0)
    assert w["frt_hist"] == hist_from("60")
    assert (w["sla_met"], w["sla_breached"]) == (1, 0)
    assert set(r.windows) == {("billing", "chat", T0)}
    assert r.outcomes == Counter({(TICKETS, "processed"): 2})


def test_reply_after_deadline_is_breached_in_the_deadline_bucket() -> None:
    # phone target 20 s: created 50 -> deadline 70 (minute 1); reply 100 (minute 1), FRT 50.
    r = run(created("t1", 50, channel="phone"), replied("t1", 100))
    assert win(r, 0, channel="phone")["tickets_created"] == 1
    w1 = win(r, 1, channel="phone")
    assert (w1["sla_met"], w1["sla_breached"]) == (0, 1)
    assert (w1["frt_count"], w1["frt_sum_seconds"]) == (1, 50.0)
    assert w1["frt_hist"] == hist_from("60")


def test_no_reply_at_all_is_breached() -> None:
    # email/high target 14400 s = 240 minutes: breach lands in minute 240.
    r = run(created("t1", 0, channel="email", priority="high"))
    assert win(r, 240, channel="email")["sla_breached"] == 1
    assert win(r, 0, channel="email")["sla_breached"] == 0


def test_reply_exactly_at_deadline_is_met() -> None:
    r = run(created("t1", 0), replied("t1", 60))
    assert (win(r, 1)["sla_met"], win(r, 1)["sla_breached"]) == (1, 0)


def test_default_priority_is_normal() -> None:
    # messaging normal 900 s; reply 901 -> breached at minute 15 (900 s).
    r = run(created("t1", 0, channel="messaging"), replied("t1", 901))
    assert win(r, 15, channel="messaging")["sla_breached"] == 1
    # messaging urgent 300 s; reply 299 -> met.
    r = run(created("t2", 0, channel="messaging", priority="urgent"), replied("t2", 299))
    assert win(r, 4, channel="messaging")["sla_met"] == 1


def test_sla_target_override_and_fallback() -> None:
    config = BatchConfig(sla_targets={("chat", "normal"): 10.0})
    # overridden chat/normal: 10 s, reply 30 -> breached (minute 0).
    r = run(created("t1", 0), replied("t1", 30), config=config)
    assert win(r, 0)["sla_breached"] == 1
    # phone/normal not in the mapping -> default 20 s; reply 15 -> met.
    r = run(created("t2", 0, channel="phone"), replied("t2", 15), config=config)
    assert win(r, 0, channel="phone")["sla_met"] == 1


@pytest.mark.parametrize(
    ("abandon_at", "reply_at", "met", "breached"),
    [
        (10, None, 0, 0),  # abandoned before the 20 s deadline: excluded
        (20, None, 0, 0),  # abandoned exactly at the deadline: excluded
        (25, None, 0, 1),  # abandoned after the deadline: breached (bucket of deadline, min 0)
        (10, 15, 0, 0),  # call-back reply after abandonment does not make it met
        (10, 10, 0, 0),  # reply at the same instant is not strictly before: excluded
        (10, 5, 1, 0),  # reply before abandonment: met
        (25, 5, 1, 0),  # reply before, abandoned late: met
    ],
)
def test_abandonment_and_sla(
    abandon_at: float, reply_at: float | None, met: int, breached: int
) -> None:
    messages = [created("t1", 0, channel="phone"), abandoned("t1", abandon_at)]
    if reply_at is not None:
        messages.append(replied("t1", reply_at))
    w = win(run(*messages), 0, channel="phone")
    assert (w["sla_met"], w["sla_breached"]) == (met, breached)
    assert w["tickets_abandoned"] == 1


def test_reply_before_created_gives_zero_frt() -> None:
    # FRT = max(0, 5 - 10) = 0 -> every histogram bucket; met.
    r = run(replied("t1", 5), created("t1", 10))
    w = win(r, 0)
    assert (w["frt_count"], w["frt_sum_seconds"], w["sla_met"]) == (1, 0.0, 1)
    assert w["frt_hist"] == hist_from("15")


def test_late_earlier_reply_corrects_first_reply() -> None:
    # Replies at 90 and 30 (30 arrives last): first reply 30 -> FRT 30 ("30" bucket), met at 30.
    r = run(created("t1", 0), replied("t1", 90), replied("t1", 30))
    w0, w1 = win(r, 0), win(r, 1)
    assert (w0["frt_count"], w0["frt_sum_seconds"], w0["sla_met"]) == (1, 30.0, 1)
    assert w0["frt_hist"] == hist_from("30")
    assert (w1["frt_count"], w1["sla_met"], w1["sla_breached"]) == (0, 0, 0)


def test_result_does_not_depend_on_arrival_order() -> None:
    messages = [
        created("t1", 0, channel="phone"),
        replied("t1", 90),
        replied("t1", 30),
        handled("t1", 200, 100, 10, 20),
        resolved("t1", 300),
        reopened("t1", 400),
        survey("t1", 500, "nps", 9),
    ]
    expected = run(*messages)
    for order in itertools.permutations(messages):
        assert run(*order) == expected


# --- histograms -------------------------------------------------------------


@pytest.mark.parametrize(
    ("frt", "bound"),
    [(15, "15"), (15.000001, "30"), (14.999999, "15"), (86400, "86400"), (86401, "+Inf")],
)
def test_frt_histogram_boundaries(frt: float, bound: str) -> None:
    # email/low target is 86400 s; the bucket of the reply is what matters here.
    r = run(created("t1", 0, channel="email", priority="low"), replied("t1", frt))
    (w,) = (w for w in r.windows.values() if w["frt_count"])
    assert w["frt_hist"] == hist_from(bound)
    assert w["frt_sum_seconds"] == pytest.approx(frt, abs=1e-9)


def test_aht_sums_sessions_and_histogram() -> None:
    # Two sessions: 10+2+3 = 15 ("15" bucket), 0+0+0 = 0 ("15" bucket); all at minute 2.
    # A third: 86400*3 = 259200 -> only "+Inf", at minute 3.
    r = run(
        created("t1", 0),
        handled("t1", 120, 10, 2, 3),
        handled("t1", 150, 0, 0, 0.0),
        handled("t1", 180, 86400, 86400, 86400),
    )
    w2, w3 = win(r, 2), win(r, 3)
    assert (w2["aht_count"], w2["aht_sum_seconds"]) == (2, 15.0)
    assert w2["aht_hist"] == {k: 2 for k in HIST_KEYS}
    assert (w3["aht_count"], w3["aht_sum_seconds"]) == (1, 259200.0)
    assert w3["aht_hist"] == hist_from("+Inf")


# --- resolution, abandonment, reopen, FCR ----------------------------------


def test_fcr_with_one_reply() -> None:
    # reply 10, resolved 100 (minute 1): fcr_resolved 1, first contact 1.
    r = run(created("t1", 0), replied("t1", 10), resolved("t1", 100))
    w1 = win(r, 1)
    assert (w1["tickets_resolved"], w1["fcr_resolved"], w1["fcr_first_contact"]) == (1, 1, 1)


def test_fcr_with_two_replies() -> None:
    r = run(created("t1", 0), replied("t1", 10), replied("t1", 20), resolved("t1", 100))
    assert (win(r, 1)["fcr_resolved"], win(r, 1)["fcr_first_contact"]) == (1, 0)


def test_fcr_counts_only_replies_at_or_before_resolution() -> None:
    # reply at 100 == resolution counts; reply at 101 does not -> still exactly one.
    r = run(created("t1", 0), replied("t1", 100), replied("t1", 101), resolved("t1", 100))
    assert (win(r, 1)["fcr_resolved"], win(r, 1)["fcr_first_contact"]) == (1, 1)


def test_resolution_without_reply_is_not_fcr() -> None:
    r = run(created("t1", 0), resolved("t1", 100), replied("t1", 200))
    w1 = win(r, 1)
    assert (w1["tickets_resolved"], w1["fcr_resolved"], w1["fcr_first_contact"]) == (1, 0, 0)


@pytest.mark.parametrize(
    ("reopen_at", "first_contact"),
    [
        (100, 1),  # at the resolution instant: not in (R, R+7d]
        (101, 0),  # inside
        (100 + 7 * DAY, 0),  # exactly at the window's closed end: inside
        (101 + 7 * DAY, 1),  # outside
    ],
)
def test_reopen_and_fcr_window(reopen_at: int, first_contact: int) -> None:
    r = run(created("t1", 0), replied("t1", 10), resolved("t1", 100), reopened("t1", reopen_at))
    w1 = win(r, 1)
    assert (w1["fcr_resolved"], w1["fcr_first_contact"]) == (1, first_contact)
    assert win(r, reopen_at // 60)["tickets_reopened"] == 1


def test_first_resolution_defines_fcr_and_every_resolution_counts() -> None:
    # Resolved at 400 arrives first, then a late earlier resolution at 100.
    # First resolution 100: one reply (10) at or before it; reopen at 200 is inside -> FC 0.
    r = run(
        created("t1", 0),
        replied("t1", 10),
        resolved("t1", 400),
        reopened("t1", 200),
        replied("t1", 300),
        resolved("t1", 100),
    )
    w1, w6 = win(r, 1), win(r, 6)
    assert (w1["tickets_resolved"], w1["fcr_resolved"], w1["fcr_first_contact"]) == (1, 1, 0)
    assert (w6["tickets_resolved"], w6["fcr_resolved"]) == (1, 0)
    assert win(r, 3)["tickets_reopened"] == 1


def test_fcr_window_is_configurable() -> None:
    config = BatchConfig(fcr_window=60.0)
    r = run(
        created("t1", 0), replied("t1", 10), resolved("t1", 100), reopened("t1", 161),
        config=config,
    )
    assert win(r, 1)["fcr_first_contact"] == 1


# --- deduplication, orphans, later created -----------------------------------


def test_duplicates_count_once() -> None:
    c = created("t1", 0, event_id="c")
    res = resolved("t1", 100, event_id="r")
    r = run(c, replied("t1", 10), res, res, c)
    assert win(r, 1)["tickets_resolved"] == 1
    assert win(r, 0)["tickets_created"] == 1
    assert r.outcomes == Counter({(TICKETS, "processed"): 3, (TICKETS, "duplicate"): 2})


def test_dedup_is_per_ticket() -> None:
    # the same event_id on two tickets is two events
    r = run(created("t1", 0, event_id="x"), created("t2", 0, event_id="x"))
    assert win(r, 0)["tickets_created"] == 2


def test_duplicate_id_first_copy_wins() -> None:
    # Same (ticket, event_id) with another occurred_at: the second copy is a duplicate.
    r = run(created("t1", 0), resolved("t1", 100, event_id="r"), resolved("t1", 200, event_id="r"))
    assert win(r, 1)["tickets_resolved"] == 1
    assert win(r, 3)["tickets_resolved"] == 0


def test_later_created_is_ignored() -> None:
    r = run(
        created("t1", 0, queue="billing"),
        created("t1", 5, queue="sales"),
        resolved("t1", 70),
    )
    assert win(r, 0)["tickets_created"] == 1
    assert win(r, 1)["tickets_resolved"] == 1
    assert not any(k[0] == "sales" for k in r.windows)
    assert r.outcomes == Counter({(TICKETS, "processed"): 2, (TICKETS, "ignored"): 1})


def test_orphans_and_held_events() -> None:
    # t1 never created: its events are orphaned (a duplicate copy is still a duplicate).
    # t2's reply arrives before its created: held, then processed.
    orphan = replied("t1", 10, event_id="o")
    r = run(orphan, resolved("t1", 20), orphan, replied("t2", 30), created("t2", 20))
    assert r.outcomes == Counter(
        {(TICKETS, "orphaned"): 2, (TICKETS, "duplicate"): 1, (TICKETS, "processed"): 2}
    )
    w = win(r, 0)
    assert (w["tickets_created"], w["frt_count"], w["frt_sum_seconds"], w["tickets_resolved"]) == (
        1, 1, 10.0, 0,
    )


# --- surveys ----------------------------------------------------------------


def test_survey_attribution() -> None:
    r = run(
        created("t1", 0, queue="billing", channel="chat"),
        # known ticket: the ticket's queue/channel win over the survey's own
        survey("t1", 10, "ces", 5, queue="sales", channel="email"),
        # unknown ticket with queue and channel
        survey("t2", 10, "ces", 4, queue="sales", channel="email"),
        # unknown ticket with neither
        survey("t3", 10, "ces", 3),
        # unknown ticket with queue only
        survey("t4", 10, "ces", 2, queue="sales"),
    )
    assert win(r, 0)["ces_score_sum"] == 5.0
    assert win(r, 0, "sales", "email")["ces_score_sum"] == 4.0
    assert win(r, 0, "unknown", "unknown")["ces_score_sum"] == 3.0
    assert win(r, 0, "sales", "unknown")["ces_score_sum"] == 2.0
    assert r.outcomes == Counter({(TICKETS, "processed"): 1, (SURVEYS, "processed"): 4})


def test_survey_for_ticket_created_later_uses_the_ticket() -> None:
    r = run(survey("t1", 10, "nps", 10), created("t1", 0))
    assert win(r, 0)["nps_responses"] == 1
    assert ("unknown", "unknown", T0) not in r.windows


def test_csat_scales() -> None:
    # 3-point: 3 satisfied, 2 not. 5-point (default): 5 and 4 satisfied, 3 not.
    # 10-point: 9 satisfied, 8 not. 7-point: 6 satisfied.
    # responses 8; satisfied: 3/3, 5/5, 4/5, 9/10, 6/7 -> 5.
    r = run(
        created("t1", 0),
        survey("t1", 1, "csat", 3, scale_max=3),
        survey("t1", 2, "csat", 2, scale_max=3),
        survey("t1", 3, "csat", 5),
        survey("t1", 4, "csat", 4),
        survey("t1", 5, "csat", 3),
        survey("t1", 6, "csat", 9, scale_max=10),
        survey("t1", 7, "csat", 8, scale_max=10),
        survey("t1", 8, "csat", 6, scale_max=7),
    )
    assert (win(r, 0)["csat_responses"], win(r, 0)["csat_satisfied"]) == (8, 5)


def test_nps() -> None:
    # 10, 9 promoters; 8, 7 passives; 6, 0 detractors.
    r = run(created("t1", 0), *(survey("t1", 1, "nps", s) for s in (10, 9, 8, 7, 6, 0)))
    w = win(r, 0)
    assert (w["nps_responses"], w["nps_promoters"], w["nps_detractors"]) == (6, 2, 2)


def test_ces() -> None:
    r = run(created("t1", 0), survey("t1", 1, "ces", 1), survey("t1", 2, "ces", 7))
    w = win(r, 0)
    assert (w["ces_responses"], w["ces_score_sum"]) == (2, 8.0)
    assert isinstance(w["ces_score_sum"], float)


def test_survey_and_ticket_event_share_dedup_set() -> None:
    r = run(created("t1", 0, event_id="same"), survey("t1", 1, "ces", 1, event_id="same"))
    assert r.outcomes[(SURVEYS, "duplicate")] == 1
    assert win(r, 0)["ces_responses"] == 0


# --- window shape -----------------------------------------------------------


def test_window_has_every_field_with_types() -> None:
    # created at 0 (minute 0), unanswered chat: breach at 60 (minute 1)
    r = run(created("t1", 0))
    assert set(r.windows) == {("billing", "chat", T0), ("billing", "chat", T0 + 60)}
    w = win(r, 0)
    assert set(w) == {
        "tickets_created", "tickets_resolved", "tickets_abandoned", "tickets_reopened",
        "frt_count", "frt_sum_seconds", "frt_hist", "aht_count", "aht_sum_seconds", "aht_hist",
        "sla_met", "sla_breached", "fcr_resolved", "fcr_first_contact",
        "csat_responses", "csat_satisfied", "nps_responses", "nps_promoters", "nps_detractors",
        "ces_responses", "ces_score_sum",
    }
    assert type(w["tickets_created"]) is int
    assert type(w["frt_sum_seconds"]) is float
    assert list(w["frt_hist"]) == list(HIST_KEYS)


def test_negative_and_offset_timestamps_bucket_by_utc() -> None:
    assert parse_rfc3339_us("2026-11-22T11:00:00+01:00") == T0 * 1_000_000
    assert parse_rfc3339_us("2026-11-22T09:00:00-01:00") == T0 * 1_000_000
    assert parse_rfc3339_us("2026-11-22t10:00:00.5z") == T0 * 1_000_000 + 500_000
    assert parse_rfc3339_us("1969-12-31T23:59:59.999999Z") == -1


# --- bad input --------------------------------------------------------------


def raw(body: Any, *, topic: str = TICKETS, key: bytes | None = b"t1") -> Message:
    return (topic, key, json.dumps(body).encode())


def base(**changes: Any) -> dict[str, Any]:
    """A valid ticket.resolved body for t1, with fields changed or (value ...) removed."""
    body: dict[str, Any] = {
        "schema_version": 1,
        "event_id": "e",
        "type": "ticket.resolved",
        "occurred_at": at(0),
        "ticket_id": "t1",
    }
    body.update(changes)
    return {k: v for k, v in body.items() if v is not ...}


def created_body(**changes: Any) -> dict[str, Any]:
    return base(**{"type": "ticket.created", "queue": "billing", "channel": "chat", **changes})


def survey_body(**changes: Any) -> dict[str, Any]:
    return base(**{"type": "survey.responded", "metric": "csat", "score": 5, **changes})


def handled_body(**changes: Any) -> dict[str, Any]:
    defaults = {"type": "ticket.handled", "talk_seconds": 1, "hold_seconds": 2.5, "wrap_seconds": 0}
    return base(**{**defaults, **changes})


def outcome_of(message: Message) -> tuple[str, str | None]:
    """(outcome, dead-letter reason) of one message, with its ticket created."""
    is_created = b'"ticket.created"' in message[2]
    prefix = [created("t1", -10)] if message[0] == TICKETS and not is_created else []
    r = run(*prefix, message)
    rest = r.outcomes - Counter({(TICKETS, "processed"): len(prefix)})
    ((_, outcome),) = rest.elements()
    reasons = list(r.dead_letter_reasons)
    assert len(reasons) == (outcome == "dead_letter")
    return outcome, (reasons[0] if reasons else None)


OVERFLOW = json.dumps(handled_body(talk_seconds="INF")).replace('"INF"', "1e999").encode()
BIG = b'{"schema_version": 1, "pad": "' + b"x" * (64 * 1024) + b'"}'

VALID_CASES: list[Message] = [
    raw(base()),
    raw(created_body(priority="urgent", customer_id="c9", extra={"x": 1})),
    raw(handled_body(talk_seconds=86400, hold_seconds=0.0)),
    raw(survey_body(score=1, scale_max=3, comment="ok", agent_id="a"), topic=SURVEYS),
    raw(survey_body(metric="nps", score=0, scale_max=10), topic=SURVEYS),
    raw(base(occurred_at="2026-11-22T10:00:00.123456+05:30")),
    raw(base(occurred_at=at(NOW - T0 + 300))),  # exactly max_clock_skew ahead: allowed
    raw(created_body(queue="a" * 64, event_id="e" * 128)),
    raw(created_body(priority=None, customer_id=None)),  # null means "not given"
    raw(survey_body(scale_max=None, queue=None, agent_id=None), topic=SURVEYS),
]


@pytest.mark.parametrize("message", VALID_CASES)
def test_valid_messages_are_processed(message: Message) -> None:
    assert outcome_of(message) == ("processed", None)


BAD_CASES: list[tuple[Message, str]] = [
    ((TICKETS, b"t1", BIG), "too_large"),
    ((TICKETS, b"t1", b"{not json"), "invalid_json"),
    ((TICKETS, b"t1", b'{"a": "\xff"}'), "invalid_json"),  # not UTF-8
    ((TICKETS, b"t1", b'{"schema_version": NaN}'), "invalid_json"),
    ((TICKETS, b"t1", b"[1, 2]"), "not_an_object"),
    ((TICKETS, b"t1", b'"text"'), "not_an_object"),
    (raw(base(schema_version=2)), "unsupported_version"),
    (raw(base(schema_version=...)), "schema"),
    (raw(base(schema_version=True)), "schema"),
    (raw(base(schema_version=1.0)), "schema"),
    (raw(base(event_id="")), "schema"),
    (raw(base(event_id="e" * 129)), "schema"),
    (raw(base(ticket_id=7)), "schema"),
    (raw(base(type=None)), "schema"),
    (raw(base(occurred_at=...)), "schema"),
    (raw(created_body(queue="bad queue")), "schema"),
    (raw(created_body(queue="a" * 65)), "schema"),
    (raw(created_body(channel="fax")), "schema"),
    (raw(created_body(channel=...)), "schema"),
    (raw(created_body(priority="asap")), "schema"),
    (raw(created_body(customer_id=5)), "schema"),
    (raw(handled_body(talk_seconds=-1)), "schema"),
    (raw(handled_body(wrap_seconds=86400.5)), "schema"),
    (raw(handled_body(hold_seconds="3")), "schema"),
    (raw(handled_body(hold_seconds=False)), "schema"),
    (raw(handled_body(talk_seconds=...)), "schema"),
    ((TICKETS, b"t1", OVERFLOW), "schema"),  # 1e999 parses as infinity
    (raw(base(agent_id=3)), "schema"),
    (raw(survey_body(score=5.0), topic=SURVEYS), "schema"),
    (raw(survey_body(score=True), topic=SURVEYS), "schema"),
    (raw(survey_body(score=0), topic=SURVEYS), "schema"),
    (raw(survey_body(score=4, scale_max=3), topic=SURVEYS), "schema"),
    (raw(survey_body(scale_max=4), topic=SURVEYS), "schema"),
    (raw(survey_body(metric="nps", score=11), topic=SURVEYS), "schema"),
    (raw(survey_body(metric="nps", score=5, scale_max=5), topic=SURVEYS), "schema"),
    (raw(survey_body(metric="ces", score=8), topic=SURVEYS), "schema"),
    (raw(survey_body(metric="ces", score=0), topic=SURVEYS), "schema"),
    (raw(survey_body(metric="stars"), topic=SURVEYS), "schema"),
    (raw(survey_body(score=...), topic=SURVEYS), "schema"),
    (raw(survey_body(comment="x" * 4097), topic=SURVEYS), "schema"),
    (raw(survey_body(queue="bad/queue"), topic=SURVEYS), "schema"),
    (raw(survey_body(channel="fax"), topic=SURVEYS), "schema"),
    (raw(base(occurred_at="2026-11-22T10:00:00")), "bad_timestamp"),  # no offset
    (raw(base(occurred_at="2026-11-22T10:00:00.1234567Z")), "bad_timestamp"),
    (raw(base(occurred_at="2026-11-22 10:00:00Z")), "bad_timestamp"),
    (raw(base(occurred_at="2026-02-30T10:00:00Z")), "bad_timestamp"),
    (raw(base(occurred_at="2026-11-22T24:00:00Z")), "bad_timestamp"),
    (raw(base(occurred_at="2026-11-22T10:00:00+0100")), "bad_timestamp"),
    (raw(base(occurred_at="yesterday")), "bad_timestamp"),
    (raw(base(occurred_at=at(NOW - T0 + 300.000001))), "future_timestamp"),
    (raw(base(), key=None), "key_mismatch"),
    (raw(base(), key=b"t2"), "key_mismatch"),
    (raw(base(), key=b"\xff"), "key_mismatch"),
    (raw(base(), topic=SURVEYS), "wrong_topic"),
    (raw(survey_body(), topic=TICKETS), "wrong_topic"),
]


@pytest.mark.parametrize(("message", "reason"), BAD_CASES)
def test_dead_letter_reasons(message: Message, reason: str) -> None:
    assert outcome_of(message) == ("dead_letter", reason)


@pytest.mark.parametrize("topic", [TICKETS, SURVEYS])
def test_unknown_type_is_ignored(topic: str) -> None:
    assert outcome_of(raw(base(type="ticket.escalated"), topic=topic)) == ("ignored", None)


def test_exactly_64_kib_is_not_too_large() -> None:
    body = json.dumps(base(pad="")).encode()
    padded = body.replace(b'"pad": ""', b'"pad": "' + b"x" * (64 * 1024 - len(body)) + b'"')
    assert len(padded) == 64 * 1024
    assert outcome_of((TICKETS, b"t1", padded)) == ("processed", None)


def test_every_message_has_exactly_one_outcome() -> None:
    messages: list[Message] = [created("t1", 0), replied("t1", 5), replied("t9", 5)]
    messages += [m for m, _ in BAD_CASES] + VALID_CASES
    messages.append(raw(base(type="x.y")))
    r = run(*messages)
    assert sum(r.outcomes.values()) == len(messages)
    assert sum(r.dead_letter_reasons.values()) == len(BAD_CASES)
    assert r.outcomes[(TICKETS, "orphaned")] == 1


# --- partitions and per-partition watermarks ----------------------------------

# With 2 partitions (checked below against aiokafka's DefaultPartitioner):
# t1 and t6 are on partition 1, t2 and t3 on partition 0.
P = 2


def run_at(
    *messages: Message,
    watermarks: dict[int, float],
    config: BatchConfig = DEFAULT_CONFIG,
) -> BatchResult:
    """compute() at the end of the stream, with watermarks given as offsets from T0."""
    marks = {p: T0 + offset for p, offset in watermarks.items()}
    return compute(messages, now=NOW, config=config, partitions=P, watermarks=marks)


@pytest.mark.parametrize("key", ["t1", "t2", "t3", "t6", "ticket-42", "é", "a" * 128])
@pytest.mark.parametrize("partitions", [1, 2, 3, 12])
def test_partition_is_what_the_default_partitioner_picks(key: str, partitions: int) -> None:
    every = list(range(partitions))
    expected = DefaultPartitioner()(key.encode(), every, every)
    assert partition_of(key, partitions) == expected


def test_partitions_of_the_test_tickets() -> None:
    assert [partition_of(t, P) for t in ("t1", "t2", "t3", "t6")] == [1, 0, 0, 1]


@pytest.mark.parametrize(
    ("key", "java_murmur2"),
    # Kafka's UtilsTest vectors for org.apache.kafka.common.utils.Utils.murmur2 (signed).
    [("21", -973932308), ("foobar", -790332482), ("abc", 479470107)],
)
def test_partition_matches_kafkas_java_murmur2(key: str, java_murmur2: int) -> None:
    for partitions in (1, 2, 3, 12, 100):
        assert partition_of(key, partitions) == (java_murmur2 & 0x7FFFFFFF) % partitions


@pytest.mark.parametrize(
    ("w1", "breached"),
    [
        (19.999999, 0),  # a microsecond before the deadline (phone: created 0 + 20 s)
        (20, 1),  # exactly at the deadline: reached
        (1000, 1),
    ],
)
def test_breach_needs_the_tickets_partition_watermark(w1: float, breached: int) -> None:
    # t1 is on partition 1; partition 0's watermark is far past, which must not count.
    r = run_at(created("t1", 0, channel="phone"), watermarks={0: 5000, 1: w1})
    assert win(r, 0, channel="phone")["sla_breached"] == breached
    assert win(r, 0, channel="phone")["sla_met"] == 0
    assert win(r, 0, channel="phone")["tickets_created"] == 1


def test_other_partitions_watermark_does_not_breach() -> None:
    # t2 (partition 0) past its deadline, t1 (partition 1) not: only t2 is breached.
    r = run_at(
        created("t1", 0, channel="phone"),
        created("t2", 0, channel="phone"),
        watermarks={0: 20, 1: 19},
    )
    assert win(r, 0, channel="phone")["sla_breached"] == 1
    r = run_at(
        created("t1", 0, channel="phone"),
        created("t2", 0, channel="phone"),
        watermarks={0: 19, 1: 20},
    )
    assert win(r, 0, channel="phone")["sla_breached"] == 1
    r = run_at(
        created("t1", 0, channel="phone"),
        created("t2", 0, channel="phone"),
        watermarks={0: 19, 1: 19},
    )
    assert win(r, 0, channel="phone")["sla_breached"] == 0


def test_met_and_excluded_do_not_depend_on_the_watermark() -> None:
    # t1 replied exactly at its deadline: met. t6 abandoned before its deadline: excluded.
    r = run_at(
        created("t1", 0, channel="phone"),
        replied("t1", 20),
        created("t6", 0, channel="phone"),
        abandoned("t6", 10),
        watermarks={0: 0, 1: 15},
    )
    w = win(r, 0, channel="phone")
    assert (w["sla_met"], w["sla_breached"]) == (1, 0)
    r = run_at(created("t6", 0, channel="phone"), abandoned("t6", 10), watermarks={0: 0, 1: 9000})
    assert win(r, 0, channel="phone")["sla_breached"] == 0


def test_watermarks_need_partitions_and_a_mark_per_ticket_partition() -> None:
    with pytest.raises(ValueError, match="need partitions"):
        compute([created("t1", 0)], now=NOW, watermarks={0: T0})
    with pytest.raises(ValueError, match="partition 1"):
        compute([created("t1", 0)], now=NOW, partitions=P, watermarks={0: T0})
    with pytest.raises(ValueError, match="at least 1"):
        compute([created("t1", 0)], now=NOW, partitions=0, watermarks={0: T0})


def test_no_watermarks_keeps_todays_behaviour() -> None:
    r = compute([created("t1", 0, channel="phone")], now=NOW, partitions=P)
    assert win(r, 1, channel="phone")["sla_breached"] == 0
    assert win(r, 0, channel="phone")["sla_breached"] == 1
    assert (r.live, r.oldest_waiting) == ({}, {})
    assert run(created("t1", 0)).live == {}


# --- live gauges at the end ---------------------------------------------------


def gauges(result: BatchResult, priority: str = "normal") -> tuple[int, int, int]:
    """(open, waiting, at_risk) of billing/chat/priority."""
    return tuple(  # type: ignore[return-value]
        result.live.get(("billing", "chat", priority, g), 0) for g in ("open", "waiting", "at_risk")
    )


@pytest.mark.parametrize(
    ("w1", "expected"),
    [
        # chat target 60 s, created at 0: deadline 60, at risk from 60 - 0.25*60 = 45.
        (0, (1, 1, 0)),
        (44.999999, (1, 1, 0)),
        (45, (1, 1, 1)),  # exactly deadline - 0.25 * target: at risk
        (59.999999, (1, 1, 1)),
        (60, (1, 1, 0)),  # exactly at the deadline: breached, no longer at risk
        (600, (1, 1, 0)),
    ],
)
def test_at_risk_boundaries(w1: float, expected: tuple[int, int, int]) -> None:
    r = run_at(created("t1", 0), watermarks={0: 1000, 1: w1})
    assert gauges(r) == expected
    assert r.oldest_waiting == {("billing", "chat"): float(w1)}
    assert win(r, 1)["sla_breached"] == (1 if w1 >= 60 else 0)


def test_at_risk_fraction_is_configurable_and_priority_is_a_label() -> None:
    # email urgent: target 3600 s; fraction 0.5 -> at risk from 1800 to 3600.
    config = BatchConfig(at_risk_fraction=0.5)
    r = run_at(
        created("t1", 0, channel="email", priority="urgent"),
        watermarks={0: 0, 1: 1800},
        config=config,
    )
    assert r.live == {
        ("billing", "email", "urgent", "open"): 1,
        ("billing", "email", "urgent", "waiting"): 1,
        ("billing", "email", "urgent", "at_risk"): 1,
    }
    r = run_at(
        created("t1", 0, channel="email", priority="urgent"),
        watermarks={0: 0, 1: 1799.999999},
        config=config,
    )
    assert ("billing", "email", "urgent", "at_risk") not in r.live


def test_replied_is_open_but_not_waiting() -> None:
    r = run_at(created("t1", 0), replied("t1", 10), watermarks={0: 0, 1: 50})
    assert r.live == {("billing", "chat", "normal", "open"): 1}
    assert r.oldest_waiting == {}


def test_replied_after_the_deadline_is_not_waiting_either() -> None:
    r = run_at(created("t1", 0), replied("t1", 500), watermarks={0: 0, 1: 500})
    assert gauges(r) == (1, 0, 0)


@pytest.mark.parametrize(
    ("facts", "expected"),
    [
        ([resolved("t1", 100)], (0, 0, 0)),
        ([resolved("t1", 100), reopened("t1", 200)], (1, 1, 0)),  # reopened after: open again
        ([resolved("t1", 100), reopened("t1", 100)], (0, 0, 0)),  # same instant: not later
        ([resolved("t1", 100), reopened("t1", 200), resolved("t1", 300)], (0, 0, 0)),
        # arrival order does not matter, occurred_at does (late earlier resolution)
        ([reopened("t1", 200), resolved("t1", 300), resolved("t1", 100)], (0, 0, 0)),
        ([resolved("t1", 300), reopened("t1", 400), resolved("t1", 100)], (1, 1, 0)),
        # a reopen without any resolution: open (never resolved)
        ([reopened("t1", 50)], (1, 1, 0)),
        ([abandoned("t1", 10)], (0, 0, 0)),
        ([abandoned("t1", 10), resolved("t1", 20), reopened("t1", 30)], (0, 0, 0)),
        ([replied("t1", 10), resolved("t1", 100), reopened("t1", 200)], (1, 0, 0)),
    ],
)
def test_open_and_waiting(facts: list[Message], expected: tuple[int, int, int]) -> None:
    r = run_at(created("t1", 0), *facts, watermarks={0: 0, 1: 1000})
    assert gauges(r) == expected
    assert (("billing", "chat") in r.oldest_waiting) == bool(expected[1])
    assert all(n > 0 for n in r.live.values())  # zero counts are left out


def test_orphans_are_never_live() -> None:
    r = run_at(replied("t1", 10), reopened("t2", 20), watermarks={0: 100, 1: 100})
    assert (r.live, r.oldest_waiting) == ({}, {})


def test_live_counts_sum_over_tickets() -> None:
    # t1, t6 (partition 1) and t2, t3 (partition 0), all billing/chat/normal.
    r = run_at(
        created("t1", 0),
        created("t6", 10),
        replied("t6", 20),
        created("t2", 0),
        created("t3", 0),
        abandoned("t3", 5),
        watermarks={0: 30, 1: 50},
    )
    # open t1, t6, t2; waiting t1, t2; at risk: t1 only (W 50 in [45, 60)), t2 has W 30.
    assert gauges(r) == (3, 2, 1)


def test_oldest_waiting_uses_each_tickets_partition_watermark() -> None:
    r = run_at(
        created("t1", 10),  # partition 1: 100 - 10 = 90
        created("t2", 50),  # partition 0: 200 - 50 = 150 (created later, yet older)
        created("t6", 0),  # partition 1, replied: not waiting
        replied("t6", 1),
        created("t3", 0.5, queue="sales"),  # partition 0: 200 - 0.5
        created("t3x", 0, channel="email"),  # resolved: not open
        resolved("t3x", 5),
        watermarks={0: 200, 1: 100},
    )
    assert r.oldest_waiting == {("billing", "chat"): 150.0, ("sales", "chat"): 199.5}


def test_watermark_is_taken_to_the_microsecond() -> None:
    # created at 0.000001; W = 45.000001 is exactly deadline - 15 s: at risk.
    r = run_at(created("t1", 0.000001), watermarks={0: 0, 1: 45.000001})
    assert gauges(r) == (1, 1, 1)
    assert r.oldest_waiting[("billing", "chat")] == pytest.approx(45.0, abs=1e-6)


# --- rolling windows ----------------------------------------------------------


def rolling_input() -> BatchResult:
    # Chat, every reply within target (met in the bucket of the reply).
    return run(
        created("a", 0), replied("a", 10),  # minute 0, FRT 10
        created("b", 60), replied("b", 90),  # minute 1, FRT 30
        created("c", 299), replied("c", 299.5),  # minute 4, FRT 0.5
        created("d", 300), replied("d", 330),  # minute 5, FRT 30
        created("e", 360), replied("e", 361),  # minute 6, FRT 1
        created("f", 240, queue="sales"), replied("f", 250),  # sales minute 4, FRT 10
        survey("d", 301, "ces", 4),  # minute 5
    )  # fmt: skip


def test_rolling_sums_the_buckets_ending_with_end_bucket() -> None:
    r = rolling_input()
    # 5 minutes ending with minute 5: starts in (T0, T0+300] -> minutes 1..5.
    # Minute 0 starts exactly length_seconds before the end: excluded. Minute 6 is later.
    totals = rolling(r.windows, end_bucket=T0 + 300, length_seconds=300)
    assert set(totals) == {("billing", "chat"), ("sales", "chat")}
    b = totals[("billing", "chat")]
    assert (b["tickets_created"], b["frt_count"], b["sla_met"], b["sla_breached"]) == (3, 3, 3, 0)
    assert b["frt_sum_seconds"] == 60.5
    assert b["frt_hist"] == {k: (1 if k == "15" else 3) for k in HIST_KEYS}
    assert (b["ces_responses"], b["ces_score_sum"]) == (1, 4.0)
    assert type(b["tickets_created"]) is int and type(b["frt_sum_seconds"]) is float
    assert type(b["ces_score_sum"]) is float and type(b["aht_sum_seconds"]) is float
    assert b["aht_hist"] == dict.fromkeys(HIST_KEYS, 0)
    s = totals[("sales", "chat")]
    assert (s["tickets_created"], s["frt_sum_seconds"]) == (1, 10.0)


def test_rolling_end_bucket_is_included_and_the_start_edge_excluded() -> None:
    r = rolling_input()
    one = rolling(r.windows, end_bucket=T0, length_seconds=60)  # just minute 0
    assert set(one) == {("billing", "chat")}
    only = one[("billing", "chat")]
    assert (only["tickets_created"], only["frt_sum_seconds"]) == (1, 10.0)
    # Six minutes ending with minute 5 reach back to minute 0.
    six = rolling(r.windows, end_bucket=T0 + 300, length_seconds=360)
    assert six[("billing", "chat")]["tickets_created"] == 4
    # Ending with minute 3 (no window there): minutes 0..3 in the 1 h window.
    hour = rolling(r.windows, end_bucket=T0 + 180, length_seconds=3600)
    assert set(hour) == {("billing", "chat")}
    assert hour[("billing", "chat")]["tickets_created"] == 2
    # Nothing in range: empty.
    assert rolling(r.windows, end_bucket=T0 - 60, length_seconds=300) == {}


def test_rolling_does_not_change_its_input() -> None:
    r = rolling_input()
    before = json.dumps(sorted(r.windows.items()))
    rolling(r.windows, end_bucket=T0 + 300, length_seconds=86400)
    assert json.dumps(sorted(r.windows.items())) == before


@pytest.mark.parametrize(("end", "length"), [(T0 + 30, 300), (T0, 0), (T0, 90), (T0, -60)])
def test_rolling_rejects_non_bucket_arguments(end: int, length: int) -> None:
    with pytest.raises(ValueError):
        rolling({}, end_bucket=end, length_seconds=length)
