"""The Faust app: one agent per OLP role, wired by topic (spec sections 2-3).

    olp.transcripts + olp.progress -> chunk_splitter -> olp.chunks -> topic_finder -> olp.found
    -> topic_locator -> olp.located -> relationship_checker -> olp.checked -> content_organizer
    -> olp.organized -> format_checker -> olp.documents (+ olp.progress back to the splitter)
    every LLM call -> olp.feedback;  olp.policy -> every worker's PolicyView;  failures -> olp.dlq

`create_app` builds the app and the worker context (`processors.worker.WorkerContext`: encoding,
sending with trace context, the error policy, the LLM call machinery) from settings; each role's
`register(worker)` adds its agent. A lifecycle service creates the model gateway and the board of
judges, follows the policy topic and watches the broker for the worker's lifetime.
"""

from __future__ import annotations

import logging
import os
import random
from collections.abc import Callable, Collection
from typing import Any

import aiohttp
import faust
from mode import Service

from olp import telemetry
from olp.catalog import Catalog, load_catalog
from olp.contexts import record_policy_key
from olp.errors import CodecError, OlpError
from olp.faust_transport import broker_url
from olp.kafka import read_from_start, stop_when_data_lost
from olp.settings import ROLES, Settings
from olp.topics import TopicNames
from processors import (
    content_organizer,
    format_checker,
    relationship_checker,
    splitter_agent,
    topic_finder,
    topic_locator,
)
from processors.judge import JudgeBoard, board_models, feed_judges
from processors.model_gateway import ModelGateway
from processors.policy_view import PolicyView
from processors.worker import WorkerContext
from schemas.codec import make_codec

log = logging.getLogger("olp.processors")

SETTLE_TIMEOUT_S = 5.0
"""How long a stopping worker waits for extras still running to record their outcomes."""

REGISTER: dict[str, Callable[[WorkerContext], Any]] = {
    "chunk_splitter": splitter_agent.register,
    "topic_finder": topic_finder.register,
    "topic_locator": topic_locator.register,
    "relationship_checker": relationship_checker.register,
    "content_organizer": content_organizer.register,
    "format_checker": format_checker.register,
}
"""Each role's agent, in pipeline order."""
ROLE_AGENTS: tuple[str, ...] = tuple(REGISTER)
"""The roles a worker can run, one Faust agent each (`olp worker --roles`)."""


def make_board(worker: WorkerContext) -> JudgeBoard | None:
    """The worker's board of judges from `settings.judges` (processors/judge.py, `board_models`);
    None when it has no model."""
    judges = worker.settings.judges
    models = board_models(judges, worker.catalog)
    if not models or worker.gateway is None:
        return None
    for model in models:
        worker.catalog.model(model)  # ConfigError at start-up for a judge not in the catalog
    return JudgeBoard(
        worker.gateway,
        models,
        worker.send,
        worker.topics.verdicts,
        worker.topics.feedback,
        random.Random(worker.rng.random()),
        sample_rate=judges.sample_rate,
        settled_rate=judges.settled_rate,
        settled_gap=judges.settled_gap,
        roles=judges.roles,
        weights=judges.weights,
        apply_corrections=judges.apply_corrections,
        max_pending=judges.max_pending,
        permitted=feed_judges(worker.settings, worker.catalog, models),
        assignment_of=worker.policy.assignments.get,
        budget=worker.llm_budget,
    )


