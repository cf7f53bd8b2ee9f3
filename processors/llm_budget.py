"""The budget on LLM time per feed (LONDI's constraint on large-model calls), processor side.

On two CPU cores an LLM call costs seconds while an encoder answers in milliseconds, so a feed
keeps up with its speaker only if its LLM calls leave the cores free part of the time: the feed's
`llm_seconds_per_minute` (olp/settings.py) is how many seconds of LLM calls (their measured
latency) each worker may spend on it per minute. Seconds, not calls: a local 135M model at 4 s
a call and a remote model at 0.3 s cost the machine very differently, and a scripted test model
costs nothing. Each worker holds one token bucket per feed that refills at that rate and holds at
most a quarter of a minute's seconds (a burst of a few chunks, not a minute of backlog). Every
LLM call spends its latency, and the calls a role must make (the primary, its re-ask on junk,
its failover) spend even into debt; the calls that only improve or teach (the cascade's
escalation, warm-up runs of untried models, exploration duels, the judges' verdicts) are made
only while the bucket covers their expected latency (the model's recent mean), else skipped and
counted. Calls in flight hold their expected latency until they answer, so optional calls
started together cannot overdraw the bucket. Encoder calls are never limited.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from olp import telemetry

UNMEASURED_LATENCY_S = 4.0
"""What an LLM call is expected to cost before the model has answered once: a local 135M model's
call on two cores. Zero would admit every optional call at start (none has answered yet), and a
single local server would then queue dozens of them."""
BURST_MINUTES = 0.25
"""The bucket holds at most this share of a minute's seconds."""
LATENCY_WEIGHT = 0.3
"""Weight of the newest latency in a model's running mean (a few calls to follow a change)."""

SKIPPED_KINDS = ("escalation", "extra", "judge")
"""What a skipped call was: the cascade's escalation, an extra (warm-up run or duel), or a
judge's verdict on a sampled call (processors/judge.py)."""


@dataclass
class TokenBucket:
    """Units (here LLM seconds) allowed at `rate_per_s`, at most `capacity` saved up; may go into debt."""

    rate_per_s: float
    capacity: float
    tokens: float
    updated_s: float

    @classmethod
    def per_minute(cls, units: float, now_s: float) -> TokenBucket:
        capacity = units * BURST_MINUTES
        return cls(units / 60.0, capacity, capacity, now_s)

    def available(self, now_s: float) -> float:
        """Units the bucket covers at `now_s` (negative while in debt)."""
        elapsed = max(0.0, now_s - self.updated_s)
        self.tokens = min(self.capacity, self.tokens + elapsed * self.rate_per_s)
        self.updated_s = max(self.updated_s, now_s)
        return self.tokens

    def spend(self, now_s: float, units: float) -> None:
        self.tokens = self.available(now_s) - units


def admitted(
    optional: Sequence[str], cost: Callable[[str], float], available: float, capacity: float = math.inf
) -> tuple[list[str], list[str]]:
    """(the optional calls to make, the ones to skip), in order: each while the bucket's
    `available` units cover its expected `cost` (an encoder's is 0: always made). A full bucket
    (`available` at its `capacity`) admits one call even if it costs more than the bucket holds:
    else a model slower than the burst could never be tried; the bucket's debt then spaces its
    calls out."""
    make: list[str] = []
    skip: list[str] = []
    for model in optional:
        expected = cost(model)
        if expected <= 0.0 or expected <= available or available >= capacity:
            make.append(model)
            available -= expected
        else:
            skip.append(model)
    return make, skip


class LlmTimeBudget:
    """One worker's buckets, made on a feed's first call from its `llm_seconds_per_minute`
    (`limit(feed)`; None: no limit), and each LLM's recent mean latency."""

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
        self.latency_s: dict[str, float] = {}
        """Each LLM's running mean latency: what an optional call of it is expected to cost."""
        self._in_flight: dict[str, float] = {}
        """Per feed, the expected seconds of its LLM calls not answered yet."""
        self.skipped: dict[str, int] = dict.fromkeys(SKIPPED_KINDS, 0)
        """Optional LLM calls skipped so far, by kind (the demo reads these)."""

    def _bucket(self, feed: str) -> TokenBucket | None:
        if feed not in self._buckets:
            seconds = self._limit(feed)
            self._buckets[feed] = None if seconds is None else TokenBucket.per_minute(seconds, self._clock())
        return self._buckets[feed]

    def available(self, feed: str) -> float:
        """LLM seconds the feed's bucket covers now, less what its calls in flight are expected
        to take (infinite without a limit)."""
        bucket = self._bucket(feed)
        if bucket is None:
            return math.inf
        return bucket.available(self._clock()) - self._in_flight.get(feed, 0.0)

    def capacity(self, feed: str) -> float:
        """The most LLM seconds the feed's bucket saves up (infinite without a limit)."""
        bucket = self._bucket(feed)
        return math.inf if bucket is None else bucket.capacity

    def expected(self, model: str) -> float:
        """An LLM call's expected seconds: its running mean (UNMEASURED_LATENCY_S before its
        first answer), at least a millisecond (so a bucket in debt covers no LLM call)."""
        return max(self.latency_s.get(model, UNMEASURED_LATENCY_S), 0.001)

    def begin(self, feed: str, model: str) -> float:
        """An LLM call starts: it holds its expected seconds until `spend` books it; returns them."""
        held = self.expected(model)
        self._in_flight[feed] = self._in_flight.get(feed, 0.0) + held
        return held

    def release(self, feed: str, held: float) -> None:
        """A call that `begin` started ends without a latency to book (cancelled, input refused)."""
        self._in_flight[feed] = max(0.0, self._in_flight.get(feed, 0.0) - held)

    def spend(self, feed: str, model: str, seconds: float, held: float = 0.0) -> None:
        """Book one LLM call's measured latency (and release the `held` seconds `begin` took)."""
        self.release(feed, held)
        known = self.latency_s.get(model)
        self.latency_s[model] = seconds if known is None else known + LATENCY_WEIGHT * (seconds - known)
        bucket = self._bucket(feed)
        if bucket is not None:
            bucket.spend(self._clock(), seconds)

    def admit(
        self,
        feed: str,
        role: str,
        kind: str,
        optional: Sequence[str],
        cost: Callable[[str], float] | None = None,
        reserve: float = 0.0,
    ) -> list[str]:
        """The optional calls of `kind` (escalation, extra, judge) that `role` may make now: those
        the feed's bucket covers (`admitted`) after `reserve` seconds for the call they go beside,
        each at `cost` (default: its expected seconds). The others are skipped and counted."""
        available = self.available(feed) - reserve
        make, skip = admitted(optional, cost or self.expected, available, self.capacity(feed))
        for model in skip:
            self.skip(kind)
            telemetry.record_llm_skipped(role, model, feed, kind)
        return make

    def skip(self, kind: str) -> None:
        self.skipped[kind] = self.skipped.get(kind, 0) + 1
        if self._on_skip is not None:
            self._on_skip(kind)
