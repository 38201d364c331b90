"""`kpimon worker` with a RocksDB workaround patched in at run time (benchmark only).

Faust's RocksDB store takes the partition of every write from the *current event*
(`faust/stores/rocksdb.py`, `Store._set`: `assert event is not None`), so a table write
from a timer or any code outside an agent's event fails. kpimon's
`streams.store.TableTicketStore` writes its partition's state from timers (the heartbeat
opening an input partition, the idle-watermark advance). This wrapper replaces its two
writing methods with versions that put the value into the named partition's database
directly, as a fix in streams/store.py would; nothing else changes. It shows whether
the worker then runs with `rocksdb://` and what it costs; it is not a fix of kpimon.
"""

from __future__ import annotations

import sys
from typing import Any


def _put(table: Any, partition: int, key: bytes, value: bytes) -> None:
    data = table.data
    db_for_partition = getattr(data, "_db_for_partition", None)
    if db_for_partition is None:  # the memory store: a plain mapping
        data[key] = value
    else:
        db_for_partition(partition).put(key, value)
        data._key_index[key] = partition


def patch() -> None:
    from streams import store

    def _stage(self: Any, key: bytes, value: bytes | None) -> None:
        if value is None:
            self.table.data.pop(key, None)
        else:
            _put(self.table, self.partition, key, value)
        self._staged[key] = value

    def _write(self: Any, key: bytes, value: bytes | None) -> None:
        if value is None:
            self.table.data.pop(key, None)
            self.table.send_changelog(self.partition, key, None, value_serializer="raw")
        else:
            _put(self.table, self.partition, key, value)
            self.table.send_changelog(self.partition, key, value)

    cls: Any = store.TableTicketStore
    cls._stage = _stage
    cls._write = _write


def main() -> None:
    patch()
    from kpimon.cli import main as kpimon_main

    sys.exit(kpimon_main(sys.argv[1:]))


if __name__ == "__main__":
    main()
