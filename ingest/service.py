"""The ingest service's app factory (STYLE 8): settings in, an aiohttp app out.

Writes `olp.transcripts` (TranscriptSegment, key stream_id) from three sources: HTTP POSTs of
JSON lines, WebSocket messages, and the RSS/Atom pollers configured as `ingest.news`. Reads
nothing from Kafka. The producer and the pollers live in `cleanup_ctx`, so importing or building
the app does no I/O, and shutdown stops them cleanly.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable

import aiohttp
from aiohttp import web

from ingest.keys import ACCEPTED, CLOCK, INGEST, LIMITS, NEWS, SETTINGS, SINK, SOCKETS, STREAMS
from ingest.limits import AcceptedIds, RateLimits, StreamRegistry
from ingest.news_poller import PollerStatus, run_poller
from ingest.routes import error_middleware, routes
from ingest.sink import KafkaSink, SegmentSink
from olp.errors import ConfigError
from olp.service_settings import IngestSettings, ingest_settings
from olp.settings import Settings
from olp.topics import TopicNames
from schemas.codec import make_codec


def check_config(settings: Settings, ingest: IngestSettings) -> None:
    """Fail at start, not at the first request: every feed has an aspect set, every news
    source names a declared feed, and there is a `default` feed or limits entry to fall back on."""
    for name, feed in settings.feeds.items():
        try:
            feed.aspect_names()
        except ConfigError as exc:
            raise ConfigError(f"feed {name!r}: {exc}") from exc
    for source in ingest.news:
        if source.feed not in settings.feeds:
            raise ConfigError(
                f"news source {source.public_url} names feed {source.feed!r}, which is not declared "
                f"in feeds ({', '.join(sorted(settings.feeds))})"
            )
    unknown = set(ingest.limits) - set(settings.feeds) - {"default"}
    if unknown:
        raise ConfigError(f"ingest limits for undeclared feeds: {', '.join(sorted(unknown))}")
    for name, sender in ingest.senders.items():
        undeclared = set(sender.feeds) - set(settings.feeds)
        if undeclared:
            raise ConfigError(
                f"ingest sender {name!r} names undeclared feeds: {', '.join(sorted(undeclared))}"
            )


async def kafka_ctx(app: web.Application) -> AsyncIterator[None]:
    """The producer of `olp.transcripts` for the app's lifetime."""
    from aiokafka import AIOKafkaProducer

    settings = app[SETTINGS]
    producer = AIOKafkaProducer(
        **settings.kafka.aiokafka_config(),
        acks="all",
        linger_ms=5,
        max_request_size=settings.kafka.max_message_bytes + 65536,
    )
    await producer.start()
    topics = TopicNames.with_prefix(settings.topic_prefix)
    app[SINK] = KafkaSink(producer, make_codec(settings.schema_registry_url), topics.transcripts)
    try:
        yield
    finally:
        await producer.stop()


async def news_ctx(app: web.Application) -> AsyncIterator[None]:
    """One polling task per news source, cancelled on shutdown."""
    sources = app[INGEST].news
    if not sources:
        yield
        return
    settings = app[SETTINGS]
    async with aiohttp.ClientSession(headers={"User-Agent": "olp-ingest"}) as session:
        tasks = [
            asyncio.create_task(
                run_poller(
                    session,
                    source,
                    settings.feeds[source.feed],
                    app[SINK],
                    app[ACCEPTED],
                    app[NEWS].setdefault(source.url, PollerStatus()),
                ),
                name=f"news-poller-{source.stream_id}",
            )
            for source in sources
        ]
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task


async def close_sockets(app: web.Application) -> None:
    """On shutdown, end open WebSockets (1001 going away) instead of waiting for the senders."""
    sockets = app[SOCKETS]
    for ws in list(sockets):
        await ws.close(code=aiohttp.WSCloseCode.GOING_AWAY, message=b"server shutting down")


def create_app(
    settings: Settings,
    ingest: IngestSettings | None = None,
    *,
    sink: SegmentSink | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> web.Application:
    """The ingest service. `sink` replaces the Kafka producer (tests); `clock` drives the rate
    limits (seconds, monotonic)."""
    ingest = ingest or ingest_settings(settings)
    check_config(settings, ingest)
    largest = max([limits.max_request_bytes for limits in ingest.limits.values()] or [1_048_576])
    tokens = [sender.token.get_secret_value() for sender in ingest.senders.values()]
    secrets = [*settings.secret_values(), *tokens]
    app = web.Application(middlewares=[error_middleware(secrets)], client_max_size=largest + 1024)
    app[SETTINGS] = settings
    app[INGEST] = ingest
    app[LIMITS] = RateLimits()
    app[ACCEPTED] = AcceptedIds(ingest.dedupe_streams)
    app[STREAMS] = StreamRegistry(ingest.tracked_streams)
    for source in ingest.news:
        app[STREAMS].bind(source.stream_id, source.feed)
    app[NEWS] = {}
    app[CLOCK] = clock
    sockets: set[web.WebSocketResponse] = set()
    app[SOCKETS] = sockets
    app.add_routes(routes)
    if sink is None:
        app.cleanup_ctx.append(kafka_ctx)
    else:
        app[SINK] = sink
    app.cleanup_ctx.append(news_ctx)
    app.on_shutdown.append(close_sockets)
    return app
