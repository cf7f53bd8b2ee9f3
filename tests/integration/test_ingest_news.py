"""The RSS adapter end to end: the ingest service polls a local HTTP server serving a
news feed file, and the running pipeline turns its articles into news-domain documents. Polls
that find nothing new send nothing; a new article only adds its own sentences (and closes the
topic before it).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from documents.service import create_app as documents_app
from ingest.service import create_app as ingest_app
from launcher.scripted_llm import ScriptedLLM, scripted_catalog
from olp.service_settings import IngestSettings, NewsSource
from olp.settings import load_settings
from tests.support.news_wire import ARTICLES, NEWS_ASPECTS, expected_document, news_model, rss, sentence_ids
from tests.support.stack import ServiceStack

pytestmark = pytest.mark.integration

FEEDS = {"default": {}, "wire": {"domain": "news", "lang": "en", "chunk_size": 5}}
Client = Callable[..., Any]


@pytest.fixture
def stack(broker: str, topic_prefix: str, run_dir: Path) -> Iterator[ServiceStack]:
    model = ScriptedLLM(news_model(ARTICLES)).start()
    services = ServiceStack(
        broker, topic_prefix, run_dir, scripted_catalog(model.base_url), {"OLP_FEEDS": json.dumps(FEEDS)}
    )
    try:
        services.start_policy_store()
        services.start_worker()
        yield services
    finally:
        services.stop()
        model.stop()


class FeedServer:
    """Serves the feed file, with an ETag, so unchanged polls are answered 304."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.requests = 0

    async def handle(self, request: web.Request) -> web.Response:
        self.requests += 1
        body = self.path.read_bytes()
        etag = f'"{hashlib.sha256(body).hexdigest()[:16]}"'
        if request.headers.get("If-None-Match") == etag:
            return web.Response(status=304, headers={"ETag": etag})
        return web.Response(body=body, content_type="application/rss+xml", headers={"ETag": etag})


async def wait_for(client: TestClient, stream_id: str, done: Callable[[list[dict]], bool]) -> list[dict]:
    deadline = asyncio.get_running_loop().time() + 60
    documents: list[dict] = []
    while asyncio.get_running_loop().time() < deadline:
        resp = await client.get(f"/v1/streams/{stream_id}")
        if resp.status == 200:
            documents = (await resp.json())["documents"]
            if done(documents):
                return documents
        await asyncio.sleep(0.3)
    raise AssertionError(f"not reached: {[(d['name'], d['final']) for d in documents]}")


async def test_rss_feed_becomes_news_documents(
    stack: ServiceStack, tmp_path: Path, aiohttp_client: Client, aiohttp_server: Client
) -> None:
    feed_file = tmp_path / "wire.xml"
    feed_file.write_text(rss(ARTICLES[:3]))
    server = FeedServer(feed_file)
    app = web.Application()
    app.router.add_get("/wire.xml", server.handle)
    feed_url = str((await aiohttp_server(app)).make_url("/wire.xml"))

    settings = load_settings(
        kafka={"bootstrap_servers": stack.bootstrap}, topic_prefix=stack.prefix, feeds=FEEDS, api_token="t"
    )
    source = NewsSource(url=feed_url, feed="wire", stream_id="wire-1", interval_s=0.3)
    ingest = await aiohttp_client(ingest_app(settings, IngestSettings(news=(source,))))
    docs = await aiohttp_client(documents_app(settings))
    ids = sentence_ids(ARTICLES)

    # Three articles: the first two are final (the last topic of a live stream stays open).
    documents = await wait_for(docs, "wire-1", lambda d: len(d) == 3 and d[0]["final"] and d[1]["final"])
    for document, article in zip(documents[:2], ARTICLES[:2], strict=True):
        assert {k: document[k] for k in ("name", "first_id", "last_id", "aspects")} == expected_document(
            article, ids[article.guid]
        )
    assert documents[2]["name"] == ARTICLES[2].title and not documents[2]["final"]
    assert {(d["domain"], d["lang"]) for d in documents} == {("news", "en")}
    assert all([a["name"] for a in d["aspects"]] == NEWS_ASPECTS for d in documents)

    # Polling goes on, sending nothing new: the server answers 304 to the conditional GETs.
    polls = server.requests
    while server.requests < polls + 3:
        await asyncio.sleep(0.1)
    wire = await (await ingest.get("/v1/feeds/wire")).json()
    status = wire["news"][0]["status"]
    assert wire["domain"] == "news" and wire["news"][0]["url"] == feed_url
    assert status["sent"] == 15 and status["not_modified"] >= 3 and status["errors"] == 0

    # A new article is appended: only its sentences are sent, and the third topic closes.
    feed_file.write_text(rss(ARTICLES))
    documents = await wait_for(docs, "wire-1", lambda d: len(d) == 4 and d[2]["final"])
    assert {k: documents[2][k] for k in ("name", "first_id", "last_id", "aspects")} == expected_document(
        ARTICLES[2], ids[ARTICLES[2].guid]
    )
    assert documents[3]["name"] == ARTICLES[3].title and documents[3]["first_id"] == ids["wire-4"][0]
    status = (await (await ingest.get("/v1/feeds/wire")).json())["news"][0]["status"]
    assert status["sent"] == 20 and status["articles"] == 4 and status["duplicates"] == 15
