"""Faust's aiokafka transport with a configurable fetch wait (spec section 6).

Faust hard-codes `fetch_max_wait_ms=1500` for its worker consumer. Brokers that do not answer a
fetch early when data arrives (Tansu) then add up to 1.5 s per hop; 10 ms gives ~15/23 ms p50/p99.
Registered as the `olp://` broker scheme through the `faust.transports` entry point, so the app
uses it by URL and no Faust internals are patched at runtime.

The producer batches per kind of topic. Table changelogs go through Faust's own aiokafka producer
with `producer_max_batch_size` (1 on Tansu: its end offsets are per batch, so changelog recovery
is exact only with one record per batch; spec section 6). Every other topic goes through a second
aiokafka producer with `app.olp_data_max_batch_size` bytes per batch: with one record per batch
and one request in flight per broker, each partition takes one record per round trip and every
`send` behind a full batch waits for it (bench/pipeline_throughput.py measures the difference).
Both are flushed before Faust commits offsets, so at-least-once holds for both: Faust's own flush
returns once no record went out for 0.1 s, with table writes still buffered, so the changelog side
waits for every buffered write to be acknowledged (`_ProducerBuffer`).

The consumer also applies Faust's partition pauses (the changelogs of its active tables, after
recovery) to aiokafka's fetcher, so records nobody reads do not stall every fetch, and fetches a
newly assigned stream partition only after Faust has sought it to its committed offset, so that
no record is skipped after a rebalance (`_Consumer`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Iterable, Mapping
from typing import Any

import aiokafka
from aiokafka import TopicPartition
from aiokafka.errors import KafkaError
from faust.exceptions import ProducerSendError
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.transport.producer import ProducerBuffer
from faust.types.tuples import FutureMessage

DEFAULT_FETCH_MAX_WAIT_MS = 10


class _ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: Any) -> aiokafka.AIOKafkaConsumer:
        consumer = super()._create_worker_consumer(transport)
        # aiokafka reads this when start() builds its fetcher, so setting it before start is enough.
        consumer._fetch_max_wait_ms = getattr(self.app, "olp_fetch_max_wait_ms", DEFAULT_FETCH_MAX_WAIT_MS)
        return consumer

    def set_fetching(self, tps: Iterable[Any], paused: bool) -> None:
        """Pause or resume `tps` in aiokafka's fetcher (from any thread; runs in the consumer's)."""
        if self._consumer is not None:
            self.thread_loop.call_soon_threadsafe(self._set_fetching, frozenset(tps), paused)

    def _set_fetching(self, tps: frozenset[Any], paused: bool) -> None:
        consumer = self._consumer
        if consumer is None:
            return
        assigned = consumer.assignment()
        mine = [TopicPartition(tp.topic, tp.partition) for tp in tps]
        mine = [tp for tp in mine if tp in assigned]
        if not mine:
            return
        if paused:
            consumer.pause(*mine)
            # Records fetched before the pause would stay buffered, and hold back every fetch.
            for tp in mine:
                consumer._fetcher._records.pop(tp, None)
        else:
            consumer.resume(*mine)


class _Consumer(faust_aiokafka.Consumer):
    """Faust's consumer, with its partition pauses applied to aiokafka's fetcher as well, and no
    fetching of a newly assigned stream partition before Faust has sought it to its committed offset.

    Faust pauses a partition only in its own bookkeeping: aiokafka keeps fetching it, and records
    nobody drains stay in its fetch buffer. While any partition has such records, aiokafka sends no
    fetch to that broker for `prefetch_backoff` (100 ms): on a single broker, every partition
    waits. After recovery Faust pauses the changelog partitions of its active tables, and each
    table write (the Chunk Splitter's state) comes back on them, so every hop of the pipeline
    waited up to 100 ms per fetch for records that are never read.

    After a rebalance Faust's recovery resumes the stream partitions and only then seeks them to
    their committed offsets (`perform_seek`, one broker round trip per partition). Records fetched
    in between were handed to the agents a second time after the seek, or, when the consumer loop
    moved a partition's read offset past them after the seek had reset it, dropped as "already
    read": a restarted worker skipped a run of segments and their sentences were lost
    (tests/reliability/test_worker_crash.py). So a stream partition is fetched only once sought.
    """

    _thread: _ConsumerThread
    _awaiting_seek: set[Any]
    """Stream partitions assigned and not yet sought to their committed offsets."""

    def _new_consumer_thread(self) -> _ConsumerThread:
        self._awaiting_seek = set()
        return _ConsumerThread(self, loop=self.loop, beacon=self.beacon)

    async def on_partitions_assigned(self, assigned: set[Any], generation_id: int = 0) -> None:
        self._awaiting_seek = {tp for tp in assigned if not self._is_changelog_tp(tp)}
        self._thread.set_fetching(self._awaiting_seek, paused=True)
        await super().on_partitions_assigned(assigned, generation_id)

    def pause_partitions(self, tps: Iterable[Any]) -> None:
        tps = list(tps)
        super().pause_partitions(tps)
        self._thread.set_fetching(tps, paused=True)

    def resume_partitions(self, tps: Iterable[Any]) -> None:
        tps = list(tps)
        super().resume_partitions(tps)
        self._thread.set_fetching([tp for tp in tps if tp not in self._awaiting_seek], paused=False)

    async def perform_seek(self) -> None:
        await super().perform_seek()
        sought = {tp for tp in self._awaiting_seek if tp not in self._paused_partitions}
        self._awaiting_seek -= sought
        self._thread.set_fetching(sought, paused=False)


CHANGELOG_SUFFIX = "-changelog"
FLUSH_TIMEOUT_S = 120.0
"""How long a flush (before an offset commit) waits for the broker to acknowledge table writes."""
STOP_FLUSH_TIMEOUT_S = 10.0
"""The same when the worker is stopping (a supervisor's grace period is short)."""


class _ProducerBuffer(ProducerBuffer):
    """Faust's buffer of table writes, with a flush that returns only when all are acknowledged.

    Faust's `flush` gives up as soon as no record was sent for 0.1 s (one changelog record per
    request on Tansu takes longer under load) and the consumer then commits offsets past the events
    that made those writes. A SIGKILL at that moment lost the writes but not the commit: the
    restarted worker restored an older splitter state and never saw the events again, and a run of
    sentences vanished (tests/reliability/test_worker_crash.py).
    """

    def __post_init__(self) -> None:
        super().__post_init__()
        self._unacked: set[FutureMessage] = set()
        self._failed: BaseException | None = None

    def put(self, fut: FutureMessage) -> None:
        self._unacked.add(fut)
        fut.add_done_callback(self._on_done)
        super().put(fut)

    def _on_done(self, fut: Any) -> None:
        self._unacked.discard(fut)
        if not fut.cancelled() and fut.exception() is not None and self._failed is None:
            self._failed = fut.exception()

    async def flush(self) -> None:
        loop = asyncio.get_running_loop()
        limit_s = STOP_FLUSH_TIMEOUT_S if self.should_stop else FLUSH_TIMEOUT_S
        deadline = loop.time() + limit_s
        while self._unacked:
            if self.should_stop:
                # The sending task ends once stopping starts: what is still queued is sent from here.
                while not self.pending.empty():
                    await self._send_pending(self.pending.get_nowait())
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise ProducerSendError(
                    f"{len(self._unacked)} table writes not acknowledged after {limit_s:.0f}s"
                )
            await asyncio.wait(list(self._unacked), timeout=min(remaining, 0.5))
        failed, self._failed = self._failed, None
        if failed is not None:
            # Committing now would skip events whose state was never saved: fail, so the worker
            # restarts and processes them again.
            raise ProducerSendError(f"a table write failed: {failed!r}")


class _Producer(faust_aiokafka.Producer):
    """Faust's producer for changelogs (and transactions), a batching one for data topics."""

    _data_producer: aiokafka.AIOKafkaProducer | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.app.conf.producer_threaded:
            return  # (not used here: its queue lives in another thread)
        self.buffer = _ProducerBuffer(loop=self.loop, beacon=self.beacon)
        self.buffer.app = self.app

    async def on_start(self) -> None:
        await super().on_start()
        batch = getattr(self.app, "olp_data_max_batch_size", None)
        if batch and batch != self.max_batch_size:
            settings = {**self._settings_default(), **self._settings_auth(), **self._settings_extra()}
            self._data_producer = self._producer_type(**{**settings, "max_batch_size": batch})
            await self._data_producer.start()

    async def on_stop(self) -> None:
        producer, self._data_producer = self._data_producer, None
        if producer is not None:
            await producer.stop()
        await super().on_stop()

    async def send(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        partition: int | None,
        timestamp: float | None,
        headers: Any,
        *,
        transactional_id: str | None = None,
    ) -> Awaitable[Any]:
        producer = self._data_producer
        if producer is None or transactional_id or topic.endswith(CHANGELOG_SUFFIX):
            return await super().send(
                topic, key, value, partition, timestamp, headers, transactional_id=transactional_id
            )
        if isinstance(headers, Mapping):
            headers = list(headers.items())
        if headers is not None and not self.allow_headers:
            headers = None
        self._send_on_produce_message(
            key=key, value=value, partition=partition, timestamp=timestamp, headers=headers
        )
        try:
            future: Awaitable[Any] = await producer.send(
                topic,
                value,
                key=key,
                partition=partition,
                timestamp_ms=int(timestamp * 1000.0) if timestamp else None,
                headers=headers,
            )
        except KafkaError as exc:
            raise ProducerSendError(f"Error while sending: {exc!r}") from exc
        return future

    async def flush(self) -> None:
        await super().flush()
        if self._data_producer is not None:
            await self._data_producer.flush()


class Transport(faust_aiokafka.Transport):
    Consumer = _Consumer
    Producer = _Producer


def broker_url(bootstrap_servers: str) -> str:
    """Faust broker URL for a Kafka bootstrap list ("h1:9092,h2:9092")."""
    hosts = [h.strip() for h in bootstrap_servers.split(",") if h.strip()]
    return ";".join(f"olp://{h}" for h in hosts)
