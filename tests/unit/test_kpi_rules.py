"""Each rule of SPEC section 3, through the stage-1 processor (no Kafka, no Faust)."""

from __future__ import annotations

import itertools
import random

import pytest

from streams.contributions import contributions
from streams.facts import TicketFacts
from streams.rules import KpiRules, default_sla_targets
from tests.unit.kpi_harness import Harness, event


def test_created_resolved_abandoned_reopened_counted_in_their_own_buckets() -> None:
    h = Harness().feed(
        event("created", "A", 5),
        event("abandoned", "A", 70),
        event("resolved", "A", 130),
        event("resolved", "A", 131),
        event("reopened", "A", 200),
    )
    assert h.field("tickets_created") == {0: 1}
    assert h.field("tickets_abandoned") == {60: 1}
    assert h.field("tickets_resolved") == {120: 2}
    assert h.field("tickets_reopened") == {180: 1}


def test_frt_is_from_creation_to_earliest_reply_in_the_reply_bucket() -> None:
    h = Harness().feed(
        event("created", "A", 10),
        event("agent_replied", "A", 75),
        event("agent_replied", "A", 90),
    )
    assert h.field("frt_count") == {60: 1}
    assert h.field("frt_sum_seconds") == {60: 65.0}


def test_out_of_order_events_give_the_same_result_as_in_order() -> None:
    events = [
        event("created", "A", 0, queue="billing", channel="chat"),
        event("agent_replied", "A", 50),
        event("agent_replied", "A", 80),
        event("handled", "A", 100, talk_seconds=60, hold_seconds=5, wrap_seconds=20),
        event("resolved", "A", 110),
        event("reopened", "A", 400),
        event("survey.responded", "A", 500, metric="csat", score=4),
    ]
    expected = Harness().feed(*events).totals
    expected_clean = {k: v for k, v in expected.items() if v}
    rng = random.Random(7)
    for _ in range(30):
        shuffled = events[:]
        rng.shuffle(shuffled)
        got = Harness().feed(*shuffled).totals
        assert {k: v for k, v in got.items() if v} == pytest.approx(expected_clean)


def test_redelivered_event_counts_once_and_is_reported_duplicate() -> None:
    created = event("created", "A", 0)
    reply = event("agent_replied", "A", 5)
    h = Harness().feed(created, reply, reply, created)
    assert h.field("frt_count") == {0: 1}
    assert h.field("tickets_created") == {0: 1}
    assert h.outcomes[("tickets", "duplicate")] == 2
    assert h.outcomes[("tickets", "processed")] == 2


def test_second_created_with_a_new_event_id_is_ignored() -> None:
    h = Harness().feed(
        event("created", "A", 0, queue="billing"),
        event("created", "A", 30, event_id="other", queue="sales"),
    )
    assert h.field("tickets_created") == {0: 1}
    assert h.field("tickets_created", queue="sales") == {}
    assert h.outcomes[("tickets", "ignored")] == 1


def test_sla_met_when_first_reply_at_or_before_deadline() -> None:
    # phone target is 20 s: a reply at exactly the deadline meets it.
    h = Harness().feed(event("created", "A", 0), event("agent_replied", "A", 20))
    assert h.field("sla_met") == {0: 1}
    assert h.field("sla_breached") == {}


def test_breach_appears_when_watermark_reaches_deadline_with_no_event_for_the_ticket() -> None:
    h = Harness().feed(event("created", "A", 50))  # deadline 70
    h.feed(event("created", "B", 69))
    assert h.field("sla_breached") == {}
    h.feed(event("created", "C", 70))  # another ticket moves the watermark to 70
    assert h.field("sla_breached") == {60: 1}


def test_breach_by_idle_watermark_advance() -> None:
    h = Harness().feed(event("created", "A", 0))
    h.advance(19.9)
    assert h.field("sla_breached") == {}
    h.advance(20)
    assert h.field("sla_breached") == {0: 1}


def test_late_earlier_reply_corrects_frt_and_turns_breach_into_met() -> None:
    h = Harness().feed(
        event("created", "A", 0),
        event("created", "B", 25, queue="sales"),  # watermark 25: A breached at 20
        event("agent_replied", "A", 90),
    )
    assert h.field("sla_breached") == {0: 1}
    assert h.field("frt_sum_seconds") == {60: 90.0}
    h.feed(event("agent_replied", "A", 15))  # the real first reply arrives late
    assert h.field("sla_breached") == {}
    assert h.field("sla_met") == {0: 1}
    assert h.field("frt_sum_seconds") == {0: 15.0}
    assert h.field("frt_count") == {0: 1}


