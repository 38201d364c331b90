"""Stage 1's journaled state survives a changelog cut at any record.

A kill -9 loses whatever the producer had not delivered, so the changelog of a
partition ends at an arbitrary record, possibly in the middle of one commit's writes (a
batch of input messages). Here a recorded changelog is cut at many points; recovery must
always give the state after some whole commit, with the outcome counts and read position
of exactly its last message, and finishing the input from there must end where an
uninterrupted run ends. Also: partial sums rebuilt from the facts equal the
incrementally kept ones.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Mapping
from typing import Any

import pytest

from kpimon.sim import SimConfig, generate
from models.decode import decode
from streams.partials import Partials
from streams.rules import KpiRules
from streams.store import JOURNAL_LIMIT, InputPartition

NAMES = {"tickets": "support.tickets", "surveys": "support.surveys"}


class RecordingTable:
    """The two things stage 1 uses of a Faust table, with the changelog recorded."""

    def __init__(self) -> None:
        self.data: dict[bytes, bytes] = {}
        self.changelog: list[tuple[bytes, bytes | None]] = []

    def send_changelog(
        self, partition: int, key: bytes, value: bytes | None, **_: Any
    ) -> None:
        assert partition == 0
        self.changelog.append((key, value))

    @classmethod
    def recovered(cls, records: list[tuple[bytes, bytes | None]]) -> RecordingTable:
        """What Faust's recovery would load from these changelog records."""
        table = cls()
        for key, value in records:
            if value is None:
                table.data.pop(key, None)
            else:
                table.data[key] = value
        return table


Message = tuple[str, int, Any]  # (kind, offset, decoded)


@pytest.fixture(scope="module")
def messages() -> list[Message]:
    now = time.time()
    start = (now // 86400) * 86400 - 86400 + 9 * 3600
    cfg = SimConfig(seed=7, start=start, duration=2 * 3600, rate=6, duplicates=0.02,
                    bad=0.01, unknown_types=0.01, orphans=0.01, now=now)
    offsets = {"tickets": 0, "surveys": 0}
    out: list[Message] = []
    for r in generate(cfg):
        kind = "tickets" if r.topic == cfg.tickets_topic else "surveys"
        out.append((kind, offsets[kind], decode(kind, r.key, r.value, now=now)))  # type: ignore[arg-type]
        offsets[kind] += 1
    return out


def state_of(table: RecordingTable) -> dict[bytes, bytes]:
    return {k: v for k, v in table.data.items() if not k.startswith(b"\x00journal")}


def feed(part: InputPartition, messages: list[Message]) -> None:
    for kind, offset, decoded in messages:
        if not part.already_applied(NAMES[kind], offset):
            part.apply(kind, offset, decoded)  # type: ignore[arg-type]
    part.commit()


def window_values(partials: Partials) -> dict[tuple[str, str, int], list[float]]:
    return {k: s.values for k, s in partials.windows.items() if any(s.values)}


def assert_same_windows(
    got: Mapping[tuple[str, str, int], list[float]],
    want: Mapping[tuple[str, str, int], list[float]],
) -> None:
    assert got.keys() == want.keys()
    for key, values in want.items():
        assert all(math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)
                   for a, b in zip(got[key], values, strict=True)), key


def test_recovery_from_any_cut_is_the_state_after_a_whole_message(
    messages: list[Message],
) -> None:
    rules = KpiRules()
    table = RecordingTable()
    part = InputPartition.open(table, 0, rules, NAMES, now_ms=1)
    # Commits after batches of random size, as the ingest agent's batches of input.
    rng = random.Random(3)
    after: dict[int, tuple[dict[bytes, bytes], dict[str, int], int, float]] = {}
    for i, (kind, offset, decoded) in enumerate(messages):
        part.apply(kind, offset, decoded)  # type: ignore[arg-type]
        if rng.random() < 0.2 or i == len(messages) - 1:
            part.commit()
            after[i] = (state_of(table), dict(part.outcomes), len(table.changelog),
                        part.watermark)
    assert 0.1 * len(messages) < len(after) < 0.3 * len(messages)
    final_windows = window_values(part.partials)
    assert sum(part.outcomes.values()) == len(messages)
    index = {(NAMES[kind], offset): i for i, (kind, offset, _) in enumerate(messages)}

    commits = sorted(after)
    cuts = sorted(rng.sample(range(1, len(table.changelog)), 40))
    cuts += [1, after[commits[0]][2] - 1, after[commits[5]][2] + 1, len(table.changelog)]
    mid_commit = 0
    for cut in cuts:
        recovered = RecordingTable.recovered(table.changelog[:cut])
        again = InputPartition.open(recovered, 0, rules, NAMES, now_ms=2)
        assert again.generation == 2
        done = max((index[(t, o)] for t, o in again.position.items()), default=-1)
        assert done == -1 or done in after, f"cut at {cut}: recovered inside a batch"
        state, outcomes, written, watermark = (
            after[done] if done >= 0 else ({}, {}, 1, float("-inf")))
        mid_commit += written != cut
        assert state_of(recovered) == state, f"cut at {cut}: not the state after message {done}"
        assert again.outcomes == outcomes
        assert again.watermark == watermark
        feed(again, messages)
        assert again.outcomes == part.outcomes
        assert_same_windows(window_values(again.partials), final_windows)
    assert mid_commit > 10  # the sample really cut inside commits' writes


def test_a_large_batch_is_journaled_in_parts_below_the_limit(
    messages: list[Message],
) -> None:
    table = RecordingTable()
    part = InputPartition.open(table, 0, KpiRules(), NAMES, now_ms=1)
    feed(part, messages)  # one batch of everything
    journals = [len(v or b"") for k, v in table.changelog if k.startswith(b"\x00journal")]
    assert len(journals) >= 3  # the opening commit, a part at the limit, the last commit
    assert max(journals) < JOURNAL_LIMIT + 64 * 1024


def test_partials_rebuilt_from_facts_equal_the_incremental_ones(
    messages: list[Message],
) -> None:
    rules = KpiRules()
    table = RecordingTable()
    part = InputPartition.open(table, 0, rules, NAMES, now_ms=1)
    feed(part, messages)
    rebuilt = Partials.rebuild(part.store.items(), rules)
    assert len(rebuilt.windows) > 100
    assert_same_windows(window_values(rebuilt), window_values(part.partials))
    assert {p: g for p, g in rebuilt.gauges.items() if g} == {
        p: g for p, g in part.partials.gauges.items() if g}
    assert {p: o for p, o in rebuilt.oldest.items() if o is not None} == {
        p: o for p, o in part.partials.oldest.items() if o is not None}


def test_a_new_generation_outranks_the_recovered_one() -> None:
    table = RecordingTable()
    first = InputPartition.open(table, 0, KpiRules(), NAMES, now_ms=10**12)
    # A clock that went backwards still gives a higher generation.
    again = InputPartition.open(RecordingTable.recovered(table.changelog), 0, KpiRules(),
                                NAMES, now_ms=5)
    assert again.generation == first.generation + 1
