"""Why a window of a failed soak run is wrong: its records, its state and its owners.

For each window whose last KPI record differs from the batch, scripts/soak.py prints:

- its records on the KPI topic (how many, the highest revision, when, which fields
  differ from the batch), or that it has none;
- its state: the last write to the windows changelog (stage 2's table), rendered and
  compared with the batch. A right state with a wrong record is a publication fault
  (a change never published); a wrong state is a fault of the computation;
- which worker held its stage-2 partition in each group generation around its last
  change, from the workers' "assigned in generation" log lines;
- the soak's actions around its last change.

The state is rendered with the engine's own `streams.windows.render`: this is a
diagnosis of the engine's state, not part of the verdict, which compares the records
with the independent batch computation.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from streams.windows import WindowState, render
from tests.support.compare import REL_TOL, flatten

Key = tuple[str, str, int]

_ASSIGNED = re.compile(
    r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3})\] \[\d+\] \[INFO\] assigned in generation "
    r"(\d+): input partitions \[[^\]]*\], stage 2 partitions \[([^\]]*)\]"
)
NEAR_BEFORE = 90.0  # seconds of actions and generations shown before a last change
NEAR_AFTER = 30.0


@dataclass(frozen=True)
class Record:
    """One Kafka record: where, when (epoch seconds), key and value."""

    partition: int
    offset: int
    at: float
    key: bytes | None
    value: bytes | None


@dataclass(frozen=True)
class Assignment:
    """A worker's log line: generation `generation` gave it these stage-2 partitions."""

    at: float
    worker: str
    generation: int
    stage2: frozenset[int]


@dataclass(frozen=True)
class Happening:
    """One action of the soak (kill, stop, start...), at epoch seconds."""

    at: float
    line: str


def parse_assignments(worker: str, log_text: str) -> list[Assignment]:
    """The assignments a worker logged (its log's local-time stamps as epoch seconds)."""
    out = []
    for line in log_text.splitlines():
        m = _ASSIGNED.match(line)
        if m is None:
            continue
        stamp, millis, generation, stage2 = m.groups()
        at = time.mktime(time.strptime(stamp, "%Y-%m-%d %H:%M:%S")) + int(millis) / 1000
        partitions = frozenset(int(p) for p in stage2.split(",") if p.strip())
        out.append(Assignment(at, worker, int(generation), partitions))
    return out


def holders(assignments: Iterable[Assignment], partition: int
            ) -> list[tuple[int, float, str]]:
    """(generation, when first logged, holder or "?") of a stage-2 partition, for every
    generation some worker logged: "?" when no worker's log says it held it (killed
    before it logged, say)."""
    by_generation: dict[int, list[Assignment]] = {}
    for a in assignments:
        by_generation.setdefault(a.generation, []).append(a)
    out = []
    for generation in sorted(by_generation):
        seen = by_generation[generation]
        held = sorted({a.worker for a in seen if partition in a.stage2})
        out.append((generation, min(a.at for a in seen), "+".join(held) or "?"))
    return out


def _clock(at: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(at)) + f".{int(at * 1000) % 1000:03d}"


def _differences(got: Mapping[str, float], want: Mapping[str, float]) -> str:
    bad = []
    for name in sorted(set(got) | set(want)):
        w, g = want.get(name, 0), got.get(name, 0)
        if abs(w - g) > REL_TOL * max(1.0, abs(w)):
            bad.append(f"{name} (batch {w:g}, here {g:g})")
    return ", ".join(bad) if bad else "none"


def explain(
    key: Key,
    partition: int,
    batch: Mapping[str, Any],
    records: Sequence[Record],
    writes: Sequence[Record],
    assignments: Sequence[Assignment],
    happenings: Sequence[Happening],
) -> list[str]:
    """The lines on one bad window. `records`: its KPI records; `writes`: its windows
    changelog records; both in offset order."""
    queue, channel, start = key
    want = flatten(batch)
    when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(start))
    lines = [f"window {queue}|{channel}|{when} (stage-2 partition {partition}):"]
    last_change = None
    if records:
        best = max(records, key=lambda r: (orjson.loads(r.value or b"{}")["revision"], r.offset))
        record = orjson.loads(best.value or b"{}")
        lines.append(
            f"  topic: {len(records)} record(s); the highest revision, {record['revision']}, "
            f"written {_clock(best.at)}; differs in: {_differences(flatten(record), want)}")
        last_change = max(r.at for r in records)
    else:
        lines.append("  topic: no record at all")
    live = [w for w in writes if w.value is not None]
    if writes and writes[-1].value is not None:
        raw = orjson.loads(writes[-1].value)
        state = flatten(render(key, WindowState.from_list(raw), 0.0))
        right = _differences(state, want) == "none"
        verdict = ("right: the fault is its publication" if right
                   else "wrong too: the fault is in the computation")
        lines.append(
            f"  state: {len(live)} write(s) to the windows changelog; the last, revision "
            f"{raw[0]} at {_clock(writes[-1].at)}, is {verdict}"
            + ("" if right else f" (differs in: {_differences(state, want)})"))
        last_change = max(last_change or 0.0, writes[-1].at)
    else:
        lines.append("  state: none in the windows changelog (never merged, or deleted)")
    if last_change is None:
        return lines
    near = [h for h in holders(assignments, partition)
            if last_change - NEAR_BEFORE <= h[1] <= last_change + NEAR_AFTER]
    before = [h for h in holders(assignments, partition) if h[1] < last_change - NEAR_BEFORE]
    shown = before[-1:] + near
    lines.append(f"  its partition by generation around its last change ({_clock(last_change)}): "
                 + ("; ".join(f"g{g} {_clock(at)} {who}" for g, at, who in shown)
                    or "no assignment logged"))
    around = [h.line for h in happenings
              if last_change - NEAR_BEFORE <= h.at <= last_change + NEAR_AFTER]
    lines.append("  actions around it: " + ("none" if not around else ""))
    lines.extend(f"    {line}" for line in around)
    return lines


def window_key(raw: bytes | None) -> Key | None:
    """The window of a windows-changelog key (`queue|channel|start`); None for others."""
    if raw is None:
        return None
    parts = raw.decode(errors="replace").split("|")
    if len(parts) != 3 or not parts[2].isdigit() or int(parts[2]) % 60:
        return None
    return parts[0], parts[1], int(parts[2])
