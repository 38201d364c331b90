"""The Faust worker: the pure engine wired to Kafka topics and changelogged tables.

Stage 1 (`ingest`) consumes the co-partitioned input topics, keeps ticket facts in the
`tickets` table keyed by ticket id, and sends contribution deltas to the internal
`<app_id>-deltas` topic keyed by `queue|channel`. Stage 2 (`aggregate`) sums the deltas
per bucket in the `windows` table, and a timer emits changed windows to the KPI topic,
each at most once per `emit_interval` (`streams/debounce.py`). Windows are ordinary
tables whose keys carry the bucket start: Faust's own windowed tables close windows by
wall-clock (DESIGN-NOTES).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import faust
import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.partitioner import murmur2
from faust.types import TP
from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest

from exporters import wallboard
from exporters.auth import Guard
from exporters.centre import CentreView, follow
from exporters.kpis import ROLLING, KpiCollector
from exporters.labels import QueueLabels
from exporters.pipeline import ConsumerLagCollector, PipelineMetrics
from kpimon.config import Settings
from kpimon.kafka_security import aiokafka_options, faust_broker_credentials
from models.decode import DeadLetter, Ignored, TopicKind, decode
from models.records import DeadLetterRecord
from models.timestamps import format_rfc3339
from streams import drain
from streams.contributions import bucket
from streams.debounce import Debounce
from streams.gaps import GapGuard, Verdict
from streams.handover import Handover
from streams.outbox import Outbox, Writer
from streams.reroute import PROGRESS_INTERVAL, Rerouter
from streams.stall import StallWatch
from streams.store import InputPartition, changelog_writer, put_in_partition
from streams.tickets import SURVEYS, TICKETS
from streams.windows import MergedWindow, WindowState, newer, render, window_id

log = logging.getLogger(__name__)

# Partial sums are sent to stage 2 this often: changes in between are coalesced.
FLUSH_INTERVAL = 0.1
# Changed windows are looked at this often; each still goes out at most once per
# emit_interval, so a window that was quiet shows its change within a tick.
EMIT_TICK = 0.05
PRODUCER_LINGER = 0.02
# The agents take their input in batches: one journal record and one changelog record
# per changed key per batch, instead of per message. A batch waits at most BATCH_WAIT
# for more input, so a quiet stream's latency grows by that much at most.
BATCH_SIZE = 1000
BATCH_WAIT = 0.02
# Holes bridged per batch before the rest waits for a rewind (a batch of transactional
# input has one commit marker per transaction and partition).
MAX_PROBE_ROUNDS = 100
# A partition that applied nothing for this long while the broker holds more is read
# again from its next offset (`_tail_progress`).
TAIL_STALL = 10.0


def stage2_partition(queue: str, channel: str, partitions: int) -> int:
    """The deltas partition that owns a (queue, channel): Kafka's default murmur2 rule,
    computed here so that sending and ownership checks can never disagree."""
    return int(murmur2(f"{queue}|{channel}".encode()) & 0x7FFFFFFF) % partitions


# aiohttp refuses a charset inside content_type; the text format is UTF-8 anyway.
_PROMETHEUS_TEXT = "text/plain; version=0.0.4"


async def _no_commit(*_: Any, **__: Any) -> bool:
    return False


class _App(faust.App):
    """`faust.App` with kpimon's consumer loop and a hook for a rebalance that starts
    while the worker stops.

    Faust then gives the partitions up at once: it closes the consumer without waiting
    for the agents or flushing the producer. Anything the worker sends after that
    lands in changelogs the next owner has already restored, and a later restore
    replays it over newer state (lost input, seen in the rebalance test).
    """

    before_stopped_rebalance: Callable[[], Awaitable[None]] | None = None

    def _new_transport(self) -> Any:
        # Faust's consumer with a cheaper per-message loop (streams/drain.py).
        return drain.Transport(self.conf.broker_consumer, self)

    async def _on_partitions_revoked(self, revoked: Any) -> None:
        if self.should_stop and self.before_stopped_rebalance is not None:
            await self.before_stopped_rebalance()
        await super()._on_partitions_revoked(revoked)


class KpiWorker:
    """Builds the Faust app for one `Settings` and holds the worker's live state."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.rules = settings.kpi_rules()
        self.registry = CollectorRegistry()
        topics = settings.topics
        self.metrics = PipelineMetrics(
            self.registry, (topics.tickets, topics.surveys), self._owned_counts
        )
        n = settings.kafka.partitions
        # Input a producer sent to another partition than its ticket's goes home
        # through this topic (streams/routing.py); stage 1 reads it with the inputs.
        self.reroute_name = f"{settings.worker.app_id}-reroute"
        self.input_names = {topics.tickets, topics.surveys, self.reroute_name}
        self._kinds: dict[str, TopicKind] = {topics.tickets: "tickets", topics.surveys: "surveys"}
        # (topic, partition) -> offset of the next input message to read
        self.next_offset: dict[tuple[str, int], int] = {}
        self.gaps = GapGuard()  # stage 1's input
        self.deltas_gaps = GapGuard()  # stage 2's
        self._probe: AIOKafkaConsumer | None = None  # asks the broker what a hole holds
        self._probe_lock = asyncio.Lock()
        self.deltas_read: dict[int, int] = {}
        self.stalls: StallWatch[TP] = StallWatch()  # table recovery
        self.tails: StallWatch[TP] = StallWatch(TAIL_STALL)  # input read in order
        # Partitions whose tail was probed and held no records: highwater then.
        self._tails_settled: dict[TP, int] = {}
        self.registry.register(ConsumerLagCollector(self._consumer_lag))
        self.partitions: dict[int, InputPartition] = {}
        # partition -> (wall-clock of its last ticket event, watermark then)
        self.activity: dict[int, tuple[float, float]] = {}
        # Changed windows waiting to be published to the KPI topic (SPEC 4's debounce).
        self.emission: Debounce[bytes] = Debounce(settings.windows.emit_interval)
        self.live_dirty: set[bytes] = set()
        self.handover = Handover()  # stage-2 partitions to publish again
        # Buckets older than this are gone: no rolling window or FCR correction needs them.
        self.expired_before = float("-inf")
        self._expiry_checked = 0.0
        self.buckets = Gauge(
            "support_window_buckets", "Bucket windows this worker keeps for its partitions.",
            registry=self.registry,
        )
        self.buckets.set_function(lambda: len(self.windows.data))
        self.unpublished = Gauge(
            "support_windows_unpublished",
            "Changed windows not yet published to the KPI topic (debounced).",
            registry=self.registry,
        )
        self.unpublished.set_function(lambda: self.emission.pending())
        self.late_dropped = Counter(
            "support_late_deltas_dropped",
            "Corrections for buckets already expired (older than the longest rolling "
            "window plus the FCR window), dropped.",
            registry=self.registry,
        )
        self.holes = Counter(
            "support_input_holes",
            "Holes in a partition's offsets, probed on the broker: `bridged` held no "
            "records (transaction markers, retention), `reread` were messages the "
            "consumer dropped, read again.",
            ["kind"], registry=self.registry,
        )
        self._emitted_watermark: float | None = None
        self.centre = CentreView(settings.wallboard.stale_after)

        conf = settings.worker
        self.app = _App(
            conf.app_id,
            broker=f"kafka://{settings.kafka.bootstrap}",
            broker_credentials=faust_broker_credentials(settings.kafka),
            store=conf.store,
            datadir=conf.data_dir,
            processing_guarantee=conf.processing_guarantee,
            topic_partitions=settings.kafka.partitions,
            topic_replication_factor=settings.kafka.replication_factor,
            # Faust sends every record as soon as it is buffered: one produce request per
            # record or two. A few milliseconds of linger batch them (the largest cost).
            producer_linger=PRODUCER_LINGER,
            broker_session_timeout=conf.session_timeout,
            broker_heartbeat_interval=conf.session_timeout / 10,
            # With the in-memory store, standby copies do not survive: the store drops keys
            # of non-active partitions after each recovery, while Faust would resume a
            # later takeover from the standby's offset. Without standbys a new owner
            # replays the whole changelog, which is correct (the two-worker test).
            table_standby_replicas=0 if conf.store.startswith("memory") else 1,
            web_bind=settings.http.host,
            web_host=settings.http.host,
            web_port=settings.http.port,
            web_in_thread=False,
            key_serializer="raw",
            value_serializer="raw",
        )
        self.inputs = self._raw_topic(topics.tickets, topics.surveys, self.reroute_name)
        self.rerouter = Rerouter(
            self.reroute_name, self._raw_topic(self.reroute_name, partitions=n, internal=True),
            self._kinds, topics.tickets, n,
            lambda topic, partition: self.app.consumer.highwater(TP(topic, partition)),
        )
        self.deltas_name = f"{conf.app_id}-deltas"
        self.deltas = self._raw_topic(self.deltas_name, partitions=n, internal=True)
        self.kpis = self._raw_topic(topics.kpis)
        self.live_topic_name = f"{conf.app_id}-live"
        self.live_topic = self._raw_topic(self.live_topic_name, partitions=n, internal=True)
        self.deadletter = self._raw_topic(topics.deadletter)
        self.tickets = self.app.Table("tickets", partitions=n, key_type=bytes, value_type=bytes)
        self.windows = self.app.Table("windows", partitions=n, key_type=bytes, value_type=bytes)
        self.live = self.app.Table("live", partitions=n, key_type=bytes, value_type=bytes)
        # Outcome counts per input partition, kept exactly-once like the windows.
        self.counters = self.app.Table("counters", partitions=n, key_type=bytes,
                                       value_type=bytes)
        # Stage 2's view of each input partition's watermark, from heartbeats.
        self.source_watermarks: dict[int, float] = {}
        self._heartbeat_sent: dict[int, float] = {}
        self.labels = QueueLabels(settings.metrics.max_queues, tuple(settings.metrics.queues))
        self.registry.register(KpiCollector(self, self.labels))

        # Changelog records of both stages, sent after each batch (streams/outbox.py).
        # Transactions (exactly_once) need Faust's own producer path.
        self.outbox = Outbox()
        self._direct = conf.processing_guarantee == "at_least_once"
        self._writers = {id(t): self._writer(t)
                         for t in (self.tickets, self.windows, self.live, self.counters)}

        self.app.agent(self.inputs, name="ingest")(self._ingest)
        self.app.agent(self.deltas, name="aggregate")(self._aggregate)
        self.app.task(self._emit_loop)
        self.app.timer(1.0, name="heartbeat")(self._heartbeat)
        self.app.timer(PROGRESS_INTERVAL, name="share_progress")(self._share_progress)
        self.app.timer(FLUSH_INTERVAL, name="flush")(self._flush)
        if conf.progress_interval > 0:
            self.app.timer(conf.progress_interval, name="progress")(self._progress)
        self.applied = 0  # input messages applied by stage 1
        self.merged = 0  # partial-sum messages merged by stage 2
        self._progress_mark = (time.monotonic(), 0, 0)
        self.app.timer(0.25, name="emit_live")(self._emit_live)
        self.app.timer(5.0, name="unstick_recovery")(self._unstick_recovery)
        self.app.timer(1.0, name="retry_holes")(self._retry_holes)
        if settings.rules.watermark_idle_seconds > 0:
            self.app.timer(1.0, name="advance_idle")(self._advance_idle)
        registry = self.registry
        guard = Guard(settings.http.token, settings.http.kiosk_token)

        async def metrics(view: Any, request: Any) -> Any:
            return view.bytes(generate_latest(registry), content_type=_PROMETHEUS_TEXT)

        self.app.page("/metrics", name="metrics")(guard.protect("api", metrics))

        async def healthz(view: Any, request: Any) -> Any:
            return view.json({"status": "alive"})

        async def readyz(view: Any, request: Any) -> Any:
            ready, why = self.readiness()
            body = {"ready": ready, "reason": why,
                    "input_partitions": sorted(self.partitions),
                    "stage2_partitions": sorted(self.owned_stage2())}
            return view.json(body, status=200 if ready else 503)

        wallboard.register(
            self.app, self.centre, settings.wallboard.window, settings.wallboard.thresholds,
            guard,
        )
        self.app.task(self._follow_centre)
        self.app.page("/healthz", name="healthz")(healthz)
        self.app.page("/readyz", name="readyz")(readyz)
        self.app.on_partitions_revoked.connect(self._on_revoked)  # type: ignore[arg-type]
        self.app.on_partitions_assigned.connect(self._on_assigned)  # type: ignore[arg-type]
        self.app.before_stopped_rebalance = self._fence
        self.app.on_before_shutdown.connect(self._publish_before_stop)
        self.app.on_before_shutdown.connect(self._close_probe)

    def _writer(self, table: Any) -> Writer:
        if self._direct:
            return self.outbox.writer(table.changelog_topic.get_topic_name())
        return changelog_writer(table)

    def _put(self, table: Any, partition: int, key: bytes, value: bytes | None) -> None:
        """Set (or delete) a table key and write it to the named changelog partition."""
        if value is None:
            table.data.pop(key, None)
        else:
            put_in_partition(table.data, partition, key, value)
        self._writers[id(table)](partition, key, value)

    async def _send_staged(self) -> None:
        """Hand the staged changelog records to the producer."""
        if self._direct and not self.outbox.closed:
            # The aiokafka producer under Faust's (its aiokafka transport; no public
            # accessor): Faust flushes it before committing offsets. Called even with
            # nothing staged: it waits for a send in progress that took our records.
            faust_producer: Any = self.app.producer
            await self.outbox.send(faust_producer._ensure_producer())

    def _raw_topic(
        self, *names: str, partitions: int | None = None, internal: bool = False
    ) -> Any:
        # Bytes in, bytes out: decoding is ours (models.decode), so bad input can be
        # dead-lettered instead of failing inside Faust's deserialiser.
        return self.app.topic(
            *names, key_type=bytes, value_type=bytes, key_serializer="raw",
            value_serializer="raw", partitions=partitions, internal=internal,
        )

    def _consumer_lag(self) -> Iterator[tuple[str, int, int]]:
        # The producers' topics; the internal ones are the worker's own business.
        inputs = {self.settings.topics.tickets, self.settings.topics.surveys}
        try:
            assignment = self.app.consumer.assignment()
        except Exception:
            return
        for tp in assignment:
            if tp.topic not in inputs:
                continue
            highwater = self.app.consumer.highwater(tp)
            if highwater is None:
                continue  # nothing fetched yet for this partition
            read = self.next_offset.get((tp.topic, tp.partition))
            if read is None:
                # Nothing read since the partition was assigned: start from the group's
                # committed offset; without one, no series rather than a wrong one.
                read = self._committed_offset(tp)
                if read is None:
                    continue
            yield tp.topic, tp.partition, max(0, highwater - read)

    def _committed_offset(self, tp: Any) -> int | None:
        committed = getattr(self.app.consumer, "_committed_offset", {})
        offset = committed.get(tp)
        return int(offset) if offset is not None else None

    def _adopt_assigned(self) -> None:
        """Create processors for assigned ticket partitions that had no event yet.

        Their watermark is then exported and heartbeated, and idle advance covers them,
        even when no new event arrives after a rebalance.
        """
        if not self.readiness()[0]:
            return
        tickets = self.settings.topics.tickets
        for tp in self.app.consumer.assignment():
            if tp.topic == tickets and tp.partition not in self.partitions:
                self._partition(tp.partition)

    def _expire_buckets(self) -> None:
        """Delete owned buckets that no rolling window or FCR correction can reach.

        The horizon follows the slowest input partition, so a lagging partition never
        has its deltas dropped; it is checked once a minute.
        """
        now = time.monotonic()
        n = self.settings.kafka.partitions
        if now - self._expiry_checked < 60:
            return
        self._expiry_checked = now
        self._expire_partials()
        if len(self.source_watermarks) < n:
            return
        keep = max(seconds for _, seconds in ROLLING) + self.settings.rules.fcr_window
        horizon = min(self.source_watermarks.values()) - keep
        self.expired_before = max(self.expired_before, horizon // 60 * 60)
        owned = self.owned_stage2()
        for key in list(self.windows.data.keys()):
            queue, channel, start = key.decode().split("|")
            if int(start) < self.expired_before:
                partition = stage2_partition(queue, channel, n)
                if partition in owned:
                    self._put(self.windows, partition, key, None)
                    self.emission.discard(key)

    def _reemit_gained(self) -> None:
        """Publish again every window of the stage-2 partitions this worker gained
        (streams/handover.py), once their state is restored.

        Which windows changed since their last emission lives in memory only; after a
        crash or a move, the new owner cannot tell, so it re-emits them all (readers
        keep the highest revision; the KPI topic is compacted).
        """
        if not self.readiness()[0]:
            return  # the latest assignment's state is not restored yet
        gained = self.handover.take() & self.owned_stage2()
        if not gained:
            return
        log.info("stage 2: publishing every window of partitions %s again (taken over)",
                 sorted(gained))
        self._recover_heartbeats(gained)
        n = self.settings.kafka.partitions
        for key in list(self.windows.data.keys()):
            queue, channel, _ = key.decode().split("|")
            if stage2_partition(queue, channel, n) in gained:
                self.emission.changed(key)
        for key in list(self.live.data.keys()):
            queue, channel = key.decode().split("|")
            if stage2_partition(queue, channel, n) in gained:
                self.live_dirty.add(key)

    def _stopping(self) -> bool:
        return bool(self.app.should_stop or self.app.producer.should_stop)

    def readiness(self) -> tuple[bool, str]:
        """Ready once partitions are assigned, table state recovered and consuming."""
        app = self.app
        if app.rebalancing:
            return False, "rebalancing"
        recovery = app.tables.recovery  # type: ignore[attr-defined]  # not in TableManagerT
        if app.in_recovery or not recovery.completed.is_set():
            return False, "recovering table state"
        if not app.consumer.assignment():
            return False, "no partitions assigned yet"
        return True, "consuming"

    # Stage 1 ---------------------------------------------------------------------

    async def _ingest(self, stream: Any) -> None:
        # Faust acks a batch's events (so their offsets become committable) only after
        # this body finished with them; it flushes the producer before committing.
        async for events in stream.take_events(BATCH_SIZE, within=BATCH_WAIT):
            if self.outbox.closed:
                continue  # partitions given up while stopping (`_fence`)
            dead: list[tuple[bytes | None, bytes]] = []
            held: dict[tuple[str, int], list[Any]] = {}  # messages behind a hole
            for event in events:
                self._take(event.message, dead, held)
            self._journal()
            await self.rerouter.send(self.partitions)
            await self._send_staged()
            # Each hole is probed: one without records (transaction markers) is bridged
            # and the messages held behind it are applied now; a real one is read again.
            for _ in range(MAX_PROBE_ROUNDS):
                due = self.gaps.take_due()
                if not due:
                    break
                for (topic, partition), offset in due.items():
                    behind = held.pop((topic, partition), [])
                    if await self._probe_hole(topic, partition, offset,
                                              behind[0].offset if behind else None):
                        for msg in behind:
                            self._take(msg, dead, held)
                self._journal()
                await self.rerouter.send(self.partitions)
                await self._send_staged()
            for key, value in dead:
                await self.deadletter.send(key=key, value=value)

    def _take(self, msg: Any, dead: list[tuple[bytes | None, bytes]],
              held: dict[tuple[str, int], list[Any]]) -> None:
        if not self.handle_input(msg.topic, msg.partition, msg.offset, msg.key, msg.value,
                                 dead):
            held.setdefault((msg.topic, msg.partition), []).append(msg)

    def _journal(self) -> None:
        # Called with no await since the input was applied: a flush never sends partial
        # sums of input that a journal does not cover yet.
        for part in self.partitions.values():
            if part.uncommitted:
                part.commit()

    async def _probe_hole(self, topic: str, partition: int, offset: int,
                          next_held: int | None) -> bool:
        """Ask the broker what a hole from `offset` holds (streams/gaps.py). True: it
        holds no records up to `next_held`, the first message held behind it, which
        can be applied now; otherwise the partition is read again from `offset`."""
        tp = TP(topic, partition)
        if tp not in self.app.consumer.assignment():
            return False
        try:
            first = await self._first_record(topic, partition, offset)
        except Exception as exc:
            log.warning("%s[%d]: could not ask the broker about offset %d (%r)",
                        topic, partition, offset, exc)
            first = None
        bridged = self._gaps_of(topic).probed((topic, partition), offset, first)
        self.holes.labels("bridged" if bridged else "reread").inc()
        if bridged:
            assert first is not None
            log.debug("%s[%d]: offsets %d to %d hold no records (transaction markers or "
                      "retention)", topic, partition, offset, first - 1)
            if first == next_held:
                return True
        else:
            log.warning("%s[%d]: offset %d was fetched but never delivered (dropped by the "
                        "consumer); reading again from there", topic, partition, offset)
        await self.app.consumer.seek(tp, offset)
        return False

    def _gaps_of(self, topic: str) -> GapGuard:
        """The hole guard of the stage that reads `topic`."""
        return self.deltas_gaps if topic == self.deltas_name else self.gaps

    async def _first_record(self, topic: str, partition: int, offset: int) -> int | None:
        """The offset of the broker's first record at or after `offset` (None: none
        within 5 s), read the way Faust's consumer reads (isolation level)."""
        async with self._probe_lock:  # one partition at a time on the one consumer
            if self._probe is None:
                guarantee = self.settings.worker.processing_guarantee
                probe = AIOKafkaConsumer(
                    bootstrap_servers=self.settings.kafka.bootstrap,
                    enable_auto_commit=False, auto_offset_reset="earliest",
                    isolation_level="read_committed" if guarantee == "exactly_once"
                    else "read_uncommitted",
                    **aiokafka_options(self.settings.kafka),
                )
                await probe.start()
                self._probe = probe
            tp = TopicPartition(topic, partition)
            self._probe.assign([tp])
            self._probe.seek(tp, offset)
            batch = await self._probe.getmany(tp, timeout_ms=5000, max_records=1)
            records = batch.get(tp) or []
            return records[0].offset if records else None

    async def _retry_holes(self) -> None:
        """Probe again the holes that their rewind did not fill (streams/gaps.py), and
        the ends of partitions that stopped short of the broker's."""
        if self.app.rebalancing or self._stopping():
            return
        now = time.monotonic()
        for guard in (self.gaps, self.deltas_gaps):
            for (topic, partition), offset in guard.overdue(now).items():
                await self._probe_hole(topic, partition, offset, None)
        for tp, offset in self.tails.stalled(self._tail_progress(), now):
            await self._reread_tail(tp, offset)

    def _tail_progress(self) -> dict[TP, tuple[int, int]]:
        """(last offset applied, last offset on the broker) of each partition read in
        offset order, for `tails`; empty while not consuming.

        A hole is noticed when a message after it arrives. Messages that Faust drops
        with nothing after them (a rebalance clears the agents' queues after the
        consumer already read past them: the two-worker test lost the last 500
        messages of two partitions that way) leave a partition that stops short of
        the broker's end and waits for input that never comes.
        """
        if not self.readiness()[0]:
            return {}
        inputs = self.input_names
        progress: dict[TP, tuple[int, int]] = {}
        for tp in self.app.consumer.assignment():
            expected: int | None = None
            if tp.topic in inputs:
                part = self.partitions.get(tp.partition)
                expected = None if part is None else part.expected(tp.topic)
            elif tp.topic == self.deltas_name and self._direct:
                read = self._deltas_read(tp.partition)
                expected = None if read is None else read + 1
            highwater = self.app.consumer.highwater(tp)
            if (expected is None or highwater is None
                    or self._gaps_of(tp.topic).is_open((tp.topic, tp.partition))
                    or self._tails_settled.get(tp) == highwater):
                continue
            progress[tp] = (expected - 1, highwater - 1)
        return progress

    async def _reread_tail(self, tp: TP, offset: int) -> None:
        """A partition stopped at `offset` short of its highwater: read it again from
        there if the broker holds records from there on."""
        if tp not in self.app.consumer.assignment():
            return
        highwater = self.app.consumer.highwater(tp)
        try:
            first = await self._first_record(tp.topic, tp.partition, offset)
        except Exception as exc:
            log.warning("%s[%d]: could not ask the broker about offset %d (%r)",
                        tp.topic, tp.partition, offset, exc)
            return
        if first is None or highwater is None or first >= highwater:
            # Transaction markers or aborted records only: nothing is missing.
            self._tails_settled[tp] = highwater
            return
        log.warning("%s[%d]: offsets from %d on were fetched but never applied (dropped "
                    "by the consumer); reading again from there", tp.topic, tp.partition,
                    offset)
        self.holes.labels("reread").inc()
        await self.app.consumer.seek(tp, offset)

    async def _close_probe(self, *_: Any, **__: Any) -> None:
        if self._probe is not None:
            probe, self._probe = self._probe, None
            await probe.stop()

    def handle_input(
        self,
        topic: str,
        partition: int,
        offset: int,
        key: bytes | None,
        value: bytes | None,
        dead: list[tuple[bytes | None, bytes]],
    ) -> bool:
        """Apply one input message; its dead-letter record (key, value) goes to `dead`.

        False: not applied, it lies behind a hole in the partition's offsets."""
        self.next_offset[(topic, partition)] = offset + 1
        part = self._partition(partition)
        if part.already_applied(topic, offset):
            return True  # redelivered after a crash or move; its effects are in the state
        verdict = self.gaps.check((topic, partition), part.expected(topic), offset,
                                  time.monotonic())
        if verdict is Verdict.SKIP:
            return False
        kind = self._kinds.get(topic)
        if kind is None:
            return self._take_forwarded(part, topic, partition, offset, key, value, dead)
        now = time.time()
        decoded = decode(
            kind, key, value, now=now, max_clock_skew=self.settings.rules.max_clock_skew
        )
        if self.rerouter.misrouted(part, topic, partition, offset, key, value, decoded):
            return True  # passed on to its ticket's partition
        if isinstance(decoded, DeadLetter):
            dead.append(self._dead_letter(decoded, topic, partition, offset, key, value, now))
        before = part.watermark
        part.apply(kind, offset, decoded)
        self._applied(part, partition, kind, decoded, now, before)
        return True

    def _applied(self, part: InputPartition, partition: int, kind: TopicKind, decoded: Any,
                 now: float, before: float) -> None:
        """Activity and watermark bookkeeping after a message was applied."""
        self.applied += 1
        if kind == "tickets" and not isinstance(decoded, DeadLetter | Ignored):
            self.activity[partition] = (now, part.watermark)
        if part.watermark != before:
            self.metrics.watermark(partition, part.watermark)

    def _take_forwarded(
        self, part: InputPartition, topic: str, partition: int, offset: int,
        key: bytes | None, value: bytes | None, dead: list[tuple[bytes | None, bytes]],
    ) -> bool:
        """Apply a message that another partition forwarded here (streams/reroute.py),
        as if read from its own topic, counted under that topic."""
        forwarded = self.rerouter.received(part, offset, value)
        if forwarded is None:
            return True  # another partition's progress, heard
        kind, envelope = forwarded
        now = time.time()
        decoded = decode(kind, key, envelope.value, now=now,
                         max_clock_skew=self.settings.rules.max_clock_skew)
        if isinstance(decoded, DeadLetter):  # named by where it was produced
            dead.append(self._dead_letter(decoded, envelope.topic, envelope.partition,
                                          envelope.offset, key, envelope.value, now))
        before = part.watermark
        if part.apply_forwarded(kind, self.reroute_name, offset, envelope, decoded):
            self._applied(part, partition, kind, decoded, now, before)
        return True

    def _partition(self, partition: int) -> InputPartition:
        part = self.partitions.get(partition)
        if part is not None:
            return part
        names = {TICKETS: self.settings.topics.tickets, SURVEYS: self.settings.topics.surveys}
        part = InputPartition.open(
            self.tickets, partition, self.rules, names, time.time_ns() // 1_000_000,
            self._writers[id(self.tickets)], self.settings.kafka.partitions,
        )
        self.partitions[partition] = part
        watermark = part.watermark
        self.activity[partition] = (time.time(), watermark)
        if watermark != float("-inf"):
            self.metrics.watermark(partition, watermark)
        log.info("partition %d: %d tickets with pending timers, %d windows, watermark %s",
                 partition, sum(1 for _ in part.processor.pending_timers()),
                 len(part.partials.windows),
                 format_rfc3339(watermark) if watermark > 0 else "none")
        return part

    async def _advance_idle(self) -> None:
        """Let event time follow wall-clock on partitions with no ticket event lately.

        A quiet night queue must still breach its SLA; the advance continues from the
        last watermark at the pace of the wall-clock, so a live stream sees no jump.
        """
        idle = self.settings.rules.watermark_idle_seconds
        if self.app.rebalancing or self._stopping():
            return  # stopping: the producer may be gone; the next owner advances
        now = time.time()
        for partition, part in list(self.partitions.items()):
            wall, base = self.activity[partition]
            if now - wall < idle or base == float("-inf"):
                continue
            before = part.watermark
            part.advance(base + (now - wall))
            if part.watermark != before:
                self.metrics.watermark(partition, part.watermark)
        await self._send_staged()

    async def _flush(self) -> None:
        """Send the partial sums that changed to their stage-2 partitions, as values.

        Coalescing a burst of changes into one message per pair keeps the internal
        topic small; the version makes every message idempotent.
        """
        if self._stopping():
            return  # a new owner rebuilds and resends every partial
        n = self.settings.kafka.partitions
        for partition, part in list(self.partitions.items()):
            if part.announce:
                # Before the first partials of a generation, on every stage-2 partition
                # (same producer, so it arrives first).
                part.announce = False
                value = orjson.dumps({"reset": partition, "p": partition, "g": part.generation})
                for target in range(n):
                    await self.deltas.send(key=None, value=value, partition=target)
            changes = part.partials.take_changes()
            if not changes and not part.counts_changed:
                continue
            version = list(part.next_version())
            for (queue, channel), (windows, gauges, oldest) in changes.items():
                payload: dict[str, Any] = {"p": partition, "v": version, "q": queue,
                                           "c": channel, "b": windows}
                if gauges is not None:
                    payload["l"] = [[p, g, k] for (p, g), k in gauges.items()]
                    payload["o"] = oldest
                await self.deltas.send(
                    key=f"{queue}|{channel}".encode(),
                    value=orjson.dumps(payload, option=orjson.OPT_NON_STR_KEYS),
                    partition=stage2_partition(queue, channel, n),
                )
            if part.counts_changed:
                part.counts_changed = False
                payload = {"p": partition, "v": version, "n": part.outcomes, "r": part.reasons,
                           "x": part.misrouted}
                # The counters of input partition p live on stage-2 partition p.
                await self.deltas.send(
                    key=b"outcomes|%d" % partition, value=orjson.dumps(payload),
                    partition=partition,
                )

    def _expire_partials(self) -> None:
        keep = max(seconds for _, seconds in ROLLING) + self.settings.rules.fcr_window
        for part in list(self.partitions.values()):
            if part.processor.watermark != float("-inf"):
                part.partials.expire(bucket(part.processor.watermark - keep))

    async def _heartbeat(self) -> None:
        """Tell every stage-2 partition the watermarks that moved, once a second.

        Rolling windows end at the watermark, and a (queue, channel) with no change
        would otherwise never learn that time moved on.
        """
        if self._stopping():
            return  # the producer may already be gone (a graceful stop crashed on it)
        self._adopt_assigned()
        self._reemit_gained()
        self._expire_buckets()
        await self.rerouter.send(self.partitions)  # a recovered journal's, if no input came
        await self._send_staged()
        for partition, part in list(self.partitions.items()):
            watermark = part.processor.watermark
            if watermark == float("-inf") or self._heartbeat_sent.get(partition) == watermark:
                continue
            self._heartbeat_sent[partition] = watermark
            value = orjson.dumps({"hb": watermark, "p": partition})
            for target in range(self.settings.kafka.partitions):
                await self.deltas.send(key=None, value=value, partition=target)

    async def _share_progress(self) -> None:
        """Tell every input partition how far each of ours has read its own input:
        held events wait until no partition can still forward their ticket.created."""
        if self.app.rebalancing or self._stopping():
            return
        for partition, part in list(self.partitions.items()):
            read = self.rerouter.read_progress(partition, part)
            if read is not None:
                part.heard(partition, read)  # its own input, as the others hear it
        self._journal()
        await self.rerouter.send(self.partitions, progress=True)
        await self._send_staged()

    def _owned_counts(self) -> tuple[list[tuple[str, str, int]], list[tuple[str, str, int]],
                                     list[tuple[str, int]]]:
        owned = self.owned_stage2()
        outcomes: list[tuple[str, str, int]] = []
        reasons: list[tuple[str, str, int]] = []
        misrouted: list[tuple[str, int]] = []
        for key, raw in list(self.counters.data.items()):
            if not key.startswith(b"outcomes|") or int(key.split(b"|")[1]) not in owned:
                continue
            counts = orjson.loads(raw)
            for name, n in counts["n"].items():
                topic, _, outcome = name.rpartition("|")
                outcomes.append((topic, outcome, n))
            for name, n in counts["r"].items():
                topic, _, reason = name.rpartition("|")
                reasons.append((topic, reason, n))
            misrouted.extend(counts.get("x", {}).items())
        return outcomes, reasons, misrouted

    def _dead_letter(
        self,
        reason: DeadLetter,
        topic: str,
        partition: int,
        offset: int,
        key: bytes | None,
        value: bytes | None,
        now: float,
    ) -> tuple[bytes | None, bytes]:
        record = DeadLetterRecord.build(
            reason=reason.reason,
            detail=reason.detail,
            topic=topic,
            partition=partition,
            offset=offset,
            key=key,
            value=value,
            received_at=format_rfc3339(round(now, 3)),
        )
        # The payload may hold personal data: only the coordinates at INFO.
        log.info("dead-lettered %s[%d]@%d: %s", topic, partition, offset, reason.reason)
        return key, record.model_dump_json().encode()

    async def _unstick_recovery(self) -> None:
        """Read again a changelog partition whose recovery stopped (streams/stall.py)."""
        recovery: Any = self.app.tables.recovery  # type: ignore[attr-defined]
        progress: dict[TP, tuple[int, int]] = {}
        if recovery.in_recovery:
            for tp in list(recovery.active_tps):
                offset = recovery.active_offsets.get(tp)
                highwater = recovery.active_highwaters.get(tp)
                if offset is not None and highwater is not None:
                    progress[tp] = (offset, highwater)
        for tp, offset in self.stalls.stalled(progress, time.monotonic()):
            log.warning("recovery of %s[%d] stalled at offset %d of %d; reading it again",
                        tp.topic, tp.partition, offset, progress[tp][1])
            await self.app.consumer.seek(tp, offset)

    async def _progress(self) -> None:
        """One INFO line of what the worker did lately: long replays show progress."""
        now = time.monotonic()
        since, applied, merged = self._progress_mark
        self._progress_mark = (now, self.applied, self.merged)
        rate = (self.applied - applied) / max(now - since, 1e-9)
        marks = ", ".join(
            f"{p}: {format_rfc3339(part.watermark) if part.watermark > 0 else 'none'}"
            for p, part in sorted(self.partitions.items())
        )
        ready, why = self.readiness()
        log.info(
            "progress: %d input messages applied (%.0f/s), %d partial sums merged; "
            "stage 2 owns %s; watermarks {%s}; %s",
            self.applied, rate, self.merged - merged, sorted(self.owned_stage2()), marks,
            "consuming" if ready else why,
        )

    async def _fence(self) -> None:
        """Stop writing for good, before a rebalance during shutdown lets another
        worker restore our partitions: what is sent by then is delivered first."""
        if not self._direct or self.outbox.closed:
            return  # transactions fence the producer (exactly_once); or fenced already
        # First of all, and with no await before it: no input offset is committed from
        # now on, so whatever is dropped below is applied again by the next owner (the
        # agents go on acking their batches, and Faust commits acked offsets).
        consumer: Any = self.app.consumer
        consumer.commit = _no_commit
        await self.outbox.close()
        producer: Any = self.app.producer
        try:
            await asyncio.wait_for(producer._ensure_producer().flush(),
                                   self.settings.worker.session_timeout / 2)
        except Exception as exc:  # stopping anyway: say what may follow
            log.warning("stopping: changelog records may be unsent (%r); the next owner "
                        "replays their input", exc)
        log.info("stopping: partitions given up; %d staged changelog records dropped "
                 "(the next owner applies their input again)", self.outbox.dropped)

    async def _on_assigned(self, sender: Any, assigned: Any, **_: Any) -> None:
        stage2 = {tp.partition for tp in assigned if tp.topic == self.deltas_name}
        self.handover.assigned(self.app.consumer_generation_id, stage2)
        log.info("assigned in generation %d: input partitions %s, stage 2 partitions %s",
                 self.app.consumer_generation_id,
                 sorted({tp.partition for tp in assigned if tp.topic in self.input_names}),
                 sorted(stage2))

    async def _on_revoked(self, sender: Any, revoked: Any, **_: Any) -> None:
        # Faust flushed the producer, but a timer may have staged records since: they
        # must reach the changelogs before the next owner restores them.
        await self._send_staged()
        if not self._stopping():
            await self.app.producer.flush()
        inputs = self.input_names
        for tp in revoked:
            self.next_offset.pop((tp.topic, tp.partition), None)
            self._tails_settled.pop(tp, None)
            self._gaps_of(tp.topic).forget((tp.topic, tp.partition))
            if tp.topic == self.deltas_name:
                self.deltas_read.pop(tp.partition, None)
            if tp.topic in inputs:
                self.rerouter.forget(tp.partition)
            if tp.topic in inputs and self.partitions.pop(tp.partition, None) is not None:
                del self.activity[tp.partition]
                self.metrics.forget_partition(tp.partition)

    # Stage 2 ---------------------------------------------------------------------

    async def _aggregate(self, stream: Any) -> None:
        async for events in stream.take_events(BATCH_SIZE, within=BATCH_WAIT):
            if self.outbox.closed:
                continue
            moved: set[int] = set()
            now = time.monotonic()
            for event in events:
                msg = event.message
                here = msg.partition
                # Merging is idempotent, so redelivered partials are merged again; only
                # a hole (streams/gaps.py) holds the partition until it is read again.
                # (exactly_once: Faust's transaction markers would make every commit a
                # hole to probe, and its transactions fence what at_least_once cannot.)
                read = self._deltas_read(here)
                if self._direct and self.deltas_gaps.check(
                    (self.deltas_name, here), None if read is None else read + 1,
                    msg.offset, now,
                ) is Verdict.SKIP:
                    continue
                self._merge(here, msg.value)
                if read is None or msg.offset > read:
                    self.deltas_read[here] = msg.offset
                    moved.add(here)
            for here in moved:
                self._put(self.counters, here, b"read|%d" % here,
                          b"%d" % self.deltas_read[here])
            await self._send_staged()
            for (topic, partition), offset in self.deltas_gaps.take_due().items():
                await self._probe_hole(topic, partition, offset, None)

    def _deltas_read(self, here: int) -> int | None:
        """The last deltas offset merged on partition `here` (kept in the counters
        table, so a worker that gains the partition knows where a hole would start)."""
        read = self.deltas_read.get(here)
        if read is None:
            raw = self.counters.data.get(b"read|%d" % here)
            if raw is not None:
                read = self.deltas_read[here] = int(raw)
        return read

    def _merge(self, here: int, value: bytes) -> None:
        """Apply one message of the deltas topic, from its partition `here`."""
        # Writes name the changelog partition (this deltas partition) themselves:
        # Faust's own check of the changelog's partition count fails while a new
        # worker has no metadata for it yet, and would crash the agent.
        payload = orjson.loads(value)
        source = payload["p"]
        if "reset" in payload:
            self._drop_older(here, str(payload["reset"]), payload["g"])
            return
        if "hb" in payload:
            self._apply_heartbeat(here, source, payload["hb"])
            return
        if "n" in payload:
            self._apply_counts(here, source, payload)
            return
        self.merged += 1
        queue, channel = payload["q"], payload["c"]
        version = (payload["v"][0], payload["v"][1])
        for start, values in payload["b"].items():
            if int(start) < self.expired_before:
                self.late_dropped.inc()  # never recreate a partial old window
                continue
            key = f"{queue}|{channel}|{start}".encode()
            raw = self.windows.data.get(key)
            merged = MergedWindow() if raw is None else MergedWindow.from_list(
                orjson.loads(raw))
            if merged.offer(str(source), version, values):
                self.emission.changed(key)
            # Stored even when the total is unchanged: the partial's version moved.
            self._put(self.windows, here, key, orjson.dumps(merged.to_list()))
        if "l" in payload:
            self._apply_live(here, queue, channel, source, version, payload)

    def _drop_older(self, here: int, source: str, generation: int) -> None:
        n = self.settings.kafka.partitions
        for key, raw in list(self.windows.data.items()):
            queue, channel, _ = key.decode().split("|")
            if stage2_partition(queue, channel, n) != here:
                continue
            merged = MergedWindow.from_list(orjson.loads(raw))
            if source in merged.partials and merged.partials[source][0] < generation:
                if merged.drop_older(source, generation):
                    self.emission.changed(key)
                self._put(self.windows, here, key, orjson.dumps(merged.to_list()))
        for key, raw in list(self.live.data.items()):
            queue, channel = key.decode().split("|")
            if stage2_partition(queue, channel, n) != here:
                continue
            partials = orjson.loads(raw)
            if source in partials and partials[source][0] < generation:
                del partials[source]
                self._put(self.live, here, key, orjson.dumps(partials))
                self.live_dirty.add(key)

    def _apply_heartbeat(self, here: int, source: int, watermark: float) -> None:
        if watermark > self.source_watermarks.get(source, float("-inf")):
            self.source_watermarks[source] = watermark
        # Kept in the table too: a worker that gains this stage-2 partition must know
        # every source's watermark (rolling windows, oldest wait) even when no source
        # moves again, and a heartbeat is only sent when a watermark moved.
        key = b"hb|%d|%d" % (here, source)
        raw = self.counters.data.get(key)
        if raw is None or orjson.loads(raw) < watermark:
            self._put(self.counters, here, key, orjson.dumps(watermark))

    def _recover_heartbeats(self, gained: set[int]) -> None:
        for key, raw in list(self.counters.data.items()):
            if not key.startswith(b"hb|"):
                continue
            _, here, source = key.split(b"|")
            if int(here) in gained:
                watermark = orjson.loads(raw)
                if watermark > self.source_watermarks.get(int(source), float("-inf")):
                    self.source_watermarks[int(source)] = watermark

    def _apply_counts(self, here: int, source: int, payload: Any) -> None:
        key = b"outcomes|%d" % source
        raw = self.counters.data.get(key)
        version = (payload["v"][0], payload["v"][1])
        if raw is not None and not newer(version, orjson.loads(raw)["v"]):
            return  # replayed after a crash or rebalance, or superseded
        self._put(self.counters, here, key,
                  orjson.dumps({"v": version, "n": payload["n"], "r": payload["r"],
                                "x": payload.get("x", {})}))

    def _apply_live(
        self, here: int, queue: str, channel: str, source: int, version: tuple[int, int],
        payload: Any,
    ) -> None:
        key = f"{queue}|{channel}".encode()
        raw = self.live.data.get(key)
        partials: dict[str, list[Any]] = {} if raw is None else orjson.loads(raw)
        if not newer(version, partials.get(str(source))):
            return  # replayed after a crash or rebalance, or superseded
        # [generation, sequence, [[priority, gauge, n], ...], oldest created_at or None]
        partials[str(source)] = [version[0], version[1], payload["l"], payload["o"]]
        self._put(self.live, here, key, orjson.dumps(partials))
        self.live_dirty.add(key)

    # KpiSource for the collector: only what this worker owns -----------------------

    def watermark(self) -> float | None:
        return max(self.source_watermarks.values()) if self.source_watermarks else None

    def owned_stage2(self) -> set[int]:
        """Deltas partitions this worker actively owns (not standbys, not revoked)."""
        try:
            assignment = self.app.consumer.assignment()
        except Exception:
            return set()
        return {tp.partition for tp in assignment if tp.topic == self.deltas_name}

    def _owned(self, queue: str, channel: str, owned: set[int]) -> bool:
        # The stores also hold standby copies and keys of revoked partitions.
        return stage2_partition(queue, channel, self.settings.kafka.partitions) in owned

    def windows_items(self) -> Iterator[tuple[str, str, int, list[float]]]:
        owned = self.owned_stage2()
        for key, raw in list(self.windows.data.items()):
            queue, channel, start = key.decode().split("|")
            if self._owned(queue, channel, owned):
                yield queue, channel, int(start), orjson.loads(raw)[1]

    def live_items(
        self,
    ) -> Iterator[tuple[str, str, dict[tuple[str, str], int], float | None]]:
        owned = self.owned_stage2()
        for key, raw in list(self.live.data.items()):
            queue, channel = key.decode().split("|")
            if not self._owned(queue, channel, owned):
                continue
            gauges: dict[tuple[str, str], int] = {}
            oldest: list[float] = []
            for source, (_, _, partial, created) in orjson.loads(raw).items():
                for priority, gauge, n in partial:
                    gauges[(priority, gauge)] = gauges.get((priority, gauge), 0) + n
                # The oldest wait of each input partition runs on its own watermark.
                if created is not None and int(source) in self.source_watermarks:
                    oldest.append(self.source_watermarks[int(source)] - created)
            yield queue, channel, {k: n for k, n in gauges.items() if n}, max(
                oldest, default=None)

    async def _emit_loop(self) -> None:
        # A loop, not a Faust timer: a timer this short warns "overlapping" whenever the
        # agents keep the event loop busy for longer than one tick, as they do under load.
        tick = min(EMIT_TICK, self.settings.windows.emit_interval)
        while True:
            await asyncio.sleep(tick)
            await self._emit()

    async def _emit(self) -> None:
        if self._stopping():
            return  # `_publish_before_stop` takes over
        # Render everything before the first await: a window that changes while records
        # are being sent is then emitted once, next time, with its new revision.
        dirty = self.emission.due(time.monotonic())
        if not dirty:
            return
        records = self._render(dirty)
        for i, (_, record_key, value) in enumerate(records):
            if self._stopping():
                for unsent in records[i:]:
                    self.emission.changed(unsent[0])  # for `_publish_before_stop`
                return
            await self.kpis.send(key=record_key, value=value)

    def _render(self, keys: list[bytes]) -> list[tuple[bytes, bytes, bytes]]:
        """(window key, record key, record) of the windows `keys` this worker still owns."""
        now = time.time()
        owned = self.owned_stage2()
        records: list[tuple[bytes, bytes, bytes]] = []
        for key in keys:
            queue, channel, start = key.decode().split("|")
            raw = self.windows.data.get(key)
            if raw is None or not self._owned(queue, channel, owned):
                continue  # the partition moved to another worker
            wkey = (queue, channel, int(start))
            record = render(wkey, WindowState.from_list(orjson.loads(raw)), now)
            records.append((key, window_id(wkey).encode(), orjson.dumps(record)))
        return records

    async def _publish_before_stop(self, *_: Any, **__: Any) -> None:
        """A graceful stop publishes every changed window first, debounce or not.

        Faust calls this once the agents are done and before it flushes the producer
        and leaves the group. The next owner would publish everything again, but when
        the last worker stops there is none, and the KPI topic would keep stale or
        missing records until a worker starts again.
        """
        if self.outbox.closed or self.app.producer.should_stop:
            return  # given up while stopping (`_fence`): the next owner publishes
        records = self._render(self.emission.drain())
        for _window, record_key, value in records:
            await self.kpis.send(key=record_key, value=value)
        log.info("stopping: published %d changed windows", len(records))

    async def _emit_live(self) -> None:
        if self._stopping():
            return
        # Faster than window records: the wallboard promises updates within a second.
        for record_key, value in self._live_snapshots(time.time()):
            if self._stopping():
                return
            await self.live_topic.send(key=record_key, value=value)

    def _live_snapshots(self, now: float) -> list[tuple[bytes, bytes]]:
        """Live gauges of the changed pairs; of every pair when the watermark moved,
        since the oldest wait grows with it."""
        watermark = self.watermark()
        if watermark != self._emitted_watermark:
            self._emitted_watermark = watermark
            self.live_dirty.update(self.live.data.keys())
        dirty, self.live_dirty = self.live_dirty, set()
        owned = {f"{q}|{c}".encode(): (q, c, g, o) for q, c, g, o in self.live_items()}
        out = []
        for key in dirty:
            if key not in owned:
                continue  # the partition moved to another worker
            queue, channel, gauges, oldest = owned[key]
            snapshot: dict[str, Any] = {"queue": queue, "channel": channel,
                                        "oldest_waiting_seconds": oldest or 0.0,
                                        "watermark": watermark,
                                        "updated_at": format_rfc3339(round(now, 3))}
            for gauge in ("open", "waiting", "at_risk"):
                snapshot[gauge] = {p: n for (p, g), n in gauges.items() if g == gauge}
            out.append((key, orjson.dumps(snapshot)))
        return out

    async def _follow_centre(self) -> None:
        # The live topic is created by Faust at start-up: follow once tables recovered.
        await self.app.tables.recovery.completed.wait()  # type: ignore[attr-defined]
        await follow(self.centre, self.settings.kafka.bootstrap, self.settings.topics.kpis,
                     self.live_topic_name, aiokafka_options(self.settings.kafka))
