"""The soak's account of a bad window (tests/support/soak_report.py)."""

from __future__ import annotations

import time

import orjson

from streams.windows import CELL_INDEX, CELLS
from tests.support.soak_report import (
    Assignment,
    Happening,
    Record,
    explain,
    holders,
    parse_assignments,
    window_key,
)

KEY = ("tech", "messaging", 1796312520)  # 2026-12-03T15:42:00Z
T = time.mktime(time.strptime("2026-12-04 07:14:50", "%Y-%m-%d %H:%M:%S"))


def log_line(stamp: str, generation: int, stage2: str) -> str:
    return (f"[2026-12-04 {stamp},250] [3466] [INFO] assigned in generation {generation}: "
            f"input partitions [0, 1], stage 2 partitions [{stage2}] ")


def test_assignments_are_read_from_the_worker_log() -> None:
    text = "\n".join([
        "[2026-12-04 07:14:40,100] [3466] [INFO] Executing _on_partitions_assigned ",
        log_line("07:14:41", 7, "0, 1"),
        log_line("07:14:55", 8, ""),
    ])
    got = parse_assignments("w17", text)
    assert [(a.generation, a.stage2) for a in got] == [(7, frozenset({0, 1})), (8, frozenset())]
    assert got[0].at == T - 9 + 0.25
    assert got[1].worker == "w17"


def test_holders_name_the_worker_of_each_generation() -> None:
    assignments = [
        Assignment(T, "w17", 7, frozenset({0, 1})),
        Assignment(T + 1, "w18", 7, frozenset({2, 3})),
        Assignment(T + 20, "w18", 8, frozenset({0, 1, 2, 3})),
        Assignment(T + 40, "w18", 9, frozenset({2, 3})),  # the holder of 1 never logged
    ]
    assert holders(assignments, 1) == [(7, T, "w17"), (8, T + 20, "w18"), (9, T + 40, "?")]


def state(tickets_created: int, aht_count: int, revision: int) -> bytes:
    values = [0.0] * len(CELLS)
    values[CELL_INDEX["tickets_created"]] = tickets_created
    values[CELL_INDEX["aht_count"]] = aht_count
    return orjson.dumps([revision, values, {}])


def kpi_record(aht_count: int, revision: int) -> bytes:
    return orjson.dumps({"queue": KEY[0], "channel": KEY[1], "aht_count": aht_count,
                         "revision": revision})


BATCH = {"tickets_created": 1, "aht_count": 3}


def test_a_right_state_with_a_stale_record_is_a_publication_fault() -> None:
    lines = explain(
        KEY, 1, BATCH,
        records=[Record(1, 10, T, b"k", kpi_record(1, 1)),
                 Record(1, 11, T + 1, b"k", kpi_record(2, 2))],
        writes=[Record(1, 50, T + 1, b"k", state(0, 2, 2)),
                Record(1, 51, T + 3, b"k", state(1, 3, 4))],
        assignments=[Assignment(T - 200, "w16", 11, frozenset({1})),
                     Assignment(T - 30, "w17", 12, frozenset({1})),
                     Assignment(T + 2, "w18", 13, frozenset({1}))],
        happenings=[Happening(T - 500, "+100.0s kill w9"), Happening(T + 2, "+753.4s stop w17")],
    )
    text = "\n".join(lines)
    assert lines[0] == "window tech|messaging|2026-12-03T15:42:00Z (stage-2 partition 1):"
    assert "2 record(s); the highest revision, 2," in text
    assert "aht_count (batch 3, here 2)" in text and "tickets_created (batch 1, here 0)" in text
    assert "revision 4 at" in text and "right: the fault is its publication" in text
    # The generation before the shown span, then those in it; only nearby actions.
    assert "g11" in text and "w16" in text and "g12" in text and "g13" in text
    assert "stop w17" in text and "kill w9" not in text


def test_a_wrong_state_is_a_computation_fault_and_a_missing_record_is_said() -> None:
    lines = explain(KEY, 1, BATCH, records=[],
                    writes=[Record(1, 51, T, b"k", state(1, 2, 4))],
                    assignments=[], happenings=[])
    text = "\n".join(lines)
    assert "topic: no record at all" in text
    assert "wrong too: the fault is in the computation (differs in: aht_count" in text
    assert "no assignment logged" in text


def test_window_keys_of_the_changelog() -> None:
    assert window_key(b"tech|messaging|1796312520") == KEY
    assert window_key(b"outcomes|1") is None
    assert window_key(b"hb|0|1") is None
    assert window_key(None) is None
