"""The contact centre itself: a discrete-event model that emits valid events in time order."""

from __future__ import annotations

import heapq
import itertools
import math
import random
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from kpimon.sim.config import CHANNELS, LIVE_CHANNELS, SimConfig, format_ms

# SPEC section 3 first-response targets; the model uses them to judge a wait's effect
# on survey scores, just as a customer would feel it.
_SLA = {
    "phone": {"urgent": 20, "high": 20, "normal": 20, "low": 20},
    "chat": {"urgent": 60, "high": 60, "normal": 60, "low": 60},
    "messaging": {"urgent": 300, "high": 600, "normal": 900, "low": 1800},
    **{
        ch: {"urgent": 3600, "high": 14400, "normal": 28800, "low": 86400}
        for ch in ("email", "web", "social")
    },
}

# Share of peak traffic by UTC hour: quiet nights, a morning and an afternoon peak.
_DAY = (0.10, 0.08, 0.07, 0.07, 0.08, 0.12, 0.25, 0.50, 0.80, 0.95, 1.00, 0.92,
        0.75, 0.82, 0.95, 1.00, 0.90, 0.72, 0.50, 0.38, 0.30, 0.22, 0.16, 0.12)  # fmt: skip


@dataclass(frozen=True)
class _Channel:
    """How contacts on one channel behave; durations are (median, sigma) of lognormals."""

    talk: tuple[float, float]
    hold_p: float
    hold: tuple[float, float]
    wrap: tuple[float, float]
    occupancy: float  # share of an agent a session takes (chats run side by side)
    patience: tuple[float, float] | None  # None: the customer never abandons
    first_fix: float  # chance the first touch resolves the ticket
    followup: tuple[float, float]  # until the customer's next contact on an open ticket


_CHANNEL = {
    "phone": _Channel((240, 0.6), 0.3, (45, 0.7), (45, 0.5), 1.0, (100, 0.8), 0.72, (10800, 1.0)),
    "chat": _Channel((420, 0.5), 0.1, (30, 0.6), (30, 0.5), 0.5, (150, 0.8), 0.68, (14400, 1.0)),
    "messaging": _Channel(
        (240, 0.6), 0.05, (30, 0.6), (25, 0.5), 0.4, (1200, 0.8), 0.6, (7200, 1.0)
    ),
    "email": _Channel((200, 0.6), 0.0, (0, 0.0), (40, 0.5), 1.0, None, 0.5, (21600, 0.9)),
    "web": _Channel((220, 0.6), 0.0, (0, 0.0), (40, 0.5), 1.0, None, 0.5, (21600, 0.9)),
    "social": _Channel((120, 0.5), 0.0, (0, 0.0), (30, 0.5), 1.0, None, 0.55, (10800, 0.9)),
}

# Share of all traffic and channel mix of the well-known queues; other names get the
# generic mix and an average share.
_QUEUE_SHARE = {"billing": 0.30, "tech": 0.35, "sales": 0.20, "returns": 0.15}
_QUEUE_MIX = {
    "billing": (0.45, 0.20, 0.20, 0.05, 0.07, 0.03),
    "tech": (0.30, 0.30, 0.20, 0.08, 0.10, 0.02),
    "sales": (0.50, 0.30, 0.08, 0.05, 0.05, 0.02),
    "returns": (0.10, 0.20, 0.35, 0.05, 0.25, 0.05),
}
_GENERIC_MIX = (0.35, 0.25, 0.20, 0.07, 0.08, 0.05)
_PRIORITIES = (("normal", 0.80), ("high", 0.10), ("low", 0.07), ("urgent", 0.03))
_CSAT_SCALES = ((5, 0.80), (10, 0.10), (3, 0.05), (7, 0.05))
_GOOD_COMMENTS = (
    "Quick and friendly, thanks!",
    "Sorted on the first call.",
    "The agent knew exactly what to do.",
    "Great service, very patient.",
)
_BAD_COMMENTS = (
    "Waited far too long to get through.",
    "Had to contact you again about the same problem.",
    "Nobody seemed to know the answer.",
    "It took three attempts to get this fixed.",
)


