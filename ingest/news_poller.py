"""RSS/Atom polling (news adapter): a background task of the ingest service per
configured `NewsSource`. Each poll fetches the feed (conditional GET with ETag/Last-Modified),
turns its articles into sentence segments with stable ids (`olp.feeds.news`) and sends those not
sent before to `olp.transcripts` through the service's sink. Re-polling is idempotent.

Errors (network, HTTP status, malformed feed, Kafka) are logged and counted in the source's
status, and the poller tries again at the next interval; it never stops the service. Status and
log lines show the URL masked (`public_url`): its query may hold a key.

Redirects are followed by hand, at most `max_redirects` hops, and each hop's host is resolved
first: an address that is private, loopback, link-local, reserved or multicast is refused unless
the source sets `allow_private_redirects`, so a feed cannot point the poller at the cluster's
inside. (The configured URL itself is the operator's choice and is not checked. The address is
checked when the hop is resolved here, and the connection resolves again: against a resolver that
answers differently the second time, set `max_redirects: 0` to follow no redirect at all.)
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import time
from dataclasses import asdict, dataclass
from typing import Any
from urllib.parse import urljoin, urlsplit

import aiohttp

from ingest.limits import AcceptedIds
from ingest.sink import SegmentSink
from olp.errors import FeedError, OlpError, UnavailableError
from olp.feeds import ReplayStats, to_segments
from olp.feeds.news import article_rows, parse_news_feed
from olp.service_settings import NewsSource, masked_url
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


REDIRECTS = frozenset({301, 302, 303, 307, 308})


def is_public_address(address: str) -> bool:
    """Whether an IP address is on the public internet (not private, loopback, link-local, ...)."""
    ip = ipaddress.ip_address(address.split("%")[0])
    return not (
        ip.is_private
        or ip.is_loopback
        or ip.is_link_local
        or ip.is_reserved
        or ip.is_multicast
        or ip.is_unspecified
    )


async def check_redirect(url: str, allow_private: bool) -> None:
    """Raise FeedError unless a redirect to `url` may be followed (http(s), and every address its
    host resolves to is public, or `allow_private`)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise FeedError(f"redirect to {masked_url(url)} refused: not an http(s) URL")
    if allow_private:
        return
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(
            parts.hostname, parts.port or 80, type=socket.SOCK_STREAM
        )
    except OSError as exc:
        raise UnavailableError(f"redirect to {masked_url(url)}: cannot resolve its host") from exc
    if not all(is_public_address(str(info[4][0])) for info in infos):
        raise FeedError(
            f"redirect to {masked_url(url)} refused: its host is a private, loopback or link-local "
            "address (allow_private_redirects permits it)"
        )


async def fetch(session: aiohttp.ClientSession, source: NewsSource, status: PollerStatus) -> bytes | None:
    """The feed document, or None when the server says it has not changed."""
    headers = {"Accept": "application/rss+xml, application/atom+xml, application/xml;q=0.9, */*;q=0.5"}
    if status.etag:
        headers["If-None-Match"] = status.etag
    if status.last_modified:
        headers["If-Modified-Since"] = status.last_modified
    timeout = aiohttp.ClientTimeout(total=source.timeout_s)
    url = source.url
    for _hop in range(source.max_redirects + 1):
        async with session.get(url, headers=headers, timeout=timeout, allow_redirects=False) as resp:
            if resp.status not in REDIRECTS:
                return await _read_feed(resp, source, status)
            url = urljoin(url, resp.headers.get("Location", ""))
        await check_redirect(url, source.allow_private_redirects)
    raise FeedError(f"{source.public_url}: more than {source.max_redirects} redirects")


async def _read_feed(resp: aiohttp.ClientResponse, source: NewsSource, status: PollerStatus) -> bytes | None:
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


def error_text(exc: BaseException, source: NewsSource) -> str:
    """What the status shows of a failed poll: the error's kind and message with the source's URL
    masked; an aiohttp error (which may carry request headers) only by its kind."""
    if isinstance(exc, aiohttp.ClientResponseError):
        return f"{type(exc).__name__}: HTTP {exc.status}"
    if isinstance(exc, aiohttp.ClientError):
        return type(exc).__name__
    text = str(exc).replace(source.url, source.public_url)
    return f"{type(exc).__name__}: {text}"[:300]


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
            status.last_error = error_text(exc, source)
            log.warning(
                "news %s: poll failed, next try in %ss: %s",
                source.public_url,
                source.interval_s,
                status.last_error,
            )
        await asyncio.sleep(source.interval_s)
