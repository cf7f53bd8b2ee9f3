"""Gold canaries: labelled chunks interleaved with a feed's real chunks, scored exactly (spec
section 4, "Quality is measured, never assumed").

A feed naming a labelled stream (`FeedSettings.canaries`, format in processors/gold.py) gets its
canary chunks: one per gold topic, the feed's chunk size long, starting where the topic starts.
Each worker's Topic Finder sends `FeedSettings.canary_rate` canary chunks per real chunk of the
feed straight to its own input topic (canaries skip the Chunk Splitter), under a stream id of
their own, `canary:<feed>:<index>:<nonce>` (the nonce keeps the event ids of two replays apart, so
the learner counts both). Every role scores each usable answer to a canary against the chunk's
labels (the `grade` of `RoleCaller.ask`; processors/gold.py has the rules) and publishes it as
feedback with `source = canary`; no judge sees a canary. The Format Checker never publishes a
canary's documents nor reports its progress, and a canary that fails is logged, not
dead-lettered: it is no user's data.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from olp.errors import ConfigError
from olp.settings import Settings
from processors.evidence import CANARY_PREFIX, is_canary
from processors.gold import LabelledStream, canary_chunks, load_labelled


def canary_stream_id(feed: str, index: int, nonce: int) -> str:
    return f"{CANARY_PREFIX}{feed}:{index}:{nonce}"


def parse_canary_id(stream_id: str) -> tuple[str, int] | None:
    """(feed, canary index) of a canary stream id; None for any other stream id."""
    if not is_canary(stream_id):
        return None
    feed, _, _nonce = stream_id[len(CANARY_PREFIX) :].rpartition(":")
    feed, _, index = feed.rpartition(":")
    try:
        return feed, int(index)
    except ValueError:
        return None


def chunk_record(feed: str, index: int, chunk: LabelledStream, nonce: int, now_ms: int) -> dict[str, Any]:
    """The Avro Chunk (schemas/chunk.avsc) of one canary: the last chunk of its own stream, so
    every topic in it is final and nothing is carried over."""
    stream_id = canary_stream_id(feed, index, nonce)
    return {
        "stream_id": stream_id,
        "chunk_id": f"{stream_id}:0",
        "seq": 0,
        "feed": feed,
        "domain": chunk.domain,
        "lang": chunk.lang,
        "sentences": [s.to_avro() for s in chunk.sentences],
        "is_last": True,
        "created_ms": now_ms,
    }


@dataclass
class CanaryBook:
    """Every feed's canary chunks, which canary a stream id is, and when the next one is due."""

    chunks: Mapping[str, Sequence[LabelledStream]] = field(default_factory=dict)
    rates: Mapping[str, float] = field(default_factory=dict)
    rng: random.Random = field(default_factory=random.Random)
    _credit: dict[str, float] = field(default_factory=dict)
    _next: dict[str, int] = field(default_factory=dict)

    @classmethod
    def from_settings(cls, settings: Settings, rng: random.Random | None = None) -> CanaryBook:
        """Load the canaries of every feed that names a file; ConfigError for a file whose
        aspects are not the feed's (its answers could not be scored)."""
        chunks: dict[str, list[LabelledStream]] = {}
        for name, feed in settings.feeds.items():
            if feed.canaries is None or feed.canary_rate <= 0:
                continue
            stream = load_labelled(feed.canaries)
            if tuple(stream.aspects) != tuple(feed.aspect_names()):
                raise ConfigError(
                    f"feed {name}: canaries {feed.canaries} use aspects {list(stream.aspects)}, "
                    f"the feed {list(feed.aspect_names())}"
                )
            chunks[name] = canary_chunks(stream, feed.chunk_size)
        rates = {name: settings.feeds[name].canary_rate for name in chunks}
        return cls(chunks, rates, rng or random.Random())

    def reference(self, stream_id: str) -> LabelledStream | None:
        """The labels of the canary chunk a stream id names; None for a user's stream."""
        parsed = parse_canary_id(stream_id)
        if parsed is None:
            return None
        feed, index = parsed
        chunks = self.chunks.get(feed, ())
        return chunks[index] if 0 <= index < len(chunks) else None

    def after_real_chunk(self, feed: str, now_ms: int) -> list[dict[str, Any]]:
        """The canary chunks due after one real chunk of `feed` (credit accrues by its rate)."""
        chunks = self.chunks.get(feed)
        if not chunks:
            return []
        credit = self._credit.get(feed, 0.0) + self.rates.get(feed, 0.0)
        due = []
        while credit >= 1.0:
            credit -= 1.0
            index = self._next.get(feed, self.rng.randrange(len(chunks)))
            self._next[feed] = (index + 1) % len(chunks)
            due.append(chunk_record(feed, index, chunks[index], self.rng.getrandbits(48), now_ms))
        self._credit[feed] = credit
        return due


def grade_with(
    reference: LabelledStream | None, score: Callable[[LabelledStream, Any], float | None]
) -> Callable[[Any], float | None] | None:
    """The `grade` a role passes to `RoleCaller.ask`: its score against the canary's labels;
    None for a user's chunk."""
    if reference is None:
        return None
    return lambda value: score(reference, value)


Send = Callable[[dict[str, Any]], Awaitable[None]]


async def send_due(book: CanaryBook, chunk: Mapping[str, Any], now_ms: int, send: Send) -> int:
    """After a real chunk: send the canary chunks now due for its feed; how many."""
    if is_canary(str(chunk["stream_id"])):
        return 0
    due = book.after_real_chunk(str(chunk["feed"]), now_ms)
    for record in due:
        await send(record)
    return len(due)
