"""The document service's typed app keys and the reader's state record, apart from the app
factory so that the routes and the service both import them without importing each other."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from aiohttp import web

from documents.hub import Hub
from documents.view import DocumentStore
from documents.webhook import PendingUpdates, WebhookStats
from olp.service_settings import DocumentsSettings
from olp.settings import Settings


@dataclass
class ReaderState:
    ready: bool = False
    """The reader has caught up with the topic once (`olp.kafka.caught_up`)."""
    records: int = 0
    undecodable: int = 0
    started_ms: int = field(default_factory=lambda: int(time.time() * 1000))


SETTINGS = web.AppKey("settings", Settings)
DOCUMENTS = web.AppKey("documents", DocumentsSettings)
STORE = web.AppKey("store", DocumentStore)
HUB = web.AppKey("hub", Hub)
READER = web.AppKey("reader", ReaderState)
PENDING = web.AppKey("pending", PendingUpdates)
WEBHOOK = web.AppKey("webhook", WebhookStats)
