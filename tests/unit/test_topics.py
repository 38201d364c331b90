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
    used |= {worker.deltas_name, worker.live_topic_name, worker.reroute_name}
    assert set(wanted) == used
    assert all(t.partitions == 6 for t in wanted.values())
    assert {n for n, t in wanted.items() if not t.compacted} == {worker.deltas_name,
                                                                 worker.reroute_name}


def test_topics_with_another_partition_count_are_named_with_what_to_do() -> None:
    from streams.topics import partition_problems

    settings = load_settings(None, {"KPIMON_WORKER__APP_ID": "unit-topics",
                                    "KPIMON_PARTITIONS": "4"})
    tickets, surveys = settings.topics.tickets, settings.topics.surveys
    assert partition_problems(settings, {tickets: 4, surveys: 4, "unit-topics-deltas": 4,
                                         "unrelated": 7}) == []
    assert partition_problems(settings, {}) == []  # nothing created yet
    problems = partition_problems(settings, {tickets: 4, surveys: 8,
                                             "unit-topics-reroute": 2})
    assert len(problems) == 2
    assert problems[0].startswith(f"{surveys} has 8 partitions, not 4: create it again")
    assert problems[1].startswith("unit-topics-reroute has 2 partitions, not 4: an internal")