def _day_factor(t: float) -> float:
    """Share of peak traffic at epoch `t`, interpolated between hour midpoints."""
    h = (t % 86400.0) / 3600.0 - 0.5
    i = math.floor(h)
    f = h - i
    return _DAY[i % 24] * (1 - f) + _DAY[(i + 1) % 24] * f


def _lognormal(rng: random.Random, spec: tuple[float, float]) -> float:
    median, sigma = spec
    if median <= 0:
        return 0.0
    return rng.lognormvariate(math.log(median), sigma) if sigma > 0 else median


def _ln_mean(spec: tuple[float, float]) -> float:
    return spec[0] * math.exp(spec[1] ** 2 / 2)


def _pick(rng: random.Random, weighted: tuple[tuple[Any, float], ...]) -> Any:
    u = rng.random() * sum(w for _, w in weighted)
    for item, w in weighted:
        u -= w
        if u < 0:
            return item
    return weighted[-1][0]


@dataclass(eq=False, slots=True)
class _Ticket:
    id: str
    queue: str
    channel: str
    priority: str
    created: float
    picked: bool = False
    abandoned: bool = False
    touches: int = 0
    first_reply: float | None = None
    last_agent: str | None = None
    reopened: bool = False
    resolutions: int = 0


@dataclass(eq=False, slots=True)
class _Agent:
    id: str
    queue: str
    on_shift: bool = True
    busy: bool = False


@dataclass(eq=False)
class _Queue:
    name: str
    share: float
    mix: tuple[tuple[str, float], ...]
    busy_per_ticket: float  # mean agent-seconds a ticket takes, for staffing
    agents: list[_Agent] = field(default_factory=list)
    free: deque[_Agent] = field(default_factory=deque)
    live: deque[tuple[_Ticket, str]] = field(default_factory=deque)  # served first
    deferred: deque[tuple[_Ticket, str]] = field(default_factory=deque)


@dataclass(slots=True)
class Msg:
    """A valid event the model emitted at `ms` (epoch milliseconds)."""

    ms: int
    topic: str
    ticket_id: str
    event: dict[str, Any]


# Heap entry kinds of the discrete-event loop.
_ARRIVAL, _SHIFT, _ABANDON, _FREE, _EMIT, _RESOLVE, _FOLLOWUP, _REOPEN, _SURVEY = range(9)
_SHIFT_SECONDS = 900.0
# Staffing = ceil(F * load + BETA * sqrt(load)) agents (square-root staffing). The load
# estimate counts every follow-up although many land hours later, past a shift; F was
# calibrated so that phone meets its 20 s target for about 70-80% of calls at normal
# load, with a few per cent abandoning, as in a well-run centre.
_STAFF_F = 0.8
_STAFF_BETA = 0.5


def _mean_busy(mix: tuple[tuple[str, float], ...]) -> float:
    total = 0.0
    for ch, w in mix:
        p = _CHANNEL[ch]
        session = _ln_mean(p.talk) + p.hold_p * _ln_mean(p.hold) + _ln_mean(p.wrap)
        sessions = 1 + (1 - p.first_fix) * 1.25 + 0.06  # follow-ups and reopens
        total += w * p.occupancy * session * sessions
    return total


