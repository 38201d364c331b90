"""The KPI catalogue: every KPI, its thresholds, alert and runbook, from one TOML file.

`deploy/kpi-catalogue.toml` is the single source that `kpimon generate` turns into
Prometheus recording and alert rules and the Alertmanager configuration, and that
dashboards read to find recording-rule names (`Catalogue.recorded_series`).

Recording rules are named `<level>:<metric>:<operation>` (Prometheus convention):

- level: `centre` (no labels), `queue`, `channel` or `queue_channel`;
- metric: the KPI's `metric`, e.g. `support_sla_compliance`, `support_frt_seconds`;
- operation: `ratio<w>`, `mean<w>` or `score<w>` for sum(numerator)/sum(denominator) over
  the rolling window `w` (5m 15m 1h 24h), `p50_<w>`/`p90_<w>` for histogram quantiles,
  `sum`/`max` for live gauges and `deriv<range>` for trends (per second).
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)

from models.records import SCALAR_FIELDS

Level = Literal["centre", "queue", "channel", "queue_channel"]
LEVELS: tuple[Level, ...] = ("centre", "queue", "channel", "queue_channel")
LEVEL_LABELS: dict[Level, tuple[str, ...]] = {
    "centre": (),
    "queue": ("queue",),
    "channel": ("channel",),
    "queue_channel": ("queue", "channel"),
}
Window = Literal["5m", "15m", "1h", "24h"]
WINDOWS: tuple[Window, ...] = ("5m", "15m", "1h", "24h")
Severity = Literal["warning", "critical"]
Direction = Literal["higher_is_better", "lower_is_better"]
Unit = Literal["ratio", "seconds", "tickets", "tickets_per_minute", "score", "points"]
Channel = Literal["phone", "chat", "email", "messaging", "web", "social"]

# Live gauges of SPEC section 6 that a `gauge` KPI may aggregate.
LIVE_GAUGES = (
    "support_tickets_open",
    "support_tickets_waiting",
    "support_sla_at_risk_tickets",
    "support_oldest_waiting_seconds",
)
HISTOGRAMS = {"frt": "support_rolling_frt_seconds_bucket",
              "aht": "support_rolling_aht_seconds_bucket"}

_DURATION = re.compile(r"^(?:(\d+)h)?(?:(\d+)m(?!s))?(?:(\d+)s)?(?:(\d+)ms)?$")
_DURATION_UNITS = (3600.0, 60.0, 1.0, 0.001)
AlertName = Annotated[str, Field(pattern=r"^[A-Z][A-Za-z0-9]*$")]
Name = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_-]*$", max_length=64)]
QueueName = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")]


def _check_duration(text: str) -> str:
    parse_duration(text)
    return text


DurationText = Annotated[str, AfterValidator(_check_duration)]


class CatalogueError(Exception):
    """The catalogue file is missing, not TOML, or breaks a rule (one line per problem)."""


def parse_duration(text: str) -> float:
    """Seconds in a Prometheus duration made of h, m, s and ms parts ("1h30m", "500ms")."""
    match = _DURATION.fullmatch(text)
    if not text or match is None or not any(match.groups()):
        raise ValueError(f"not a duration: {text!r} (use e.g. 30s, 5m, 1h30m)")
    return sum(float(g) * u for g, u in zip(match.groups(), _DURATION_UNITS, strict=True) if g)


def format_duration(seconds: float) -> str:
    """The shortest Prometheus duration for `seconds`, rounded to whole milliseconds.

    A positive duration never rounds down to zero (a scaled `for:` stays a `for:`).
    """
    if seconds <= 0:
        return "0s"
    ms = max(1, round(seconds * 1000))
    parts = []
    for unit, size in (("h", 3_600_000), ("m", 60_000), ("s", 1000), ("ms", 1)):
        n, ms = divmod(ms, size)
        if n:
            parts.append(f"{n}{unit}")
    return "".join(parts)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class Thresholds(_Strict):
    """Target (the goal a dashboard shows green at) and the two alert thresholds.

    An alert fires while the value is *worse* than a threshold: below it for
    `higher_is_better`, above it for `lower_is_better`. The warning threshold may sit
    on the good side of the target, so that it warns while the target is still met.
    """

    target: float
    warning: float
    critical: float


class AlertSpec(_Strict):
    """How a KPI alerts: name, label level, rolling window, guard and `for:`."""

    name: AlertName
    level: Level = "queue"
    # Rolling window the alert reads (ratio and quantile KPIs only).
    window: Window | None = None
    for_: DurationText = Field(alias="for")
    # Smallest denominator (responses, replies, tickets) that makes the value meaningful;
    # for trends, the smallest backlog worth alerting on.
    min_count: float = Field(default=0.0, ge=0)
    severities: tuple[Severity, ...] = Field(default=("warning", "critical"), min_length=1)


class _KpiBase(_Strict):
    id: Name
    title: str = Field(min_length=1)
    category: Literal["leading", "lagging"]
    metric: Annotated[str, Field(pattern=r"^support_[a-z0-9_]+$")]
    unit: Unit
    direction: Direction
    target: float
    warning: float
    critical: float
    # Per-channel thresholds (first-response targets differ by channel); channels not
    # listed use the KPI's own. Alerts of such a KPI are per queue and channel.
    channels: dict[Channel, Thresholds] = Field(default_factory=dict)
    description: str = Field(min_length=1)
    runbook: str = Field(min_length=1)
    alert: AlertSpec | None = None

    @model_validator(mode="after")
    def _check_thresholds(self) -> _KpiBase:
        for where, t in [("", Thresholds(target=self.target, warning=self.warning,
                                         critical=self.critical)),
                         *((f"channels.{c}: ", t) for c, t in self.channels.items())]:
            if self.worse(t.warning, t.critical):
                raise ValueError(f"{where}critical threshold {t.critical} is not at least as "
                                 f"bad as the warning threshold {t.warning} ({self.direction})")
        if self.alert and self.channels and self.alert.level != "queue_channel":
            raise ValueError("a KPI with per-channel thresholds alerts at level queue_channel")
        return self

    def worse(self, value: float, than: float) -> bool:
        """Whether `value` is worse than `than` in this KPI's direction."""
        return value < than if self.direction == "higher_is_better" else value > than

    @property
    def thresholds(self) -> Thresholds:
        return Thresholds(target=self.target, warning=self.warning, critical=self.critical)

    def operation(self, window: Window | None) -> str:
        raise NotImplementedError

    def windows(self) -> tuple[Window | None, ...]:
        """The rolling windows it is recorded for (None: a live value, no window)."""
        return WINDOWS

    def record(self, level: Level, window: Window | None = None) -> str:
        """The recording-rule name of this KPI at `level` (and `window` if windowed)."""
        if (window is None) != (self.windows() == (None,)):
            raise ValueError(f"KPI {self.id}: window {window!r} does not fit its kind")
        return f"{level}:{self.metric}:{self.operation(window)}"