def test_abandon_before_deadline_without_reply_is_excluded_from_sla() -> None:
    h = Harness().feed(
        event("created", "A", 0),
        event("abandoned", "A", 10),
        event("created", "B", 500),
    )
    assert h.field("sla_breached") == {}
    assert h.field("sla_met") == {}
    # A call-back reply after the abandon, still before the deadline, stays excluded.
    h.feed(event("agent_replied", "A", 15))
    assert h.field("sla_met") == {}
    assert h.field("frt_count") == {0: 1}


def test_abandon_after_deadline_is_a_breach_and_reply_before_abandon_is_met() -> None:
    late = Harness().feed(event("created", "A", 0), event("abandoned", "A", 30))
    assert late.field("sla_breached") == {0: 1}
    served = Harness().feed(
        event("created", "A", 0), event("agent_replied", "A", 5), event("abandoned", "A", 10)
    )
    assert served.field("sla_met") == {0: 1}


def test_fcr_one_reply_counts_as_first_contact() -> None:
    h = Harness().feed(
        event("created", "A", 0), event("agent_replied", "A", 10), event("resolved", "A", 65)
    )
    assert h.field("fcr_resolved") == {60: 1}
    assert h.field("fcr_first_contact") == {60: 1}


def test_fcr_two_replies_is_resolved_but_not_first_contact() -> None:
    h = Harness().feed(
        event("created", "A", 0),
        event("agent_replied", "A", 10),
        event("agent_replied", "A", 40),
        event("resolved", "A", 65),
        event("agent_replied", "A", 100),  # after resolution: does not count
    )
    assert h.field("fcr_resolved") == {60: 1}
    assert h.field("fcr_first_contact") == {}


def test_fcr_needs_a_reply_at_or_before_resolution() -> None:
    h = Harness().feed(event("created", "A", 0), event("resolved", "A", 5))
    h.feed(event("agent_replied", "A", 6))
    assert h.field("fcr_resolved") == {}


def test_reopen_inside_fcr_window_retracts_first_contact() -> None:
    h = Harness().feed(
        event("created", "A", 0), event("agent_replied", "A", 10), event("resolved", "A", 20)
    )
    assert h.field("fcr_first_contact") == {0: 1}
    h.feed(event("reopened", "A", 3600))
    assert h.field("fcr_first_contact") == {}
    assert h.field("fcr_resolved") == {0: 1}


def test_reopen_after_fcr_window_keeps_first_contact() -> None:
    rules = KpiRules(fcr_window=3600)
    h = Harness(rules).feed(
        event("created", "A", 0),
        event("agent_replied", "A", 10),
        event("resolved", "A", 20),
        event("reopened", "A", 20 + 3600),  # exactly at the window end: inside
    )
    assert h.field("fcr_first_contact") == {}
    h2 = Harness(rules).feed(
        event("created", "A", 0),
        event("agent_replied", "A", 10),
        event("resolved", "A", 20),
        event("reopened", "A", 20 + 3601),
    )
    assert h2.field("fcr_first_contact") == {0: 1}


def test_aht_sums_talk_hold_wrap_per_handled_event() -> None:
    h = Harness().feed(
        event("created", "A", 0),
        event("handled", "A", 70, talk_seconds=100, hold_seconds=20, wrap_seconds=30.5),
        event("handled", "A", 75, talk_seconds=10, hold_seconds=0, wrap_seconds=0),
    )
    assert h.field("aht_count") == {60: 2}
    assert h.field("aht_sum_seconds") == {60: 160.5}


@pytest.mark.parametrize(
    ("seconds", "first_cell"),
    [(0, "15"), (15, "15"), (15.001, "30"), (86400, "86400"), (86400.5, "+Inf")],
)
def test_histogram_is_cumulative_with_inclusive_upper_bounds(
    seconds: float, first_cell: str
) -> None:
    h = Harness().feed(event("created", "A", 0, channel="email"))
    h.feed(event("agent_replied", "A", seconds))
    bounds = ["15", "30", "60", "120", "300", "600", "1800", "3600", "7200", "14400", "28800",
              "86400", "+Inf"]
    counted = [b for b in bounds if sum(h.field(f"frt_hist:{b}", channel="email").values())]
    assert counted == bounds[bounds.index(first_cell):]


def test_survey_follows_ticket_queue_and_channel() -> None:
    h = Harness().feed(
        event("created", "A", 0, queue="tech", channel="chat"),
        event("survey.responded", "A", 65, metric="csat", score=4, queue="billing"),
    )
    assert h.field("csat_responses", "tech", "chat") == {60: 1}
    assert h.field("csat_satisfied", "tech", "chat") == {60: 1}


