"""`kpimon worker` under cProfile: `profile_worker.py OUT worker ...`; SIGHUP writes OUT, exits.

Faust/mode handle SIGINT, SIGTERM, SIGUSR1 and SIGUSR2 themselves, so the benchmark
uses SIGHUP: the handler runs on the main thread (the one profiled), stops the
profiler, dumps the stats and leaves at once without a shutdown to profile.
"""

from __future__ import annotations

import cProfile
import os
import signal
import sys
import time
from types import FrameType


def main() -> None:
    out = sys.argv[1]
    # CPU time, not wall-clock: on a busy machine a descheduled call would otherwise look
    # slow. KPIMON_PROFILE_CLOCK=wall profiles wall-clock time instead.
    wall = os.environ.get("KPIMON_PROFILE_CLOCK") == "wall"
    profiler = cProfile.Profile() if wall else cProfile.Profile(time.process_time)

    def dump(signum: int, frame: FrameType | None) -> None:
        profiler.disable()
        profiler.dump_stats(out)
        os._exit(0)

    signal.signal(signal.SIGHUP, dump)
    from kpimon.cli import main as kpimon_main

    profiler.enable()
    kpimon_main(sys.argv[2:])  # "worker" and its options


if __name__ == "__main__":
    main()
