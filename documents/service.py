"""The document read service's app factory (STYLE 8).

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
from collections.abc import AsyncIterator, Mapping
from typing import Any

from aiohttp import web

from documents.hub import Hub
from documents.keys import DOCUMENTS, HUB, PENDING, READER, SETTINGS, STORE, WEBHOOK, ReaderState
from documents.routes import middlewares, routes
from documents.view import DocumentStore, Update
from documents.webhook import PendingUpdates, WebhookStats, run_webhook
from olp.errors import CodecError, ConfigError, OlpError
from olp.kafka import caught_up, read_from_start
from olp.service_settings import DocumentsSettings, documents_settings, is_loopback_host
from olp.settings import Settings
from olp.topics import TopicNames
from schemas.codec import Codec, make_codec

log = logging.getLogger("olp.documents")


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


async def _read_documents(app: web.Application) -> None:
    settings, state = app[SETTINGS], app[READER]
    topic = TopicNames.with_prefix(settings.topic_prefix).documents
    codec = make_codec(settings.schema_registry_url)
    reader = read_from_start(settings.kafka, [topic], fetch_max_wait_ms=settings.kafka.fetch_max_wait_ms)
    async with reader as (consumer, partitions):
        while True:
            batches = await consumer.getmany(timeout_ms=200, max_records=1000)
            if not state.ready:
                state.ready = await caught_up(consumer, partitions)
            for records in batches.values():
                for msg in records:
                    _take(app, msg, codec)


def _take(app: web.Application, msg: Any, codec: Codec) -> None:
    """One record of `olp.documents` into the view; an undecodable one is counted and skipped."""
    state = app[READER]
    state.records += 1
    try:
        document = codec.decode(msg.value, "TopicDocument", topic=msg.topic)
    except CodecError as exc:
        state.undecodable += 1
        log.warning(
            "skipping undecodable document at %s/%s offset %s: %s", msg.topic, msg.partition, msg.offset, exc
        )
        return
    apply_document(app, document)


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


def check_config(documents: DocumentsSettings) -> None:
    """Refuse to serve transcript text to a network without a read token, unless told to."""
    if documents.read_token is None and not documents.open_reads and not is_loopback_host(documents.host):
        raise ConfigError(
            f"documents.host is {documents.host}, not loopback, and no documents.read_token is set: "
            "set a read token (OLP_DOCUMENTS__READ_TOKEN), or documents.open_reads=true on a trusted network"
        )


def create_app(
    settings: Settings, documents: DocumentsSettings | None = None, *, read_kafka: bool = True
) -> web.Application:
    """The read service. `read_kafka=False` leaves the view to be fed by `apply_document` (tests)."""
    documents = documents or documents_settings(settings)
    check_config(documents)
    webhook = documents.webhook
    held = (documents.read_token, *((webhook.token, webhook.secret) if webhook else ()))
    secrets = [*settings.secret_values(), *(s.get_secret_value() for s in held if s)]
    app = web.Application(middlewares=middlewares(secrets), client_max_size=64 * 1024)
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
