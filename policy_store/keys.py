"""Typed keys of the policy store's aiohttp app (STYLE 8), apart from the modules that fill and
read them, so routes, loops and the app factory import each other's data without a cycle."""

from __future__ import annotations

from aiohttp import web

from olp.settings import Settings
from olp.topics import TopicNames
from policy_store.bus import PolicyBus
from policy_store.state import PolicyState
from schemas.codec import Codec

SETTINGS = web.AppKey("settings", Settings)
TOPICS = web.AppKey("topics", TopicNames)
CODEC = web.AppKey("codec", Codec)
STATE = web.AppKey("state", PolicyState)
"""Set when the app starts (the snapshot is read in `cleanup_ctx`), not when it is built."""
BUS = web.AppKey("bus", PolicyBus)