class RatioKpi(_KpiBase):
    """sum(numerator) / sum(denominator) of the rolling window sums (SPEC section 3)."""

    kind: Literal["ratio"]
    operation_name: Literal["ratio", "mean", "score"] = Field(alias="operation")
    # Fields of SPEC section 3; a leading "-" subtracts (NPS: promoters - detractors).
    numerator: tuple[str, ...] = Field(min_length=1)
    denominator: tuple[str, ...] = Field(min_length=1)
    scale: float = 1.0

    @model_validator(mode="after")
    def _check_fields(self) -> RatioKpi:
        for term in self.numerator:
            _check_field(term.removeprefix("-"))
        for term in self.denominator:
            _check_field(term)
        return self

    def operation(self, window: Window | None) -> str:
        return f"{self.operation_name}{window}"


class QuantileKpi(_KpiBase):
    """histogram_quantile over the summed `_bucket` series of a rolling histogram."""

    kind: Literal["quantile"]
    histogram: Literal["frt", "aht"]
    quantile: float = Field(gt=0, lt=1)

    def operation(self, window: Window | None) -> str:
        return f"p{round(self.quantile * 100)}_{window}"

    @property
    def count_field(self) -> str:
        return f"{self.histogram}_count"


class GaugeKpi(_KpiBase):
    """A live gauge (SPEC section 6) aggregated over workers and finer labels."""

    kind: Literal["gauge"]
    aggregate: Literal["sum", "max"]

    @model_validator(mode="after")
    def _check_source(self) -> GaugeKpi:
        if self.metric not in LIVE_GAUGES:
            raise ValueError(f"metric {self.metric!r} is not a live gauge: "
                             f"{', '.join(LIVE_GAUGES)}")
        return self

    def operation(self, window: Window | None) -> str:
        return self.aggregate

    def windows(self) -> tuple[Window | None, ...]:
        return (None,)


