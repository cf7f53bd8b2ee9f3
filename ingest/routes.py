"""HTTP and WebSocket API of the ingest service. Writes `olp.transcripts` through the
app's sink; reads nothing.

    GET  /healthz, /readyz                   liveness / readiness (producer running)
    GET  /v1/feeds                           every declared feed: domain, lang, chunk size, aspects,
                                             model pool, budget, ingest limits, news sources
    GET  /v1/feeds/{feed}                    one feed
    POST /v1/feeds/{feed}/segments           JSON lines of segments (ingest/segments.py)  (token)
                                             ?stream_id= for lines without one
    GET  /v1/feeds/{feed}/ws                 WebSocket: each text message is a POST body   (token)
                                             ?stream_id= as above; one JSON answer per message

A token is a sender's (`ingest.senders`) and writes only to that sender's feeds; the admin token
is never accepted. A stream belongs to the feed it was first written on.

Answers: 200 `{"accepted", "duplicates", "last_segment_id": {stream: id}}` once Kafka has the
segments; 400 malformed (names the segment or line), a stream of another feed, or a segment id
jumping past the feed's `max_segment_id_jump`; 401 missing/wrong token; 403 a token not allowed
this feed, or no senders configured (refused, never open); 404 undeclared feed; 413 body, message
or segment text over the feed's limit, or more segments than a burst; 429 + Retry-After over the
feed's or the sender's rate, over the feed's open streams, or while too many segments wait for
Kafka; 503 + Retry-After when Kafka does not take them. Errors are
JSON `{"error": message}`. On the WebSocket an answer is `{"ok": true, ...}` or
`{"ok": false, "status", "error", "retry_after_s"}`; the socket stays open; a message over the
size limit closes it with 1009. A message or request is taken whole or not at all, and a
re-send is idempotent, so "on any error, send the same again later" is always right.

Send a stream's batches in order, each after the previous one was answered (a WebSocket does
that by itself): the Chunk Splitter ignores ids at or below the highest it has taken.
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import WSMsgType, web

from ingest.keys import ACCEPTED, CLOCK, INGEST, LIMITS, NEWS, SETTINGS, SINK, SOCKETS, STREAMS
from ingest.limits import RateLimited, check_backpressure
from ingest.segments import TooLargeError, parse_body, to_segments
from olp.errors import OlpError, UnavailableError
from olp.http import error_middleware as http_errors
from olp.http import json_error

routes = web.RouteTableDef()
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def classify(exc: OlpError) -> tuple[int, float | None]:
    """HTTP status and retry delay (seconds) for a domain error."""
    if isinstance(exc, RateLimited):
        return 429, exc.retry_after_s
    if isinstance(exc, TooLargeError):
        return 413, None
    if isinstance(exc, UnavailableError):
        return 503, 1.0
    return 400, None


def _require_sender(request: web.Request, feed_name: str) -> str:
    """The name of the sender whose token the request carries, if it may write to `feed_name`."""
    senders = request.app[INGEST].senders
    if not senders:
        raise json_error(
            web.HTTPForbidden, "ingest is disabled: no ingest senders are configured (OLP_INGEST__SENDERS)"
        )
    given = request.headers.get("Authorization", "").encode()
    matched = None
    for name, sender in senders.items():  # every token compared, in constant time each
        if hmac.compare_digest(given, f"Bearer {sender.token.get_secret_value()}".encode()):
            matched = name
    if matched is None:
        raise json_error(
            web.HTTPUnauthorized, "missing or wrong bearer token", **{"WWW-Authenticate": "Bearer"}
        )
    if feed_name not in senders[matched].feeds:
        raise json_error(web.HTTPForbidden, f"this token may not write to feed {feed_name!r}")
    return matched


def error_middleware(secrets: list[str]) -> Any:
    """Errors as JSON with the status `classify` gives, `secrets` masked in every text."""
    return http_errors(classify, secrets)


def _feed_name(request: web.Request) -> str:
    name = request.match_info["feed"]
    feeds = request.app[SETTINGS].feeds
    if name not in feeds:
        raise json_error(
            web.HTTPNotFound, f"unknown feed {name!r}; declared feeds: {', '.join(sorted(feeds))}"
        )
    return name


def feed_view(app: web.Application, name: str) -> dict[str, Any]:
    """A feed's configuration as the API shows it (no secrets)."""
    feed, ingest = app[SETTINGS].feeds[name], app[INGEST]
    return {
        "name": name,
        "domain": feed.domain,
        "lang": feed.lang,
        "chunk_size": feed.chunk_size,
        "aspects": list(feed.aspect_names()),
        "models": list(feed.models) if feed.models is not None else None,
        "budget_usd_per_hour": feed.budget_usd_per_hour,
        "llm_seconds_per_minute": feed.llm_seconds_per_minute,
        "limits": ingest.limits_for(name).model_dump(),
        "news": [
            {
                "url": source.public_url,
                "stream_id": source.stream_id,
                "interval_s": source.interval_s,
                "status": app[NEWS][source.url].view() if source.url in app[NEWS] else None,
            }
            for source in ingest.news
            if source.feed == name
        ],
    }


