"""The ingest service's typed app keys, apart from the app factory so that the routes and the
service both import them without importing each other."""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web

from ingest.limits import AcceptedIds, RateLimits, StreamRegistry
from ingest.news_poller import PollerStatus
from ingest.sink import SegmentSink
from olp.service_settings import IngestSettings
from olp.settings import Settings

SETTINGS = web.AppKey("settings", Settings)
INGEST = web.AppKey("ingest", IngestSettings)
SINK = web.AppKey("sink", SegmentSink)
LIMITS = web.AppKey("limits", RateLimits)
ACCEPTED = web.AppKey("accepted", AcceptedIds)
STREAMS = web.AppKey("streams", StreamRegistry)
NEWS = web.AppKey("news", dict[str, PollerStatus])
"""Status per news source, keyed by its URL (never shown: the API shows the masked URL)."""
CLOCK: web.AppKey[Callable[[], float]] = web.AppKey("clock")
SOCKETS: web.AppKey[set[web.WebSocketResponse]] = web.AppKey("sockets")
"""Open WebSockets (each handler removes its own), closed on shutdown."""
