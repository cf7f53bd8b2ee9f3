"""Fan-out of view updates to the SSE clients: each subscription a bounded queue, and a reader
that never waits for a slow client."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from documents.view import Update


@dataclass(eq=False)
class Subscription:
    """One SSE client: its updates queue (None ends it) and its stream filter."""

    queue: asyncio.Queue[Update | None]
    stream_id: str | None
    dropped: bool = False


@dataclass
class Hub:
    """Fans updates out to subscriptions. Never blocks the reader: a subscription whose queue is
    full is ended (its client reconnects and resumes or gets a fresh snapshot)."""

    subscriptions: set[Subscription] = field(default_factory=set)

    def subscribe(self, stream_id: str | None, size: int) -> Subscription:
        subscription = Subscription(asyncio.Queue(size), stream_id)
        self.subscriptions.add(subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        self.subscriptions.discard(subscription)

    def publish(self, update: Update) -> None:
        for sub in list(self.subscriptions):
            if sub.stream_id is not None and sub.stream_id != update.stream_id:
                continue
            try:
                sub.queue.put_nowait(update)
            except asyncio.QueueFull:
                self._end(sub, dropped=True)

    def close_all(self) -> None:
        for sub in list(self.subscriptions):
            self._end(sub, dropped=False)

    def _end(self, sub: Subscription, dropped: bool) -> None:
        sub.dropped = dropped
        while not sub.queue.empty():
            sub.queue.get_nowait()
        sub.queue.put_nowait(None)
        self.subscriptions.discard(sub)
