"""Settings of the feed services: the ingest service and the document read API.

Frozen pydantic models meant to be nested into `olp.settings.Settings` as `ingest` and
`documents` (environment `OLP_INGEST__*` / `OLP_DOCUMENTS__*`, or `ingest:` / `documents:` in the
config file), so each process still builds one settings object (STYLE 4). Until they are nested,
`ingest_settings(settings)` / `documents_settings(settings)` return the defaults.

Per-feed *pipeline* configuration (domain, language, chunk size, model pool, budget) stays in
`Settings.feeds`; what is only about getting records in (rate, request size) lives here, keyed
by the same feed names, with `default` as the fallback.
"""

from __future__ import annotations

import base64
import ipaddress
import re
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

STREAM_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}")
"""What a stream id may look like: it is a Kafka key, part of a document key and a URL segment."""


def masked_url(url: str) -> str:
    """`url` with its userinfo and every query value replaced by `***`: the scheme, host, path
    and query *names* stay, so an operator can still tell sources apart."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"***@{host}" if parts.username or parts.password else host
    if parts.port:
        netloc += f":{parts.port}"
    query = urlencode([(name, "***") for name, _ in parse_qsl(parts.query, keep_blank_values=True)])
    return urlunsplit((parts.scheme, netloc, parts.path, query.replace("%2A", "*"), ""))


def is_loopback_host(host: str) -> bool:
    """Whether a listen address reaches only this machine (`localhost`, 127.0.0.0/8, ::1)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_stream_id(value: str) -> str:
    """`value` if it is a valid stream id, else ValueError saying what is allowed."""
    if not STREAM_ID.fullmatch(value):
        raise ValueError(
            f"stream id {value[:60]!r} must be 1-128 letters, digits or '._:@-', starting with a "
            "letter or digit"
        )
    return value


class FeedLimits(BaseModel):
    """How much one feed may send to the ingest service."""

    model_config = ConfigDict(frozen=True)

    rate_per_s: float = Field(default=50.0, gt=0, description="Sustained segments per second (token bucket).")
    burst: int = Field(default=500, ge=1, description="Segments accepted at once; also the largest batch.")
    max_request_bytes: int = Field(
        default=1_048_576, ge=1024, description="Largest HTTP body or WebSocket message, in bytes."
    )
    max_segment_chars: int = Field(
        default=4000, ge=1, description="Longest segment text (the Chunk Splitter dead-letters longer ones)."
    )
    max_streams: int = Field(
        default=1000,
        ge=1,
        description="Open streams (not ended, seen within `stream_idle_s`) one feed may have at once.",
    )
    max_segment_id_jump: int = Field(
        default=1_000_000,
        ge=1,
        description="Largest step of a stream's segment_id over the highest taken (from 0 for a new "
        "stream): a huge id would make the stream's later sentences look like re-sends.",
    )


class SenderSettings(BaseModel):
    """One sender of the ingest service: its token, the feeds it may write and its rate."""

    model_config = ConfigDict(frozen=True)

    token: SecretStr = Field(description="Bearer token of this sender (at least 16 characters).")
    feeds: tuple[str, ...] = Field(min_length=1, description="Feeds this token may write to.")
    rate_per_s: float = Field(default=50.0, gt=0, description="Sustained segments per second of this sender.")
    burst: int = Field(default=500, ge=1, description="Segments this sender may send at once.")

    @field_validator("token")
    @classmethod
    def _long_enough(cls, value: SecretStr) -> SecretStr:
        if len(value.get_secret_value()) < 16:
            raise ValueError("a sender token needs at least 16 characters")
        return value


class NewsSource(BaseModel):
    """An RSS or Atom URL the ingest service polls; its articles become one stream of sentences."""

    model_config = ConfigDict(frozen=True)

    url: str = Field(description="http(s) URL of an RSS 2.0, RSS 1.0 or Atom feed.")
    feed: str = Field(default="news", description="Feed name in `Settings.feeds` (domain, language, ...).")
    stream_id: str = Field(description="Stream the articles' sentences are appended to.")
    interval_s: float = Field(default=60.0, ge=0.1, description="Seconds between polls.")
    timeout_s: float = Field(default=20.0, gt=0)
    max_bytes: int = Field(default=5_000_000, ge=1024, description="Larger feed documents are refused.")

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not re.match(r"https?://", value):
            raise ValueError("news source url must start with http:// or https://")
        return value

    allow_private_redirects: bool = Field(
        default=False,
        description="Follow redirects to private, loopback or link-local addresses (off: refused).",
    )
    max_redirects: int = Field(default=3, ge=0, le=10, description="Redirect hops followed per poll.")

    @property
    def public_url(self) -> str:
        """The URL with userinfo and query values masked (they may hold keys): for logs and the API."""
        return masked_url(self.url)

    @field_validator("stream_id")
    @classmethod
    def _stream_id(cls, value: str) -> str:
        return check_stream_id(value)