def test_survey_for_unknown_ticket_waits_then_uses_its_own_or_unknown_attribution() -> None:
    h = Harness().feed(
        event("survey.responded", "X", 0, metric="nps", score=10, queue="sales", channel="web"),
        event("survey.responded", "Y", 0, metric="nps", score=3),
    )
    assert h.field("nps_responses", "sales", "web") == {}
    h.advance(599)
    assert h.field("nps_responses", "sales", "web") == {}
    h.advance(600)
    assert h.field("nps_promoters", "sales", "web") == {0: 1}
    assert h.field("nps_detractors", "unknown", "unknown") == {0: 1}
    assert h.outcomes[("surveys", "processed")] == 2


def test_survey_moves_to_ticket_queue_if_created_arrives_after_timeout() -> None:
    h = Harness().feed(event("survey.responded", "X", 0, metric="ces", score=6, queue="sales"))
    h.advance(700)
    assert h.field("ces_score_sum", "sales", "unknown") == {0: 6}
    h.feed(event("created", "X", -30, queue="tech", channel="chat"))
    assert h.field("ces_score_sum", "sales", "unknown") == {}
    assert h.field("ces_score_sum", "tech", "chat") == {0: 6}


@pytest.mark.parametrize(
    ("scale", "score", "satisfied"),
    [(3, 3, 1), (3, 2, 0), (5, 4, 1), (5, 3, 0), (7, 6, 1), (10, 9, 1), (10, 8, 0)],
)
def test_csat_top_two_box(scale: int, score: int, satisfied: int) -> None:
    h = Harness().feed(
        event("created", "A", 0),
        event("survey.responded", "A", 1, metric="csat", score=score, scale_max=scale),
    )
    assert sum(h.field("csat_satisfied").values()) == satisfied


@pytest.mark.parametrize(("score", "promoter", "detractor"), [(10, 1, 0), (9, 1, 0), (8, 0, 0),
                                                              (7, 0, 0), (6, 0, 1), (0, 0, 1)])
def test_nps_buckets(score: int, promoter: int, detractor: int) -> None:
    h = Harness().feed(
        event("created", "A", 0), event("survey.responded", "A", 1, metric="nps", score=score)
    )
    assert sum(h.field("nps_promoters").values()) == promoter
    assert sum(h.field("nps_detractors").values()) == detractor


def test_events_before_created_are_held_then_processed() -> None:
    h = Harness().feed(event("agent_replied", "A", 30), event("resolved", "A", 40))
    assert h.field("frt_count") == {}
    assert h.outcomes == {}
    h.feed(event("created", "A", 0))
    assert h.field("frt_count") == {0: 1}
    assert h.field("fcr_first_contact") == {0: 1}
    assert h.outcomes[("tickets", "processed")] == 3


def test_held_events_are_orphaned_after_timeout_of_event_time() -> None:
    h = Harness().feed(event("agent_replied", "A", 0), event("resolved", "A", 100))
    h.advance(600)
    assert h.outcomes[("tickets", "orphaned")] == 1
    h.advance(700)
    assert h.outcomes[("tickets", "orphaned")] == 2
    h.feed(event("created", "A", -5))  # too late: the held events are gone
    assert h.field("frt_count") == {}
    assert h.outcomes[("tickets", "processed")] == 1


def test_ticket_state_expires_after_retention() -> None:
    rules = KpiRules(ticket_retention=3600)
    h = Harness(rules).feed(event("created", "A", 0), event("agent_replied", "A", 5))
    h.advance(3605)
    assert "A" not in h.processor.store  # type: ignore[operator]
    assert h.field("frt_count") == {0: 1}  # history stays in the windows


def test_every_default_sla_target_cell_matches_the_spec() -> None:
    targets = default_sla_targets()
    assert len(targets) == 24
    assert targets[("phone", "low")] == 20
    assert targets[("chat", "urgent")] == 60
    assert [targets[("messaging", p)] for p in ("urgent", "high", "normal", "low")] == [
        300, 600, 900, 1800]
    for channel in ("email", "web", "social"):
        assert [targets[(channel, p)] for p in ("urgent", "high", "normal", "low")] == [
            3600, 14400, 28800, 86400]


def test_contributions_are_a_function_of_facts_not_insertion_order() -> None:
    rules = KpiRules()
    results = []
    for order in itertools.permutations([10.0, 30.0, 70.0]):
        f = TicketFacts(created_at=0.0, queue="q", channel="chat", priority="normal")
        f.replies = list(order)
        f.resolutions = [50.0]
        results.append(dict(contributions(f, 100.0, rules)))
    assert all(r == results[0] for r in results)
