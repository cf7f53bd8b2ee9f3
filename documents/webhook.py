"""Webhook sink: POSTs document updates to a configured URL, with retries.

One update per request, the TopicDocument as JSON, with headers `Idempotency-Key:
<stream_id>/<topic_id>/<version>` and `X-OLP-Event: document` (and `Authorization: Bearer` when a
token is configured). Receivers should keep the highest version per topic, as the read API does.

With a `secret` (`whsec_<base64>`) each delivery is signed per Standard Webhooks
(https://www.standardwebhooks.com): `webhook-id` (the idempotency key, the same on every try),
`webhook-timestamp` (Unix seconds of this try) and `webhook-signature: v1,<base64 HMAC-SHA256 of
"{id}.{timestamp}.{body}">`, so any Standard Webhooks library verifies it.

Redirects are not followed: a 3xx answer is a failed delivery (not retried), so a receiver cannot
point the sink at another address. Error texts name the kind of failure, never the request (its
headers hold the token).

Waiting updates are *coalesced*: only the newest version of each topic waits, so the buffer is
bounded by the number of topics and a slow receiver gets fewer, newer updates rather than an
ever longer queue. Connection errors, timeouts, 408, 429 and 5xx are retried with exponential
backoff (at least the receiver's Retry-After), `attempts` times; other 4xx are not retried. An
update that still fails is logged with its key and counted, and the sink goes on.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import logging
import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt

from olp.errors import UnavailableError
from olp.service_settings import WebhookSettings, webhook_key

log = logging.getLogger("olp.documents.webhook")


class WebhookError(UnavailableError):
    """The receiver did not take an update."""

    def __init__(self, message: str, *, retryable: bool, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.retry_after_s = retry_after_s


class PendingUpdates:
    """Newest undelivered version per (stream, topic), oldest waiting first."""

    def __init__(self) -> None:
        self._items: OrderedDict[tuple[str, str], dict[str, Any]] = OrderedDict()
        self._ready = asyncio.Event()

    def __len__(self) -> int:
        return len(self._items)

    def offer(self, document: Mapping[str, Any]) -> None:
        key = (str(document["stream_id"]), str(document["topic_id"]))
        held = self._items.get(key)
        if held is None or int(held["version"]) <= int(document["version"]):
            self._items[key] = dict(document)  # an existing key keeps its place in line
        self._ready.set()

    async def take(self) -> dict[str, Any]:
        while not self._items:
            self._ready.clear()
            await self._ready.wait()
        return self._items.popitem(last=False)[1]


@dataclass
class WebhookStats:
    delivered: int = 0
    failed: int = 0
    retries: int = 0
    last_error: str | None = None
    """The kind of the last failure (`failure_text`), never the request."""

    def view(self) -> dict[str, Any]:
        return {
            "delivered": self.delivered,
            "failed": self.failed,
            "retries": self.retries,
            "last_error": self.last_error,
        }


def _retry_after(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def signature(key: bytes, msg_id: str, timestamp: int, body: str) -> str:
    """The Standard Webhooks `webhook-signature` value of one delivery."""
    digest = hmac.new(key, f"{msg_id}.{timestamp}.{body}".encode(), hashlib.sha256).digest()
    return f"v1,{base64.b64encode(digest).decode()}"


def delivery_headers(
    settings: WebhookSettings, document: Mapping[str, Any], body: str, now_s: int
) -> dict[str, str]:
    msg_id = f"{document['stream_id']}/{document['topic_id']}/{document['version']}"
    headers = {"Content-Type": "application/json", "Idempotency-Key": msg_id, "X-OLP-Event": "document"}
    if settings.token is not None:
        headers["Authorization"] = f"Bearer {settings.token.get_secret_value()}"
    if settings.secret is not None:
        headers["webhook-id"] = msg_id
        headers["webhook-timestamp"] = str(now_s)
        headers["webhook-signature"] = signature(webhook_key(settings.secret), msg_id, now_s, body)
    return headers


def failure_text(exc: BaseException) -> str:
    """What a failed try is called in status and logs: the kind only (an aiohttp error's repr
    carries the request, headers and token included)."""
    if isinstance(exc, TimeoutError | asyncio.TimeoutError):
        return "timed out"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return f"cannot connect ({type(exc).__name__})"
    return type(exc).__name__


async def post_once(
    session: aiohttp.ClientSession, settings: WebhookSettings, document: Mapping[str, Any]
) -> None:
    body = json.dumps(document)
    headers = delivery_headers(settings, document, body, int(time.time()))
    timeout = aiohttp.ClientTimeout(total=settings.timeout_s)
    try:
        async with session.post(
            settings.url, data=body, headers=headers, timeout=timeout, allow_redirects=False
        ) as resp:
            if 200 <= resp.status < 300:
                return
            if 300 <= resp.status < 400:
                raise WebhookError(
                    f"receiver answered HTTP {resp.status} (redirects are not followed)", retryable=False
                )
            retryable = resp.status in (408, 429) or resp.status >= 500
            raise WebhookError(
                f"receiver answered HTTP {resp.status}",
                retryable=retryable,
                retry_after_s=_retry_after(resp.headers.get("Retry-After")),
            )
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise WebhookError(f"receiver unreachable: {failure_text(exc)}", retryable=True) from None


def _wait(settings: WebhookSettings) -> Any:
    def wait(state: RetryCallState) -> float:
        backoff = min(settings.backoff_max_s, 0.2 * 2 ** (state.attempt_number - 1))
        exc = state.outcome.exception() if state.outcome else None
        asked = exc.retry_after_s if isinstance(exc, WebhookError) and exc.retry_after_s else 0.0
        return float(min(settings.backoff_max_s, max(backoff, asked)))

    return wait


async def deliver(
    session: aiohttp.ClientSession,
    settings: WebhookSettings,
    document: Mapping[str, Any],
    stats: WebhookStats,
) -> None:
    """POST one update, retrying as the module docstring says; WebhookError when it gave up."""
    retrying = AsyncRetrying(
        stop=stop_after_attempt(settings.attempts),
        wait=_wait(settings),
        retry=retry_if_exception(lambda e: isinstance(e, WebhookError) and e.retryable),
        reraise=True,
    )
    async for attempt in retrying:
        with attempt:
            if attempt.retry_state.attempt_number > 1:
                stats.retries += 1
            await post_once(session, settings, document)


async def run_webhook(settings: WebhookSettings, pending: PendingUpdates, stats: WebhookStats) -> None:
    """Deliver updates one at a time until cancelled."""
    async with aiohttp.ClientSession(headers={"User-Agent": "olp-documents"}) as session:
        while True:
            document = await pending.take()
            try:
                await deliver(session, settings, document, stats)
                stats.delivered += 1
            except WebhookError as exc:
                stats.failed += 1
                stats.last_error = str(exc)
                log.error(
                    "webhook gave up on %s/%s version %s: %s",
                    document["stream_id"],
                    document["topic_id"],
                    document["version"],
                    exc,
                )