class TrendKpi(_KpiBase):
    """The per-minute slope (deriv) of a gauge KPI over `range`, e.g. backlog growth."""

    kind: Literal["trend"]
    source: Name
    range: DurationText

    def operation(self, window: Window | None) -> str:
        return f"deriv{self.range}"

    def windows(self) -> tuple[Window | None, ...]:
        return (None,)


Kpi = Annotated[RatioKpi | QuantileKpi | GaugeKpi | TrendKpi, Field(discriminator="kind")]
AnyKpi = RatioKpi | QuantileKpi | GaugeKpi | TrendKpi
_KINDS = ("ratio", "quantile", "gauge", "trend")


def _check_field(name: str) -> None:
    if name not in SCALAR_FIELDS:
        raise ValueError(f"{name!r} is not a window field of SPEC section 3")


class PipelineCheck(_Strict):
    """One pipeline health alert: either on/off (`severity`) or graded thresholds."""

    alert: AlertName
    for_: DurationText = Field(alias="for")
    range: DurationText | None = None
    severity: Severity | None = None
    warning: float | None = None
    critical: float | None = None
    description: str = Field(min_length=1)
    runbook: str = Field(min_length=1)

    def graded(self) -> list[tuple[Severity, float]]:
        """(severity, threshold) pairs of a thresholded check, warning first."""
        pairs: list[tuple[Severity, float | None]] = [("warning", self.warning),
                                                      ("critical", self.critical)]
        return [(s, t) for s, t in pairs if t is not None]


class Pipeline(_Strict):
    """Pipeline health alerts; the stall alerts inhibit the KPI alerts they make wrong."""

    job: Annotated[str, Field(min_length=1)] = "kpimon"
    no_events: PipelineCheck
    watermark_stalled: PipelineCheck
    worker_down: PipelineCheck
    workers_absent: PipelineCheck
    consumer_lag: PipelineCheck
    dead_letters: PipelineCheck
    # Optional, so that catalogues written before it still load (no alert then).
    misrouted_input: PipelineCheck | None = None

    @model_validator(mode="after")
    def _check_kinds(self) -> Pipeline:
        for name in ("no_events", "watermark_stalled", "worker_down", "workers_absent"):
            if getattr(self, name).severity is None:
                raise ValueError(f"{name}: needs severity (warning or critical)")
        for name in ("consumer_lag", "dead_letters"):
            if not getattr(self, name).graded():
                raise ValueError(f"{name}: needs a warning and/or critical threshold")
        for name in ("no_events", "watermark_stalled", "consumer_lag", "dead_letters"):
            if getattr(self, name).range is None:
                raise ValueError(f"{name}: needs range (the PromQL range it looks back)")
        misrouted = self.misrouted_input
        if misrouted is not None and (misrouted.severity is None or misrouted.range is None):
            raise ValueError("misrouted_input: needs severity and range")
        return self

    def checks(self) -> dict[str, PipelineCheck]:
        return {name: getattr(self, name) for name in type(self).model_fields
                if name != "job" and getattr(self, name) is not None}

    @property
    def stall_alerts(self) -> tuple[str, ...]:
        """Alerts meaning the KPI series are frozen or missing: they inhibit KPI alerts."""
        return (self.no_events.alert, self.watermark_stalled.alert,
                self.worker_down.alert, self.workers_absent.alert)


class Team(_Strict):
    """An on-call team that owns some queues: receivers `<name>-page` and `<name>-ticket`."""

    name: Name
    queues: tuple[QueueName, ...] = Field(min_length=1)


class Routing(_Strict):
    """Alertmanager routing: critical pages, warnings become tickets, per team."""

    # Every receiver posts here (the test receiver); production replaces receivers.
    webhook_url: str = Field(default="http://127.0.0.1:9095/kpimon", pattern=r"^https?://")
    group_by: tuple[str, ...] = ("alertname", "queue")
    group_wait: DurationText = "30s"
    group_interval: DurationText = "5m"
    repeat_interval: DurationText = "4h"
    default_team: Name = "cc-ops"
    pipeline_team: Name = "platform"
    teams: tuple[Team, ...] = ()

    @model_validator(mode="after")
    def _unique(self) -> Routing:
        names = [self.default_team, self.pipeline_team, *(t.name for t in self.teams)]
        if len(set(names)) != len(names):
            raise ValueError(f"team names must be distinct: {names}")
        queues = [q for t in self.teams for q in t.queues]
        if len(set(queues)) != len(queues):
            raise ValueError("a queue belongs to at most one team")
        return self


