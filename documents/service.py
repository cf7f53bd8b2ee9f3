"""The document read service's app factory (issue 9; STYLE 8).

Reads `olp.documents` (TopicDocument) from the beginning of every partition, by assignment (no
consumer group, no offsets: every replica holds the whole view and a restart rebuilds it), into
a `DocumentStore`; each update goes to the SSE subscribers and, when configured, the webhook.
Writes nothing to Kafka. Undecodable records are logged with partition and offset and skipped:
a read view has nothing better to do with them (the pipeline dead-letters its own).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from documents.view import DocumentStore, Update
from documents.webhook import PendingUpdates, WebhookStats, run_webhook
from olp.errors import CodecError, OlpError
from olp.service_settings import DocumentsSettings, documents_settings
from olp.settings import Settings
from olp.topics import TopicNames
from schemas.codec import make_codec

log = logging.getLogger("olp.documents")


@dataclass(eq=False)
class Subscription:
    """One SSE client: its updates queue (None ends it) and its stream filter."""

    queue: asyncio.Queue[Update | None]
    stream_id: str | None
    dropped: bool = False


@dataclass
class Hub:
    """Fans updates out to subscriptions. Never blocks the reader: a subscription whose queue is
    full is ended (its client reconnects and resumes or gets a fresh snapshot)."""

    subscriptions: set[Subscription] = field(default_factory=set)

    def subscribe(self, stream_id: str | None, size: int) -> Subscription:
        subscription = Subscription(asyncio.Queue(size), stream_id)
        self.subscriptions.add(subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        self.subscriptions.discard(subscription)

    def publish(self, update: Update) -> None:
        for sub in list(self.subscriptions):
            if sub.stream_id is not None and sub.stream_id != update.stream_id:
                continue
            try:
                sub.queue.put_nowait(update)
            except asyncio.QueueFull:
                self._end(sub, dropped=True)

    def close_all(self) -> None:
        for sub in list(self.subscriptions):
            self._end(sub, dropped=False)

    def _end(self, sub: Subscription, dropped: bool) -> None:
        sub.dropped = dropped
        while not sub.queue.empty():
            sub.queue.get_nowait()
        sub.queue.put_nowait(None)
        self.subscriptions.discard(sub)


@dataclass
class ReaderState:
    ready: bool = False
    """The reader has caught up with the topic once (see `_caught_up`)."""
    records: int = 0
    undecodable: int = 0
    started_ms: int = field(default_factory=lambda: int(time.time() * 1000))


SETTINGS = web.AppKey("settings", Settings)
DOCUMENTS = web.AppKey("documents", DocumentsSettings)
STORE = web.AppKey("store", DocumentStore)
HUB = web.AppKey("hub", Hub)
READER = web.AppKey("reader", ReaderState)
PENDING = web.AppKey("pending", PendingUpdates)
WEBHOOK = web.AppKey("webhook", WebhookStats)


def apply_document(app: web.Application, document: Mapping[str, Any]) -> Update | None:
    """Take one document into the view and pass the update on (subscribers, webhook)."""
    update = app[STORE].apply(document)
    if update is None:
        return None
    app[HUB].publish(update)
    webhook = app[DOCUMENTS].webhook
    if PENDING in app and webhook is not None and (update.document["final"] or not webhook.only_final):
        app[PENDING].offer(update.document)
    return update


async def _partitions(consumer: Any, topic: str, timeout_s: float = 30.0) -> list[int]:
    deadline = time.monotonic() + timeout_s
    while True:
        await consumer.topics()  # refreshes metadata
        found = consumer.partitions_for_topic(topic)
        if found:
            return sorted(found)
        if time.monotonic() > deadline:
            raise OlpError(f"topic {topic} does not exist: run `olp topics ensure` first")
        await asyncio.sleep(0.5)


async def _caught_up(consumer: Any, partitions: list[Any]) -> bool:
    """Every partition has been read up to the high watermark its last fetch reported (fetch
    responses carry it correctly on every broker; listed end offsets do not on Tansu)."""
    for tp in partitions:
        highwater = consumer.highwater(tp)
        if highwater is None or await consumer.position(tp) < highwater:
            return False
    return True


async def _read_documents(app: web.Application) -> None:
    from aiokafka import AIOKafkaConsumer, TopicPartition

    settings, state = app[SETTINGS], app[READER]
    topic = TopicNames.with_prefix(settings.topic_prefix).documents
    codec = make_codec(settings.schema_registry_url)
    consumer = AIOKafkaConsumer(
        **settings.kafka.aiokafka_config(),
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=settings.kafka.fetch_max_wait_ms,
    )
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in await _partitions(consumer, topic)]
        consumer.assign(partitions)
        await consumer.seek_to_beginning()
        while True:
            batches = await consumer.getmany(timeout_ms=200, max_records=1000)
            if not state.ready:
                state.ready = await _caught_up(consumer, partitions)
            for records in batches.values():
                for msg in records:
                    state.records += 1
                    try:
                        document = codec.decode(msg.value, "TopicDocument", topic=msg.topic)
                    except CodecError as exc:
                        state.undecodable += 1
                        log.warning(
                            "skipping undecodable document at %s/%s offset %s: %s",
                            msg.topic,
                            msg.partition,
                            msg.offset,
                            exc,
                        )
                        continue
                    apply_document(app, document)
    finally:
        await consumer.stop()


async def _run_reader(app: web.Application) -> None:
    """The reader, restarted after a failure (the view is idempotent, so re-reading is safe)."""
    from aiokafka.errors import KafkaError

    while True:
        try:
            await _read_documents(app)
        except (KafkaError, OlpError, OSError) as exc:
            log.error("document reader failed, restarting in 2s: %r", exc)
            await asyncio.sleep(2)


async def reader_ctx(app: web.Application) -> AsyncIterator[None]:
    task = asyncio.create_task(_run_reader(app), name="documents-reader")
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def webhook_ctx(app: web.Application) -> AsyncIterator[None]:
    webhook = app[DOCUMENTS].webhook
    if webhook is None:
        yield
        return
    task = asyncio.create_task(run_webhook(webhook, app[PENDING], app[WEBHOOK]), name="documents-webhook")
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def end_subscriptions(app: web.Application) -> None:
    """On shutdown, end every SSE response instead of waiting for its client to leave."""
    app[HUB].close_all()


def create_app(
    settings: Settings, documents: DocumentsSettings | None = None, *, read_kafka: bool = True
) -> web.Application:
    """The read service. `read_kafka=False` leaves the view to be fed by `apply_document` (tests)."""
    from documents.routes import middlewares, routes

    documents = documents or documents_settings(settings)
    app = web.Application(middlewares=middlewares, client_max_size=64 * 1024)
    app[SETTINGS] = settings
    app[DOCUMENTS] = documents
    app[STORE] = DocumentStore(documents.history_per_topic, documents.event_log)
    app[HUB] = Hub()
    app[READER] = ReaderState(ready=not read_kafka)
    app[WEBHOOK] = WebhookStats()
    if documents.webhook is not None:
        app[PENDING] = PendingUpdates()
    app.add_routes(routes)
    if read_kafka:
        app.cleanup_ctx.append(reader_ctx)
    app.cleanup_ctx.append(webhook_ctx)
    app.on_shutdown.append(end_subscriptions)
    return app
