"""The Faust app: one agent per OLP role, wired by topic (spec sections 2-3).

    olp.transcripts + olp.progress -> chunk_splitter -> olp.chunks -> topic_finder -> olp.found
    -> topic_locator -> olp.located -> relationship_checker -> olp.checked -> content_organizer
    -> olp.organized -> format_checker -> olp.documents (+ olp.progress back to the splitter)
    every LLM call -> olp.feedback;  olp.policy -> every worker's PolicyView;  failures -> olp.dlq

`create_app` builds the app from settings; each role module's `register(app, pipeline)` adds its
agent. `Pipeline` is what those thin agent shells share: encoding, sending with trace context,
the error policy (dead-letter, never crash on a bad record), and the LLM call machinery.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import time
from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import faust
from mode import Service
from opentelemetry import context as otel_context
from opentelemetry import trace

from olp import telemetry
from olp.catalog import Catalog, load_catalog
from olp.errors import CodecError, OlpError, ValidationError
from olp.faust_transport import broker_url
from olp.settings import ROLES, FeedSettings, Settings
from olp.topics import TopicNames
from processors.judge import JudgeBoard
from processors.model_gateway import ModelGateway
from processors.policy_view import PolicyView
from processors.role_call import CallContext, RoleCaller, RoleFailed
from schemas.codec import Codec, make_codec

log = logging.getLogger("olp.processors")
_tracer = trace.get_tracer("olp.processors")

STAGES: tuple[str, ...] = (
    "chunk_splitter",
    "topic_finder",
    "topic_locator",
    "relationship_checker",
    "content_organizer",
    "format_checker",
)
Record = dict[str, Any]
_MAX_DLQ_KEY_BYTES = 4096


@dataclass
class Pipeline:
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
    """The board of judges (processors/judge.py), when `settings.judges.models` names any."""
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    _faust_topics: dict[str, Any] = field(default_factory=dict)
    _callers: dict[str, RoleCaller] = field(default_factory=dict)
    stats: dict[str, int] = field(default_factory=dict)
    traces: telemetry.SegmentTraces = field(default_factory=telemetry.SegmentTraces)
    """Which trace each segment started, so its chunk continues one (olp/telemetry.py)."""

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

    async def send(self, topic: str, key: str, record_type: str, record: Mapping[str, Any]) -> None:
        """Encode and produce one record, carrying the current trace context in its headers
        (written by the aiokafka instrumentation's producer span when it is installed)."""
        value = self.codec.encode(record_type, record, topic=topic)
        headers = None if telemetry.kafka_instrumented() else telemetry.inject_headers()
        if record_type == "Chunk":  # continue the trace of the segment that completed it
            with self.traces.chunk_span(record):
                await self.topic(topic).send(key=key.encode(), value=value, headers=headers)
        else:
            await self.topic(topic).send(key=key.encode(), value=value, headers=headers)
        telemetry.record_sent(topic)

    async def dead_letter(self, event: Any, stage: str, exc: BaseException) -> None:
        """Send the original bytes with the reason to the DLQ; the worker goes on."""
        message = event.message
        self.count(f"dlq.{stage}")
        telemetry.record_dead_letter(stage, type(exc).__name__)
        log.warning(
            "dead-lettered: stage=%s topic=%s partition=%s offset=%s error=%s: %s",
            stage,
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
            "stage": stage,
            "error_type": type(exc).__name__,
            "error": error,
            "ts_ms": int(time.time() * 1000),
        }
        key = raw_key.decode(errors="replace") if raw_key is not None else ""
        await self.send(self.topics.dlq, key, "DeadLetter", record)

    async def handle(
        self,
        event: Any,
        stage: str,
        expected: str,
        process: Callable[[Record], Awaitable[None]],
    ) -> None:
        """Decode one event and run the role on it under the error policy.

        Bad bytes, records that break the rules and calls no model could serve are dead-lettered
        and the stream goes on; a bug in our code is dead-lettered too, but logged with its
        traceback so it is not mistaken for bad input. A chunk that dies at any stage releases
        its stream (see `release`), so the splitter never waits for it forever.
        """
        record: Record | None = None
        message = event.message
        parent = telemetry.extract_context(message.headers)
        token = otel_context.attach(parent)
        started, error_type = time.monotonic(), None
        try:
            with (
                telemetry.stage_scope(stage),
                _tracer.start_as_current_span(f"{stage} process", kind=trace.SpanKind.CONSUMER) as span,
            ):
                span.set_attribute("messaging.destination.name", message.topic)
                span.set_attribute("messaging.kafka.offset", int(message.offset))
                span.set_attribute("olp.stage", stage)
                try:
                    if len(message.value or b"") > self.settings.kafka.max_message_bytes:
                        raise ValidationError(
                            f"record of {len(message.value)} bytes exceeds the limit "
                            f"{self.settings.kafka.max_message_bytes}"
                        )
                    record = self.codec.decode(message.value or b"", expected, topic=message.topic)
                    if expected == "TranscriptSegment":
                        segment = (record["stream_id"], record["segment_id"])
                        self.traces.remember(*segment, span.get_span_context())
                    await self.ready.wait()
                    await process(record)
                    self.count(f"done.{stage}")
                except (CodecError, ValidationError, RoleFailed, OlpError) as exc:
                    error_type = type(exc).__name__
                    span.set_status(trace.StatusCode.ERROR, str(exc)[:200])
                    await self.dead_letter(event, stage, exc)
                    await self.release(record)
                except Exception as exc:  # a bug: keep the partition moving, but loudly
                    log.exception("bug in stage %s at %s/%s", stage, message.partition, message.offset)
                    error_type = type(exc).__name__
                    span.record_exception(exc)
                    await self.dead_letter(event, stage, exc)
                    await self.release(record)
        finally:
            otel_context.detach(token)
            telemetry.record_consumed(stage, message.topic, time.monotonic() - started, error_type)

    async def release(self, record: Record | None) -> None:
        """Tell the splitter a dead chunk is done (all of it final), so its stream moves on."""
        if record is None:
            return
        # Only chunk-carrying records release; a failed ChunkDone must not echo itself forever.
        chunk = record.get("chunk", record if "sentences" in record else None)
        if chunk is None:
            return
        done = {
            "stream_id": chunk["stream_id"],
            "chunk_id": chunk["chunk_id"],
            "seq": chunk["seq"],
            "next_start_id": None,
        }
        await self.send(self.topics.progress, str(chunk["stream_id"]), "ChunkDone", done)

    def feed(self, chunk: Mapping[str, Any]) -> FeedSettings:
        return self.settings.feed(str(chunk.get("feed", "default")))

    def call_context(self, chunk: Mapping[str, Any], call_key: str = "0") -> CallContext:
        return CallContext(
            stream_id=str(chunk["stream_id"]),
            chunk_id=str(chunk["chunk_id"]),
            domain=str(chunk["domain"]),
            lang=str(chunk["lang"]),
            feed=str(chunk["feed"]),
            chunk_size=len(chunk["sentences"]),
            call_key=call_key,
        )

    def source(self, *names: str) -> Any:
        """A Faust topic over one or more topic names, bytes in and out."""
        return self.app.topic(
            *names, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw"
        )

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
            )
        return self._callers[role]

    async def _emit_feedback(self, outcome: dict[str, Any]) -> None:
        await self.send(self.topics.feedback, outcome["role"], "RoleOutcome", outcome)

    def count(self, name: str) -> None:
        self.stats[name] = self.stats.get(name, 0) + 1


