"""Output records: KPI windows (SPEC section 4) and dead letters (SPEC section 5)."""

from __future__ import annotations

import base64
from typing import Any

from pydantic import BaseModel, ConfigDict

HIST_BOUNDS: tuple[float, ...] = (
    15, 30, 60, 120, 300, 600, 1800, 3600, 7200, 14400, 28800, 86400, float("inf"),
)
HIST_KEYS: tuple[str, ...] = tuple(
    "+Inf" if b == float("inf") else str(int(b)) for b in HIST_BOUNDS
)

COUNT_FIELDS: tuple[str, ...] = (
    "tickets_created",
    "tickets_resolved",
    "tickets_abandoned",
    "tickets_reopened",
    "frt_count",
    "aht_count",
    "sla_met",
    "sla_breached",
    "fcr_resolved",
    "fcr_first_contact",
    "csat_responses",
    "csat_satisfied",
    "nps_responses",
    "nps_promoters",
    "nps_detractors",
    "ces_responses",
    "ces_score_sum",
)
SUM_FIELDS: tuple[str, ...] = ("frt_sum_seconds", "aht_sum_seconds")
HIST_FIELDS: tuple[str, ...] = ("frt_hist", "aht_hist")
SCALAR_FIELDS: tuple[str, ...] = COUNT_FIELDS + SUM_FIELDS

WINDOW_SECONDS = 60


class KpiWindow(BaseModel):
    """The latest values of one `(queue, channel)` one-minute bucket."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    queue: str
    channel: str
    window_start: str
    window_end: str
    tickets_created: int
    tickets_resolved: int
    tickets_abandoned: int
    tickets_reopened: int
    frt_count: int
    frt_sum_seconds: float
    frt_hist: dict[str, int]
    aht_count: int
    aht_sum_seconds: float
    aht_hist: dict[str, int]
    sla_met: int
    sla_breached: int
    fcr_resolved: int
    fcr_first_contact: int
    csat_responses: int
    csat_satisfied: int
    nps_responses: int
    nps_promoters: int
    nps_detractors: int
    ces_responses: int
    ces_score_sum: int
    revision: int
    updated_at: str


class DeadLetterRecord(BaseModel):
    """A rejected input message with everything needed to inspect or replay it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    reason: str
    detail: str
    source_topic: str
    partition: int
    offset: int
    key: str | None
    key_base64: str | None = None
    payload: str | None
    payload_base64: str | None = None
    received_at: str

    @classmethod
    def build(
        cls,
        *,
        reason: str,
        detail: str,
        topic: str,
        partition: int,
        offset: int,
        key: bytes | None,
        value: bytes | None,
        received_at: str,
    ) -> DeadLetterRecord:
        """Keep the original bytes: as text when they are UTF-8, else as base64."""
        key_text, key_b64 = _text_or_base64(key)
        payload, payload_b64 = _text_or_base64(value)
        return cls(
            reason=reason,
            detail=detail,
            source_topic=topic,
            partition=partition,
            offset=offset,
            key=key_text,
            key_base64=key_b64,
            payload=payload,
            payload_base64=payload_b64,
            received_at=received_at,
        )

    def original_value(self) -> bytes | None:
        if self.payload_base64 is not None:
            return base64.b64decode(self.payload_base64)
        return None if self.payload is None else self.payload.encode()


def _text_or_base64(raw: bytes | None) -> tuple[str | None, str | None]:
    if raw is None:
        return None, None
    try:
        return raw.decode("utf-8"), None
    except UnicodeDecodeError:
        return None, base64.b64encode(raw).decode("ascii")


def empty_window_values() -> dict[str, Any]:
    """All section-3 fields at zero, histograms with every bound present."""
    values: dict[str, Any] = dict.fromkeys(COUNT_FIELDS, 0)
    values.update(dict.fromkeys(SUM_FIELDS, 0.0))
    for name in HIST_FIELDS:
        values[name] = dict.fromkeys(HIST_KEYS, 0)
    return values
