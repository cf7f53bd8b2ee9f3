"""Faust's aiokafka transport with a configurable fetch wait (spec section 6).

Faust hard-codes `fetch_max_wait_ms=1500` for its worker consumer. Brokers that do not answer a
fetch early when data arrives (Tansu) then add up to 1.5 s per hop; 10 ms gives ~15/23 ms p50/p99.
Registered as the `olp://` broker scheme through the `faust.transports` entry point, so the app
uses it by URL and no Faust internals are patched at runtime.
"""

from __future__ import annotations

from typing import Any

import aiokafka
from faust.transport.drivers import aiokafka as faust_aiokafka

DEFAULT_FETCH_MAX_WAIT_MS = 10


class _ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: Any) -> aiokafka.AIOKafkaConsumer:
        consumer = super()._create_worker_consumer(transport)
        # aiokafka reads this when start() builds its fetcher, so setting it before start is enough.
        consumer._fetch_max_wait_ms = getattr(self.app, "olp_fetch_max_wait_ms", DEFAULT_FETCH_MAX_WAIT_MS)
        return consumer


class _Consumer(faust_aiokafka.Consumer):
    def _new_consumer_thread(self) -> _ConsumerThread:
        return _ConsumerThread(self, loop=self.loop, beacon=self.beacon)


class Transport(faust_aiokafka.Transport):
    Consumer = _Consumer


def broker_url(bootstrap_servers: str) -> str:
    """Faust broker URL for a Kafka bootstrap list ("h1:9092,h2:9092")."""
    hosts = [h.strip() for h in bootstrap_servers.split(",") if h.strip()]
    return ";".join(f"olp://{h}" for h in hosts)