def make_board(pipeline: Pipeline) -> JudgeBoard | None:
    """The worker's board of judges from `settings.judges`; None when it names no model."""
    judges = pipeline.settings.judges
    if not judges.models or pipeline.gateway is None:
        return None
    for model in judges.models:
        pipeline.catalog.model(model)  # ConfigError at start-up for a judge not in the catalog
    return JudgeBoard(
        pipeline.gateway,
        judges.models,
        pipeline.send,
        pipeline.topics.verdicts,
        pipeline.topics.feedback,
        random.Random(pipeline.rng.random()),
        sample_rate=judges.sample_rate,
        roles=judges.roles,
        weights=judges.weights,
        apply_corrections=judges.apply_corrections,
        max_pending=judges.max_pending,
    )


class _Lifecycle(Service):
    """Creates the model gateway and follows the policy topic for the worker's lifetime."""

    def __init__(self, pipeline: Pipeline, **kwargs: Any) -> None:
        self.pipeline = pipeline
        self._session: aiohttp.ClientSession | None = None
        super().__init__(**kwargs)

    async def on_start(self) -> None:
        self._session = aiohttp.ClientSession()
        self.pipeline.gateway = ModelGateway(self.pipeline.catalog, self._session, dict(os.environ))
        self.pipeline.board = make_board(self.pipeline)
        app = self.pipeline.app
        telemetry.watch_consumer_lag(lambda: telemetry.faust_consumer_lag(app))
        self.pipeline.ready.set()

    @Service.task
    async def _watch_broker(self) -> None:
        """Report broker outages; when the broker lost its data (a restarted in-memory broker),
        re-create the topics and stop, so the supervisor restarts this worker clean (spec 6)."""
        from olp.kafka import stop_when_data_lost

        pipeline = self.pipeline
        await stop_when_data_lost(pipeline.settings.kafka, pipeline.topics.all(), "worker")

    @Service.task
    async def _follow_policy(self) -> None:
        from aiokafka import AIOKafkaConsumer, TopicPartition

        settings, pipeline = self.pipeline.settings, self.pipeline
        consumer = AIOKafkaConsumer(
            **settings.kafka.aiokafka_config(),
            group_id=None,
            enable_auto_commit=False,
            fetch_max_wait_ms=max(settings.kafka.fetch_max_wait_ms, settings.kafka.policy_fetch_max_wait_ms),
        )
        await consumer.start()
        try:
            partitions = await _partitions_of(consumer, pipeline.topics.policy)
            consumer.assign([TopicPartition(pipeline.topics.policy, p) for p in partitions])
            await consumer.seek_to_beginning()
            while not self.should_stop:
                batches = await consumer.getmany(timeout_ms=200)
                for records in batches.values():
                    for msg in records:
                        try:
                            assignment = pipeline.codec.decode(msg.value, "Assignment", topic=msg.topic)
                        except CodecError as exc:
                            log.warning("skipping undecodable assignment at offset %s: %s", msg.offset, exc)
                            continue
                        if pipeline.policy.apply(assignment):
                            log.info(
                                "policy: %s -> %s (version %s)",
                                assignment["role"],
                                assignment["model"],
                                assignment["version"],
                            )
        finally:
            await consumer.stop()

    async def on_stop(self) -> None:
        if self.pipeline.board is not None:
            await self.pipeline.board.close()
        if self._session is not None:
            await self._session.close()


