"""The wallboard in headless Chromium (Debian package) against a real worker and Kafka.

It loads, its tiles show the values of `/api/kpis`, a new event changes a tile within
2 s, the queue filter narrows it to one team, and the stale state appears when the
stream stops. A screenshot of the loaded board is saved for the README.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service

from kpimon.sim import SimConfig, SimRecord, generate, produce
from models.timestamps import format_rfc3339
from tests.integration.kafka_env import REPO, LocalKafka, Topics, Worker, events_total

pytestmark = pytest.mark.integration

SCREENSHOT = Path(os.environ.get("KPIMON_SCREENSHOT", REPO / ".local" / "wallboard.png"))
STALE_AFTER = 8


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[webdriver.Chrome]:
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--no-first-run", "--window-size=1920,1080",
                f"--user-data-dir={tmp_path / 'chromium'}"):
        options.add_argument(arg)
    driver = webdriver.Chrome(
        service=Service(shutil.which("chromedriver") or "/usr/bin/chromedriver"),
        options=options,
    )
    try:
        yield driver
    finally:
        driver.quit()


def _api(worker: Worker, query: str = "") -> dict[str, Any]:
    with urllib.request.urlopen(f"http://127.0.0.1:{worker.port}/api/kpis{query}",
                                timeout=5) as resp:
        return dict(json.loads(resp.read()))


def _until(predicate: Any, timeout: float, what: str, step: float = 0.05) -> float:
    """Wait for `predicate`; return the seconds it took."""
    began = time.monotonic()
    while time.monotonic() - began < timeout:
        if predicate():
            return time.monotonic() - began
        time.sleep(step)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def _tiles(driver: webdriver.Chrome) -> tuple[str, dict[tuple[str, str], str]]:
    """(document version shown, {(queue, kpi): data-value}) read from the page."""
    found = driver.execute_script(
        "return [document.body.dataset.version || '', Array.from("
        "document.querySelectorAll('.tile')).map(t => [t.dataset.queue, t.dataset.kpi,"
        " t.dataset.value, t.querySelector('.value').textContent])]"
    )
    version, tiles = found
    for _, _, _, text in tiles:
        assert text.strip(), "every tile shows something (a dash when there is no value)"
    return version, {(q, k): v for q, k, v, _ in tiles}


def _created(ticket: str, at: float, topics: Topics) -> SimRecord:
    value = orjson.dumps({
        "schema_version": 1, "event_id": f"{ticket}-c", "type": "ticket.created",
        "occurred_at": format_rfc3339(at), "ticket_id": ticket, "queue": "billing",
        "channel": "phone",
    })
    return SimRecord(topics.tickets, ticket.encode(), value, "valid", at)


def test_wallboard_in_chromium(kafka: LocalKafka, tmp_path: Path,
                               browser: webdriver.Chrome) -> None:
    topics = Topics.named("wallboard")
    kafka.create_topics(topics, partitions=2)
    now = time.time()
    records = list(generate(SimConfig(
        seed=7, start=now - 3600, duration=3600, rate=40, now=now,
        tickets_topic=topics.tickets, surveys_topic=topics.surveys,
    )))
    worker = Worker(kafka, topics, "kpimon-wallboard", tmp_path, {
        "KPIMON_PARTITIONS": "2", "KPIMON_WALLBOARD__STALE_AFTER": str(STALE_AFTER),
    })
    try:
        worker.wait_ready()
        asyncio.run(produce(records, kafka.bootstrap, realtime=False, progress=False))
        # A replayed hour: stage 1 reads it all first, then stage 2 catches up. The
        # volume of the last hour follows the simulator's daily pattern (a few hundred
        # messages at night), so wait for the count, not for a volume.
        took = _until(lambda: sum(events_total(worker.metrics()).values()) >= len(records),
                      240, "the worker to apply the simulated hour", step=0.5)
        _until(lambda: (_api(worker)["overall"]["values"]["created"] or 0) > 0, 30,
               "the API to show the simulated hour", step=0.2)
        print(f"\nthe replayed hour showed after {took:.1f} s")

        url = f"http://127.0.0.1:{worker.port}/wallboard"
        browser.get(url)
        _until(lambda: len(_tiles(browser)[1]) >= 9 * 2, 10, "tiles to render")

        # Tiles show the API's values (compared at the same document version).
        def tiles_match_api() -> bool:
            doc = _api(worker)
            version, tiles = _tiles(browser)
            if version != str(doc["version"]):
                return False
            for entry in [doc["overall"], *doc["queues"]]:
                for kpi in ("service_level", "waiting", "oldest_waiting_seconds",
                            "frt_mean_seconds", "frt_p90_seconds", "aht_seconds", "fcr",
                            "csat", "nps"):
                    want = entry["values"][kpi]
                    got = tiles[(entry["queue"], kpi)]
                    if (got == "") != (want is None):
                        return False
                    if want is not None and abs(float(got) - want) > 1e-9 * max(1, abs(want)):
                        return False
            return True

        _until(tiles_match_api, 15, "tiles equal to /api/kpis", step=0.3)
        overflowing = browser.execute_script(
            "return Array.from(document.querySelectorAll('.tile .value'))"
            ".filter(v => v.scrollWidth > v.clientWidth).map(v => v.textContent)")
        assert overflowing == [], f"values wider than their tile at 1080p: {overflowing}"
        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        browser.save_screenshot(str(SCREENSHOT))
        assert "stale" not in (browser.find_element("tag name", "body").get_attribute("class")
                               or "")

        # A new waiting call changes the "waiting now" tile within 2 s.
        before = float(_tiles(browser)[1][("billing", "waiting")] or 0)
        asyncio.run(produce([_created("walk-in-1", time.time(), topics)], kafka.bootstrap,
                            realtime=False, progress=False))
        took = _until(
            lambda: float(_tiles(browser)[1][("billing", "waiting")] or 0) == before + 1,
            2.0, "the waiting tile to count the new call",
        )
        print(f"\nwallboard: new event visible on the tile after {took:.2f} s")

        # The queue filter shows one team only.
        browser.get(url + "?queue=billing")
        _until(lambda: {q for q, _ in _tiles(browser)[1]} == {"billing"}, 10,
               "the board filtered to billing")

        # With no more data, the board says so.
        took = _until(lambda: browser.execute_script("return document.body.dataset.stale")
                      == "true", STALE_AFTER + 10, "the stale state")
        banner = browser.find_element("id", "stale-banner")
        assert banner.is_displayed() and "NO NEW DATA" in banner.text
        print(f"wallboard: stale state shown {took:.1f} s after the last change "
              f"(stale_after {STALE_AFTER} s); screenshot {SCREENSHOT}")
    finally:
        worker.stop()
