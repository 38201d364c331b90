"""Faust's consumer loop without four asyncio tasks per message.

faust-streaming hands every fetched message to the conductor through
`Service.wait_first(callback(message), suspend_flow.wait())`: four tasks (the callback,
the suspend event, the stopped and crashed events) and an `asyncio.wait` per message,
about 40 % of what a no-op Faust agent costs here (bench/README.md, "the Faust floor").

The conductor's callback waits only while flow control is suspended (a rebalance),
the producer's buffer is over its limit, the conductor's index is being rebuilt, or a
subscriber's queue is full. Otherwise it puts the event with `put_nowait` and returns
in one step, and inside `wait_first` it would have finished in that same step too. So
this loop awaits the callback directly when none of these holds. When a queue is full
(the agent is behind, the normal state while a backlog is read), it waits for room by
polling. In every other case it uses Faust's own `wait_first`, so that a rebalance
abandons a waiting callback as in Faust: a callback awaited directly through a
rebalance would deliver a message of the previous assignment into the new one.
Everything else (read offsets, gap tracking for acks, commit every N acks, yielding
every 100 messages) is Faust's loop as in 0.15.x: compare it with
`Consumer._drain_messages` again when upgrading faust-streaming.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any, ClassVar, cast

from faust.transport.consumer import CONSUMER_FETCHING
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP
from mode import Service, ServiceT

YIELD_EVERY = 100
# How often a loop held back by a full queue looks again; the agent behind it takes up
# to a batch (1,000 messages) at a time, so a poll finds room for many.
ROOM_POLL = 0.002


class Consumer(faust_aiokafka.Consumer):
    """Faust's aiokafka consumer with the cheaper message loop."""

    def _queues_full(self) -> Callable[[TP], bool]:
        """A test: is any subscriber queue of this partition full?"""
        tp_index = self.app.topics._tp_index  # type: ignore[attr-defined]

        def full(tp: TP) -> bool:
            return any(channel.queue.full() for channel in tp_index.get(tp, ()))

        return full

    def _callback_may_wait(self) -> Callable[[], bool]:
        """A test: could the conductor's callback wait, other than for a full queue?"""
        flow_active = self.app.flow_control.is_active
        buffer = self.app.producer.buffer
        index_lock = self.app.topics._tp_to_callback_lock  # type: ignore[attr-defined]

        def may_wait() -> bool:
            return (not flow_active() or index_lock.locked()
                    or buffer.size > buffer.max_messages)

        return may_wait

    async def _drain_messages(self, fetcher: ServiceT) -> None:  # pragma: no cover
        # Faust's loop (faust/transport/consumer.py), with the direct call added.
        callback = self.callback
        getmany = self.getmany
        consumer_should_stop = cast(Service, self)._stopped.is_set
        fetcher_should_stop = cast(Service, fetcher)._stopped.is_set
        get_read_offset = self._read_offset.__getitem__
        set_read_offset = self._read_offset.__setitem__
        set_flag = self.diag.set_flag
        unset_flag = self.diag.unset_flag
        commit_every = self._commit_every
        acks_enabled_for = self.app.topics.acks_enabled_for
        queues_full = self._queues_full()
        may_wait = self._callback_may_wait()
        suspended = self.suspend_flow.is_set
        num_since_yield = 0
        sleep = asyncio.sleep
        try:
            while not (consumer_should_stop() or fetcher_should_stop()):
                set_flag(CONSUMER_FETCHING)
                ait = cast(AsyncIterator[Any], getmany(timeout=1.0))
                await self.sleep(0)
                if not self.should_stop:
                    async for tp, message in ait:
                        num_since_yield += 1
                        if num_since_yield > YIELD_EVERY:
                            await sleep(0)
                            num_since_yield = 0
                        offset = message.offset
                        r_offset = get_read_offset(tp)
                        if r_offset is None or offset >= r_offset:
                            gap = offset - (r_offset or 0)
                            if gap > 1 and r_offset and acks_enabled_for(message.topic):
                                await self._add_gap(tp, r_offset + 1, offset)
                            if commit_every is not None and self._n_acked >= commit_every:
                                self._n_acked = 0
                                await self.commit()
                            full = queues_full(tp)
                            if full:
                                # The agent is behind. Wait for it to take a batch,
                                # checking every ROOM_POLL, rather than per message.
                                while full and not suspended() and not consumer_should_stop():
                                    await sleep(ROOM_POLL)
                                    full = queues_full(tp)
                            if full or suspended() or may_wait():  # Faust's way
                                await self.wait_first(callback(message), self.suspend_flow.wait())
                            else:
                                await callback(message)  # returns in one step
                            set_read_offset(tp, offset)
                        else:
                            self.log.dev("DROPPED MESSAGE ROFF %r", offset)
                    unset_flag(CONSUMER_FETCHING)
        except self.consumer_stopped_errors:
            if self.transport.app.should_stop:
                self.log.info("Broker stopped consumer, shutting down...")
                return
            raise
        except asyncio.CancelledError:
            if self.transport.app.should_stop:
                self.log.info("Consumer shutting down for user cancel.")
                return
            raise
        except Exception as exc:
            self.log.exception("Drain messages raised: %r", exc)
            raise
        finally:
            unset_flag(CONSUMER_FETCHING)


class Transport(faust_aiokafka.Transport):
    """Faust's aiokafka transport, creating the consumer above."""

    Consumer: ClassVar[type[Any]] = Consumer
