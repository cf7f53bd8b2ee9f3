"""RSS/Atom polling (news adapter): a background task of the ingest service per
configured `NewsSource`. Each poll fetches the feed (conditional GET with ETag/Last-Modified),
turns its articles into sentence segments with stable ids (`olp.feeds.news`) and sends those not
sent before to `olp.transcripts` through the service's sink. Re-polling is idempotent.

Errors (network, HTTP status, malformed feed, Kafka) are logged and counted in the source's
status, and the poller tries again at the next interval; it never stops the service.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import asdict, dataclass
from typing import Any

import aiohttp

from ingest.limits import AcceptedIds
from ingest.sink import SegmentSink
from olp.errors import FeedError, OlpError, UnavailableError
from olp.feeds import ReplayStats, to_segments
from olp.feeds.news import article_rows, parse_news_feed
from olp.service_settings import NewsSource
from olp.settings import FeedSettings

log = logging.getLogger("olp.ingest.news")


@dataclass
class PollerStatus:
    """What a source's poller has done; shown by `GET /v1/feeds`."""

    polls: int = 0
    not_modified: int = 0
    errors: int = 0
    sent: int = 0
    duplicates: int = 0
    articles: int = 0
    skipped_undated: int = 0
    last_error: str | None = None
    last_poll_ms: int | None = None
    etag: str | None = None
    last_modified: str | None = None

    def view(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("etag")
        data.pop("last_modified")
        return data


async def fetch(session: aiohttp.ClientSession, source: NewsSource, status: PollerStatus) -> bytes | None:
    """The feed document, or None when the server says it has not changed."""
    headers = {"Accept": "application/rss+xml, application/atom+xml, application/xml;q=0.9, */*;q=0.5"}
    if status.etag:
        headers["If-None-Match"] = status.etag
    if status.last_modified:
        headers["If-Modified-Since"] = status.last_modified
    timeout = aiohttp.ClientTimeout(total=source.timeout_s)
    async with session.get(source.url, headers=headers, timeout=timeout) as resp:
        if resp.status == 304:
            return None
        if resp.status != 200:
            raise UnavailableError(f"GET {source.public_url} answered HTTP {resp.status}")
        if (resp.content_length or 0) > source.max_bytes:
            raise FeedError(
                f"{source.public_url}: feed of {resp.content_length} bytes exceeds {source.max_bytes}"
            )
        body = bytearray()
        async for chunk in resp.content.iter_chunked(65536):
            body.extend(chunk)
            if len(body) > source.max_bytes:
                raise FeedError(f"{source.public_url}: feed exceeds {source.max_bytes} bytes")
        status.etag = resp.headers.get("ETag")
        status.last_modified = resp.headers.get("Last-Modified")
        return bytes(body)


async def poll_once(
    session: aiohttp.ClientSession,
    source: NewsSource,
    feed: FeedSettings,
    sink: SegmentSink,
    accepted: AcceptedIds,
    status: PollerStatus,
    now_ms: int | None = None,
) -> int:
    """One poll; returns how many segments were sent."""
    now_ms = now_ms if now_ms is not None else int(time.time() * 1000)
    status.polls += 1
    status.last_poll_ms = now_ms
    validators = (status.etag, status.last_modified)
    body = await fetch(session, source, status)
    if body is None:
        status.not_modified += 1
        return 0
    try:
        articles = parse_news_feed(body, source.public_url)
        stats = ReplayStats()
        rows = article_rows(articles, stats, now_ms)
        segments = list(
            to_segments(
                rows,
                source.stream_id,
                source.public_url,
                stats,
                feed=source.feed,
                domain=feed.domain,
                lang=feed.lang,
            )
        )
        fresh, duplicates = accepted.fresh(segments)
        if fresh:
            await sink.send(fresh)
            accepted.record(fresh)
    except OlpError:
        # Not taken: forget the validators so the next poll fetches the document again.
        status.etag, status.last_modified = validators
        raise
    status.articles = len(articles)
    status.skipped_undated = stats.skipped_undated
    status.sent += len(fresh)
    status.duplicates += duplicates
    return len(fresh)


async def run_poller(
    session: aiohttp.ClientSession,
    source: NewsSource,
    feed: FeedSettings,
    sink: SegmentSink,
    accepted: AcceptedIds,
    status: PollerStatus,
) -> None:
    """Poll `source` every `interval_s` until cancelled."""
    while True:
        try:
            sent = await poll_once(session, source, feed, sink, accepted, status)
            status.last_error = None
            if sent:
                log.info(
                    "news %s: sent %d new sentences to stream %s", source.public_url, sent, source.stream_id
                )
        except (aiohttp.ClientError, TimeoutError, OlpError) as exc:
            status.errors += 1
            status.last_error = f"{type(exc).__name__}: {exc}"[:300]
            log.warning(
                "news %s: poll failed, next try in %ss: %s", source.public_url, source.interval_s, exc
            )
        await asyncio.sleep(source.interval_s)
