"""The ingest service's security findings: tokens scoped to their feeds (never the admin
token), streams bound to their feed, segment ids that may not jump, per-sender rates, open
streams per feed, and news URLs shown masked with redirects to private addresses refused."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from ingest.limits import AcceptedIds
from ingest.news_poller import PollerStatus, is_public_address, poll_once
from ingest.service import create_app
from ingest.sink import MemorySink
from olp.errors import ConfigError, FeedError
from olp.service_settings import FeedLimits, IngestSettings, NewsSource, SenderSettings, masked_url
from olp.settings import FeedSettings, load_settings
from tests.support.news_wire import ARTICLES, rss

Client = Callable[..., Any]
ADMIN = "admin-token-0123456789"
SHOP = "shop-sender-0123456789"
WIRE = "wire-sender-0123456789"
FEEDS = {"default": {}, "shop": {"domain": "ecommerce"}, "wire": {"domain": "news"}}


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def senders(**more: Any) -> dict[str, SenderSettings]:
    return {
        "shop-studio": SenderSettings(token=SHOP, feeds=("shop",), **more),
        "wire-desk": SenderSettings(token=WIRE, feeds=("wire", "shop"), **more),
    }


async def make_client(aiohttp_client: Client, sink: MemorySink, **ingest: Any) -> TestClient:
    settings = load_settings(feeds=FEEDS, api_token=ADMIN)
    app = create_app(settings, IngestSettings(senders=ingest.pop("senders", senders()), **ingest), sink=sink)
    client: TestClient = await aiohttp_client(app)
    return client


async def post(
    client: TestClient, feed: str, token: str, *segments: dict[str, Any]
) -> aiohttp.ClientResponse:
    body = "".join(json.dumps(s) + "\n" for s in segments)
    return await client.post(f"/v1/feeds/{feed}/segments", data=body, headers=auth(token))


def seg(stream: str, i: int) -> dict[str, Any]:
    return {"stream_id": stream, "segment_id": i, "text": f"sentence {i}"}


async def test_a_token_writes_only_to_its_feeds_and_the_admin_token_never(aiohttp_client: Client) -> None:
    sink = MemorySink()
    client = await make_client(aiohttp_client, sink)
    assert (await post(client, "shop", SHOP, seg("a", 1))).status == 200
    refused = await post(client, "wire", SHOP, seg("b", 1))
    assert (
        refused.status == 403 and (await refused.json())["error"] == "this token may not write to feed 'wire'"
    )
    admin = await post(client, "shop", ADMIN, seg("c", 1))
    assert admin.status == 401
    for feed, token, status in (("wire", SHOP, 403), ("default", WIRE, 403), ("shop", ADMIN, 401)):
        with pytest.raises(aiohttp.WSServerHandshakeError) as caught:
            await client.ws_connect(f"/v1/feeds/{feed}/ws?stream_id=x", headers=auth(token))
        assert caught.value.status == status
    assert [s["stream_id"] for s in sink.sent] == ["a"]


async def test_a_stream_cannot_be_written_through_another_feed(aiohttp_client: Client) -> None:
    sink = MemorySink()
    client = await make_client(aiohttp_client, sink)
    assert (await post(client, "shop", SHOP, seg("live-1", 1))).status == 200
    resp = await post(client, "wire", WIRE, seg("live-1", 2))
    assert resp.status == 400
    assert (await resp.json())["error"] == "stream 'live-1' belongs to another feed; use another stream id"
    assert [(s["feed"], s["segment_id"]) for s in sink.sent] == [("shop", 1)]


async def test_a_huge_segment_id_is_refused_and_the_stream_goes_on(aiohttp_client: Client) -> None:
    sink = MemorySink()
    client = await make_client(aiohttp_client, sink)
    assert (await post(client, "shop", SHOP, seg("live-1", 1))).status == 200
    poison = await post(client, "shop", SHOP, seg("live-1", 2**63 - 1))
    assert poison.status == 400
    assert (
        "jumps 9223372036854775806 past 1; feed 'shop' allows at most 1000000"
        in (await poison.json())["error"]
    )
    later = await post(client, "shop", SHOP, seg("live-1", 2))
    assert (await later.json())["accepted"] == 1  # not dropped as a duplicate
    assert [s["segment_id"] for s in sink.sent] == [1, 2]


async def test_rates_are_per_sender_as_well_as_per_feed(aiohttp_client: Client) -> None:
    sink = MemorySink()
    client = await make_client(aiohttp_client, sink, senders=senders(rate_per_s=0.001, burst=2))
    assert (await post(client, "shop", SHOP, seg("a", 1), seg("a", 2))).status == 200
    over = await post(client, "shop", SHOP, seg("a", 3))
    assert over.status == 429 and "sender 'shop-studio' is over its rate" in (await over.json())["error"]
    assert (await post(client, "shop", WIRE, seg("b", 1))).status == 200  # another sender, same feed


async def test_a_feed_holds_at_most_max_streams_open_streams(aiohttp_client: Client) -> None:
    sink = MemorySink()
    client = await make_client(aiohttp_client, sink, limits={"default": FeedLimits(max_streams=2)})
    assert (await post(client, "shop", SHOP, seg("a", 1), seg("b", 1))).status == 200
    third = await post(client, "shop", SHOP, seg("c", 1))
    assert third.status == 429 and "feed 'shop' has 2 open streams" in (await third.json())["error"]
    assert (await post(client, "shop", SHOP, seg("a", 2))).status == 200


def test_sender_tokens_are_checked_at_start() -> None:
    with pytest.raises(ValueError, match="at least 16 characters"):
        SenderSettings(token="short", feeds=("shop",))
    with pytest.raises(ValueError, match="share a token"):
        IngestSettings(
            senders={
                "a": SenderSettings(token=SHOP, feeds=("shop",)),
                "b": SenderSettings(token=SHOP, feeds=("wire",)),
            }
        )
    with pytest.raises(ConfigError, match="sender 'a' names undeclared feeds: typo"):
        create_app(
            load_settings(feeds=FEEDS),
            IngestSettings(senders={"a": SenderSettings(token=SHOP, feeds=("typo",))}),
            sink=MemorySink(),
        )


# --- news sources -----------------------------------------------------------------------------


def test_urls_are_shown_with_userinfo_and_query_values_masked() -> None:
    assert masked_url("https://user:pw@feeds.example:8443/rss?key=s3cret&lang=en") == (
        "https://***@feeds.example:8443/rss?key=***&lang=***"
    )
    assert masked_url("http://feeds.example/rss") == "http://feeds.example/rss"


async def test_feeds_never_show_a_news_urls_secret(aiohttp_client: Client, aiohttp_server: Client) -> None:
    async def loop(request: web.Request) -> web.Response:
        raise web.HTTPFound(request.rel_url)  # redirects to itself: the error names the URL

    feed_app = web.Application()
    feed_app.router.add_get("/rss", loop)
    server = await aiohttp_server(feed_app)
    url = str(server.make_url("/rss")) + "?key=s3cret-key"
    source = NewsSource(url=url, feed="wire", stream_id="wire-1", interval_s=0.1)
    settings = load_settings(feeds=FEEDS)
    app = create_app(settings, IngestSettings(news=(source,)), sink=MemorySink())
    client = await aiohttp_client(app)
    for _ in range(200):
        feeds = await (await client.get("/v1/feeds")).text()
        if '"errors": 0' not in feeds and '"last_error": null' not in feeds:
            break
        await asyncio.sleep(0.02)
    news = (await (await client.get("/v1/feeds/wire")).json())["news"][0]
    assert news["status"]["errors"] >= 1 and news["status"]["last_error"]
    assert "s3cret-key" not in feeds and news["url"].endswith("/rss?key=***")


class Moved:
    """A feed server whose /rss redirects to /real on the same (loopback) server."""

    async def old(self, request: web.Request) -> web.Response:
        raise web.HTTPMovedPermanently("/real")

    async def real(self, request: web.Request) -> web.Response:
        return web.Response(text=rss(ARTICLES[:1]), content_type="application/rss+xml")


async def test_redirects_to_private_addresses_are_refused_unless_allowed(aiohttp_server: Client) -> None:
    moved = Moved()
    app = web.Application()
    app.router.add_get("/rss", moved.old)
    app.router.add_get("/real", moved.real)
    server = await aiohttp_server(app)
    url = str(server.make_url("/rss"))
    feed = FeedSettings(domain="news", lang="en")
    async with aiohttp.ClientSession() as session:
        refused = NewsSource(url=url, feed="wire", stream_id="w")
        with pytest.raises(FeedError, match="private, loopback or link-local"):
            await poll_once(session, refused, feed, MemorySink(), AcceptedIds(10), PollerStatus())
        allowed = NewsSource(url=url, feed="wire", stream_id="w", allow_private_redirects=True)
        sink = MemorySink()
        assert await poll_once(session, allowed, feed, sink, AcceptedIds(10), PollerStatus()) > 0


def test_public_addresses() -> None:
    assert is_public_address("93.184.216.34") and is_public_address("2606:2800:220:1::1")
    for address in ("127.0.0.1", "10.1.2.3", "192.168.0.1", "169.254.169.254", "::1", "fe80::1", "0.0.0.0"):
        assert not is_public_address(address), address


async def test_deeply_nested_json_is_a_400_over_http_and_keeps_the_websocket(aiohttp_client: Client) -> None:
    client = await make_client(aiohttp_client, MemorySink())
    deep = "[" * 100_000 + "]" * 100_000
    resp = await client.post("/v1/feeds/shop/segments", data=deep, headers=auth(SHOP))
    assert resp.status == 400
    assert "nest" in (await resp.json())["error"]
    async with client.ws_connect("/v1/feeds/shop/ws?stream_id=ws-deep", headers=auth(SHOP)) as ws:
        await ws.send_str(deep)
        refused = await ws.receive_json()
        assert refused["ok"] is False and refused["status"] == 400
        await ws.send_str(json.dumps(seg("ws-deep", 1)))  # the socket is still open
        assert (await ws.receive_json())["accepted"] == 1
