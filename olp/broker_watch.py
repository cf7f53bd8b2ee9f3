"""Broker watch (issue 7; spec section 6, "a broker restart loses everything"): notices when the
Kafka cluster stops answering and when it is back, and when it has lost the pipeline's data: a
topic it had is gone, or a partition's end offset went backwards. The embedded Tansu broker keeps
everything in memory, so a restarted or replaced broker has no topics, records, committed offsets
or groups; a real cluster can lose them too (re-created from scratch, restored from an old backup).

Each finding is logged. Missing topics are created again with the configured partitions (as
`olp topics ensure` does). When data was lost, `on_lost` is called once: the services stop then,
to be restarted by their supervisor (Kubernetes, `olp up`), because the positions, offsets and
table state a running client holds no longer describe the broker's data. Records the broker lost
are lost; everything written after it came back is processed.

Reads cluster metadata and end offsets with a confluent-kafka AdminClient in a thread; writes no
records. A failure of the watch itself is logged and never stops the service.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from olp.errors import OlpError
from olp.topics import ensure_topics

log = logging.getLogger("olp.broker")


@dataclass
class BrokerWatch:
    """What the watch remembers between looks: topics seen, highest end offset per partition."""

    conf: dict[str, Any]
    names: Sequence[str]
    partitions: int
    replication_factor: int = 1
    timeout_s: float = 3.0
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
        if missing:
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
