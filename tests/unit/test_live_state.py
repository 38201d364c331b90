"""Live gauges of SPEC section 6 (open, waiting, at risk, oldest waiting) per ticket."""

from __future__ import annotations

from tests.unit.kpi_harness import T0, Harness, event


def test_open_and_waiting_until_first_reply_then_open_until_resolved() -> None:
    h = Harness().feed(event("created", "A", 0, channel="email"))
    assert (h.gauge("open", channel="email"), h.gauge("waiting", channel="email")) == (1, 1)
    h.feed(event("agent_replied", "A", 60))
    assert (h.gauge("open", channel="email"), h.gauge("waiting", channel="email")) == (1, 0)
    h.feed(event("resolved", "A", 120))
    assert h.gauge("open", channel="email") == 0


def test_reopen_after_resolution_opens_again_and_abandon_closes() -> None:
    h = Harness().feed(
        event("created", "A", 0), event("agent_replied", "A", 5), event("resolved", "A", 30),
        event("reopened", "A", 90),
    )
    assert h.gauge("open") == 1
    h.feed(event("resolved", "A", 200))
    assert h.gauge("open") == 0
    h.feed(event("created", "B", 210), event("abandoned", "B", 215))
    assert (h.gauge("open"), h.gauge("waiting")) == (0, 0)


def test_at_risk_from_three_quarters_of_the_target_until_the_deadline() -> None:
    # chat target 60 s: at risk from 45 s after creation, breached at 60 s.
    h = Harness().feed(event("created", "A", 0, channel="chat"))
    h.advance(44.9)
    assert h.gauge("at_risk", channel="chat") == 0
    h.advance(45)
    assert h.gauge("at_risk", channel="chat") == 1
    h.advance(59.9)
    assert h.gauge("at_risk", channel="chat") == 1
    h.advance(60)
    assert h.gauge("at_risk", channel="chat") == 0
    assert h.gauge("waiting", channel="chat") == 1  # still waiting, now breached


def test_reply_while_at_risk_clears_it() -> None:
    h = Harness().feed(event("created", "A", 0, channel="chat"))
    h.advance(50)
    assert h.gauge("at_risk", channel="chat") == 1
    h.feed(event("agent_replied", "A", 51))
    assert h.gauge("at_risk", channel="chat") == 0


def test_oldest_waiting_follows_the_earliest_waiting_ticket() -> None:
    h = Harness().feed(event("created", "A", 0, channel="email"),
                       event("created", "B", 30, channel="email"))
    assert h.oldest[("billing", "email")] == T0
    h.feed(event("agent_replied", "A", 40))
    assert h.oldest[("billing", "email")] == T0 + 30
    h.feed(event("agent_replied", "B", 50))
    assert h.oldest[("billing", "email")] is None


def test_live_state_survives_a_rebuild_from_the_store() -> None:
    h = Harness().feed(event("created", "A", 0, channel="chat"))
    h.processor.rebuild_timers(h.processor.store.items())
    h.advance(46)  # the at-risk timer exists again after recovery
    assert h.gauge("at_risk", channel="chat") == 1
    assert h.oldest[("billing", "chat")] == T0
