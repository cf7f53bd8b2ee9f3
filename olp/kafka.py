"""Kafka helpers every service shares (spec section 6): reading topics from their start without a
consumer group (the policy topic, the documents, the dashboard's view), waiting for a topic's
partitions, knowing when such a reader has caught up, and watching the broker.

A reader "catches up" at the high watermark its own fetches reported: listed end offsets are
wrong on some brokers (Tansu), fetch responses are right on every one.

The broker watch notices when the cluster stops answering and when it is back, and when it has
lost the pipeline's data: a topic it had is gone, or a partition's end offset went backwards. An
in-memory broker (Tansu) that restarts has no topics, records, committed offsets or groups; a real
cluster can lose them too (re-created from scratch, restored from an old backup). Each finding is
logged; when data was lost the service stops, to be restarted by its supervisor (Kubernetes,
`olp up`), because the positions, offsets and table state it holds no longer describe the
broker's data. The watch reads metadata and end offsets with a confluent-kafka AdminClient in a
thread, writes no records, and a failure of the watch itself never stops the service.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from olp.errors import OlpError
from olp.topics import ensure_topics

if TYPE_CHECKING:
    from aiokafka import AIOKafkaConsumer, TopicPartition

    from olp.settings import KafkaSettings

log = logging.getLogger("olp.broker")


@dataclass
class BrokerWatch:
    """What the watch remembers between looks: topics seen, highest end offset per partition."""

    conf: dict[str, Any]
    names: Sequence[str]
    partitions: int
    replication_factor: int = 1
    timeout_s: float = 3.0
    recreate: bool = False
    """Create missing topics again: only on the embedded broker, whose restart loses them all; on a
    real cluster topics are the operator's (`olp topics ensure`, the chart's job), never ours."""
    down_since: float | None = None
    seen: set[str] = field(default_factory=set)
    ends: dict[tuple[str, int], int] = field(default_factory=dict)
    _admin: Any = None

    def check(self) -> list[str]:
        """One look (blocking). Returns what shows that the broker lost data; [] when nothing."""
        from confluent_kafka import KafkaException, TopicPartition
        from confluent_kafka.admin import AdminClient, OffsetSpec  # type: ignore[attr-defined]

        if self._admin is None:
            self._admin = AdminClient(dict(self.conf))
        try:
            existing = self._admin.list_topics(timeout=self.timeout_s).topics
        except KafkaException as exc:
            if self.down_since is None:
                self.down_since = time.monotonic()
                log.warning("broker unreachable (%s); clients keep retrying until it is back", exc)
            return []
        if self.down_since is not None:
            log.warning("broker back after %.1fs", time.monotonic() - self.down_since)
            self.down_since = None

        lost = [f"topic {name} is gone" for name in self.names if name in self.seen and name not in existing]
        present = [name for name in self.names if name in existing]
        wanted = {
            TopicPartition(name, p): OffsetSpec.latest()  # type: ignore[no-untyped-call]
            for name in present
            for p in existing[name].partitions
        }
        if wanted:
            try:
                futures = self._admin.list_offsets(wanted, request_timeout=self.timeout_s)
                for tp, future in futures.items():
                    end = int(future.result().offset)
                    before = self.ends.get((tp.topic, tp.partition))
                    if before is not None and end < before:
                        lost.append(f"{tp.topic}[{tp.partition}] end offset went back from {before} to {end}")
                    self.ends[(tp.topic, tp.partition)] = max(end, before or 0)
            except KafkaException as exc:
                log.debug("end offsets not available now: %s", exc)

        missing = [name for name in self.names if name not in existing]
        if missing and not self.recreate:
            log.error("topics missing: %s; create them with `olp topics ensure`", ", ".join(missing))
        elif missing:
            try:
                ensure_topics(self.conf, missing, self.partitions, self.replication_factor, self.timeout_s)
            except OlpError as exc:
                log.warning("cannot re-create topics %s: %s", missing, exc)
            else:
                log.warning("created missing topics (%d partitions): %s", self.partitions, ", ".join(missing))
        self.seen.update(self.names)
        if lost:
            log.error(
                "the broker lost data (restarted or replaced?): %s; records it held are gone",
                "; ".join(lost[:5]) + (f" (+{len(lost) - 5} more)" if len(lost) > 5 else ""),
            )
        return lost


async def watch_broker(
    watch: BrokerWatch, on_lost: Callable[[list[str]], None], interval_s: float = 2.0
) -> None:
    """Look every `interval_s` until cancelled, or until data is found lost (`on_lost`, once)."""
    while True:
        try:
            lost = await asyncio.to_thread(watch.check)
        except Exception as exc:  # the watch must never take its service down
            log.warning("broker watch failed: %s: %s", type(exc).__name__, exc)
            lost = []
        if lost:
            on_lost(lost)
            return
        await asyncio.sleep(interval_s)


async def stop_when_data_lost(
    kafka: KafkaSettings, names: Sequence[str], service: str, recreate: bool = False
) -> None:
    """Watch the broker for this service's lifetime; when it lost the data, stop the process
    gracefully (SIGTERM: state is saved, offsets committed) so its supervisor starts it again."""
    watch = BrokerWatch(
        kafka.confluent_config(), names, kafka.partitions, kafka.replication_factor, recreate=recreate
    )

    def restart(_lost: list[str]) -> None:
        log.error("stopping the %s so that its supervisor starts it again on the new broker", service)
        os.kill(os.getpid(), signal.SIGTERM)

    await watch_broker(watch, restart)


async def wait_for_partitions(
    consumer: AIOKafkaConsumer, topics: Sequence[str], timeout_s: float = 30.0
) -> list[TopicPartition]:
    """Every partition of `topics`, once the consumer's metadata knows them all."""
    from aiokafka import TopicPartition

    deadline = time.monotonic() + timeout_s
    while True:
        await consumer.topics()  # refreshes the metadata
        found = {topic: consumer.partitions_for_topic(topic) for topic in topics}
        if all(found.values()):
            return [TopicPartition(t, p) for t in topics for p in sorted(found[t] or ())]
        if time.monotonic() > deadline:
            missing = sorted(t for t, parts in found.items() if not parts)
            raise OlpError(f"topics {', '.join(missing)} do not exist: run `olp topics ensure` first")
        await asyncio.sleep(0.2)


@contextlib.asynccontextmanager
async def read_from_start(
    kafka: KafkaSettings,
    topics: Sequence[str],
    *,
    fetch_max_wait_ms: int,
    timeout_s: float = 30.0,
) -> AsyncIterator[tuple[AIOKafkaConsumer, list[TopicPartition]]]:
    """A consumer outside any group, assigned every partition of `topics` at its first offset.
    Readers that rebuild a view (policy, documents) start here, so each replica sees everything."""
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(
        **kafka.aiokafka_config(),
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=fetch_max_wait_ms,
    )
    await consumer.start()
    try:
        partitions = await wait_for_partitions(consumer, topics, timeout_s)
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        yield consumer, partitions
    finally:
        with contextlib.suppress(Exception):
            await consumer.stop()


async def caught_up(consumer: AIOKafkaConsumer, partitions: Sequence[TopicPartition]) -> bool:
    """Every partition has been read up to the high watermark its last fetch reported."""
    for tp in partitions:
        highwater = consumer.highwater(tp)
        if highwater is None or await consumer.position(tp) < highwater:
            return False
    return True
