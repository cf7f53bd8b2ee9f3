"""What the ingest service lets through: a token bucket per feed and per sender, the
back-pressure rule, which feed each stream belongs to (with a cap on open streams per feed and on
how far segment ids may jump), and the highest segment id accepted per stream. Pure: the caller
passes the time.

Back-pressure is answered, never buffered: a sender over its feed's rate, or arriving while too
many segments wait for Kafka, gets `RateLimited` (HTTP 429 with Retry-After) and sends again;
segment ids make that re-send idempotent.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ingest.segments import TooLargeError
from olp.errors import FeedError, OlpError
from olp.service_settings import FeedLimits


class RateLimited(OlpError):
    """Too much, too fast: try again after `retry_after_s` seconds."""

    def __init__(self, message: str, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s

    @property
    def retry_after_header(self) -> str:
        """Whole seconds, at least 1 (the Retry-After header takes an integer)."""
        return str(max(1, math.ceil(self.retry_after_s)))


@dataclass
class TokenBucket:
    """`rate` tokens per second up to `burst`; one token per segment."""

    rate: float
    burst: int
    tokens: float = -1.0
    updated: float = 0.0

    def take(self, n: int, now: float) -> float:
        """Take `n` tokens: 0.0 when granted, else the seconds until `n` tokens will be there
        (nothing is taken then)."""
        if self.tokens < 0:  # first use: a full bucket
            self.tokens, self.updated = float(self.burst), now
        self.tokens = min(float(self.burst), self.tokens + max(0.0, now - self.updated) * self.rate)
        self.updated = now
        if n <= self.tokens:
            self.tokens -= n
            return 0.0
        return (n - self.tokens) / self.rate


@dataclass
class RateLimits:
    """One bucket per limited party (`feed 'shop'`, `sender 'studio-a'`), created full on its
    first request."""

    buckets: dict[str, TokenBucket] = field(default_factory=dict)

    def check(self, party: str, n: int, rate: float, burst: int, now: float) -> None:
        """Raise RateLimited unless `party` may send `n` segments now; TooLargeError when `n`
        exceeds the burst (no wait would help)."""
        if n > burst:
            raise TooLargeError(
                f"{n} segments in one request exceed the burst of {party} ({burst}); send smaller batches"
            )
        bucket = self.buckets.setdefault(party, TokenBucket(rate, burst))
        wait = bucket.take(n, now)
        if wait > 0:
            raise RateLimited(f"{party} is over its rate of {rate:g} segments/s", wait)


@dataclass
class StreamEntry:
    feed: str
    highest: int
    ended: bool
    seen: float


class StreamRegistry:
    """Which feed each stream belongs to, its highest admitted segment id, whether it ended and
    when it was last written, for the last `capacity` streams used.

    A stream is bound to the feed it was first seen on, so a sender of feed B cannot write into
    feed A's stream; a segment id may not jump more than the feed's `max_segment_id_jump` past
    the stream's highest (from 0 for a new stream), so no single id can make the stream's later
    sentences look like re-sends; a feed may not hold more than `max_streams` open streams.
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._entries: OrderedDict[str, StreamEntry] = OrderedDict()

    def bind(self, stream_id: str, feed: str) -> None:
        """Reserve `stream_id` for `feed` (a news source's stream)."""
        self._entries[stream_id] = StreamEntry(feed, 0, False, float("inf"))

    def open_streams(self, feed: str, now: float, idle_s: float) -> int:
        return sum(
            1 for e in self._entries.values() if e.feed == feed and not e.ended and now - e.seen < idle_s
        )

    def check(
        self, feed: str, segments: Sequence[Mapping[str, Any]], limits: FeedLimits, now: float, idle_s: float
    ) -> None:
        """Raise FeedError (a stream of another feed, an id jumping too far) or RateLimited (too
        many open streams) unless `feed` may take `segments`; changes nothing."""
        running: dict[str, int] = {}
        for segment in segments:
            stream_id, segment_id = str(segment["stream_id"]), int(segment["segment_id"])
            entry = self._entries.get(stream_id)
            if entry is not None and entry.feed != feed:
                raise FeedError(f"stream {stream_id!r} belongs to another feed; use another stream id")
            base = running.get(stream_id, entry.highest if entry else 0)
            if segment_id - base > limits.max_segment_id_jump:
                raise FeedError(
                    f"segment_id {segment_id} of stream {stream_id!r} jumps {segment_id - base} past "
                    f"{base}; feed {feed!r} allows at most {limits.max_segment_id_jump}"
                )
            running[stream_id] = max(base, segment_id)
        new = [s for s in running if s not in self._entries]
        if new and self.open_streams(feed, now, idle_s) + len(new) > limits.max_streams:
            raise RateLimited(
                f"feed {feed!r} has {limits.max_streams} open streams, its limit; end a stream "
                "(end_of_stream) or wait until one is idle",
                idle_s,
            )

    def record(self, feed: str, segments: Iterable[Mapping[str, Any]], now: float) -> None:
        """Remember the admitted segments' streams (call after `check` passed)."""
        for segment in segments:
            stream_id = str(segment["stream_id"])
            entry = self._entries.get(stream_id) or StreamEntry(feed, 0, False, now)
            entry.highest = max(entry.highest, int(segment["segment_id"]))
            entry.ended = entry.ended or bool(segment.get("end_of_stream"))
            entry.seen = max(entry.seen, now)
            self._entries[stream_id] = entry
            self._entries.move_to_end(stream_id)
        while len(self._entries) > self.capacity:
            self._entries.popitem(last=False)


def check_backpressure(pending: int, incoming: int, limit: int) -> None:
    """Raise RateLimited when `incoming` more segments would exceed `limit` awaiting Kafka."""
    if pending > 0 and pending + incoming > limit:
        raise RateLimited(f"{pending} segments are waiting for Kafka; try again shortly", 1.0)


class AcceptedIds:
    """Highest segment id delivered per stream (and whether its end was), for the last
    `capacity` streams used.

    Answers a re-send quickly ("duplicates") without producing it again. Best effort only: the
    Chunk Splitter, which ignores ids at or below the highest it took, is what makes re-sending
    idempotent, also across restarts of this service.
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._held: OrderedDict[str, tuple[int, bool]] = OrderedDict()

    def highest(self, stream_id: str) -> int | None:
        held = self._held.get(stream_id)
        return held[0] if held else None

    def fresh(self, segments: Sequence[Mapping[str, Any]]) -> tuple[list[Mapping[str, Any]], int]:
        """(segments not delivered before, number of duplicates). An old id that carries the
        end-of-stream mark is not a duplicate unless the stream's end was delivered: the mark
        may be news to the splitter."""
        fresh = []
        for segment in segments:
            held = self._held.get(str(segment["stream_id"]))
            if (
                held is None
                or int(segment["segment_id"]) > held[0]
                or (segment.get("end_of_stream") and not held[1])
            ):
                fresh.append(segment)
        return fresh, len(segments) - len(fresh)

    def record(self, segments: Iterable[Mapping[str, Any]]) -> None:
        """Remember the delivered segments' ids (call after Kafka acknowledged them)."""
        if self.capacity <= 0:
            return
        for segment in segments:
            stream_id, segment_id = str(segment["stream_id"]), int(segment["segment_id"])
            highest, ended = self._held.get(stream_id, (segment_id, False))
            self._held[stream_id] = (max(highest, segment_id), ended or bool(segment.get("end_of_stream")))
            self._held.move_to_end(stream_id)
        while len(self._held) > self.capacity:
            self._held.popitem(last=False)
