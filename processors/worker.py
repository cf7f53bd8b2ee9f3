"""The worker context: what every agent of one processors worker shares (spec sections 2-3, 6).

Encoding and sending with trace context, the error policy (dead-letter, never crash on a bad
record), counters and the LLM call machinery. It knows topics and record type names, not what a
role's records hold: each role module decides what its records mean (which chunk a record
carries, which trace a chunk continues) and hands that in (`handle(on_failure=...)`).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import faust
from opentelemetry import context as otel_context
from opentelemetry import trace

from olp import telemetry
from olp.catalog import Catalog
from olp.errors import CodecError, OlpError, ValidationError
from olp.settings import Settings
from olp.topics import TopicNames
from processors.canaries import CanaryBook
from processors.judge import JudgeBoard
from processors.llm_budget import LlmTimeBudget
from processors.model_gateway import ModelGateway
from processors.policy_view import PolicyView
from processors.role_call import RoleCaller, RoleFailed
from schemas.codec import Codec

log = logging.getLogger("olp.processors")
_tracer = trace.get_tracer("olp.processors")

Record = dict[str, Any]
Process = Callable[[Record], Awaitable[None]]
_MAX_DLQ_KEY_BYTES = 4096


@dataclass
class WorkerContext:
    """What every agent shell of one worker shares."""

    settings: Settings
    topics: TopicNames
    codec: Codec
    catalog: Catalog
    policy: PolicyView
    app: faust.App
    rng: random.Random = field(default_factory=random.Random)
    gateway: ModelGateway | None = None
    board: JudgeBoard | None = None
    """The board of judges (processors/judge.py), when it has any judge."""
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    stats: dict[str, int] = field(default_factory=dict)
    traces: telemetry.SegmentTraces = field(default_factory=telemetry.SegmentTraces)
    """Which trace each segment started, so its chunk continues one (olp/telemetry.py)."""
    canaries: CanaryBook = field(init=False)
    """The feeds' gold canaries (processors/canaries.py), loaded with the worker: a bad file
    stops the start, not a chunk."""
    llm_budget: LlmTimeBudget = field(init=False)
    """The feeds' LLM seconds per minute, shared by the worker's roles; what it skips is counted
    in `stats` as `llm_skipped.escalation` / `llm_skipped.extra` / `llm_skipped.judge`."""
    _faust_topics: dict[str, Any] = field(default_factory=dict)
    _callers: dict[str, RoleCaller] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.canaries = CanaryBook.from_settings(self.settings, random.Random(self.rng.random()))
        self.llm_budget = LlmTimeBudget(
            lambda feed: self.settings.feed(feed).llm_seconds_per_minute,
            on_skip=lambda kind: self.count(f"llm_skipped.{kind}"),
        )

    def topic(self, name: str) -> Any:
        """The Faust topic object for a topic name (bytes in, bytes out: we encode ourselves)."""
        if name not in self._faust_topics:
            self._faust_topics[name] = self.app.topic(
                name,
                key_type=bytes,
                value_type=bytes,
                key_serializer="raw",
                value_serializer="raw",
                partitions=self.settings.kafka.partitions,
            )
        return self._faust_topics[name]

    def source(self, *names: str) -> Any:
        """A Faust topic over one or more topic names, bytes in and out."""
        return self.app.topic(
            *names, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw"
        )

    async def send(self, topic: str, key: str, record_type: str, record: Mapping[str, Any]) -> None:
        """Encode and produce one record, carrying the current trace context in its headers
        (written by the aiokafka instrumentation's producer span when it is installed)."""
        value = self.codec.encode(record_type, record, topic=topic)
        headers = None if telemetry.kafka_instrumented() else telemetry.inject_headers()
        await self.topic(topic).send(key=key.encode(), value=value, headers=headers)
        telemetry.record_sent(topic)

    async def dead_letter(self, event: Any, role: str, exc: BaseException) -> None:
        """Send the original bytes with the reason to the DLQ; the worker goes on."""
        message = event.message
        self.count(f"dlq.{role}")
        telemetry.record_dead_letter(role, type(exc).__name__)
        log.warning(
            "dead-lettered: stage=%s topic=%s partition=%s offset=%s error=%s: %s",
            role,
            message.topic,
            message.partition,
            message.offset,
            type(exc).__name__,
            exc,
        )
        raw_key = message.key if isinstance(message.key, bytes) else None
        value = message.value if isinstance(message.value, bytes) else None
        error = str(exc)[:2000]
        # The dead letter must fit the producer's request limit, or sending it would crash the
        # agent: a record refused for its size keeps only its head here (all of it stays at
        # topic/partition/offset of the source topic). Same for an absurd key.
        limit = max(1024, self.settings.kafka.max_message_bytes - 64 * 1024)
        if value is not None and len(value) > limit:
            error += f" [dead letter keeps the first {limit} of {len(value)} bytes]"
            value = value[:limit]
        if raw_key is not None and len(raw_key) > _MAX_DLQ_KEY_BYTES:
            error += f" [dead letter keeps the first {_MAX_DLQ_KEY_BYTES} of {len(raw_key)} key bytes]"
            raw_key = raw_key[:_MAX_DLQ_KEY_BYTES]
        record = {
            "source_topic": message.topic,
            "partition": int(message.partition),
            "offset": int(message.offset),
            "key": raw_key,
            "value": value,
            "stage": role,
            "error_type": type(exc).__name__,
            "error": error,
            "ts_ms": int(time.time() * 1000),
        }
        key = raw_key.decode(errors="replace") if raw_key is not None else ""
        await self.send(self.topics.dlq, key, "DeadLetter", record)

    async def handle(
        self,
        event: Any,
        role: str,
        expected: str,
        process: Process,
        on_failure: Process | None = None,
        quiet: Callable[[Record], bool] | None = None,
    ) -> None:
        """Decode one event and run the role on it under the error policy.

        Bad bytes, records that break the rules and calls no model could serve are dead-lettered
        and the stream goes on; a bug in our code is dead-lettered too, but logged with its
        traceback so it is not mistaken for bad input. After a dead letter, `on_failure` gets the
        decoded record (when it decoded): a role uses it to release the chunk the record carried,
        so the splitter never waits for it forever. A decoded record for which `quiet` is true
        (a gold canary: no user's data) is logged and counted instead, with no dead letter and
        no `on_failure`. `process` runs inside the record's span.
        """
        message = event.message
        token = otel_context.attach(telemetry.extract_context(message.headers))
        started, error_type = time.monotonic(), None
        try:
            with (
                telemetry.stage_scope(role),
                _tracer.start_as_current_span(f"{role} process", kind=trace.SpanKind.CONSUMER) as span,
            ):
                span.set_attribute("messaging.destination.name", message.topic)
                span.set_attribute("messaging.kafka.offset", int(message.offset))
                span.set_attribute("olp.stage", role)
                error_type = await self._run(event, role, expected, process, on_failure, span, quiet)
        finally:
            otel_context.detach(token)
            telemetry.record_consumed(role, message.topic, time.monotonic() - started, error_type)

    async def _run(
        self,
        event: Any,
        role: str,
        expected: str,
        process: Process,
        on_failure: Process | None,
        span: Any,
        quiet: Callable[[Record], bool] | None = None,
    ) -> str | None:
        """`handle`'s body inside the span: the error type of a dead-lettered record, else None."""
        message = event.message
        record: Record | None = None
        try:
            size = len(message.value or b"")
            if size > self.settings.kafka.max_message_bytes:
                raise ValidationError(
                    f"record of {size} bytes exceeds the limit {self.settings.kafka.max_message_bytes}"
                )
            record = self.codec.decode(message.value or b"", expected, topic=message.topic)
            await self.ready.wait()
            await process(record)
            self.count(f"done.{role}")
            return None
        except (CodecError, ValidationError, RoleFailed, OlpError) as exc:
            span.set_status(trace.StatusCode.ERROR, str(exc)[:200])
            failure: BaseException = exc
        except Exception as exc:  # a bug: keep the partition moving, but loudly
            log.exception("bug in stage %s at %s/%s", role, message.partition, message.offset)
            span.record_exception(exc)
            failure = exc
        if record is not None and quiet is not None and quiet(record):
            self.count(f"quiet_failure.{role}")
            log.warning("stage %s dropped a canary record: %s: %s", role, type(failure).__name__, failure)
            return type(failure).__name__
        await self.dead_letter(event, role, failure)
        if record is not None and on_failure is not None:
            await on_failure(record)
        return type(failure).__name__

    async def settle(self, timeout_s: float) -> None:
        """Let the roles' detached extras record their outcomes before the producer stops."""
        await asyncio.gather(*(c.settle(timeout_s) for c in self._callers.values()))

    def caller(self, role: str) -> RoleCaller:
        if role not in self._callers:
            if self.gateway is None:
                raise OlpError("model gateway used before the worker started")
            self._callers[role] = RoleCaller(
                role,
                self.gateway,
                self.policy,
                self._emit_feedback,
                self.rng,
                self.settings.reask_on_junk,
                judge=self.board.review if self.board is not None else None,
                budget=self.llm_budget,
            )
        return self._callers[role]

    async def emit_feedback(self, outcome: dict[str, Any]) -> None:
        """Send one RoleOutcome (evidence about a call, processors/evidence.py) to `olp.feedback`."""
        await self._emit_feedback(outcome)

    async def _emit_feedback(self, outcome: dict[str, Any]) -> None:
        await self.send(self.topics.feedback, outcome["role"], "RoleOutcome", outcome)

    def count(self, name: str) -> None:
        self.stats[name] = self.stats.get(name, 0) + 1
