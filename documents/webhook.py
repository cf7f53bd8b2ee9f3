"""Webhook sink: POSTs document updates to a configured URL, with retries.

One update per request, the TopicDocument as JSON, with headers `Idempotency-Key:
<stream_id>/<topic_id>/<version>` and `X-OLP-Event: document` (and `Authorization: Bearer` when a
token is configured). Receivers should keep the highest version per topic, as the read API does.

Waiting updates are *coalesced*: only the newest version of each topic waits, so the buffer is
bounded by the number of topics and a slow receiver gets fewer, newer updates rather than an
ever longer queue. Connection errors, timeouts, 408, 429 and 5xx are retried with exponential
backoff (at least the receiver's Retry-After), `attempts` times; other 4xx are not retried. An
update that still fails is logged with its key and counted, and the sink goes on.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt

from olp.errors import UnavailableError
from olp.service_settings import WebhookSettings

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


def _retry_after(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


async def post_once(
    session: aiohttp.ClientSession, settings: WebhookSettings, document: Mapping[str, Any]
) -> None:
    headers = {
        "Content-Type": "application/json",
        "Idempotency-Key": f"{document['stream_id']}/{document['topic_id']}/{document['version']}",
        "X-OLP-Event": "document",
    }
    if settings.token is not None:
        headers["Authorization"] = f"Bearer {settings.token.get_secret_value()}"
    timeout = aiohttp.ClientTimeout(total=settings.timeout_s)
    try:
        async with session.post(
            settings.url, data=json.dumps(document), headers=headers, timeout=timeout
        ) as resp:
            if 200 <= resp.status < 300:
                return
            retryable = resp.status in (408, 429) or resp.status >= 500
            raise WebhookError(
                f"receiver answered HTTP {resp.status}",
                retryable=retryable,
                retry_after_s=_retry_after(resp.headers.get("Retry-After")),
            )
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise WebhookError(f"receiver unreachable: {exc!r}", retryable=True) from exc


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
