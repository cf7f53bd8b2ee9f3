"""The news poller against a local feed server: conditional GETs, only new sentences
sent, failures counted and retried (a document Kafka did not take is fetched again)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from ingest.limits import AcceptedIds
from ingest.news_poller import PollerStatus, poll_once, run_poller
from ingest.sink import MemorySink
from olp.errors import FeedError, UnavailableError
from olp.service_settings import NewsSource
from olp.settings import FeedSettings
from tests.support.news_wire import ARTICLES, rss, sentence_ids

Server = Callable[..., Any]
NEWS = FeedSettings(domain="news", lang="en")


class Feed:
    def __init__(self) -> None:
        self.body = rss(ARTICLES[:2])
        self.status = 200
        self.conditional: list[str | None] = []

    async def handle(self, request: web.Request) -> web.Response:
        self.conditional.append(request.headers.get("If-None-Match"))
        if self.status != 200:
            return web.Response(status=self.status)
        etag = f'"{len(self.body)}"'
        if request.headers.get("If-None-Match") == etag:
            return web.Response(status=304)
        return web.Response(text=self.body, content_type="application/rss+xml", headers={"ETag": etag})


async def serve(aiohttp_server: Server, feed: Feed) -> NewsSource:
    app = web.Application()
    app.router.add_get("/rss", feed.handle)
    server = await aiohttp_server(app)
    return NewsSource(url=str(server.make_url("/rss")) + "?key=secret", feed="wire", stream_id="wire-1")


async def test_polls_send_only_new_sentences(aiohttp_server: Server) -> None:
    feed, sink, accepted, status = Feed(), MemorySink(), AcceptedIds(10), PollerStatus()
    source = await serve(aiohttp_server, feed)
    async with aiohttp.ClientSession() as session:
        assert await poll_once(session, source, NEWS, sink, accepted, status) == 10
        assert await poll_once(session, source, NEWS, sink, accepted, status) == 0  # 304
        feed.body = rss(ARTICLES[:3])
        assert await poll_once(session, source, NEWS, sink, accepted, status) == 5
    ids = sentence_ids(ARTICLES)
    assert [s["segment_id"] for s in sink.sent] == ids["wire-1"] + ids["wire-2"] + ids["wire-3"]
    assert {(s["stream_id"], s["feed"], s["domain"]) for s in sink.sent} == {("wire-1", "wire", "news")}
    assert feed.conditional[0] is None and feed.conditional[1] is not None
    assert (status.polls, status.not_modified, status.sent, status.articles) == (3, 1, 15, 3)
    assert source.public_url.endswith("/rss?key=***")  # the query value (a key, perhaps) is masked


async def test_a_document_kafka_did_not_take_is_fetched_again(aiohttp_server: Server) -> None:
    feed, sink, accepted, status = Feed(), MemorySink(), AcceptedIds(10), PollerStatus()
    source = await serve(aiohttp_server, feed)
    async with aiohttp.ClientSession() as session:
        sink.fail = "broker down"
        with pytest.raises(UnavailableError):
            await poll_once(session, source, NEWS, sink, accepted, status)
        sink.fail = None
        assert await poll_once(session, source, NEWS, sink, accepted, status) == 10
    assert feed.conditional == [None, None]  # no If-None-Match: the failed body was not kept


async def test_errors_are_counted_and_the_poller_goes_on(aiohttp_server: Server) -> None:
    feed, sink, accepted, status = Feed(), MemorySink(), AcceptedIds(10), PollerStatus()
    feed.status = 503
    source = (await serve(aiohttp_server, feed)).model_copy(update={"interval_s": 0.05})
    async with aiohttp.ClientSession() as session:
        task = asyncio.create_task(run_poller(session, source, NEWS, sink, accepted, status))
        while status.errors < 2:
            await asyncio.sleep(0.01)
        assert status.last_error is not None and "answered HTTP 503" in status.last_error
        assert "secret" not in status.last_error
        feed.status, feed.body = 200, "<rss><channel><item><title>x"
        while "not well-formed" not in (status.last_error or ""):
            await asyncio.sleep(0.01)
        feed.body = rss(ARTICLES[:1])
        while status.sent < 5:
            await asyncio.sleep(0.01)
        assert status.last_error is None
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_oversize_feeds_are_refused(aiohttp_server: Server) -> None:
    feed = Feed()
    source = (await serve(aiohttp_server, feed)).model_copy(update={"max_bytes": 1024})
    async with aiohttp.ClientSession() as session:
        with pytest.raises(FeedError, match="exceeds 1024"):
            await poll_once(session, source, NEWS, MemorySink(), AcceptedIds(1), PollerStatus())
