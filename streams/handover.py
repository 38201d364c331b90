"""Which stage-2 partitions a worker must publish again after a rebalance.

A worker that takes a stage-2 partition over cannot tell which of its windows changed
since they were last published: the previous owner may have merged partial sums and
stopped (or been killed) before its debounce let them out. So the new owner publishes
every window of the partition once its state is restored (readers keep the highest
revision; the KPI topic is compacted).

"Took over" is decided from the assignments themselves, not from a look at the
current assignment now and then: a worker that loses a partition and gets it back
between two looks saw no change, while another worker owned the partition in between,
merged the last input into it and stopped without publishing (issue: windows of the
last minutes missing from the KPI topic after a stop and a start in quick succession).
Kafka assigns a partition to one member per group generation, so a partition held in
two consecutive generations had no other owner in between; any other is gained. Free
of any Faust import.
"""

from __future__ import annotations


class Handover:
    """Stage-2 partitions gained since they were last taken for publication."""

    def __init__(self) -> None:
        self._generation: int | None = None
        self._held: frozenset[int] = frozenset()
        self._pending: set[int] = set()

    def assigned(self, generation: int, partitions: set[int]) -> None:
        """The group's generation `generation` gave this worker `partitions`."""
        consecutive = self._generation is not None and generation == self._generation + 1
        kept = self._held if consecutive else frozenset()
        # A partition gained and lost again before its state was restored needs
        # nothing from this worker; one gained and kept is still to publish.
        self._pending = (self._pending | (partitions - kept)) & partitions
        self._held = frozenset(partitions)
        self._generation = generation

    def take(self) -> set[int]:
        """The partitions to publish again (once the state of the latest assignment is
        restored), forgotten here."""
        pending, self._pending = self._pending, set()
        return pending

    @property
    def held(self) -> frozenset[int]:
        """The partitions of the latest assignment."""
        return self._held
