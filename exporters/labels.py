"""Bounded `queue` label values: a flood of new queue names must not explode Prometheus."""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)

OTHER = "other"
_OVERFLOW_NAMES_LIMIT = 10_000


class QueueLabels:
    """Admit the first `max_queues` queue names as labels; the rest become `other`.

    Names from the configuration are admitted first, so a known team keeps its own
    series even when a flood of new names arrives before its first event. Each name
    over the limit is logged once, and their number is exported.
    """

    def __init__(self, max_queues: int, known: tuple[str, ...] = ()) -> None:
        self.max_queues = max_queues
        self._admitted: dict[str, None] = dict.fromkeys(known[:max_queues])
        # Bounded too: past the limit, further names are folded without being remembered.
        self._overflowed: set[str] = set()

    def label(self, queue: str) -> str:
        if queue in self._admitted:
            return queue
        if len(self._admitted) < self.max_queues:
            self._admitted[queue] = None
            return queue
        if queue not in self._overflowed and len(self._overflowed) < _OVERFLOW_NAMES_LIMIT:
            self._overflowed.add(queue)
            log.warning(
                "queue %r is over max_queues=%d; its metrics are exported as queue=%r",
                queue[:64], self.max_queues, OTHER,
            )
        return OTHER

    @property
    def overflowed(self) -> int:
        """Distinct names folded into `other` (counted up to a bound)."""
        return len(self._overflowed)

    @property
    def admitted(self) -> tuple[str, ...]:
        return tuple(self._admitted)