class _Lifecycle(Service):
    """Creates the model gateway and follows the policy topic for the worker's lifetime."""

    def __init__(self, worker: WorkerContext, **kwargs: Any) -> None:
        self.worker = worker
        self._session: aiohttp.ClientSession | None = None
        super().__init__(**kwargs)

    async def on_start(self) -> None:
        self._session = aiohttp.ClientSession(trust_env=True)  # HTTPS_PROXY and NO_PROXY
        self.worker.gateway = ModelGateway(self.worker.catalog, self._session, dict(os.environ))
        self.worker.board = make_board(self.worker)
        app = self.worker.app
        telemetry.watch_consumer_lag(lambda: telemetry.faust_consumer_lag(app))
        self.worker.ready.set()

    @Service.task
    async def _watch_broker(self) -> None:
        """Report broker outages; when the broker lost its data (a restarted in-memory broker),
        re-create the topics and stop, so the supervisor restarts this worker clean (spec 6)."""
        settings = self.worker.settings
        await stop_when_data_lost(
            settings.kafka, self.worker.topics.all(), "worker", settings.recreate_lost_topics
        )

    @Service.task
    async def _follow_policy(self) -> None:
        """Apply every Assignment of the policy topic, from its start, for the worker's lifetime."""
        worker, kafka = self.worker, self.worker.settings.kafka
        wait_ms = max(kafka.fetch_max_wait_ms, kafka.policy_fetch_max_wait_ms)
        async with read_from_start(kafka, [worker.topics.policy], fetch_max_wait_ms=wait_ms) as (consumer, _):
            while not self.should_stop:
                batches = await consumer.getmany(timeout_ms=200)
                for records in batches.values():
                    for msg in records:
                        self._apply_assignment(msg)

    def _apply_assignment(self, msg: Any) -> None:
        worker = self.worker
        try:
            assignment = worker.codec.decode(msg.value, "Assignment", topic=msg.topic)
        except CodecError as exc:
            log.warning("skipping undecodable assignment at offset %s: %s", msg.offset, exc)
            return
        if worker.policy.apply(assignment):
            log.info(
                "policy: %s -> %s (version %s)",
                record_policy_key(assignment),
                assignment["model"],
                assignment["version"],
            )

    async def on_stop(self) -> None:
        await self.worker.settle(SETTLE_TIMEOUT_S)
        if self.worker.board is not None:
            await self.worker.board.close()
        if self._session is not None:
            await self._session.close()


def create_app(
    settings: Settings,
    roles: Collection[str] = ROLE_AGENTS,
    catalog: Catalog | None = None,
    seed: int | None = None,
) -> tuple[faust.App, WorkerContext]:
    """The Faust app running `roles`, and the worker context its agents share."""
    unknown = set(roles) - set(ROLE_AGENTS)
    if unknown:
        raise OlpError(f"unknown roles {sorted(unknown)}; choose from {', '.join(ROLE_AGENTS)}")
    catalog = catalog or load_catalog(settings.catalog_path)
    kafka = settings.kafka
    app = faust.App(
        settings.app_id,
        broker=broker_url(kafka.bootstrap_servers),
        **kafka.faust_app_kwargs(),  # TLS / SASL / OAUTHBEARER, as for the other clients
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
        web_bind=settings.worker_web_host,
        # Only our pages (health, readiness, metrics): Faust's table pages serve table contents
        # (buffered transcript sentences), its router pages the cluster's topology, and its
        # stats and graph pages the worker's internals. No agent uses `@table_route`.
        web_tables_enabled=False,
        web_router_enabled=False,
        web_stats_enabled=False,
        web_graph_enabled=False,
        web_metrics_enabled=False,
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
    worker = WorkerContext(
        settings=settings,
        topics=topics,
        codec=make_codec(settings.schema_registry_url),
        catalog=catalog,
        policy=PolicyView(pools, params=settings.learner),
        app=app,
        rng=random.Random(seed),
    )
    app.service(_Lifecycle(worker))  # type: ignore[arg-type]  # Faust types a class; it takes instances too
    _register_health(app, worker)

    for role in ROLE_AGENTS:
        if role in roles:
            REGISTER[role](worker)
    return app, worker


def _register_health(app: faust.App, worker: WorkerContext) -> None:
    @app.page("/healthz")
    async def healthz(web: Any, request: Any) -> Any:
        return web.json({"status": "ok"})

    @app.page("/readyz")
    async def readyz(web: Any, request: Any) -> Any:
        ready = worker.ready.is_set()
        return web.json({"ready": ready, "stats": worker.stats}, status=200 if ready else 503)

    @app.page("/metrics")
    async def prometheus_metrics(web: Any, request: Any) -> Any:
        scrape = telemetry.prometheus_text()
        if scrape is None:
            return web.text("prometheus exporter off (OTEL_METRICS_EXPORTER)\n", status=404)
        body, content_type = scrape
        return web.bytes(body, content_type=content_type.split(";")[0])