async def _partitions_of(consumer: Any, topic: str, timeout_s: float = 30.0) -> list[int]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = consumer.partitions_for_topic(topic)
        if found:
            return sorted(found)
        await consumer._client.force_metadata_update()
        await asyncio.sleep(0.2)
    raise OlpError(f"topic {topic} does not exist: run `olp topics ensure` first")


def create_app(
    settings: Settings,
    stages: Collection[str] = STAGES,
    catalog: Catalog | None = None,
    seed: int | None = None,
) -> tuple[faust.App, Pipeline]:
    """The Faust app running `stages`, and the pipeline context its agents share."""
    unknown = set(stages) - set(STAGES)
    if unknown:
        raise OlpError(f"unknown stages {sorted(unknown)}; choose from {', '.join(STAGES)}")
    catalog = catalog or load_catalog(settings.catalog_path)
    kafka = settings.kafka
    app = faust.App(
        settings.app_id,
        broker=broker_url(kafka.bootstrap_servers),
        broker_credentials=None,
        store="memory://",
        datadir=str(settings.data_dir / settings.app_id),
        processing_guarantee="at_least_once",
        consumer_auto_offset_reset="earliest",
        topic_partitions=kafka.partitions,
        topic_replication_factor=kafka.replication_factor,
        topic_allow_declare=True,
        broker_session_timeout=kafka.session_timeout_ms / 1000,
        broker_heartbeat_interval=kafka.heartbeat_interval_ms / 1000,
        broker_rebalance_timeout=kafka.rebalance_timeout_ms / 1000,
        producer_max_batch_size=kafka.producer_max_batch_size,
        producer_max_request_size=kafka.max_message_bytes + 65536,
        web_enabled=settings.worker_web_port > 0,
        web_port=settings.worker_web_port or 6066,
        web_host="0.0.0.0",
        key_serializer="raw",
        value_serializer="raw",
        table_cleanup_interval=60.0,
        stream_wait_empty=False,
        autodiscover=False,
    )
    app.olp_fetch_max_wait_ms = kafka.fetch_max_wait_ms  # type: ignore[attr-defined]  # read by olp.faust_transport
    app.olp_data_max_batch_size = kafka.data_max_batch_size  # type: ignore[attr-defined]  # ditto: producer batching
    topics = TopicNames.with_prefix(settings.topic_prefix)
    pools = {role: catalog.pool(role) for role in ROLES}
    pipeline = Pipeline(
        settings=settings,
        topics=topics,
        codec=make_codec(settings.schema_registry_url),
        catalog=catalog,
        policy=PolicyView(pools),
        app=app,
        rng=random.Random(seed),
    )
    app.service(_Lifecycle(pipeline))  # type: ignore[arg-type]  # Faust types a class; it takes instances too
    _register_health(app, pipeline)

    from processors import (
        chunk_splitter,
        content_organizer,
        format_checker,
        relationship_checker,
        topic_finder,
        topic_locator,
    )

    modules = {
        "chunk_splitter": chunk_splitter,
        "topic_finder": topic_finder,
        "topic_locator": topic_locator,
        "relationship_checker": relationship_checker,
        "content_organizer": content_organizer,
        "format_checker": format_checker,
    }
    for stage in STAGES:
        if stage in stages:
            modules[stage].register(app, pipeline)
    return app, pipeline


def _register_health(app: faust.App, pipeline: Pipeline) -> None:
    @app.page("/healthz")
    async def healthz(web: Any, request: Any) -> Any:
        return web.json({"status": "ok"})

    @app.page("/readyz")
    async def readyz(web: Any, request: Any) -> Any:
        ready = pipeline.ready.is_set()
        return web.json({"ready": ready, "stats": pipeline.stats}, status=200 if ready else 503)

    @app.page("/metrics")
    async def prometheus_metrics(web: Any, request: Any) -> Any:
        scrape = telemetry.prometheus_text()
        if scrape is None:
            return web.text("prometheus exporter off (OTEL_METRICS_EXPORTER)\n", status=404)
        body, content_type = scrape
        return web.bytes(body, content_type=content_type.split(";")[0])
