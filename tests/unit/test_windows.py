"""Window sums: deltas, revisions, and stage 2's merge of versioned partials."""

from __future__ import annotations

from streams.windows import CELL_INDEX, CELLS, MergedWindow, WindowState, apply_deltas, render

CREATED = CELL_INDEX["tickets_created"]
FRT_SUM = CELL_INDEX["frt_sum_seconds"]


def partial(created: int, frt_sum: float = 0.0) -> list[float]:
    values = [0.0] * len(CELLS)
    values[CREATED], values[FRT_SUM] = created, frt_sum
    return values


def test_the_total_is_the_sum_of_the_latest_partial_of_each_source() -> None:
    merged = MergedWindow()
    assert merged.offer("0", (1, 1), partial(2, 10.5))
    assert merged.offer("1", (7, 1), partial(3, 1.0))
    assert merged.offer("0", (1, 2), partial(4, 12.5))  # replaces source 0, adds nothing
    assert merged.state.values[CREATED] == 7
    assert merged.state.values[FRT_SUM] == 13.5
    assert merged.state.revision == 3


def test_replayed_late_or_superseded_partials_change_nothing() -> None:
    merged = MergedWindow()
    merged.offer("0", (1, 5), partial(5))
    assert not merged.offer("0", (1, 5), partial(5))  # replayed
    assert not merged.offer("0", (1, 4), partial(9))  # late, older sequence
    assert not merged.offer("0", (0, 99), partial(9))  # from before a recovery
    assert merged.state.values[CREATED] == 5 and merged.state.revision == 1
    # A new generation wins even with a lower sequence: the recovered owner's truth.
    assert merged.offer("0", (2, 1), partial(4))
    assert merged.state.values[CREATED] == 4


def test_an_unchanged_total_keeps_its_revision_but_records_the_version() -> None:
    merged = MergedWindow()
    merged.offer("0", (1, 1), partial(1))
    assert not merged.offer("0", (1, 2), partial(1))
    assert merged.partials["0"][:2] == [1, 2] and merged.state.revision == 1


def test_merged_state_round_trips_and_renders_the_total() -> None:
    merged = MergedWindow()
    merged.offer("3", (1, 1), partial(1, 12.5))
    merged.offer("2", (1, 1), partial(2, 0.25))
    again = MergedWindow.from_list(merged.to_list())
    assert again == merged
    record = render(("billing", "chat", 1_795_341_600), again.state, 1_795_341_700.0)
    assert (record["tickets_created"], record["frt_sum_seconds"], record["revision"]) == (
        3, 12.75, 2)


def test_float_dust_across_partials_merges_to_exact_zero() -> None:
    merged = MergedWindow()
    merged.offer("0", (1, 1), partial(1, 0.1 + 0.2))
    merged.offer("1", (1, 1), partial(0, -0.3))
    assert merged.state.values[FRT_SUM] == 0.0


def test_state_round_trips() -> None:
    state = WindowState()
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


def test_a_new_owner_drops_partials_of_older_generations_it_no_longer_feeds() -> None:
    merged = MergedWindow()
    merged.offer("0", (5, 9), partial(1))
    merged.offer("1", (7, 1), partial(2))
    assert not merged.drop_older("0", 5)  # same generation: kept
    assert merged.drop_older("0", 6)  # source 0 recovered as generation 6
    assert merged.state.values[CREATED] == 2 and "0" not in merged.partials
    assert not merged.drop_older("2", 9)  # nothing from that source