async def ingest_body(
    app: web.Application, feed_name: str, sender: str, body: bytes, stream_id: str | None
) -> dict[str, Any]:
    """Validate, rate-limit, de-duplicate and deliver one request or message (taken whole)."""
    settings, ingest = app[SETTINGS], app[INGEST]
    limits = ingest.limits_for(feed_name)
    segments = to_segments(
        parse_body(body),
        feed_name=feed_name,
        feed=settings.feeds[feed_name],
        limits=limits,
        default_stream=stream_id,
        now_ms=int(time.time() * 1000),
    )
    sink, now = app[SINK], app[CLOCK]()
    check_backpressure(sink.pending, len(segments), ingest.max_pending_segments)
    app[STREAMS].check(feed_name, segments, limits, now, ingest.stream_idle_s)
    if segments:
        allowed = ingest.senders[sender]
        app[LIMITS].check(f"sender {sender!r}", len(segments), allowed.rate_per_s, allowed.burst, now)
        app[LIMITS].check(f"feed {feed_name!r}", len(segments), limits.rate_per_s, limits.burst, now)
    app[STREAMS].record(feed_name, segments, now)
    fresh, duplicates = app[ACCEPTED].fresh(segments)
    if fresh:
        await sink.send(fresh)
        app[ACCEPTED].record(fresh)
    last: dict[str, int] = {}
    for segment in segments:
        last[segment["stream_id"]] = max(last.get(segment["stream_id"], -1), int(segment["segment_id"]))
    return {"feed": feed_name, "accepted": len(fresh), "duplicates": duplicates, "last_segment_id": last}


async def _read_limited(request: web.Request, limit: int) -> bytes:
    if request.content_length is not None and request.content_length > limit:
        raise TooLargeError(f"body of {request.content_length} bytes exceeds the feed's limit of {limit}")
    body = bytearray()
    async for chunk in request.content.iter_chunked(65536):
        body.extend(chunk)
        if len(body) > limit:
            raise TooLargeError(f"body exceeds the feed's limit of {limit} bytes")
    return bytes(body)


# --- routes ---------------------------------------------------------------------------------


@routes.get("/healthz")
async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


@routes.get("/readyz")
async def readyz(request: web.Request) -> web.Response:
    ready = SINK in request.app
    pending = request.app[SINK].pending if ready else 0
    return web.json_response({"ready": ready, "pending": pending}, status=200 if ready else 503)


@routes.get("/v1/feeds")
async def list_feeds(request: web.Request) -> web.Response:
    return web.json_response(
        {"feeds": [feed_view(request.app, n) for n in sorted(request.app[SETTINGS].feeds)]}
    )


@routes.get("/v1/feeds/{feed}")
async def get_feed(request: web.Request) -> web.Response:
    return web.json_response(feed_view(request.app, _feed_name(request)))


@routes.post("/v1/feeds/{feed}/segments")
async def post_segments(request: web.Request) -> web.Response:
    feed_name = _feed_name(request)
    sender = _require_sender(request, feed_name)
    limit = request.app[INGEST].limits_for(feed_name).max_request_bytes
    body = await _read_limited(request, limit)
    result = await ingest_body(request.app, feed_name, sender, body, request.query.get("stream_id"))
    return web.json_response(result)


@routes.get("/v1/feeds/{feed}/ws")
async def segments_socket(request: web.Request) -> web.WebSocketResponse:
    feed_name = _feed_name(request)
    sender = _require_sender(request, feed_name)
    stream_id = request.query.get("stream_id")
    limit = request.app[INGEST].limits_for(feed_name).max_request_bytes
    ws = web.WebSocketResponse(max_msg_size=limit, heartbeat=30.0)
    await ws.prepare(request)
    request.app[SOCKETS].add(ws)
    try:
        async for msg in ws:
            if msg.type not in (WSMsgType.TEXT, WSMsgType.BINARY):
                break  # ERROR (e.g. a message over the limit: aiohttp closes with 1009)
            body = msg.data.encode() if msg.type == WSMsgType.TEXT else msg.data
            try:
                result = await ingest_body(request.app, feed_name, sender, body, stream_id)
            except OlpError as exc:
                status, retry = classify(exc)
                await ws.send_json({"ok": False, "status": status, "error": str(exc), "retry_after_s": retry})
            else:
                await ws.send_json({"ok": True, **result})
    finally:
        request.app[SOCKETS].discard(ws)
    return ws
