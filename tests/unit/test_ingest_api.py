"""The ingest service's HTTP and WebSocket API, with an in-memory sink: feed
configuration visible, authentication, size limits (413), rate limits and back-pressure (429 +
Retry-After), malformed bodies (400), idempotent re-sends."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient

from ingest.service import create_app
from ingest.sink import MemorySink
from olp.errors import ConfigError
from olp.service_settings import FeedLimits, IngestSettings, NewsSource, SenderSettings
from olp.settings import Settings, load_settings

TOKEN = "sender-token-0123456789"
ADMIN = "admin-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
Client = Callable[..., Any]

FEEDS = {
    "default": {},
    "shop": {
        "domain": "ecommerce",
        "lang": "zh",
        "chunk_size": 60,
        "models": ["m1"],
        "budget_usd_per_hour": 2.5,
    },
    "wire": {"domain": "news", "chunk_size": 20},
    "sport": {"domain": "sport", "aspects": ["Result", "Quote"], "lang": "es"},
}
LIMITS = {
    "default": FeedLimits(),
    "shop": FeedLimits(rate_per_s=1.0, burst=5, max_request_bytes=2048, max_segment_chars=100),
}


SENDERS = {
    "studio": SenderSettings(token=TOKEN, feeds=tuple(FEEDS), rate_per_s=1000.0, burst=1000),
}


def ingest(**overrides: Any) -> IngestSettings:
    return IngestSettings(senders=overrides.pop("senders", SENDERS), **overrides)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def settings(**overrides: Any) -> Settings:
    return load_settings(feeds=FEEDS, api_token=ADMIN, **overrides)


@pytest.fixture
def sink() -> MemorySink:
    return MemorySink()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def client(aiohttp_client: Client, sink: MemorySink, clock: Clock) -> TestClient:
    app = create_app(settings(), ingest(limits=LIMITS, max_pending_segments=6), sink=sink, clock=clock)
    return await aiohttp_client(app)


def lines(*segments: dict[str, Any]) -> str:
    return "".join(json.dumps(s) + "\n" for s in segments)


def seg(i: int, text: str | None = None, **more: Any) -> dict[str, Any]:
    return {"segment_id": i, "text": text or f"sentence {i}", **more}


async def post(
    client: TestClient, body: str | bytes, feed: str = "shop", query: str = "?stream_id=live-1", **kw: Any
):
    headers = kw.pop("headers", AUTH)
    return await client.post(f"/v1/feeds/{feed}/segments{query}", data=body, headers=headers, **kw)


# --- configuration --------------------------------------------------------------------------


async def test_feed_configuration_is_visible(client: TestClient) -> None:
    resp = await client.get("/v1/feeds")
    assert resp.status == 200
    feeds = {f["name"]: f for f in (await resp.json())["feeds"]}
    assert sorted(feeds) == ["default", "shop", "sport", "wire"]
    assert feeds["shop"] == {
        "name": "shop",
        "domain": "ecommerce",
        "lang": "zh",
        "chunk_size": 60,
        "aspects": ["Opening", "Order Urging", "Price", "Product Description"],
        "models": ["m1"],
        "budget_usd_per_hour": 2.5,
        "llm_seconds_per_minute": 40.0,
        "limits": {
            "rate_per_s": 1.0,
            "burst": 5,
            "max_request_bytes": 2048,
            "max_segment_chars": 100,
            "max_streams": 1000,
            "max_segment_id_jump": 1_000_000,
        },
        "news": [],
    }
    assert feeds["wire"]["aspects"] == ["Future Plans", "Assumptions", "Opinions", "Facts"]
    assert feeds["sport"]["aspects"] == ["Result", "Quote"]
    assert feeds["wire"]["limits"] == FeedLimits().model_dump()
    one = await client.get("/v1/feeds/sport")
    assert (await one.json())["lang"] == "es"
    missing = await client.get("/v1/feeds/nope")
    assert (
        missing.status == 404
        and "declared feeds: default, shop, sport, wire" in (await missing.json())["error"]
    )


def test_configuration_errors_surface_at_start() -> None:
    with pytest.raises(ConfigError, match=r"feed 'odd'.*no default aspects"):
        create_app(load_settings(feeds={"odd": {"domain": "cooking"}}), IngestSettings(), sink=MemorySink())
    with pytest.raises(ConfigError, match="names feed 'wire', which is not declared"):
        create_app(
            load_settings(),
            IngestSettings(news=(NewsSource(url="http://x.example/rss", feed="wire", stream_id="w"),)),
            sink=MemorySink(),
        )
    with pytest.raises(ConfigError, match="ingest limits for undeclared feeds: typo"):
        create_app(load_settings(), IngestSettings(limits={"typo": FeedLimits()}), sink=MemorySink())


# --- accepted segments ----------------------------------------------------------------------


async def test_json_lines_become_segments_of_the_feed(client: TestClient, sink: MemorySink) -> None:
    resp = await post(client, lines(seg(1), seg(2, speaker="host"), {"stream_id": "other", **seg(7)}))
    assert resp.status == 200
    assert await resp.json() == {
        "feed": "shop",
        "accepted": 3,
        "duplicates": 0,
        "last_segment_id": {"live-1": 2, "other": 7},
    }
    first = sink.sent[0]
    assert {k: first[k] for k in ("stream_id", "segment_id", "domain", "lang", "feed", "speaker")} == {
        "stream_id": "live-1",
        "segment_id": 1,
        "domain": "ecommerce",
        "lang": "zh",  # the feed's, not the sender's
        "feed": "shop",
        "speaker": None,
    }
    assert first["ts_ms"] > 1_700_000_000_000  # time of arrival
    assert sink.sent[2]["stream_id"] == "other"


async def test_a_json_array_body_is_accepted_too(client: TestClient, sink: MemorySink) -> None:
    resp = await post(client, json.dumps([seg(1), seg(2, end_of_stream=True)]))
    assert resp.status == 200 and [s["end_of_stream"] for s in sink.sent] == [False, True]


async def test_re_sending_is_answered_as_duplicates_and_produces_nothing(
    client: TestClient, sink: MemorySink, clock: Clock
) -> None:
    assert (await post(client, lines(seg(1), seg(2), seg(3)))).status == 200
    clock.now += 10
    resp = await post(client, lines(seg(1), seg(2), seg(3), seg(4)))
    assert (await resp.json())["accepted"] == 1 and (await resp.json())["duplicates"] == 3
    assert [s["segment_id"] for s in sink.sent] == [1, 2, 3, 4]


# --- refused requests -----------------------------------------------------------------------


async def test_missing_or_wrong_token_is_401_and_no_sender_configured_is_403(aiohttp_client: Client) -> None:
    sink = MemorySink()
    client = await aiohttp_client(create_app(settings(), ingest(), sink=sink))
    wrong = (
        {},
        {"Authorization": "Bearer wrong"},
        {"Authorization": TOKEN},
        {"Authorization": f"Bearer {ADMIN}"},
    )
    for headers in wrong:
        resp = await post(client, lines(seg(1)), feed="default", headers=headers)
        assert resp.status == 401 and resp.headers["WWW-Authenticate"] == "Bearer"
        assert (await resp.json())["error"] == "missing or wrong bearer token"
    open_client = await aiohttp_client(create_app(settings(), IngestSettings(), sink=sink))
    resp = await post(
        open_client, lines(seg(1)), feed="default", headers={"Authorization": f"Bearer {ADMIN}"}
    )
    assert resp.status == 403 and "ingest is disabled" in (await resp.json())["error"]
    ok = await post(client, lines(seg(1)), feed="default")
    assert ok.status == 200
    assert sink.sent and len(sink.sent) == 1


async def test_oversize_body_segment_or_batch_is_413(client: TestClient, sink: MemorySink) -> None:
    big = lines(*(seg(i, "x" * 90) for i in range(1, 30)))
    assert len(big) > 2048
    resp = await post(client, big)
    assert resp.status == 413 and "exceeds the feed's limit of 2048" in (await resp.json())["error"]

    async def chunks() -> Any:  # no Content-Length: the limit holds while reading
        for _ in range(10):
            yield b" " * 1000

    resp = await post(client, chunks())
    assert resp.status == 413
    resp = await post(client, lines(seg(1, "y" * 101)))
    assert resp.status == 413 and "text of 101 characters exceeds feed 'shop'" in (await resp.json())["error"]
    resp = await post(client, lines(*(seg(i, "z") for i in range(1, 7))))
    assert resp.status == 413 and "exceed the burst of feed 'shop' (5)" in (await resp.json())["error"]
    assert sink.sent == []


@pytest.mark.parametrize(
    ("body", "query", "message"),
    [
        (
            '{"segment_id": 1, "text": "ok"}\n{"segment_id": 2, "text": "broken"\n',
            "?stream_id=s",
            "line 2: not JSON",
        ),
        ('{"text": "no id"}\n', "?stream_id=s", "segment 1: needs an integer segment_id"),
        (
            '{"segment_id": 2, "text": "a"}\n{"segment_id": 2, "text": "b"}\n',
            "?stream_id=s",
            "does not increase",
        ),
        ('{"segment_id": 1, "text": "a"}\n', "", "segment 1: needs a stream_id"),
        ('{"segment_id": 1, "text": "a"}\n', "?stream_id=bad/id", "stream id 'bad/id' must be"),
        ('{"segment_id": 1, "text": "  "}\n', "?stream_id=s", "text is empty"),
        (b'{"segment_id": 1, "text": "\xff"}\n', "?stream_id=s", "body is not UTF-8"),
        ("[1, 2", "?stream_id=s", "body is not a JSON array"),
    ],
)
async def test_malformed_bodies_are_400_naming_the_problem(
    client: TestClient, sink: MemorySink, body: str | bytes, query: str, message: str
) -> None:
    resp = await post(client, body, query=query)
    assert resp.status == 400
    assert message in (await resp.json())["error"]
    assert sink.sent == []  # all or nothing


async def test_over_the_rate_is_429_with_retry_after(
    client: TestClient, sink: MemorySink, clock: Clock
) -> None:
    assert (await post(client, lines(*(seg(i) for i in range(1, 6))))).status == 200
    clock.now = 0.5
    resp = await post(client, lines(seg(6), seg(7), seg(8)))
    assert resp.status == 429
    assert resp.headers["Retry-After"] == "3"  # 0.5 token there, 2.5 more at 1/s
    assert "over its rate of 1 segments/s" in (await resp.json())["error"]
    clock.now = 3.0
    resp = await post(client, lines(seg(6), seg(7), seg(8)))
    assert resp.status == 200 and len(sink.sent) == 8


async def test_backpressure_is_429_instead_of_buffering(client: TestClient, sink: MemorySink) -> None:
    sink.gate = asyncio.Event()  # Kafka "slow": the first batch stays in flight
    first = asyncio.create_task(post(client, lines(*(seg(i) for i in range(1, 6))), feed="default"))
    while sink.pending == 0:
        await asyncio.sleep(0.01)
    resp = await post(client, lines(seg(1, stream_id="second"), seg(2, stream_id="second")), feed="default")
    assert resp.status == 429 and resp.headers["Retry-After"] == "1"
    assert "waiting for Kafka" in (await resp.json())["error"]
    sink.gate.set()
    assert (await first).status == 200
    assert (
        await post(client, lines(seg(1), seg(2)), feed="default", query="?stream_id=second")
    ).status == 200


async def test_kafka_unavailable_is_503_with_retry_after(client: TestClient, sink: MemorySink) -> None:
    sink.fail = "broker down"
    resp = await post(client, lines(seg(1)), feed="default")
    assert resp.status == 503 and resp.headers["Retry-After"] == "1"
    sink.fail = None
    assert (await (await post(client, lines(seg(1)), feed="default")).json())[
        "accepted"
    ] == 1  # not remembered


async def test_readiness(client: TestClient) -> None:
    resp = await client.get("/readyz")
    assert resp.status == 200 and await resp.json() == {"ready": True, "pending": 0}


# --- WebSocket ------------------------------------------------------------------------------


async def test_websocket_acknowledges_each_message(client: TestClient, sink: MemorySink) -> None:
    async with client.ws_connect("/v1/feeds/default/ws?stream_id=ws-1", headers=AUTH) as ws:
        await ws.send_str(lines(seg(1), seg(2)))
        assert await ws.receive_json() == {
            "ok": True,
            "feed": "default",
            "accepted": 2,
            "duplicates": 0,
            "last_segment_id": {"ws-1": 2},
        }
        await ws.send_str('{"segment_id": 3, "text": "fine"}\n{oops\n')
        refused = await ws.receive_json()
        assert refused["ok"] is False and refused["status"] == 400 and "line 2" in refused["error"]
        await ws.send_bytes(lines(seg(2), seg(3)).encode())  # the socket is still open; bytes work too
        assert (await ws.receive_json())["duplicates"] == 1
    assert [s["segment_id"] for s in sink.sent] == [1, 2, 3]
    assert {s["stream_id"] for s in sink.sent} == {"ws-1"}


async def test_websocket_needs_the_token(client: TestClient) -> None:
    with pytest.raises(aiohttp.WSServerHandshakeError) as caught:
        await client.ws_connect("/v1/feeds/default/ws?stream_id=ws-1")
    assert caught.value.status == 401
    with pytest.raises(aiohttp.WSServerHandshakeError) as missing:
        await client.ws_connect("/v1/feeds/nope/ws", headers=AUTH)
    assert missing.value.status == 404


async def test_websocket_rate_limit_and_oversize_message(client: TestClient, clock: Clock) -> None:
    async with client.ws_connect("/v1/feeds/shop/ws?stream_id=ws-2", headers=AUTH) as ws:
        await ws.send_str(lines(*(seg(i) for i in range(1, 6))))
        assert (await ws.receive_json())["accepted"] == 5
        await ws.send_str(lines(seg(6)))
        limited = await ws.receive_json()
        assert (
            limited["ok"] is False
            and limited["status"] == 429
            and limited["retry_after_s"] == pytest.approx(1.0)
        )
        clock.now = 1.0
        await ws.send_str(lines(seg(6)))
        assert (await ws.receive_json())["accepted"] == 1
        await ws.send_str("x" * 4096)  # over the feed's 2048 bytes
        closing = await ws.receive()
        assert closing.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
        assert ws.close_code == aiohttp.WSCloseCode.MESSAGE_TOO_BIG
