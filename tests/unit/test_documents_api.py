"""The document read API on a view fed directly: streams, topics with aspects,
history, server-sent events (snapshot, live, resume, slow clients), read token, and the webhook
sink's retries and coalescing."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from documents.keys import HUB, PENDING, WEBHOOK
from documents.service import apply_document, create_app
from documents.sse import Event, frame, read_events
from documents.webhook import PendingUpdates, WebhookError, WebhookStats, deliver
from olp.service_settings import DocumentsSettings, WebhookSettings
from olp.settings import load_settings
from tests.unit.test_documents_view import doc

Client = Callable[..., Any]


async def make_client(aiohttp_client: Client, **documents: Any) -> tuple[TestClient, web.Application]:
    app = create_app(load_settings(), DocumentsSettings(**documents), read_kafka=False)
    return await aiohttp_client(app), app


async def next_event(events: AsyncIterator[Event]) -> Event:
    return await asyncio.wait_for(anext(events), 5)


async def test_streams_topics_and_history(aiohttp_client: Client) -> None:
    client, app = await make_client(aiohttp_client)
    for d in (
        doc("live-1", "1", 0),
        doc("live-1", "1", 1, final=True),
        doc("live-1", "11", 1),
        doc("n", "5", 0),
    ):
        apply_document(app, d)
    streams = await (await client.get("/v1/streams")).json()
    assert [(s["stream_id"], s["topics"], s["final_topics"]) for s in streams["streams"]] == [
        ("live-1", 2, 1),
        ("n", 1, 0),
    ]
    stream = await (await client.get("/v1/streams/live-1")).json()
    assert stream["stream_id"] == "live-1" and stream["topics"] == 2
    assert stream["documents"] == [doc("live-1", "1", 1, final=True), doc("live-1", "11", 1)]
    topic = await (await client.get("/v1/streams/live-1/topics/11")).json()
    assert topic == doc("live-1", "11", 1)
    history = await (await client.get("/v1/streams/live-1/topics/1/history")).json()
    assert [v["version"] for v in history["versions"]] == [0, 1]
    for path in ("/v1/streams/nope", "/v1/streams/live-1/topics/2", "/v1/streams/live-1/topics/2/history"):
        resp = await client.get(path)
        assert resp.status == 404 and (await resp.json())["error"].startswith("no ")
    ready = await (await client.get("/readyz")).json()
    assert ready["ready"] and ready["updates"] == 4 and ready["webhook"] is None


async def test_read_token_when_configured(aiohttp_client: Client) -> None:
    client, _ = await make_client(aiohttp_client, read_token="r")
    assert (await client.get("/v1/streams")).status == 401
    assert (await client.get("/v1/streams", headers={"Authorization": "Bearer r"})).status == 200
    assert (await client.get("/healthz")).status == 200


async def test_sse_sends_the_snapshot_then_updates_as_they_happen(aiohttp_client: Client) -> None:
    client, app = await make_client(aiohttp_client)
    apply_document(app, doc("live-1", "1", 0))
    apply_document(app, doc("other", "1", 0))
    resp = await client.get("/v1/streams/live-1/events")
    assert resp.headers["Content-Type"] == "text/event-stream"
    events = read_events(resp.content)
    first = await next_event(events)
    assert (first.id, first.event, first.json()) == ("1", "document", doc("live-1", "1", 0))
    apply_document(app, doc("other", "1", 1))  # another stream: not sent here
    apply_document(app, doc("live-1", "1", 0))  # a re-delivery: no update
    apply_document(app, doc("live-1", "1", 1, final=True))
    update = await next_event(events)
    assert (update.id, update.json()["version"], update.json()["final"]) == ("4", 1, True)
    resp.close()


async def test_sse_resumes_after_last_event_id_or_skips_the_snapshot(aiohttp_client: Client) -> None:
    client, app = await make_client(aiohttp_client)
    for version in range(3):
        apply_document(app, doc("s", "1", version))
    resp = await client.get("/v1/events", headers={"Last-Event-ID": "1"})
    events = read_events(resp.content)
    assert [(await next_event(events)).id for _ in range(2)] == ["2", "3"]
    resp.close()
    live_only = await client.get("/v1/events?snapshot=false")
    events = read_events(live_only.content)
    apply_document(app, doc("s", "1", 7))
    assert (await next_event(events)).json()["version"] == 7
    live_only.close()


async def test_a_slow_sse_client_is_disconnected_not_buffered_for(aiohttp_client: Client) -> None:
    client, app = await make_client(aiohttp_client, sse_queue=2)
    resp = await client.get("/v1/events?snapshot=false")
    while not app[HUB].subscriptions:
        await asyncio.sleep(0.01)
    subscription = next(iter(app[HUB].subscriptions))
    for version in range(5):  # published faster than the handler can take them from its queue
        apply_document(app, doc("s", "1", version))
    assert subscription.dropped and not app[HUB].subscriptions
    body = await asyncio.wait_for(resp.read(), 5)  # the response ends
    assert body == b"retry: 2000\n\n"


async def test_shutdown_ends_open_event_streams(aiohttp_client: Client) -> None:
    client, app = await make_client(aiohttp_client)
    resp = await client.get("/v1/events")
    while not app[HUB].subscriptions:
        await asyncio.sleep(0.01)
    app[HUB].close_all()
    assert await asyncio.wait_for(resp.read(), 5) == b"retry: 2000\n\n"


def test_sse_framing() -> None:
    assert frame(7, "document", {"a": [1, "é"]}) == 'id: 7\nevent: document\ndata: {"a":[1,"é"]}\n\n'.encode()


# --- webhook --------------------------------------------------------------------------------


class Receiver:
    """A webhook receiver that answers with scripted statuses, then 200."""

    def __init__(self, statuses: list[int], retry_after: str | None = None) -> None:
        self.statuses = statuses
        self.retry_after = retry_after
        self.calls: list[tuple[dict[str, str], dict[str, Any]]] = []

    async def handle(self, request: web.Request) -> web.Response:
        self.calls.append((dict(request.headers), await request.json()))
        status = self.statuses.pop(0) if self.statuses else 200
        headers = {"Retry-After": self.retry_after} if self.retry_after and status != 200 else {}
        return web.Response(status=status, headers=headers)


async def receiver_url(aiohttp_server: Client, receiver: Receiver) -> str:
    app = web.Application()
    app.router.add_post("/hook", receiver.handle)
    server = await aiohttp_server(app)
    return str(server.make_url("/hook"))


async def test_webhook_retries_5xx_then_delivers_with_an_idempotency_key(aiohttp_server: Client) -> None:
    import aiohttp

    receiver = Receiver([503, 502])
    settings = WebhookSettings(
        url=await receiver_url(aiohttp_server, receiver), token="hook", backoff_max_s=0.05
    )
    stats = WebhookStats()
    async with aiohttp.ClientSession() as session:
        await deliver(session, settings, doc("s", "1", 4), stats)
    assert len(receiver.calls) == 3 and stats.retries == 2
    headers, body = receiver.calls[-1]
    assert body == doc("s", "1", 4)
    assert headers["Idempotency-Key"] == "s/1/4"
    assert headers["Authorization"] == "Bearer hook"
    assert headers["X-OLP-Event"] == "document"


async def test_webhook_gives_up_on_4xx_at_once_and_on_5xx_after_its_attempts(aiohttp_server: Client) -> None:
    import aiohttp

    receiver = Receiver([400, 500, 500, 500])
    settings = WebhookSettings(
        url=await receiver_url(aiohttp_server, receiver), attempts=3, backoff_max_s=0.01
    )
    async with aiohttp.ClientSession() as session:
        with pytest.raises(WebhookError, match="HTTP 400"):
            await deliver(session, settings, doc("s", "1", 0), WebhookStats())
        assert len(receiver.calls) == 1
        with pytest.raises(WebhookError, match="HTTP 500"):
            await deliver(session, settings, doc("s", "1", 0), WebhookStats())
    assert len(receiver.calls) == 4
    refused = WebhookSettings(url="http://127.0.0.1:9/hook", attempts=2, backoff_max_s=0.01)
    async with aiohttp.ClientSession() as session:
        with pytest.raises(WebhookError, match="unreachable"):
            await deliver(session, refused, doc("s", "1", 0), WebhookStats())


async def test_pending_updates_keep_only_the_newest_version_per_topic() -> None:
    pending = PendingUpdates()
    pending.offer(doc("s", "1", 0))
    pending.offer(doc("s", "2", 0))
    pending.offer(doc("s", "1", 3))
    pending.offer(doc("s", "1", 2))  # older than what waits: ignored
    assert len(pending) == 2
    assert [(d["topic_id"], d["version"]) for d in [await pending.take(), await pending.take()]] == [
        ("1", 3),
        ("2", 0),
    ]
    waiter = asyncio.create_task(pending.take())
    await asyncio.sleep(0)
    pending.offer(doc("s", "3", 1))
    assert (await asyncio.wait_for(waiter, 1))["topic_id"] == "3"


async def test_the_service_posts_updates_to_its_webhook(
    aiohttp_client: Client, aiohttp_server: Client
) -> None:
    receiver = Receiver([503])
    hook = WebhookSettings(
        url=await receiver_url(aiohttp_server, receiver), backoff_max_s=0.05, only_final=True
    )
    client, app = await make_client(aiohttp_client, webhook=hook)
    apply_document(app, doc("s", "1", 0))  # not final: not sent (only_final)
    apply_document(app, doc("s", "1", 1, final=True))
    while app[WEBHOOK].delivered < 1:
        await asyncio.sleep(0.01)
    assert [body["version"] for _, body in receiver.calls] == [1, 1]  # a 503, then delivered
    ready = await (await client.get("/readyz")).json()
    assert ready["webhook"] == {"delivered": 1, "failed": 0, "retries": 1, "last_error": None, "waiting": 0}
    assert PENDING in app


async def test_the_tail_client_follows_events_and_resumes_after_a_drop(aiohttp_server: Client) -> None:
    from launcher.cli_feeds import _sse_documents

    app = create_app(load_settings(), DocumentsSettings(), read_kafka=False)
    server = await aiohttp_server(app)
    apply_document(app, doc("s", "1", 0))
    documents = _sse_documents(str(server.make_url("/v1/streams/s/events")), {})
    assert (await asyncio.wait_for(anext(documents), 5))["version"] == 0  # the snapshot
    app[HUB].close_all()  # the server drops the connection ...
    apply_document(app, doc("s", "1", 1))  # ... and an update happens meanwhile
    resumed = await asyncio.wait_for(anext(documents), 5)  # reconnects with Last-Event-ID: 1
    assert resumed["version"] == 1
    await documents.aclose()
