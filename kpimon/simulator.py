"""``kpimon simulate``: the traffic simulator's public face.

The simulator lives in the `kpimon.sim` package (model, noise, output, command line);
this module is the stable import path for it: ``from kpimon.simulator import generate``.
Run it directly with ``python -m kpimon.simulator --help``.
"""

import sys

from kpimon.sim import (
    ALLOWED_LATENESS,
    CHANNELS,
    DEAD_LETTER_REASONS,
    DEFAULT_QUEUES,
    KINDS,
    LIVE_CHANNELS,
    MAX_VALUE_BYTES,
    ORPHAN_SETTLE,
    SimConfig,
    SimRecord,
    Surge,
    add_arguments,
    generate,
    main,
    produce,
    read_jsonl,
    run,
    write_jsonl,
)

__all__ = [
    "ALLOWED_LATENESS",
    "CHANNELS",
    "DEAD_LETTER_REASONS",
    "DEFAULT_QUEUES",
    "KINDS",
    "LIVE_CHANNELS",
    "MAX_VALUE_BYTES",
    "ORPHAN_SETTLE",
    "SimConfig",
    "SimRecord",
    "Surge",
    "add_arguments",
    "generate",
    "main",
    "produce",
    "read_jsonl",
    "run",
    "write_jsonl",
]

if __name__ == "__main__":
    sys.exit(main())