class Model:
    """The contact centre: a discrete-event loop over arrivals, agents and customers."""

    def __init__(self, cfg: SimConfig, start: float, end: float) -> None:
        self.cfg = cfg
        self.rng = random.Random(f"kpimon-sim-model-{cfg.seed}")
        self.start = start
        self.end = end
        self.heap: list[tuple[float, int, int, Any]] = []
        self.seq = itertools.count()
        self.events = itertools.count(1)
        self.tickets = itertools.count(1)
        self.out: list[Msg] = []
        self.queues: dict[str, _Queue] = {}
        shares = [_QUEUE_SHARE.get(q, 0.2) for q in cfg.queues]
        for q, s in zip(cfg.queues, shares, strict=True):
            mix = tuple(zip(CHANNELS, _QUEUE_MIX.get(q, _GENERIC_MIX), strict=True))
            self.queues[q] = _Queue(q, s / sum(shares), mix, _mean_busy(mix))

    # -- rates and staffing

    def _surge_factor(self, queue: str, t: float) -> float:
        s = self.cfg.surge
        if s is not None and s.queue == queue and 0 <= t - self.start - s.offset < s.duration:
            return s.factor
        return 1.0

    def _peak_rate(self, q: _Queue) -> float:
        """Tickets per second of a queue at the daily peak, without surge."""
        return self.cfg.rate / 60.0 * q.share

    def _staff_target(self, q: _Queue, t: float) -> int:
        # Square-root staffing on the *normal* load: good service on an ordinary day,
        # so a surge (which staffing ignores) really builds a backlog.
        load = self._peak_rate(q) * _day_factor(t) * q.busy_per_ticket
        return max(1, math.ceil(_STAFF_F * load + _STAFF_BETA * math.sqrt(load)))

    def _shift(self, q: _Queue, t: float) -> None:
        target = self._staff_target(q, t + _SHIFT_SECONDS / 2)
        on = [a for a in q.agents if a.on_shift]
        for a in q.agents:  # bring back the lowest-numbered agents first
            if len(on) >= target:
                break
            if not a.on_shift:
                a.on_shift = True
                on.append(a)
                if not a.busy:
                    q.free.append(a)
        while len(on) < target:
            a = _Agent(f"agent-{q.name}-{len(q.agents) + 1:02d}", q.name)
            q.agents.append(a)
            on.append(a)
            q.free.append(a)
        # Going off shift: idle agents leave now, busy ones when their session ends.
        excess = len(on) - target
        for a in sorted(on, key=lambda a: (a.busy, -int(a.id.rsplit("-", 1)[1]))):
            if excess <= 0:
                break
            a.on_shift = False
            if not a.busy:
                q.free.remove(a)
            excess -= 1

    # -- the loop

    def _at(self, t: float, kind: int, payload: Any) -> None:
        if t <= self.end:
            heapq.heappush(self.heap, (t, next(self.seq), kind, payload))

    def _emit(self, t: float, topic: str, tk_id: str, etype: str, **fields: Any) -> None:
        ms = math.floor(t * 1000)
        event = {
            "schema_version": 1,
            "event_id": f"e{self.cfg.seed}-{next(self.events)}",
            "type": etype,
            "occurred_at": format_ms(ms),
            "ticket_id": tk_id,
            **fields,
        }
        self.out.append(Msg(ms, topic, tk_id, event))

    def run(self) -> Iterator[Msg]:
        """Yield valid events in nondecreasing event time until the end of the run."""
        for q in self.queues.values():
            self._shift(q, self.start)
            self._at(self.start + _SHIFT_SECONDS, _SHIFT, q)
            self._next_arrival(q, self.start)
        while self.heap:
            t, _, kind, payload = heapq.heappop(self.heap)
            self._handle(t, kind, payload)
            if self.out:
                yield from self.out
                self.out.clear()

    def _next_arrival(self, q: _Queue, t: float) -> None:
        # Thinning: candidates at the highest possible rate, each kept with the
        # current rate's share of it, give a non-homogeneous Poisson process.
        s = self.cfg.surge
        peak = self._peak_rate(q) * (max(1.0, s.factor) if s and s.queue == q.name else 1.0)
        while True:
            t += self.rng.expovariate(peak)
            if t > self.end:
                return
            rate = self._peak_rate(q) * _day_factor(t) * self._surge_factor(q.name, t)
            if self.rng.random() * peak < rate:
                self._at(t, _ARRIVAL, q)
                return

    def _handle(self, t: float, kind: int, p: Any) -> None:
        cfg = self.cfg
        if kind == _EMIT:
            topic, tk_id, etype, fields = p
            self._emit(t, topic, tk_id, etype, **fields)
        elif kind == _ARRIVAL:
            self._arrive(p, t)
            self._next_arrival(p, t)
        elif kind == _FREE:
            agent = p
            agent.busy = False
            q = self.queues[agent.queue]
            if agent.on_shift:
                q.free.append(agent)
                self._dispatch(q, t)
        elif kind == _ABANDON:
            tk = p
            if not tk.picked:
                tk.abandoned = True
                self._emit(t, cfg.tickets_topic, tk.id, "ticket.abandoned")
        elif kind == _RESOLVE:
            self._resolve(p, t)
        elif kind in (_FOLLOWUP, _REOPEN):
            tk = p
            if kind == _REOPEN:
                tk.reopened = True
                self._emit(t, cfg.tickets_topic, tk.id, "ticket.reopened")
            q = self.queues[tk.queue]
            q.deferred.append((tk, "reopen" if kind == _REOPEN else "follow"))
            self._dispatch(q, t)
        elif kind == _SURVEY:
            self._survey(p, t)
        elif kind == _SHIFT:
            self._shift(p, t)
            self._dispatch(p, t)
            self._at(t + _SHIFT_SECONDS, _SHIFT, p)

    def _arrive(self, q: _Queue, t: float) -> None:
        rng = self.rng
        channel = _pick(rng, q.mix)
        tk = _Ticket(
            f"T{self.cfg.seed}-{next(self.tickets):06d}",
            q.name,
            channel,
            _pick(rng, _PRIORITIES),
            t,
        )
        fields: dict[str, Any] = {"queue": q.name, "channel": channel}
        if tk.priority != "normal" or rng.random() < 0.8:  # sometimes left to the default
            fields["priority"] = tk.priority
        fields["customer_id"] = f"cust-{rng.randrange(1, 250_000):06d}"
        self._emit(t, self.cfg.tickets_topic, tk.id, "ticket.created", **fields)
        patience = _CHANNEL[channel].patience
        if patience is not None:
            q.live.append((tk, "first"))
            self._at(t + max(1.0, _lognormal(rng, patience)), _ABANDON, tk)
        else:
            q.deferred.append((tk, "first"))
        self._dispatch(q, t)

    def _dispatch(self, q: _Queue, t: float) -> None:
        # Live contacts first, then the backlog of messages and follow-ups; FIFO within each.
        while q.free and (q.live or q.deferred):
            tk, touch = q.live.popleft() if q.live else q.deferred.popleft()
            if tk.abandoned:
                continue
            self._serve(q.free.popleft(), tk, touch, t)

    def _serve(self, agent: _Agent, tk: _Ticket, touch: str, t: float) -> None:
        rng, cfg = self.rng, self.cfg
        p = _CHANNEL[tk.channel]
        tk.picked = True
        tk.touches += 1
        tk.last_agent = agent.id
        talk = max(5, round(_lognormal(rng, p.talk)))
        hold = round(_lognormal(rng, p.hold)) if rng.random() < p.hold_p else 0
        wrap = max(0, round(_lognormal(rng, p.wrap)))
        # A call rings and a chat is accepted a few seconds after the agent takes it; a
        # written reply goes out once it is composed.
        live = tk.channel in LIVE_CHANNELS
        begin = t + rng.uniform(1.0, 5.0) if live else t
        reply_at = begin if live else t + talk
        if tk.first_reply is None:
            tk.first_reply = reply_at
        reply: dict[str, Any] = {"agent_id": agent.id} if rng.random() < 0.95 else {}
        self._at(reply_at, _EMIT, (cfg.tickets_topic, tk.id, "ticket.agent_replied", reply))
        end = begin + talk + hold + wrap
        handled = {
            "talk_seconds": talk,
            "hold_seconds": hold,
            "wrap_seconds": wrap,
            "agent_id": agent.id,
        }
        self._at(end, _EMIT, (cfg.tickets_topic, tk.id, "ticket.handled", handled))
        agent.busy = True
        self._at(begin + p.occupancy * (talk + hold + wrap), _FREE, agent)
        # Later touches fix more: the easy cases were solved the first time round.
        fix = 0.9 if touch == "reopen" else (p.first_fix, 0.8, 0.9)[min(tk.touches, 3) - 1]
        if rng.random() < fix:
            self._at(end + rng.uniform(0, 20), _RESOLVE, tk)
        elif tk.touches < 4:
            self._at(end + _lognormal(rng, p.followup), _FOLLOWUP, tk)
        # else: the ticket stays open past the run, as some do

    def _resolve(self, tk: _Ticket, t: float) -> None:
        rng = self.rng
        fields = {"agent_id": tk.last_agent} if rng.random() < 0.9 else {}
        self._emit(t, self.cfg.tickets_topic, tk.id, "ticket.resolved", **fields)
        tk.resolutions += 1
        if tk.resolutions == 1:
            if rng.random() < 0.04 + 0.03 * (tk.touches - 1):
                tk.reopened = True  # known now, so the survey already reflects it
                # Most come back within hours (inside the FCR window), some days later.
                delay = (
                    _lognormal(rng, (3 * 3600, 0.8))
                    if rng.random() < 0.6
                    else rng.uniform(86400, 6 * 86400)
                )
                self._at(t + delay, _REOPEN, tk)
            survey_p = 0.3
        else:
            survey_p = 0.15
        if rng.random() < survey_p:
            self._at(t + max(60.0, _lognormal(rng, (600, 0.8))), _SURVEY, tk)

    def _quality(self, tk: _Ticket) -> float:
        """How well the customer was served, 0..1; drives every survey score."""
        target = _SLA[tk.channel][tk.priority]
        wait = (tk.first_reply or tk.created) - tk.created
        q = 0.92 - 0.35 * min(3.0, wait / target) / 3 - 0.08 * (tk.touches - 1)
        if tk.reopened:
            q -= 0.45
        return min(1.0, max(0.0, q + self.rng.gauss(0, 0.08)))

    def _survey(self, tk: _Ticket, t: float) -> None:
        rng = self.rng
        quality = self._quality(tk)
        metrics = [_pick(rng, (("csat", 0.6), ("nps", 0.25), ("ces", 0.15)))]
        if metrics[0] != "nps" and rng.random() < 0.1:
            metrics.append("nps")  # some surveys ask two questions
        for i, metric in enumerate(metrics):
            fields: dict[str, Any] = {"metric": metric}
            if metric == "csat":
                scale = _pick(rng, _CSAT_SCALES)
                score = round(1 + (scale - 1) * quality + rng.gauss(0, 0.12 * scale))
                fields["score"] = min(scale, max(1, score))
                if scale != 5 or rng.random() < 0.5:
                    fields["scale_max"] = scale
            elif metric == "nps":
                fields["score"] = min(10, max(0, round(10.4 * quality + rng.gauss(0, 1.2))))
                if rng.random() < 0.5:
                    fields["scale_max"] = 10
            else:  # CES 2.0: 7 = "very easy", so better service scores higher
                fields["score"] = min(7, max(1, round(1 + 6 * quality + rng.gauss(0, 0.8))))
                if rng.random() < 0.5:
                    fields["scale_max"] = 7
            if i == 0 and rng.random() < 0.15:
                fields["comment"] = rng.choice(_GOOD_COMMENTS if quality > 0.6 else _BAD_COMMENTS)
            if rng.random() < 0.3:
                fields["queue"], fields["channel"] = tk.queue, tk.channel
            if tk.last_agent and rng.random() < 0.4:
                fields["agent_id"] = tk.last_agent
            if i == 0:
                self._emit(t, self.cfg.surveys_topic, tk.id, "survey.responded", **fields)
            else:  # through the heap, so events keep leaving in event-time order
                self._at(t + i, _EMIT, (self.cfg.surveys_topic, tk.id, "survey.responded", fields))
