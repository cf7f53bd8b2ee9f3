"""The document service's security findings: no token or header in any status text, signed
webhook deliveries (Standard Webhooks), no redirects followed, and reads of transcript text
closed whenever the service is not on loopback."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from documents.keys import WEBHOOK
from documents.service import apply_document, create_app
from documents.webhook import WebhookError, WebhookStats, deliver, signature
from olp.errors import ConfigError
from olp.service_settings import DocumentsSettings, WebhookSettings
from olp.settings import load_settings
from tests.unit.test_documents_view import doc

Client = Callable[..., Any]
HOOK_TOKEN = "hook-bearer-0123456789"
SECRET = "whsec_" + base64.b64encode(b"k" * 24).decode()


class Redirecting:
    """A receiver that redirects (307 keeps the method and body) to `target`, and counts."""

    def __init__(self) -> None:
        self.target = "/hook"
        self.hits = 0

    async def handle(self, request: web.Request) -> web.Response:
        self.hits += 1
        raise web.HTTPTemporaryRedirect(self.target)


async def redirecting_url(aiohttp_server: Client, receiver: Redirecting) -> str:
    app = web.Application()
    app.router.add_post("/hook", receiver.handle)
    server = await aiohttp_server(app)
    return str(server.make_url("/hook"))


async def test_readyz_never_shows_the_webhook_token(aiohttp_client: Client, aiohttp_server: Client) -> None:
    receiver = Redirecting()  # redirects to itself: an aiohttp error's repr holds the request headers
    hook = WebhookSettings(
        url=await redirecting_url(aiohttp_server, receiver), token=HOOK_TOKEN, attempts=2, backoff_max_s=0.01
    )
    app = create_app(load_settings(), DocumentsSettings(webhook=hook), read_kafka=False)
    client = await aiohttp_client(app)
    apply_document(app, doc("s", "1", 0))
    for _ in range(500):
        if app[WEBHOOK].failed:
            break
        await asyncio.sleep(0.01)
    text = await (await client.get("/readyz")).text()
    assert app[WEBHOOK].failed == 1
    assert HOOK_TOKEN not in text and "Authorization" not in text
    assert (await client.get("/readyz")).status == 200


async def test_redirects_are_not_followed(aiohttp_server: Client) -> None:
    target = Redirecting()
    target_url = await redirecting_url(aiohttp_server, target)
    first = Redirecting()
    first.target = target_url  # a receiver pointing the sink elsewhere
    hook = WebhookSettings(url=await redirecting_url(aiohttp_server, first), attempts=3, backoff_max_s=0.01)
    async with aiohttp.ClientSession() as session:
        with pytest.raises(WebhookError, match="HTTP 307 \\(redirects are not followed\\)"):
            await deliver(session, hook, doc("s", "1", 0), WebhookStats())
    assert (first.hits, target.hits) == (1, 0)  # not retried, not followed


def test_signature_matches_the_standard_webhooks_test_vector() -> None:
    key = base64.b64decode("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
    body = '{"test": 2432232314}'
    assert (
        signature(key, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body)
        == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    )


async def test_deliveries_are_signed_and_verify(aiohttp_server: Client) -> None:
    seen: list[tuple[dict[str, str], bytes]] = []

    async def handle(request: web.Request) -> web.Response:
        seen.append((dict(request.headers), await request.read()))
        return web.Response()

    app = web.Application()
    app.router.add_post("/hook", handle)
    server = await aiohttp_server(app)
    hook = WebhookSettings(url=str(server.make_url("/hook")), secret=SECRET)
    async with aiohttp.ClientSession() as session:
        await deliver(session, hook, doc("s", "1", 4), WebhookStats())
    headers, body = seen[0]
    msg_id, timestamp = headers["webhook-id"], headers["webhook-timestamp"]
    assert msg_id == "s/1/4" and abs(int(timestamp) - __import__("time").time()) < 60
    expected = hmac.new(b"k" * 24, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    assert headers["webhook-signature"] == "v1," + base64.b64encode(expected).decode()


def test_a_malformed_webhook_secret_is_refused() -> None:
    with pytest.raises(ValueError, match="whsec_"):
        WebhookSettings(url="http://x.example/hook", secret="not-a-secret")
    with pytest.raises(ValueError, match="at least 16 random bytes"):
        WebhookSettings(url="http://x.example/hook", secret="whsec_" + base64.b64encode(b"short").decode())


def test_reads_off_loopback_need_a_token_or_an_explicit_open_flag() -> None:
    with pytest.raises(ConfigError, match=r"not loopback, and no documents\.read_token"):
        create_app(load_settings(), DocumentsSettings(host="0.0.0.0"), read_kafka=False)
    create_app(load_settings(), DocumentsSettings(host="0.0.0.0", read_token="r"), read_kafka=False)
    create_app(load_settings(), DocumentsSettings(host="0.0.0.0", open_reads=True), read_kafka=False)
    for host in ("127.0.0.1", "::1", "localhost"):
        create_app(load_settings(), DocumentsSettings(host=host), read_kafka=False)


async def test_with_a_read_token_transcript_reads_are_closed_and_health_is_open(
    aiohttp_client: Client,
) -> None:
    app = create_app(load_settings(), DocumentsSettings(host="0.0.0.0", read_token="r"), read_kafka=False)
    client = await aiohttp_client(app)
    apply_document(app, doc("s", "1", 0))
    for path in (
        "/v1/streams",
        "/v1/streams/s",
        "/v1/streams/s/topics/1",
        "/v1/events",
        "/v1/streams/s/events",
    ):
        assert (await client.get(path)).status == 401, path
    assert (await client.get("/v1/streams/s", headers={"Authorization": "Bearer r"})).status == 200
    assert (await client.get("/healthz")).status == 200 and (await client.get("/readyz")).status == 200
