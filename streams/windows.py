"""Stage 2 of the engine: per-bucket sums keyed by `(queue, channel, bucket)`.

Applies contribution deltas, tracks which windows changed since they were last
emitted, and renders KPI window records (SPEC section 4). Free of any Faust import.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from models.records import COUNT_FIELDS, HIST_FIELDS, HIST_KEYS, SUM_FIELDS, WINDOW_SECONDS
from models.timestamps import format_rfc3339

WindowKey = tuple[str, str, int]

# Cell order of the packed value list: scalar fields, then each histogram's cells.
CELLS: tuple[str, ...] = (
    COUNT_FIELDS
    + SUM_FIELDS
    + tuple(f"{h}:{k}" for h in HIST_FIELDS for k in HIST_KEYS)
)
CELL_INDEX: dict[str, int] = {name: i for i, name in enumerate(CELLS)}
_SUM_CELLS = frozenset(CELL_INDEX[name] for name in SUM_FIELDS)


@dataclass(slots=True)
class WindowState:
    """Sums of one bucket window and how many changes were applied to it."""

    values: list[float] = field(default_factory=lambda: [0] * len(CELLS))
    revision: int = 0
    # Highest input offset applied, per input topic-partition ("t0", "s3", ...). It is
    # stored in the same changelog record as the sums, so a replay of the deltas topic
    # after a crash or rebalance can never count an input message twice.
    applied: dict[str, int] = field(default_factory=dict)

    def to_list(self) -> list[Any]:
        return [self.revision, self.values, self.applied]

    @classmethod
    def from_list(cls, raw: list[Any]) -> WindowState:
        return cls(values=raw[1], revision=raw[0], applied=raw[2] if len(raw) > 2 else {})


def first_time(applied: dict[str, int], source: str | None, offset: int | None) -> bool:
    """Record `(source, offset)` as applied; False when it (or a later one) already was.

    Deltas of one input partition reach a stage-2 partition in input-offset order, and
    a replay re-sends them with the same offsets, so the highest offset is enough.
    """
    if source is None or offset is None:
        return True  # not tied to an input message (idle watermark advance)
    if offset <= applied.get(source, -1):
        return False
    applied[source] = offset
    return True


def window_id(key: WindowKey) -> str:
    """The `support.kpis` record key: `{queue}|{channel}|{window_start}`."""
    queue, channel, start = key
    return f"{queue}|{channel}|{format_rfc3339(start)}"


def apply_deltas(
    state: WindowState, deltas: Iterable[tuple[str, float]]
) -> bool:
    """Add `(cell, delta)` pairs to a window; True when any value changed."""
    changed = False
    values = state.values
    for cell, delta in deltas:
        if not delta:
            continue
        i = CELL_INDEX[cell]
        total = values[i] + delta
        if i not in _SUM_CELLS:
            total = round(total)  # counts stay exact integers
        elif abs(total) < 1e-9:
            total = 0.0  # a retraction of a float sum leaves no dust
        values[i] = total
        changed = True
    if changed:
        state.revision += 1
    return changed


def render(key: WindowKey, state: WindowState, updated_at: float) -> dict[str, Any]:
    """The KPI window record of SPEC section 4."""
    queue, channel, start = key
    v = state.values
    record: dict[str, Any] = {
        "queue": queue,
        "channel": channel,
        "window_start": format_rfc3339(start),
        "window_end": format_rfc3339(start + WINDOW_SECONDS),
    }
    for name in COUNT_FIELDS:
        record[name] = int(v[CELL_INDEX[name]])
    for name in SUM_FIELDS:
        record[name] = float(v[CELL_INDEX[name]])
    for hist in HIST_FIELDS:
        record[hist] = {k: int(v[CELL_INDEX[f"{hist}:{k}"]]) for k in HIST_KEYS}
    record["revision"] = state.revision
    record["updated_at"] = format_rfc3339(round(updated_at, 3))
    return record


def group_deltas(
    deltas: Mapping[tuple[str, str, int, str], float],
) -> dict[tuple[str, str], dict[int, list[tuple[str, float]]]]:
    """Group flat contribution deltas by `(queue, channel)`, then by bucket."""
    grouped: dict[tuple[str, str], dict[int, list[tuple[str, float]]]] = {}
    for (queue, channel, start, cell), delta in deltas.items():
        grouped.setdefault((queue, channel), {}).setdefault(start, []).append((cell, delta))
    return grouped
