"""Hand-worked cases for the batch reference (tests/reference/batch.py)."""

from __future__ import annotations

import itertools
import json
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.reference.batch import (
    HIST_KEYS,
    BatchConfig,
    BatchResult,
    compute,
    parse_rfc3339_us,
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
