"""Live state of one ticket for the gauges of SPEC section 6, as a pure function.

A ticket is *open* once created until abandoned or resolved (again open after a later
reopen), *waiting* while open with no agent reply yet, and *at risk* while waiting,
not yet breached, with at most `at_risk_fraction` of its first-response target left.
Each is an indicator per ticket, so the gauges are sums: like window contributions,
they travel through the pipeline as differences and are summed by their owner.
"""

from __future__ import annotations

from streams.contributions import sla_deadline
from streams.facts import TicketFacts
from streams.rules import KpiRules

# (queue, channel, priority, gauge) -> 1 for each gauge the ticket is counted in.
LiveKey = tuple[str, str, str, str]
OPEN, WAITING, AT_RISK = "open", "waiting", "at_risk"


def is_open(facts: TicketFacts) -> bool:
    if not facts.known or facts.abandons:
        return False
    if not facts.resolutions:
        return True
    return bool(facts.reopens) and max(facts.reopens) > max(facts.resolutions)


def is_waiting(facts: TicketFacts) -> bool:
    return is_open(facts) and not facts.replies


def at_risk_from(facts: TicketFacts, rules: KpiRules) -> float:
    """The watermark from which a waiting ticket is at risk (until its deadline)."""
    target = rules.sla_target(facts.channel, facts.priority)
    return sla_deadline(facts, rules) - rules.at_risk_fraction * target


def live_state(facts: TicketFacts, watermark: float, rules: KpiRules) -> dict[LiveKey, int]:
    """The gauges this ticket counts in right now."""
    if not is_open(facts):
        return {}
    q, c, p = facts.queue, facts.channel, facts.priority
    state = {(q, c, p, OPEN): 1}
    if not facts.replies:
        state[(q, c, p, WAITING)] = 1
        if at_risk_from(facts, rules) <= watermark < sla_deadline(facts, rules):
            state[(q, c, p, AT_RISK)] = 1
    return state


def live_change(facts: TicketFacts, watermark: float, rules: KpiRules) -> float | None:
    """The next watermark at which `live_state` changes with no new event."""
    if not is_waiting(facts):
        return None
    for t in (at_risk_from(facts, rules), sla_deadline(facts, rules)):
        if t > watermark:
            return t
    return None
