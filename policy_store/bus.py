"""What the policy store needs from Kafka, as one small interface (STYLE 8): publish an
Assignment to `olp.policy`, publish a RoleOutcome to `olp.feedback`, read the feedback from given
offsets, read the policy topic from its start, and hold the publishing lease.

`KafkaBus` (policy_store/kafka_bus.py) is the production implementation; `MemoryBus` keeps the
topics in lists, so the HTTP API and the loops run in unit tests without a broker. Both encode and
decode with the project's codec, so a record the schema refuses fails in either.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from olp.errors import CodecError
from olp.topics import TopicNames
from schemas.codec import Codec, make_codec


@dataclass(frozen=True)
class FeedbackRecord:
    """One record of the feedback topic: where it sits, its headers (trace context), and the
    decoded RoleOutcome, or why it could not be decoded (`outcome` None)."""

    topic: str
    partition: int
    offset: int
    outcome: dict[str, Any] | None
    error: str | None = None
    headers: Sequence[tuple[str, bytes]] = ()


class LeaseHolder(Protocol):
    """Told by the bus when this replica gains or loses the publishing lease."""

    async def revoked(self) -> None:
        """The lease may move: stop publishing (returns once no publish is in flight)."""

    def assigned(self, leads: bool) -> None:
        """The lease is settled: this replica leads (`leads`) or follows."""


class PolicyBus(Protocol):
    async def publish_assignment(self, record: Mapping[str, Any]) -> None:
        """Write an Assignment to the policy topic (key `olp.contexts.record_policy_key`: the
        role, or role|context); returns once it is acknowledged."""

    async def publish_feedback(self, outcome: Mapping[str, Any]) -> None:
        """Write a RoleOutcome to the feedback topic (key role); returns once it is acknowledged."""

    def feedback(self, start: Mapping[int, int]) -> AsyncIterator[Sequence[FeedbackRecord]]:
        """Every feedback record from `start` (partition -> offset; other partitions from their
        beginning), in batches, forever. Yields an empty batch once positioned and whenever a
        poll brings nothing (the loop's idle time)."""

    def policy(self) -> AsyncIterator[Sequence[dict[str, Any]]]:
        """Every decodable Assignment of the policy topic from its start, in batches, forever."""

    async def highest_version(self) -> int:
        """The highest Assignment version on the policy topic now (0 when empty)."""

    async def hold_lease(self, holder: LeaseHolder) -> None:
        """Compete for the lease until cancelled, telling `holder` what happens."""


class MemoryBus:
    """Both topics as lists (one partition each). `leads` decides the lease; `move_lease` moves it."""

    def __init__(
        self, leads: bool = True, codec: Codec | None = None, topics: TopicNames | None = None
    ) -> None:
        self.codec = codec or make_codec(None)
        self.topics = topics or TopicNames.with_prefix("olp.")
        self.leads = leads
        self.policy_log: list[bytes] = []
        self.feedback_log: list[bytes] = []
        self._changed = asyncio.Condition()
        self._holders: list[LeaseHolder] = []

    @property
    def assignments(self) -> list[dict[str, Any]]:
        return [self.codec.decode(v, "Assignment", topic=self.topics.policy) for v in self.policy_log]

    @property
    def outcomes(self) -> list[dict[str, Any]]:
        return [self.codec.decode(v, "RoleOutcome", topic=self.topics.feedback) for v in self.feedback_log]

    async def publish_assignment(self, record: Mapping[str, Any]) -> None:
        await self._append(self.policy_log, self.codec.encode("Assignment", record, topic=self.topics.policy))

    async def publish_feedback(self, outcome: Mapping[str, Any]) -> None:
        value = self.codec.encode("RoleOutcome", outcome, topic=self.topics.feedback)
        await self._append(self.feedback_log, value)

    async def _append(self, log: list[bytes], value: bytes) -> None:
        async with self._changed:
            log.append(value)
            self._changed.notify_all()

    async def feedback(self, start: Mapping[int, int]) -> AsyncIterator[Sequence[FeedbackRecord]]:
        position = start.get(0, 0)
        yield []
        while True:
            await self._wait_beyond(self.feedback_log, position, timeout_s=0.05)
            batch = [self._feedback_record(o) for o in range(position, len(self.feedback_log))]
            position += len(batch)
            yield batch

    def _feedback_record(self, offset: int) -> FeedbackRecord:
        topic = self.topics.feedback
        try:
            outcome = self.codec.decode(self.feedback_log[offset], "RoleOutcome", topic=topic)
        except CodecError as exc:
            return FeedbackRecord(topic, 0, offset, None, str(exc))
        return FeedbackRecord(topic, 0, offset, outcome)

    async def policy(self) -> AsyncIterator[Sequence[dict[str, Any]]]:
        position = 0
        while True:
            await self._wait_beyond(self.policy_log, position, timeout_s=None)
            values, position = self.policy_log[position:], len(self.policy_log)
            yield [self.codec.decode(v, "Assignment", topic=self.topics.policy) for v in values]

    async def _wait_beyond(self, log: list[bytes], position: int, timeout_s: float | None) -> None:
        async with self._changed:
            waiting = self._changed.wait_for(lambda: len(log) > position)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(waiting, timeout_s)

    async def highest_version(self) -> int:
        return max((int(a["version"]) for a in self.assignments), default=0)

    async def hold_lease(self, holder: LeaseHolder) -> None:
        self._holders.append(holder)
        try:
            holder.assigned(self.leads)
            await asyncio.Event().wait()
        finally:
            self._holders.remove(holder)

    async def move_lease(self, leads: bool) -> None:
        """Take the lease away from this replica (False) or hand it to it (True)."""
        self.leads = leads
        for holder in list(self._holders):
            await holder.revoked()
            holder.assigned(leads)
