"""Stage 2 of the engine: per-bucket sums keyed by `(queue, channel, bucket)`.

Applies contribution deltas, tracks which windows changed since they were last
emitted, and renders KPI window records (SPEC section 4). Free of any Faust import.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
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

    def to_list(self) -> list[Any]:
        return [self.revision, self.values]

    @classmethod
    def from_list(cls, raw: list[Any]) -> WindowState:
        return cls(values=raw[1], revision=raw[0])


# (generation, sequence) of a partial value: a generation starts each time a worker
# takes an input partition over, so values from before a crash or move never win.
Version = tuple[int, int]


def newer(version: Version, stored: list[Any] | None) -> bool:
    """True when `version` supersedes a stored `[generation, sequence, ...]` entry."""
    return stored is None or (version[0], version[1]) > (stored[0], stored[1])


@dataclass(slots=True)
class MergedWindow:
    """Stage 2's window: the latest partial of each input partition, and their total.

    Partials are absolute and versioned, so applying one twice, late, or after a newer
    one changes nothing: replays of the internal topic after a crash or a rebalance are
    harmless, and the total is the sum over input partitions, as in the batch.
    """

    state: WindowState = field(default_factory=WindowState)
    partials: dict[str, list[Any]] = field(default_factory=dict)  # source -> [gen, seq, values]

    def to_list(self) -> list[Any]:
        return [self.state.revision, self.state.values, self.partials]

    @classmethod
    def from_list(cls, raw: list[Any]) -> MergedWindow:
        return cls(WindowState(values=raw[1], revision=raw[0]), raw[2])

    def drop_older(self, source: str, generation: int) -> bool:
        """Forget a source's partial from before `generation`; True when the total
        changed. Its new owner resends every partial it still has right after."""
        old = self.partials.get(source)
        if old is None or old[0] >= generation:
            return False
        del self.partials[source]
        return self._total()

    def offer(self, source: str, version: Version, values: list[float]) -> bool:
        """Take a partial unless a newer one is known; True when the total changed."""
        if not newer(version, self.partials.get(source)):
            return False
        old = self.partials.get(source)
        self.partials[source] = [version[0], version[1], values]
        if old is not None and old[2] == values:
            return False
        return self._total()

    def _total(self) -> bool:
        total = [0.0] * len(CELLS)
        for _, _, partial in self.partials.values():
            for i, v in enumerate(partial):
                total[i] += v
        for i, v in enumerate(total):
            # Counts stay exact integers; a retracted float sum leaves no dust.
            total[i] = round(v) if i not in _SUM_CELLS else (v if abs(v) >= 1e-9 else 0.0)
        if total == self.state.values:
            return False
        self.state.values = total
        self.state.revision += 1
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
        first = CELL_INDEX[f"{hist}:{HIST_KEYS[0]}"]
        counts = cumulate(v[first:first + len(HIST_KEYS)])
        record[hist] = {k: int(n) for k, n in zip(HIST_KEYS, counts, strict=True)}
    record["revision"] = state.revision
    record["updated_at"] = format_rfc3339(round(updated_at, 3))
    return record


def cumulate(cells: Sequence[float]) -> list[float]:
    """Per-cell histogram counts (the engine's) as cumulative ones (the outputs': each
    cell counts the values at or below its bound, like Prometheus' `le`)."""
    out: list[float] = []
    running = 0.0
    for n in cells:
        running += n
        out.append(running)
    return out


def cumulate_fields(fields: Mapping[str, float]) -> dict[str, float]:
    """One window's `{field or "hist:le": value}` with the histogram cells cumulated."""
    out = dict(fields)
    for hist in HIST_FIELDS:
        names = [f"{hist}:{k}" for k in HIST_KEYS]
        for name, n in zip(names, cumulate([fields.get(n, 0.0) for n in names]), strict=True):
            if n or name in fields:
                out[name] = n
    return out


def group_deltas(
    deltas: Mapping[tuple[str, str, int, str], float],
) -> dict[tuple[str, str], dict[int, list[tuple[str, float]]]]:
    """Group flat contribution deltas by `(queue, channel)`, then by bucket."""
    grouped: dict[tuple[str, str], dict[int, list[tuple[str, float]]]] = {}
    for (queue, channel, start, cell), delta in deltas.items():
        grouped.setdefault((queue, channel), {}).setdefault(start, []).append((cell, delta))
    return grouped
