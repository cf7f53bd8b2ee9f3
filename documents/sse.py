"""Server-sent events (the `text/event-stream` format of the HTML standard), both ways: framing
document updates for the read API, and reading such a stream (the `olp tail --url` client, tests).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(frozen=True, slots=True)
class Event:
    id: str | None
    event: str
    data: str

    def json(self) -> Any:
        return json.loads(self.data)


def frame(event_id: int | str | None, event: str, data: Any) -> bytes:
    """One event; `data` is sent as one line of JSON."""
    head = f"id: {event_id}\n" if event_id is not None else ""
    body = json.dumps(data, separators=(",", ":"), ensure_ascii=False)
    return f"{head}event: {event}\ndata: {body}\n\n".encode()


class _LineReader(Protocol):
    async def readline(self) -> bytes: ...


async def read_events(content: _LineReader) -> AsyncIterator[Event]:
    """Events of a stream (e.g. `aiohttp.ClientResponse.content`) until it ends; comments
    (keep-alives) are skipped."""
    event_id: str | None = None
    event_type = "message"
    data: list[str] = []
    while True:
        raw = await content.readline()
        if not raw:
            return
        line = raw.decode("utf-8").rstrip("\r\n")
        if not line:
            if data:
                yield Event(event_id, event_type, "\n".join(data))
            event_type, data = "message", []
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "id":
            event_id = value
        elif name == "event":
            event_type = value
        elif name == "data":
            data.append(value)
