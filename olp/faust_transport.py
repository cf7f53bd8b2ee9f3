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
Both are flushed before Faust commits offsets, so at-least-once holds for both.

The consumer also applies Faust's partition pauses (the changelogs of its active tables, after
recovery) to aiokafka's fetcher, so records nobody reads do not stall every fetch (`_Consumer`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Iterable, Mapping
from typing import Any

import aiokafka
from aiokafka import TopicPartition
from aiokafka.errors import KafkaError
from faust.exceptions import ProducerSendError
from faust.transport.drivers import aiokafka as faust_aiokafka

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
    """Faust's consumer, with its partition pauses applied to aiokafka's fetcher as well.

    Faust pauses a partition only in its own bookkeeping: aiokafka keeps fetching it, and records
    nobody drains stay in its fetch buffer. While any partition has such records, aiokafka sends no
    fetch to that broker for `prefetch_backoff` (100 ms): on a single broker, every partition
    waits. After recovery Faust pauses the changelog partitions of its active tables, and each
    table write (the Chunk Splitter's state) comes back on them, so every hop of the pipeline
    waited up to 100 ms per fetch for records that are never read.
    """

    _thread: _ConsumerThread

    def _new_consumer_thread(self) -> _ConsumerThread:
        return _ConsumerThread(self, loop=self.loop, beacon=self.beacon)

    def pause_partitions(self, tps: Iterable[Any]) -> None:
        tps = list(tps)
        super().pause_partitions(tps)
        self._thread.set_fetching(tps, paused=True)

    def resume_partitions(self, tps: Iterable[Any]) -> None:
        tps = list(tps)
        super().resume_partitions(tps)
        self._thread.set_fetching(tps, paused=False)


CHANGELOG_SUFFIX = "-changelog"


class _Producer(faust_aiokafka.Producer):
    """Faust's producer for changelogs (and transactions), a batching one for data topics."""

    _data_producer: aiokafka.AIOKafkaProducer | None = None

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
