"""`kpimon simulate --realtime --speed N --behind S`: event time faster than the clock.

The end-to-end alerting test runs a scaled rule set against a simulator whose event
time advances N times as fast as the wall-clock; these tests pin that pacing and the
guard that keeps event time from ever running ahead of the clock.
"""

from __future__ import annotations

import asyncio
import time
from datetime import datetime
from typing import Any

import orjson
import pytest

import kpimon.sim as sim
from kpimon.sim import Pace, SimRecord


class FakeProducer:
    """Records what was sent and when (no broker in unit tests)."""

    instances: list[FakeProducer] = []

    def __init__(self, **config: Any) -> None:
        self.config = config
        self.sent: list[tuple[bytes, float]] = []
        FakeProducer.instances.append(self)

    async def start(self) -> None:
        """Nothing to connect to."""

    async def stop(self) -> None:
        """Nothing to flush."""

    async def send(self, topic: str, value: bytes, key: bytes | None = None) -> asyncio.Future[Any]:
        self.sent.append((value, time.time()))
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        fut.set_result(None)
        return fut


@pytest.fixture
def fake_kafka(monkeypatch: pytest.MonkeyPatch) -> type[FakeProducer]:
    import aiokafka

    FakeProducer.instances = []
    monkeypatch.setattr(aiokafka, "AIOKafkaProducer", FakeProducer)
    return FakeProducer


def test_pace_maps_event_time_to_the_wall_clock() -> None:
    assert Pace().due(1234.5) == 1234.5  # the default: send at the arrival time
    pace = Pace(speed=10, event_zero=1000.0, wall_zero=5000.0)
    assert pace.due(1000.0) == 5000.0
    assert pace.due(1600.0) == pytest.approx(5060.0)  # 10 minutes of event time: 1 minute
    assert pace.due(900.0) < 5000.0  # backfill: already due


def test_produce_with_a_pace_sends_at_the_scaled_times(fake_kafka: type[FakeProducer]) -> None:
    now = time.time()
    pace = Pace(speed=20, event_zero=now - 3600, wall_zero=now)
    records = [SimRecord("t", b"k", str(d).encode(), "valid", now - 3600 + d)
               for d in (-60, 4, 8)]
    assert asyncio.run(sim.produce(records, "b", realtime=True, progress=False, pace=pace)) == 3
    sent_at = [at for _, at in fake_kafka.instances[0].sent]
    assert sent_at[0] < now + 0.1  # before the live start: at once
    # 4 and 8 s of event time at 20x: 0.2 and 0.4 s (timers may fire a hair early).
    assert now + 0.19 <= sent_at[1] < now + 0.35
    assert now + 0.39 <= sent_at[2] < now + 0.6


def test_cli_speed_runs_event_time_fast_and_behind_the_clock(
    fake_kafka: type[FakeProducer], capsys: pytest.CaptureFixture[str]
) -> None:
    began = time.time()
    argv = ["--realtime", "--speed", "100", "--duration", "120", "--behind", "600",
            "--backfill", "300", "--rate", "120", "--seed", "5", "--quiet"]
    assert sim.main(argv) == 0
    took = time.time() - began
    assert took < 10  # 120 s of live event time at 100x: about 1.2 s
    (producer,) = fake_kafka.instances
    stamps = []
    for value, sent_at in producer.sent:
        event = orjson.loads(value)
        occurred = datetime.fromisoformat(event["occurred_at"].replace("Z", "+00:00"))
        stamps.append((occurred.timestamp(), sent_at))
    assert len(stamps) > 100
    # Event time starts behind + backfill before the run and never reaches the clock.
    assert min(o for o, _ in stamps) >= began - 600 - 300 - 1
    assert all(o <= s for o, s in stamps)
    live_start = began - 600
    live = [(o, s) for o, s in stamps if o > live_start + 70]  # past the arrival jitter
    assert live
    # A live record is sent no earlier than its event time at 100x (arrival >= occurred).
    assert all(s >= began + (o - live_start) / 100 - 0.05 for o, s in live)
    assert "error" not in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--realtime", "--speed", "10", "--duration", "600"], "--behind 540 or more"),
        (["--realtime", "--speed", "10", "--duration", "600", "--behind", "500"],
         "--behind 540 or more"),
        (["--realtime", "--speed", "10", "--duration", "0"], "needs a --duration"),
        (["--speed", "10"], "only apply with --realtime"),
        (["--behind", "60"], "only apply with --realtime"),
    ],
)
def test_cli_rejects_event_time_ahead_of_the_clock(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert sim.main([*argv, "--seed", "1"]) == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("speed", ["0", "-2", "nan", "1001", "fast"])
def test_cli_rejects_a_bad_speed(speed: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        sim.main(["--realtime", "--speed", speed])
    assert exc.value.code == 2
    assert "--speed" in capsys.readouterr().err