@dataclass(frozen=True)
class RecordedSeries:
    """One recording rule: which KPI, at which level and window, and its name."""

    kpi: str
    level: Level
    window: Window | None
    record: str

    @property
    def labels(self) -> tuple[str, ...]:
        return LEVEL_LABELS[self.level]


class Catalogue(_Strict):
    """The whole catalogue file."""

    schema_version: Literal[1]
    evaluation_interval: DurationText = "30s"
    kpis: tuple[Kpi, ...] = Field(alias="kpi")
    pipeline: Pipeline
    routing: Routing = Routing()

    @model_validator(mode="after")
    def _cross_checks(self) -> Catalogue:
        if not self.kpis:
            raise ValueError("declares no KPI ([[kpi]] tables)")
        ids = [k.id for k in self.kpis]
        if len(set(ids)) != len(ids):
            raise ValueError(f"KPI ids must be distinct: {ids}")
        records = [s.record for s in self.recorded_series()]
        if len(set(records)) != len(records):
            dup = sorted({r for r in records if records.count(r) > 1})
            raise ValueError(f"two KPIs record the same series: {dup}")
        alerts = [k.alert.name for k in self.kpis if k.alert]
        alerts += [c.alert for c in self.pipeline.checks().values()]
        if len(set(alerts)) != len(alerts):
            raise ValueError(f"alert names must be distinct: {alerts}")
        for kpi in self.kpis:
            if isinstance(kpi, TrendKpi) and not isinstance(self.kpis_by_id.get(kpi.source),
                                                            GaugeKpi):
                raise ValueError(f"KPI {kpi.id}: source {kpi.source!r} is not a gauge KPI")
            if kpi.alert is None:
                continue
            windowed = isinstance(kpi, RatioKpi | QuantileKpi)
            if windowed and kpi.alert.window is None:
                raise ValueError(f"KPI {kpi.id}: alert needs window (one of {WINDOWS})")
            if not windowed and kpi.alert.window is not None:
                raise ValueError(f"KPI {kpi.id}: a {kpi.kind} KPI has no rolling window")
            if isinstance(kpi, GaugeKpi) and kpi.alert.min_count:
                raise ValueError(f"KPI {kpi.id}: min_count does not apply to a gauge KPI")
        return self

    @property
    def kpis_by_id(self) -> dict[str, AnyKpi]:
        return {k.id: k for k in self.kpis}

    def kpi(self, kpi_id: str) -> AnyKpi:
        try:
            return self.kpis_by_id[kpi_id]
        except KeyError:
            raise KeyError(f"no KPI {kpi_id!r} in the catalogue") from None

    def recorded_series(self) -> list[RecordedSeries]:
        """Every KPI recording rule, by KPI, level and window (for dashboards)."""
        return [
            RecordedSeries(kpi.id, level, window, kpi.record(level, window))
            for kpi in self.kpis
            for window in kpi.windows()
            for level in LEVELS
        ]


def parse_catalogue(text: str, source: str = "<catalogue>") -> Catalogue:
    """Validate catalogue TOML text; `CatalogueError` lists every problem found."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise CatalogueError(f"{source}: not valid TOML: {exc}") from None
    try:
        return Catalogue.model_validate(data)
    except ValidationError as exc:
        lines = [f"{source}: {exc.error_count()} problem(s)"]
        for err in exc.errors():
            lines.append(f"  {_where(data, err['loc'])}: {err['msg']}")
        raise CatalogueError("\n".join(lines)) from None


def _where(data: dict[str, Any], loc: tuple[int | str, ...]) -> str:
    """`kpi[3] frt_p90.warning` rather than `kpi.3.quantile.warning`."""
    if not loc:
        return "(top level)"
    parts = [str(p) for p in loc]
    kpis = data.get("kpi")
    if loc[0] == "kpi" and len(loc) > 1 and isinstance(loc[1], int) and isinstance(kpis, list):
        entry = kpis[loc[1]] if loc[1] < len(kpis) else None
        name = entry.get("id") if isinstance(entry, dict) else None
        rest = parts[3:] if len(loc) > 2 and loc[2] in _KINDS else parts[2:]
        head = f"kpi[{loc[1]}]" + (f" {name}" if isinstance(name, str) else "")
        return ".".join([head, *rest])
    return ".".join(parts)


def load_catalogue(path: Path) -> Catalogue:
    """Read and validate the catalogue file at `path`."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise CatalogueError(f"{path}: cannot read the catalogue: {exc.strerror}") from None
    return parse_catalogue(text, str(path))

