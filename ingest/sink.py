"""Where accepted segments go: `olp.transcripts`, TranscriptSegment values, key
stream_id, W3C trace context in the headers (spec section 7), through one small interface so the
routes can be tested without Kafka.

A batch is enqueued contiguously (no other batch interleaves on the same partition) and
`send` returns only once Kafka acknowledged every record of it: the HTTP answer means "durable".
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from opentelemetry import propagate, trace

from olp.errors import UnavailableError
from olp.telemetry import kafka_instrumented
from schemas.codec import Codec

_tracer = trace.get_tracer("olp.ingest")


class SegmentSink(Protocol):
    """Delivers TranscriptSegment dicts; `pending` counts those not yet acknowledged."""

    @property
    def pending(self) -> int: ...

    async def send(self, segments: Sequence[Mapping[str, Any]]) -> None: ...


class KafkaSink:
    """An aiokafka producer writing `topic`; delivery failures raise UnavailableError."""

    def __init__(self, producer: Any, codec: Codec, topic: str) -> None:
        self._producer = producer
        self._codec = codec
        self._topic = topic
        self._pending = 0
        self._order = asyncio.Lock()

    @property
    def pending(self) -> int:
        return self._pending

    async def send(self, segments: Sequence[Mapping[str, Any]]) -> None:
        from aiokafka.errors import KafkaError

        self._pending += len(segments)
        try:
            futures = []
            async with self._order:  # enqueue the batch in one piece, so its order holds
                for segment in segments:
                    with _tracer.start_as_current_span(
                        "ingest segment", kind=trace.SpanKind.PRODUCER
                    ) as span:
                        span.set_attribute("messaging.destination.name", self._topic)
                        span.set_attribute("olp.stream_id", str(segment["stream_id"]))
                        span.set_attribute("olp.segment_id", int(segment["segment_id"]))
                        carrier: dict[str, str] = {}
                        if not kafka_instrumented():  # else the aiokafka instrumentation injects it
                            propagate.inject(carrier)
                        value = self._codec.encode("TranscriptSegment", segment, topic=self._topic)
                        futures.append(
                            await self._producer.send(
                                self._topic,
                                value=value,
                                key=str(segment["stream_id"]).encode(),
                                headers=[(k, v.encode()) for k, v in carrier.items()],
                            )
                        )
            await asyncio.gather(*futures)
        except KafkaError as exc:
            raise UnavailableError(f"Kafka did not take the segments: {exc!r}") from exc
        finally:
            self._pending -= len(segments)


class MemorySink:
    """Keeps what it is sent (tests, dry runs); `fail` makes the next sends raise."""

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []
        self.fail: str | None = None
        self.gate: asyncio.Event | None = None
        """When set, sends wait for it: lets a test hold segments 'in flight'."""
        self._pending = 0

    @property
    def pending(self) -> int:
        return self._pending

    async def send(self, segments: Sequence[Mapping[str, Any]]) -> None:
        self._pending += len(segments)
        try:
            if self.gate is not None:
                await self.gate.wait()
            if self.fail:
                raise UnavailableError(self.fail)
            self.sent.extend(dict(s) for s in segments)
        finally:
            self._pending -= len(segments)