class IngestSettings(BaseModel):
    """The ingest service: HTTP JSON lines, WebSocket, and news pollers -> olp.transcripts."""

    model_config = ConfigDict(frozen=True)

    host: str = "127.0.0.1"
    port: int = Field(default=8643, ge=0, le=65535)
    senders: dict[str, SenderSettings] = Field(
        default_factory=dict,
        description="Senders by name: each token writes only to its feeds (none: ingest refused). "
        "The admin token (OLP_API_TOKEN) is never accepted here.",
    )
    limits: dict[str, FeedLimits] = Field(
        default_factory=lambda: {"default": FeedLimits()},
        description="Per feed name; feeds without an entry use `default`.",
    )
    max_pending_segments: int = Field(
        default=10_000,
        ge=1,
        description="Segments handed to Kafka but not yet acknowledged; beyond it senders get 429.",
    )
    dedupe_streams: int = Field(
        default=10_000,
        ge=0,
        description="Streams whose highest accepted id is remembered to answer re-sends.",
    )
    tracked_streams: int = Field(
        default=100_000,
        ge=1,
        description="Streams whose feed binding and highest id are remembered (least recently used "
        "forgotten first).",
    )
    stream_idle_s: float = Field(
        default=3600.0,
        gt=0,
        description="A stream not written for this long no longer counts as open (`max_streams`).",
    )
    news: tuple[NewsSource, ...] = Field(default=(), description="RSS/Atom sources to poll.")

    @field_validator("senders")
    @classmethod
    def _distinct_tokens(cls, value: dict[str, SenderSettings]) -> dict[str, SenderSettings]:
        tokens = [sender.token.get_secret_value() for sender in value.values()]
        if len(set(tokens)) != len(tokens):
            raise ValueError("two ingest senders share a token: give each sender its own")
        return value

    def limits_for(self, feed: str) -> FeedLimits:
        return self.limits.get(feed) or self.limits.get("default") or FeedLimits()


class WebhookSettings(BaseModel):
    """Where to POST document updates, and how hard to try."""

    model_config = ConfigDict(frozen=True)

    url: str = Field(description="Receiver of `POST <url>` with one TopicDocument as JSON.")
    token: SecretStr | None = Field(default=None, description="Sent as `Authorization: Bearer <token>`.")
    secret: SecretStr | None = Field(
        default=None,
        description="`whsec_<base64 key>`: sign each delivery per Standard Webhooks "
        "(`webhook-id`, `webhook-timestamp`, `webhook-signature`).",
    )
    attempts: int = Field(
        default=5, ge=1, le=50, description="Tries per update before it is dropped (logged)."
    )
    timeout_s: float = Field(default=10.0, gt=0)
    backoff_max_s: float = Field(default=30.0, gt=0, description="Longest wait between two tries.")
    only_final: bool = Field(default=False, description="Send only documents whose topic is final.")

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not re.match(r"https?://", value):
            raise ValueError("webhook url must start with http:// or https://")
        return value

    @field_validator("secret")
    @classmethod
    def _whsec(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            webhook_key(value)
        return value


def webhook_key(secret: SecretStr) -> bytes:
    """The HMAC key of a `whsec_<base64>` secret; ValueError when it is not one."""
    text = secret.get_secret_value()
    try:
        key = base64.b64decode(text.removeprefix("whsec_"), validate=True)
    except ValueError:
        key = b""
    if not text.startswith("whsec_") or len(key) < 16:
        raise ValueError("webhook secret must be 'whsec_' and the base64 of at least 16 random bytes")
    return key


class DocumentsSettings(BaseModel):
    """The document read API: a materialised view of olp.documents, SSE and an optional webhook."""

    model_config = ConfigDict(frozen=True)

    host: str = "127.0.0.1"
    port: int = Field(default=8644, ge=0, le=65535)
    read_token: SecretStr | None = Field(
        default=None,
        description="Bearer token of every read of transcript text (/v1/*, SSE); required unless "
        "the service listens on loopback or `open_reads` is set.",
    )
    open_reads: bool = Field(
        default=False,
        description="Serve reads without a token on a non-loopback address (a trusted network only).",
    )
    history_per_topic: int = Field(
        default=20, ge=1, description="Versions of each topic kept for its history."
    )
    event_log: int = Field(
        default=2000, ge=0, description="Recent updates kept so an SSE client can resume with Last-Event-ID."
    )
    sse_queue: int = Field(
        default=1000, ge=1, description="Updates buffered per SSE client; a slower client is disconnected."
    )
    sse_keepalive_s: float = Field(default=15.0, gt=0)
    webhook: WebhookSettings | None = None


def _nested(settings: Any, name: str, model: type[BaseModel]) -> Any:
    value = getattr(settings, name, None)
    return value if isinstance(value, model) else model()


def ingest_settings(settings: Any) -> IngestSettings:
    """`settings.ingest` once nested into Settings; the defaults before."""
    result: IngestSettings = _nested(settings, "ingest", IngestSettings)
    return result


def documents_settings(settings: Any) -> DocumentsSettings:
    """`settings.documents` once nested into Settings; the defaults before."""
    result: DocumentsSettings = _nested(settings, "documents", DocumentsSettings)
    return result
