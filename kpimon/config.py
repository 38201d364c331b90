"""Configuration: SPEC defaults, overridden by a TOML file, overridden by environment.

File: `--config PATH` or `KPIMON_CONFIG`. Environment: `KPIMON_<SECTION>__<KEY>`
(e.g. `KPIMON_RULES__ORPHAN_TIMEOUT=900`), plus the short forms in `_ALIASES`. SLA
targets override single cells: `[sla_targets.chat] normal = 45` in the file. Invalid
values stop the program at start with one line per problem.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from models.events import CHANNELS, PRIORITIES
from streams.rules import KpiRules, default_sla_targets

_ALIASES = {
    "KPIMON_BOOTSTRAP": ("kafka", "bootstrap"),
    "KPIMON_PARTITIONS": ("kafka", "partitions"),
    "KPIMON_TOPIC_TICKETS": ("topics", "tickets"),
    "KPIMON_TOPIC_SURVEYS": ("topics", "surveys"),
    "KPIMON_TOPIC_KPIS": ("topics", "kpis"),
    "KPIMON_TOPIC_DEADLETTER": ("topics", "deadletter"),
    "KPIMON_HTTP_HOST": ("http", "host"),
    "KPIMON_HTTP_PORT": ("http", "port"),
}


class ConfigError(ValueError):
    """Configuration that cannot be used; the message lists every problem."""


class _Section(BaseModel):
    # allow_inf_nan=False: `inf` (TOML literal or environment text) is not a duration.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]
SASL_PROTOCOLS = frozenset({"SASL_PLAINTEXT", "SASL_SSL"})
SSL_PROTOCOLS = frozenset({"SSL", "SASL_SSL"})


class KafkaConfig(_Section):
    bootstrap: str = "localhost:9092"
    partitions: int = Field(default=4, ge=1, le=1024)
    # Of the topics the worker creates (internal topics, changelogs): 3 in production.
    replication_factor: int = Field(default=1, ge=1, le=32)
    # How every Kafka client connects (worker, centre view, simulator, tail); the clients
    # get their options from `kpimon.kafka_security`. Prefer the environment for the
    # password: KPIMON_KAFKA__SASL_PASSWORD.
    security_protocol: SecurityProtocol = "PLAINTEXT"
    sasl_mechanism: SaslMechanism = "PLAIN"
    sasl_username: str | None = Field(default=None, min_length=1)
    sasl_password: str | None = Field(default=None, min_length=1, repr=False)
    # PEM files for SSL / SASL_SSL: CA bundle to verify the broker (default: the system
    # CAs), and a client certificate and key for mutual TLS.
    ssl_cafile: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None

    @field_validator("security_protocol", "sasl_mechanism", mode="before")
    @classmethod
    def _upper(cls, v: object) -> object:
        return v.strip().upper() if isinstance(v, str) else v

    @field_validator("ssl_cafile", "ssl_certfile", "ssl_keyfile")
    @classmethod
    def _existing_file(cls, v: str | None) -> str | None:
        if v is not None and not Path(v).is_file():
            raise ValueError(f"no such file: {v}")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> KafkaConfig:
        # Never put the password itself into a message.
        problems = []
        sasl = self.security_protocol in SASL_PROTOCOLS
        if sasl and not (self.sasl_username and self.sasl_password):
            problems.append(
                f"security_protocol {self.security_protocol} needs sasl_username and "
                "sasl_password"
            )
        if not sasl and (self.sasl_username or self.sasl_password):
            problems.append(
                "sasl_username/sasl_password are set but security_protocol is "
                f"{self.security_protocol} (use SASL_PLAINTEXT or SASL_SSL)"
            )
        files = (self.ssl_cafile, self.ssl_certfile, self.ssl_keyfile)
        if self.security_protocol not in SSL_PROTOCOLS and any(files):
            problems.append(
                "ssl_cafile/ssl_certfile/ssl_keyfile are set but security_protocol is "
                f"{self.security_protocol} (use SSL or SASL_SSL)"
            )
        if self.ssl_keyfile and not self.ssl_certfile:
            problems.append("ssl_keyfile needs ssl_certfile")
        if problems:
            raise ValueError("; ".join(problems))
        return self


class TopicsConfig(_Section):
    tickets: str = "support.tickets"
    surveys: str = "support.surveys"
    kpis: str = "support.kpis"
    deadletter: str = "support.deadletter"

    @field_validator("tickets", "surveys", "kpis", "deadletter")
    @classmethod
    def _topic_name(cls, v: str) -> str:
        if not v or len(v) > 249 or any(not (ch.isalnum() or ch in "._-") for ch in v):
            raise ValueError(f"not a valid Kafka topic name: {v!r}")
        return v


class RulesConfig(_Section):
    allowed_lateness: float = Field(default=120.0, ge=0)
    orphan_timeout: float = Field(default=600.0, gt=0)
    max_clock_skew: float = Field(default=300.0, ge=0)
    ticket_retention: float = Field(default=14 * 86400.0, gt=0)
    fcr_window: float = Field(default=7 * 86400.0, ge=0)
    at_risk_fraction: float = Field(default=0.25, gt=0, lt=1)
    # 0 turns wall-clock advance of idle partitions off.
    watermark_idle_seconds: float = Field(default=30.0, ge=0)


class WindowsConfig(_Section):
    # A changed window is published at most once per this many seconds (SPEC 4's
    # debounce); one that was quiet for longer goes out at the next 50 ms tick.
    emit_interval: float = Field(default=1.0, gt=0, le=60)


class MetricsConfig(_Section):
    # At most this many distinct queue label values; later names are exported as "other".
    max_queues: int = Field(default=200, ge=1, le=10_000)
    # Queue names that always get their own label, whatever arrives first.
    queues: list[str] = Field(default_factory=list)


class Threshold(_Section):
    """Colour bands of one KPI: green when at least as good as `good`, amber down to `warn`."""

    good: float
    warn: float
    higher_is_better: bool = True

    @model_validator(mode="after")
    def _ordered(self) -> Threshold:
        if (self.good < self.warn) if self.higher_is_better else (self.good > self.warn):
            raise ValueError("`good` must be on the better side of `warn`")
        return self


def _default_thresholds() -> dict[str, Threshold]:
    return {
        "service_level": Threshold(good=0.80, warn=0.70),
        "waiting": Threshold(good=5, warn=15, higher_is_better=False),
        "oldest_waiting_seconds": Threshold(good=60, warn=300, higher_is_better=False),
        "frt_mean_seconds": Threshold(good=60, warn=300, higher_is_better=False),
        "frt_p90_seconds": Threshold(good=300, warn=900, higher_is_better=False),
        "aht_seconds": Threshold(good=600, warn=900, higher_is_better=False),
        "fcr": Threshold(good=0.70, warn=0.60),
        "csat": Threshold(good=0.80, warn=0.70),
        "nps": Threshold(good=30, warn=0),
    }


class WallboardConfig(_Section):
    # Rolling window the tiles show: one of 5m 15m 1h 24h.
    window: Literal["5m", "15m", "1h", "24h"] = "15m"
    # Wall-clock seconds without new data before the board shows itself as stale.
    stale_after: float = Field(default=120.0, gt=0)
    thresholds: dict[str, Threshold] = Field(default_factory=_default_thresholds)


class HttpConfig(_Section):
    host: str = "127.0.0.1"
    port: int = Field(default=6066, ge=0, le=65535)
    # Bearer tokens; unset means open. `token`: /metrics and the API; `kiosk_token`:
    # read-only wallboard URL (also its feeds). Prefer the environment for secrets.
    token: str | None = Field(default=None, min_length=16, repr=False)
    kiosk_token: str | None = Field(default=None, min_length=16, repr=False)


class WorkerConfig(_Section):
    app_id: str = "kpimon"
    data_dir: str = ".local/worker"
    store: str = "memory://"
    processing_guarantee: str = "at_least_once"
    log_level: str = "info"
    # A worker that dies without leaving the group holds its partitions this long.
    session_timeout: float = Field(default=30.0, ge=3, le=300)
    # Seconds between INFO progress lines (messages applied, watermarks); 0: none.
    progress_interval: float = Field(default=30.0, ge=0, le=3600)

    @field_validator("processing_guarantee")
    @classmethod
    def _guarantee(cls, v: str) -> str:
        if v not in ("at_least_once", "exactly_once"):
            raise ValueError("must be at_least_once or exactly_once")
        return v


class Settings(_Section):
    """Everything a worker needs; build it with `load_settings`."""

    kafka: KafkaConfig = KafkaConfig()
    topics: TopicsConfig = TopicsConfig()
    rules: RulesConfig = RulesConfig()
    windows: WindowsConfig = WindowsConfig()
    metrics: MetricsConfig = MetricsConfig()
    wallboard: WallboardConfig = WallboardConfig()
    http: HttpConfig = HttpConfig()
    worker: WorkerConfig = WorkerConfig()
    sla_targets: dict[str, dict[str, float]] = Field(default_factory=dict)

    @field_validator("sla_targets")
    @classmethod
    def _targets(cls, v: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
        problems = []
        for channel, row in v.items():
            if channel not in CHANNELS:
                problems.append(f"unknown channel {channel!r} (one of {', '.join(CHANNELS)})")
            for priority, seconds in row.items():
                if priority not in PRIORITIES:
                    problems.append(f"unknown priority {priority!r} for {channel}")
                elif not seconds > 0:
                    problems.append(f"target for {channel}/{priority} must be > 0 seconds")
        if problems:
            raise ValueError("; ".join(problems))
        return v

    def kpi_rules(self) -> KpiRules:
        targets = default_sla_targets()
        for channel, row in self.sla_targets.items():
            for priority, seconds in row.items():
                targets[(channel, priority)] = float(seconds)
        r = self.rules
        return KpiRules(
            sla_targets=targets,
            fcr_window=r.fcr_window,
            orphan_timeout=r.orphan_timeout,
            allowed_lateness=r.allowed_lateness,
            ticket_retention=r.ticket_retention,
            at_risk_fraction=r.at_risk_fraction,
        )


def load_settings(
    path: str | Path | None = None, environ: Mapping[str, str] | None = None
) -> Settings:
    """Defaults < TOML file < environment; raises ConfigError listing every problem."""
    env = os.environ if environ is None else environ
    data: dict[str, Any] = {}
    path = path or env.get("KPIMON_CONFIG")
    if path:
        try:
            with open(path, "rb") as fh:
                data = tomllib.load(fh)
        except OSError as exc:
            raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    for name, value in env.items():
        if name in _ALIASES:
            section, key = _ALIASES[name]
        elif name.startswith("KPIMON_") and "__" in name:
            section, _, key = name[len("KPIMON_"):].lower().partition("__")
        else:
            continue
        table = data.setdefault(section, {})
        if isinstance(table, dict):  # else validation reports the file's non-table value
            table[key] = value
    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        problems = [
            f"  {'.'.join(str(p) for p in err['loc'])}: {err['msg']}"
            for err in exc.errors(include_url=False)
        ]
        origin = f" (file {path} and KPIMON_* environment)" if path else " (KPIMON_* environment)"
        raise ConfigError("invalid configuration" + origin + ":\n" + "\n".join(problems)) from None
