"""Stage-2 window sums: deltas, revisions and the replay guard."""

from __future__ import annotations

from streams.windows import CELL_INDEX, WindowState, apply_deltas, first_time, render


def test_replayed_input_offsets_are_applied_once() -> None:
    state = WindowState()
    for source, offset in [("t0", 5), ("t0", 6), ("t0", 5), ("t0", 6), ("s0", 5), ("t1", 2)]:
        if first_time(state.applied, source, offset):
            apply_deltas(state, [("tickets_created", 1)])
    assert state.values[CELL_INDEX["tickets_created"]] == 4  # t0@5, t0@6, s0@5, t1@2
    assert state.revision == 4
    assert state.applied == {"t0": 6, "s0": 5, "t1": 2}


def test_changes_not_tied_to_an_input_message_are_always_applied() -> None:
    applied: dict[str, int] = {}
    assert first_time(applied, None, None) and first_time(applied, None, None)
    assert applied == {}


def test_state_round_trips_with_its_replay_marks() -> None:
    state = WindowState()
    first_time(state.applied, "t3", 41)
    apply_deltas(state, [("frt_sum_seconds", 12.5), ("frt_count", 1)])
    again = WindowState.from_list(state.to_list())
    assert again == state
    record = render(("billing", "chat", 1_795_341_600), again, 1_795_341_700.0)
    assert (record["frt_sum_seconds"], record["frt_count"], record["revision"]) == (12.5, 1, 1)


def test_a_retraction_leaves_exact_zeros() -> None:
    state = WindowState()
    apply_deltas(state, [("aht_sum_seconds", 0.1), ("aht_count", 1)])
    apply_deltas(state, [("aht_sum_seconds", 0.2)])
    apply_deltas(state, [("aht_sum_seconds", -0.30000000000000004), ("aht_count", -1)])
    assert state.values[CELL_INDEX["aht_sum_seconds"]] == 0.0
    assert state.values[CELL_INDEX["aht_count"]] == 0
