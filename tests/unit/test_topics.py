"""The topics created before Faust starts are exactly the ones the worker uses."""

from __future__ import annotations

from kpimon.config import load_settings
from streams.topics import internal_topics


def test_internal_topics_cover_every_table_changelog_and_internal_topic() -> None:
    from streams.app import KpiWorker

    settings = load_settings(None, {"KPIMON_WORKER__APP_ID": "unit-topics",
                                    "KPIMON_PARTITIONS": "6"})
    worker = KpiWorker(settings)
    wanted = {t.name: t for t in internal_topics(settings)}
    used = {table.changelog_topic.get_topic_name() for table in worker.app.tables.values()}
    used |= {worker.deltas_name, worker.live_topic_name}
    assert set(wanted) == used
    assert all(t.partitions == 6 for t in wanted.values())
    assert {n for n, t in wanted.items() if not t.compacted} == {worker.deltas_name}
