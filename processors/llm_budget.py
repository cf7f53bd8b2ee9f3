"""The budget on LLM calls per feed (LONDI's constraint on large-model calls), processor side.

On two CPU cores an LLM call costs seconds while an encoder answers in milliseconds, so a feed
keeps up with its speaker only if its LLM calls fit a rate: `llm_calls_per_minute` of the feed
(olp/settings.py). Each worker holds one token bucket per feed that refills at that rate and
holds at most a quarter of a minute's calls (a burst of a few chunks, not a minute of backlog).
Every LLM request spends a token, and the calls a role must make (the primary, its re-ask on
junk, its failover) spend even into debt; the calls that only improve or teach (the cascade's
escalation, warm-up runs of untried models, exploration duels) are made only while the bucket
covers them, else skipped and counted. Encoder calls are never limited.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

BURST_MINUTES = 0.25
"""The bucket holds at most this share of a minute's calls."""

SKIPPED_KINDS = ("escalation", "extra")
"""What a skipped call was: the cascade's escalation, or an extra (warm-up run or duel)."""


@dataclass
class TokenBucket:
    """Calls allowed at `rate_per_s`, at most `capacity` saved up; may go into debt."""

    rate_per_s: float
    capacity: float
    tokens: float
    updated_s: float

    @classmethod
    def per_minute(cls, calls: float, now_s: float) -> TokenBucket:
        capacity = max(1.0, calls * BURST_MINUTES)
        return cls(calls / 60.0, capacity, capacity, now_s)

    def available(self, now_s: float) -> float:
        """Calls the bucket covers at `now_s` (negative while in debt)."""
        elapsed = max(0.0, now_s - self.updated_s)
        self.tokens = min(self.capacity, self.tokens + elapsed * self.rate_per_s)
        self.updated_s = max(self.updated_s, now_s)
        return self.tokens

    def spend(self, now_s: float, calls: float = 1.0) -> None:
        self.tokens = self.available(now_s) - calls


def admitted(
    optional: Sequence[str], is_llm: Callable[[str], bool], available: float
) -> tuple[list[str], list[str]]:
    """(the optional calls to make, the ones to skip), in order: encoders always, LLM calls while
    the bucket's `available` calls cover one more each."""
    make: list[str] = []
    skip: list[str] = []
    for model in optional:
        if not is_llm(model):
            make.append(model)
        elif available >= 1.0:
            make.append(model)
            available -= 1.0
        else:
            skip.append(model)
    return make, skip


class LlmCallBudget:
    """One worker's buckets, made on a feed's first call from its `llm_calls_per_minute`
    (`limit(feed)`; None: no limit)."""

    def __init__(
        self,
        limit: Callable[[str], float | None],
        clock: Callable[[], float] = time.monotonic,
        on_skip: Callable[[str], None] | None = None,
    ) -> None:
        self._limit = limit
        self._buckets: dict[str, TokenBucket | None] = {}
        self._clock = clock
        self._on_skip = on_skip
        self.skipped: dict[str, int] = dict.fromkeys(SKIPPED_KINDS, 0)
        """Optional LLM calls skipped so far, by kind (the demo reads these)."""

    def _bucket(self, feed: str) -> TokenBucket | None:
        if feed not in self._buckets:
            calls = self._limit(feed)
            self._buckets[feed] = None if calls is None else TokenBucket.per_minute(calls, self._clock())
        return self._buckets[feed]

    def available(self, feed: str) -> float:
        bucket = self._bucket(feed)
        return math.inf if bucket is None else bucket.available(self._clock())

    def spend(self, feed: str) -> None:
        bucket = self._bucket(feed)
        if bucket is not None:
            bucket.spend(self._clock())

    def skip(self, kind: str) -> None:
        self.skipped[kind] = self.skipped.get(kind, 0) + 1
        if self._on_skip is not None:
            self._on_skip(kind)
