"""The tunable parameters of the KPI rules (SPEC section 3), with the SPEC's defaults."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from models.events import CHANNELS, PRIORITIES

# First-response targets in seconds, by channel and priority (SPEC section 3).
_DEFAULT_ROWS: dict[str, tuple[float, float, float, float]] = {
    # channel: (urgent, high, normal, low)
    "phone": (20, 20, 20, 20),
    "chat": (60, 60, 60, 60),
    "messaging": (300, 600, 900, 1800),
    "email": (3600, 14400, 28800, 86400),
    "web": (3600, 14400, 28800, 86400),
    "social": (3600, 14400, 28800, 86400),
}


def default_sla_targets() -> dict[tuple[str, str], float]:
    """The SPEC's default first-response targets keyed by `(channel, priority)`."""
    return {
        (channel, priority): float(_DEFAULT_ROWS[channel][i])
        for channel in CHANNELS
        for i, priority in enumerate(PRIORITIES)
    }


@dataclass(frozen=True)
class KpiRules:
    """Everything the pure KPI functions need to know besides the events."""

    sla_targets: Mapping[tuple[str, str], float] = field(default_factory=default_sla_targets)
    fcr_window: float = 7 * 86400.0
    orphan_timeout: float = 600.0
    allowed_lateness: float = 120.0
    ticket_retention: float = 14 * 86400.0
    at_risk_fraction: float = 0.25

    def sla_target(self, channel: str, priority: str) -> float:
        return self.sla_targets[(channel, priority)]
