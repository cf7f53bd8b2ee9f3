"""The policy store's bus on Kafka (policy_store/bus.py; spec section 6).

- Assignments go to `olp.policy` keyed by role, or role|context for a context's
  (`olp.contexts.policy_key`: compaction keeps each), human verdicts to `olp.feedback` keyed by
  role, with the W3C trace context in the headers when no instrumentation writes it.
- The feedback and policy readers use no consumer group (every replica reads everything) and wait
  `policy_fetch_max_wait_ms` per fetch (Tansu answers a fetch only when its wait expires).
- The highest published version is read up to each partition's fetch-reported high watermark
  (listed end offsets can be wrong: olp/kafka.py).
- The lease: replicas join consumer group `<app_id>-policy-store` on the feedback topic (sticky
  assignment, records never read); the member holding partition 0 leads. Leaving the group on
  stop hands the lease over at once.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError

from olp import telemetry
from olp.contexts import record_policy_key
from olp.errors import CodecError, OlpError, UnavailableError
from olp.kafka import caught_up, read_from_start
from olp.settings import Settings
from olp.topics import TopicNames
from policy_store.bus import FeedbackRecord, LeaseHolder
from schemas.codec import Codec

log = logging.getLogger("olp.policy_store")


def lease_group(settings: Settings) -> str:
    return f"{settings.app_id}-policy-store"


class KafkaBus:
    """The bus on aiokafka; `start` before use, `stop` after."""

    def __init__(self, settings: Settings, topics: TopicNames, codec: Codec) -> None:
        self._settings = settings
        self._kafka = settings.kafka
        self._topics = topics
        self._codec = codec
        self._producer = AIOKafkaProducer(**settings.kafka.aiokafka_config(), linger_ms=0)
        self._follow_wait_ms = max(self._kafka.fetch_max_wait_ms, self._kafka.policy_fetch_max_wait_ms)

    async def start(self) -> None:
        await self._producer.start()

    async def stop(self) -> None:
        await self._producer.stop()

    # --- writing ----------------------------------------------------------------------------

    async def publish_assignment(self, record: Mapping[str, Any]) -> None:
        topic = self._topics.policy
        value = self._codec.encode("Assignment", record, topic=topic)
        await self._send(topic, record_policy_key(record), value)

    async def publish_feedback(self, outcome: Mapping[str, Any]) -> None:
        topic = self._topics.feedback
        await self._send(topic, str(outcome["role"]), self._codec.encode("RoleOutcome", outcome, topic=topic))

    async def _send(self, topic: str, key: str, value: bytes) -> None:
        headers = None if telemetry.kafka_instrumented() else telemetry.inject_headers()
        try:
            await self._producer.send_and_wait(topic, value=value, key=key.encode(), headers=headers)
        except KafkaError as exc:
            raise UnavailableError(f"Kafka did not take the record for {topic}: {exc!r}") from exc

    # --- reading ----------------------------------------------------------------------------

    async def feedback(self, start: Mapping[int, int]) -> AsyncIterator[Sequence[FeedbackRecord]]:
        topic = self._topics.feedback
        async with read_from_start(self._kafka, [topic], fetch_max_wait_ms=self._follow_wait_ms) as (
            consumer,
            partitions,
        ):
            for tp in partitions:
                if tp.partition in start:
                    consumer.seek(tp, start[tp.partition])
            yield []
            while True:
                batches = await consumer.getmany(timeout_ms=200, max_records=500)
                yield [self._feedback_record(msg) for records in batches.values() for msg in records]

    def _feedback_record(self, msg: Any) -> FeedbackRecord:
        headers = tuple(msg.headers or ())
        try:
            outcome = self._codec.decode(msg.value, "RoleOutcome", topic=msg.topic)
        except CodecError as exc:
            return FeedbackRecord(msg.topic, msg.partition, msg.offset, None, str(exc), headers)
        return FeedbackRecord(msg.topic, msg.partition, msg.offset, outcome, None, headers)

    async def policy(self) -> AsyncIterator[Sequence[dict[str, Any]]]:
        topic = self._topics.policy
        async with read_from_start(self._kafka, [topic], fetch_max_wait_ms=self._follow_wait_ms) as (
            consumer,
            _partitions,
        ):
            while True:
                batches = await consumer.getmany(timeout_ms=500)
                records = [r for msgs in batches.values() for r in self._assignments(msgs)]
                if records:
                    yield records

    def _assignments(self, messages: Sequence[Any]) -> list[dict[str, Any]]:
        out = []
        for msg in messages:
            try:
                out.append(self._codec.decode(msg.value, "Assignment", topic=msg.topic))
            except CodecError as exc:
                log.warning("policy record at %s/%s undecodable: %s", msg.partition, msg.offset, exc)
        return out

    async def highest_version(self, timeout_s: float = 10.0) -> int:
        topic, highest = self._topics.policy, 0
        deadline = time.monotonic() + timeout_s
        try:
            async with read_from_start(
                self._kafka, [topic], fetch_max_wait_ms=self._kafka.fetch_max_wait_ms, timeout_s=timeout_s
            ) as (consumer, partitions):
                while time.monotonic() < deadline:
                    batches = await consumer.getmany(timeout_ms=200)
                    for msgs in batches.values():
                        highest = max([highest, *(int(a["version"]) for a in self._assignments(msgs))])
                    if await caught_up(consumer, partitions):
                        return highest
        except OlpError as exc:
            log.warning("policy topic unreadable (%s); highest version taken as %s", exc, highest)
            return highest
        log.warning("policy topic not read to its end in %.0fs; highest version %s", timeout_s, highest)
        return highest

    # --- the lease --------------------------------------------------------------------------

    async def hold_lease(self, holder: LeaseHolder) -> None:
        from aiokafka.coordinator.assignors.sticky.sticky_assignor import StickyPartitionAssignor

        kafka, feedback = self._kafka, self._topics.feedback
        consumer = AIOKafkaConsumer(
            **kafka.aiokafka_config(),
            group_id=lease_group(self._settings),
            enable_auto_commit=False,
            auto_offset_reset="latest",  # nothing is read; avoid fetching the topic's history
            fetch_max_wait_ms=kafka.fetch_max_wait_ms,
            session_timeout_ms=kafka.session_timeout_ms,
            heartbeat_interval_ms=kafka.heartbeat_interval_ms,
            rebalance_timeout_ms=kafka.rebalance_timeout_ms,
            partition_assignment_strategy=(StickyPartitionAssignor,),
        )
        await consumer.start()
        consumer.subscribe([feedback], listener=_LeaseListener(consumer, holder, TopicPartition(feedback, 0)))
        try:
            while True:
                await consumer.getmany(timeout_ms=1000)  # keeps the membership alive; nothing is read
        finally:
            with contextlib.suppress(Exception):
                await consumer.stop()  # leaves the group: the lease moves at once


class _LeaseListener(ConsumerRebalanceListener):  # type: ignore[misc]
    """The group's rebalances, told to the holder: whoever is assigned partition 0 leads."""

    def __init__(self, consumer: AIOKafkaConsumer, holder: LeaseHolder, lease: TopicPartition) -> None:
        self._consumer, self._holder, self._lease = consumer, holder, lease

    async def on_partitions_revoked(self, revoked: Any) -> None:
        await self._holder.revoked()

    async def on_partitions_assigned(self, assigned: Any) -> None:
        self._consumer.pause(*assigned)
        self._holder.assigned(self._lease in assigned)
