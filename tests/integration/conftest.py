"""Session fixtures: one real Kafka broker for the whole integration run."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.integration.kafka_env import LocalKafka, local_kafka


@pytest.fixture(scope="session")
def kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalKafka]:
    with local_kafka(tmp_path_factory.mktemp("kafka")) as broker:
        yield broker
