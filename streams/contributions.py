"""From one ticket's facts to what it adds to each bucket window (SPEC section 3).

`contributions(facts, watermark, rules)` is a pure function. When a ticket's facts
change, or the watermark crosses a deadline, the engine computes the contributions
before and after and sends the difference: out-of-order arrival, late corrections,
FCR retraction on reopen and SLA breach at the deadline all follow from that.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import defaultdict

from models.records import HIST_BOUNDS, HIST_KEYS, WINDOW_SECONDS
from streams.facts import TicketFacts
from streams.rules import KpiRules

# (queue, channel, bucket_start, field) -> amount. Histogram cells are fields named
# "frt_hist:15" etc., so that one flat mapping carries everything. Inside the engine a
# value counts in its own cell only (the smallest bound >= value): one key per value
# instead of one per bound above it. Outputs cumulate (`streams.windows.cumulate`).
Key = tuple[str, str, int, str]
Contributions = dict[Key, float]

FRT_CELLS = tuple(f"frt_hist:{k}" for k in HIST_KEYS)
AHT_CELLS = tuple(f"aht_hist:{k}" for k in HIST_KEYS)
UNKNOWN = "unknown"


def bucket(t: float) -> int:
    """Start of the 60-second tumbling window holding event time `t`."""
    return int(t // WINDOW_SECONDS) * WINDOW_SECONDS


def sla_deadline(facts: TicketFacts, rules: KpiRules) -> float:
    assert facts.created_at is not None
    return facts.created_at + rules.sla_target(facts.channel, facts.priority)


def sla_excluded(facts: TicketFacts, deadline: float) -> bool:
    """Abandoned at or before the deadline with no reply strictly before the abandon."""
    if not facts.abandons:
        return False
    abandoned = min(facts.abandons)
    if abandoned > deadline:
        return False
    first_reply = facts.first_reply()
    return first_reply is None or first_reply >= abandoned


def contributions(facts: TicketFacts, watermark: float, rules: KpiRules) -> Contributions:
    """Everything this ticket adds to bucket windows, given the partition watermark."""
    out: Contributions = defaultdict(float)
    if facts.known:
        _ticket_contributions(facts, watermark, rules, out)
    _survey_contributions(facts, watermark, rules, out)
    return out


def _ticket_contributions(
    facts: TicketFacts, watermark: float, rules: KpiRules, out: Contributions
) -> None:
    q, c = facts.queue, facts.channel
    created_at = facts.created_at
    assert created_at is not None
    out[(q, c, bucket(created_at), "tickets_created")] += 1
    for t in facts.resolutions:
        out[(q, c, bucket(t), "tickets_resolved")] += 1
    for t in facts.abandons:
        out[(q, c, bucket(t), "tickets_abandoned")] += 1
    for t in facts.reopens:
        out[(q, c, bucket(t), "tickets_reopened")] += 1

    first_reply = facts.first_reply()
    if first_reply is not None:
        frt = max(0.0, first_reply - created_at)
        b = bucket(first_reply)
        out[(q, c, b, "frt_count")] += 1
        out[(q, c, b, "frt_sum_seconds")] += frt
        _histogram(out, q, c, b, FRT_CELLS, frt)

    for t, seconds in facts.handled:
        b = bucket(t)
        out[(q, c, b, "aht_count")] += 1
        out[(q, c, b, "aht_sum_seconds")] += seconds
        _histogram(out, q, c, b, AHT_CELLS, seconds)

    deadline = sla_deadline(facts, rules)
    if not sla_excluded(facts, deadline):
        if first_reply is not None and first_reply <= deadline:
            out[(q, c, bucket(first_reply), "sla_met")] += 1
        elif watermark >= deadline:
            out[(q, c, bucket(deadline), "sla_breached")] += 1

    if facts.resolutions:
        resolved = min(facts.resolutions)
        replies_before = sum(1 for t in facts.replies if t <= resolved)
        if replies_before >= 1:
            b = bucket(resolved)
            out[(q, c, b, "fcr_resolved")] += 1
            window_end = resolved + rules.fcr_window
            reopened = any(resolved < t <= window_end for t in facts.reopens)
            if replies_before == 1 and not reopened:
                out[(q, c, b, "fcr_first_contact")] += 1


def _histogram(
    out: Contributions, q: str, c: str, b: int, cells: tuple[str, ...], value: float
) -> None:
    out[(q, c, b, cells[bisect_left(HIST_BOUNDS, value)])] += 1


def _survey_contributions(
    facts: TicketFacts, watermark: float, rules: KpiRules, out: Contributions
) -> None:
    for s in facts.surveys:
        if facts.known:
            q, c = facts.queue, facts.channel
        elif watermark >= s.at + rules.orphan_timeout:
            q, c = s.queue or UNKNOWN, s.channel or UNKNOWN
        else:
            continue  # still waiting for the ticket's ticket.created
        b = bucket(s.at)
        if s.metric == "csat":
            out[(q, c, b, "csat_responses")] += 1
            # Top-two-box; on a 3-point scale only the top box.
            threshold = s.scale_max if s.scale_max == 3 else s.scale_max - 1
            if s.score >= threshold:
                out[(q, c, b, "csat_satisfied")] += 1
        elif s.metric == "nps":
            out[(q, c, b, "nps_responses")] += 1
            if s.score >= 9:
                out[(q, c, b, "nps_promoters")] += 1
            elif s.score <= 6:
                out[(q, c, b, "nps_detractors")] += 1
        else:
            out[(q, c, b, "ces_responses")] += 1
            out[(q, c, b, "ces_score_sum")] += s.score


def next_change(facts: TicketFacts, watermark: float, rules: KpiRules) -> float | None:
    """The next watermark at which this ticket needs re-evaluating with no new event.

    That is an SLA deadline still open, an unattributed survey reaching its orphan
    timeout, or the end of the ticket's retention. (Held events time out on their own
    clock: `TicketProcessor.orphan_clock`.)
    """
    due: list[float] = [facts.last_event_at + rules.ticket_retention]
    if facts.known:
        deadline = sla_deadline(facts, rules)
        first_reply = facts.first_reply()
        replied_in_time = first_reply is not None and first_reply <= deadline
        if watermark < deadline and not replied_in_time and not sla_excluded(facts, deadline):
            due.append(deadline)
    else:
        due.extend(s.at + rules.orphan_timeout for s in facts.surveys)
    pending = [t for t in due if t > watermark]
    return min(pending) if pending else None


def diff(old: Contributions, new: Contributions) -> Contributions:
    """`new - old`, without the entries that did not change."""
    out: Contributions = {}
    for key, value in new.items():
        delta = value - old.get(key, 0.0)
        if delta:
            out[key] = delta
    for key, value in old.items():
        if key not in new and value:
            out[key] = -value
    return out
