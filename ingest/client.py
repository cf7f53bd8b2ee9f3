"""A client of the ingest service's HTTP API, for `olp ingest --url` and for programs
that would rather not write Kafka code: posts segments as JSON lines in batches, waits out
429/503 answers for as long as their Retry-After says, and re-sends (idempotent by segment id).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp

from olp.errors import OlpError, UnavailableError

SEGMENT_KEYS = ("stream_id", "segment_id", "text", "ts_ms", "speaker", "end_of_stream")
"""What a sender sends; domain, language and feed are the feed's (ingest/segments.py)."""


def json_lines(segments: Iterable[Mapping[str, Any]]) -> bytes:
    """Segments as a POST body."""
    return "".join(
        json.dumps({k: s[k] for k in SEGMENT_KEYS if s.get(k) is not None}, ensure_ascii=False) + "\n"
        for s in segments
    ).encode()


@dataclass
class IngestResult:
    accepted: int = 0
    duplicates: int = 0
    retries: int = 0


@dataclass
class IngestClient:
    """POSTs batches to `<base_url>/v1/feeds/<feed>/segments`."""

    base_url: str
    feed: str
    token: str
    max_wait_s: float = 300.0
    """Give up on one batch after waiting this long in total for 429/503 answers."""

    async def post(
        self, session: aiohttp.ClientSession, batch: Sequence[Mapping[str, Any]], result: IngestResult
    ) -> None:
        url = f"{self.base_url.rstrip('/')}/v1/feeds/{self.feed}/segments"
        headers = {"Authorization": f"Bearer {self.token}", "Content-Type": "application/x-ndjson"}
        waited = 0.0
        while True:
            try:
                async with session.post(url, data=json_lines(batch), headers=headers) as resp:
                    body = await resp.json(content_type=None)
                    if resp.status == 200:
                        result.accepted += int(body["accepted"])
                        result.duplicates += int(body["duplicates"])
                        return
                    if resp.status not in (429, 503):
                        raise OlpError(f"ingest refused the batch (HTTP {resp.status}): {body.get('error')}")
                    delay = float(resp.headers.get("Retry-After", "1"))
            except (aiohttp.ClientConnectionError, TimeoutError) as exc:
                delay = 1.0
                if waited + delay > self.max_wait_s:
                    raise UnavailableError(f"ingest service at {self.base_url} unreachable: {exc}") from exc
            if waited + delay > self.max_wait_s:
                raise UnavailableError(f"ingest service kept answering 429/503 for {waited:.0f}s")
            result.retries += 1
            waited += delay
            await asyncio.sleep(delay)


async def send_all(
    client: IngestClient,
    segments: Iterable[Mapping[str, Any]],
    batch_size: int = 200,
    on_sent: Callable[[int], None] | None = None,
) -> IngestResult:
    """Send every segment in batches of at most `batch_size`, in order, each after the previous
    one was answered; `on_sent(n)` after each. (A paced iterable may block between segments:
    this is a command-line client.)"""
    result = IngestResult()
    async with aiohttp.ClientSession() as session:
        batch: list[Mapping[str, Any]] = []
        for segment in segments:
            batch.append(segment)
            if len(batch) >= batch_size:
                await client.post(session, batch, result)
                if on_sent:
                    on_sent(len(batch))
                batch = []
        if batch:
            await client.post(session, batch, result)
            if on_sent:
                on_sent(len(batch))
    return result
