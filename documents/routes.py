"""HTTP read API of the document service. Documents are TopicDocument records
(`schemas/topic_document.avsc`) as JSON, the newest version of each topic.

    GET /healthz, /readyz                                 liveness / readiness (view caught up)
    GET /v1/streams                                       one summary per stream
    GET /v1/streams/{stream_id}                           the stream's topics with their aspects,
                                                          in transcript order
    GET /v1/streams/{stream_id}/topics/{topic_id}         one topic's current document
    GET /v1/streams/{stream_id}/topics/{topic_id}/history its versions, oldest first
    GET /v1/streams/{stream_id}/events                    server-sent events: this stream's updates
    GET /v1/events                                        server-sent events: every stream's updates

An SSE connection first gets the current documents (`?snapshot=false` skips them), then each
update as it happens: `id: <seq>`, `event: document`, `data: <TopicDocument JSON>`. A client
reconnecting with `Last-Event-ID` gets what it missed when this process still remembers it, else
a fresh snapshot. Keep-alive comments every `sse_keepalive_s`. A client too slow to keep up is
disconnected (and reconnects), never buffered for without bound.

Reads (`/v1/*`, SSE included) need `Authorization: Bearer <documents.read_token>` when a token
is set; the service refuses to start on a non-loopback address without one unless `open_reads`
is set. Health endpoints stay open and show counts and the kind of the webhook's last failure, never a
secret or a request.
Errors are JSON `{"error": message}`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from documents.keys import DOCUMENTS, HUB, PENDING, READER, STORE, WEBHOOK
from documents.sse import frame
from documents.view import Update
from olp.http import check_bearer, error_middleware, json_error

routes = web.RouteTableDef()
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def _read_token(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The read API (/v1) is open unless a read token is configured."""
    if request.path.startswith("/v1/"):
        check_bearer(request, request.app[DOCUMENTS].read_token, disabled=None)
    return await handler(request)


def middlewares(secrets: list[str]) -> list[Any]:
    """Errors as JSON with `secrets` masked in every text, then the read-token check."""
    return [error_middleware(secrets=secrets), _read_token]


def _not_found(what: str) -> web.HTTPException:
    return json_error(web.HTTPNotFound, f"no {what}")


@routes.get("/healthz")
async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


@routes.get("/readyz")
async def readyz(request: web.Request) -> web.Response:
    app = request.app
    reader, store = app[READER], app[STORE]
    body = {
        "ready": reader.ready,
        "records": reader.records,
        "undecodable": reader.undecodable,
        "updates": store.seq,
        "subscribers": len(app[HUB].subscriptions),
        "webhook": app[WEBHOOK].view() | {"waiting": len(app[PENDING])} if PENDING in app else None,
    }
    return web.json_response(body, status=200 if reader.ready else 503)


@routes.get("/v1/streams")
async def list_streams(request: web.Request) -> web.Response:
    return web.json_response({"streams": request.app[STORE].streams()})


@routes.get("/v1/streams/{stream_id}")
async def get_stream(request: web.Request) -> web.Response:
    stream_id = request.match_info["stream_id"]
    store = request.app[STORE]
    documents = store.documents(stream_id)
    if documents is None:
        raise _not_found(f"stream {stream_id!r}")
    return web.json_response({**store.summary(stream_id), "documents": documents})


@routes.get("/v1/streams/{stream_id}/topics/{topic_id}")
async def get_topic(request: web.Request) -> web.Response:
    stream_id, topic_id = request.match_info["stream_id"], request.match_info["topic_id"]
    document = request.app[STORE].document(stream_id, topic_id)
    if document is None:
        raise _not_found(f"topic {topic_id!r} in stream {stream_id!r}")
    return web.json_response(document)


@routes.get("/v1/streams/{stream_id}/topics/{topic_id}/history")
async def get_history(request: web.Request) -> web.Response:
    stream_id, topic_id = request.match_info["stream_id"], request.match_info["topic_id"]
    versions = request.app[STORE].history(stream_id, topic_id)
    if versions is None:
        raise _not_found(f"topic {topic_id!r} in stream {stream_id!r}")
    return web.json_response({"stream_id": stream_id, "topic_id": topic_id, "versions": versions})


@routes.get("/v1/streams/{stream_id}/events")
async def stream_events(request: web.Request) -> web.StreamResponse:
    return await _events(request, request.match_info["stream_id"])


@routes.get("/v1/events")
async def all_events(request: web.Request) -> web.StreamResponse:
    return await _events(request, None)


def _backlog(request: web.Request, stream_id: str | None) -> list[Update]:
    store = request.app[STORE]
    last = request.headers.get("Last-Event-ID", "")
    if last.isdigit():
        missed = store.updates_after(int(last), stream_id)
        if missed is not None:
            return missed
    if request.query.get("snapshot", "true").lower() in ("false", "0", "no"):
        return []
    return store.snapshot(stream_id)


async def _events(request: web.Request, stream_id: str | None) -> web.StreamResponse:
    app = request.app
    settings = app[DOCUMENTS]
    # Subscribe and take the backlog with no await in between: nothing is missed or doubled.
    subscription = app[HUB].subscribe(stream_id, settings.sse_queue)
    backlog = _backlog(request, stream_id)
    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    )
    try:
        await response.prepare(request)
        await response.write(b"retry: 2000\n\n")
        for missed in backlog:
            await response.write(frame(missed.seq, "document", missed.document))
        while True:
            try:
                async with asyncio.timeout(settings.sse_keepalive_s):
                    update = await subscription.queue.get()
            except TimeoutError:
                await response.write(b": keep-alive\n\n")
                continue
            if update is None:
                break
            await response.write(frame(update.seq, "document", update.document))
    except ConnectionResetError:
        pass  # the client went away
    finally:
        app[HUB].unsubscribe(subscription)
    return response
