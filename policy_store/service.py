"""The policy store service (spec section 4; STYLE 8): an aiohttp app factory around the pure
Role-RL learner (`policy_store.role_rl`).

Reads `olp.feedback` (RoleOutcome) in consumer group `<app_id>-policy-store`, lets the learner
observe each outcome, and publishes a new versioned Assignment to `olp.policy` (key role) whenever
a role's choice changes, so processors hot-swap. State is snapshotted to a file after changes and
on shutdown, and restored at start; feedback offsets are committed only after the snapshot that
contains them, so a restart replays exactly what the snapshot lacks.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web
from aiokafka import AIOKafkaProducer
from opentelemetry.trace import SpanContext

from olp import telemetry
from olp.catalog import Catalog, load_catalog
from olp.errors import CodecError
from olp.settings import ROLES, Settings
from olp.topics import TopicNames
from policy_store.role_rl import Budget, RoleRL, RoleRLParams
from schemas.codec import Codec, make_codec

log = logging.getLogger("olp.policy_store")


@dataclass
class PolicyState:
    """The learner plus what the service needs to publish consistently."""

    learner: RoleRL
    version: int = 0
    published: dict[str, dict[str, Any]] = field(default_factory=dict)
    version_map: dict[int, int] = field(default_factory=dict)
    """Published (global) version -> the learner's own version of that role at the time, so
    feedback that echoes a published version is judged against the learner's version history
    (stale-policy correction)."""
    observed: int = 0
    kafka_ready: bool = False
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def assignment_record(self, role: str, reason: str | None = None) -> dict[str, Any]:
        view = self.learner.assignment(role)
        self.version += 1
        self.version_map[self.version] = self.learner.version(role)
        for old in sorted(self.version_map)[: max(0, len(self.version_map) - VERSION_MAP_SIZE)]:
            del self.version_map[old]
        return {
            "role": role,
            "model": view.model,
            "q_values": {k: float(v) for k, v in view.q_values.items()},
            "epsilon": float(view.epsilon),
            "candidates": list(view.candidates),
            "version": self.version,
            "reason": reason or view.reason,
            "ts_ms": int(time.time() * 1000),
        }

    def for_learner(self, outcome: Mapping[str, Any]) -> Mapping[str, Any]:
        """The outcome with its policy version in the learner's terms (0, far off-policy, when
        the published version is older than the map remembers)."""
        published = int(outcome.get("policy_version") or 0)
        if published == 0:
            return outcome
        return {**outcome, "policy_version": self.version_map.get(published, 0)}

    def snapshot(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "published": self.published,
            "version_map": {str(k): v for k, v in self.version_map.items()},
            "learner": self.learner.snapshot(),
        }


VERSION_MAP_SIZE = 4096

SETTINGS = web.AppKey("settings", Settings)
STATE = web.AppKey("state", PolicyState)
CODEC = web.AppKey("codec", Codec)
TOPICS = web.AppKey("topics", TopicNames)
PRODUCER = web.AppKey("producer", AIOKafkaProducer)


def learner_params(settings: Settings) -> RoleRLParams:
    learner = settings.learner
    return RoleRLParams(
        alpha=learner.alpha,
        gamma=learner.gamma,
        epsilon=learner.epsilon,
        reward_value=learner.reward_value,
        cost_weight=learner.cost_weight,
        latency_weight=learner.latency_weight,
    )


def initial_state(settings: Settings, catalog: Catalog, seed: int | None = None) -> PolicyState:
    """Fresh learner, or the one in the snapshot file when there is one."""
    rng = random.Random(seed)
    path = settings.learner.snapshot_path
    if path and Path(path).is_file():
        data = json.loads(Path(path).read_text())
        log.info("restoring policy state from %s (version %s)", path, data.get("version"))
        return PolicyState(
            learner=RoleRL.restore(data["learner"], rng),
            version=int(data["version"]),
            published=dict(data.get("published", {})),
            version_map={int(k): int(v) for k, v in data.get("version_map", {}).items()},
        )
    pools = {role: list(catalog.pool(role)) for role in ROLES}
    # Hard spend limits per feed (feed "*" would be global), held by the learner.
    budgets = {
        name: Budget(feed.budget_usd_per_hour, 3600.0)
        for name, feed in settings.feeds.items()
        if feed.budget_usd_per_hour is not None
    }
    return PolicyState(learner=RoleRL(pools, learner_params(settings), rng, budgets=budgets))


def save_snapshot(state: PolicyState, path: Path | None) -> None:
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(state.snapshot()))
    tmp.replace(path)  # atomic: a crash leaves the old or the new snapshot, never half of one


async def publish(
    app: web.Application, role: str, reason: str | None = None, causes: Sequence[SpanContext] = ()
) -> dict[str, Any]:
    """Publish the learner's current assignment for `role` as a new version (one span each,
    continuing the trace of the feedback in `causes` that changed it; olp/telemetry.py)."""
    state, topics, codec = app[STATE], app[TOPICS], app[CODEC]
    with telemetry.policy_update_span(role, causes) as span:
        record = state.assignment_record(role, reason)
        state.published[role] = record
        value = codec.encode("Assignment", record, topic=topics.policy)
        headers = None if telemetry.kafka_instrumented() else telemetry.inject_headers()
        await app[PRODUCER].send_and_wait(topics.policy, value=value, key=role.encode(), headers=headers)
        telemetry.record_policy_update(span, record)
    log.info(
        "published %s -> %s (version %s): %s", role, record["model"], record["version"], record["reason"]
    )
    return record


async def _consume_feedback(app: web.Application) -> None:
    from aiokafka import AIOKafkaConsumer

    settings, state, topics, codec = app[SETTINGS], app[STATE], app[TOPICS], app[CODEC]
    kafka = settings.kafka
    consumer = AIOKafkaConsumer(
        topics.feedback,
        **kafka.aiokafka_config(),
        group_id=f"{settings.app_id}-policy-store",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=kafka.fetch_max_wait_ms,
        session_timeout_ms=kafka.session_timeout_ms,
        heartbeat_interval_ms=kafka.heartbeat_interval_ms,
        rebalance_timeout_ms=kafka.rebalance_timeout_ms,
    )
    await consumer.start()
    state.kafka_ready = True
    try:
        while True:
            batches = await consumer.getmany(timeout_ms=200, max_records=500)
            if not batches:
                continue
            changed: dict[str, list[SpanContext]] = {}  # role -> the feedback spans that changed it
            async with state.lock:
                for records in batches.values():
                    for msg in records:
                        with telemetry.feedback_span(msg) as span:
                            try:
                                outcome = codec.decode(msg.value, "RoleOutcome", topic=msg.topic)
                            except CodecError as exc:
                                log.warning(
                                    "feedback at %s/%s undecodable, skipped: %s",
                                    msg.partition,
                                    msg.offset,
                                    exc,
                                )
                                continue
                            state.observed += 1
                            learned = state.for_learner(outcome)
                            moved = outcome["role"] in ROLES and state.learner.observe(learned)
                            telemetry.record_feedback(span, outcome, moved, _reward(state, outcome))
                            if moved:
                                changed.setdefault(str(outcome["role"]), []).append(span.get_span_context())
                for role in sorted(changed):
                    await publish(app, role, causes=changed[role])
                save_snapshot(state, settings.learner.snapshot_path)
            await consumer.commit()
    finally:
        state.kafka_ready = False
        with contextlib.suppress(Exception):
            await consumer.stop()


def _reward(state: PolicyState, outcome: dict[str, Any]) -> float | None:
    """The paper's reward of an outcome, for telemetry only (None when it cannot be had)."""
    try:
        from policy_store.role_rl import reward

        return float(reward(outcome, state.learner.params))
    except Exception:
        return None


async def _highest_published_version(app: web.Application, timeout_s: float = 10.0) -> int:
    """The highest Assignment version on the policy topic (0 when empty), read by assignment up to
    each partition's fetch-reported high watermark (end offsets can be wrong: spec section 6)."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    settings, topic, codec = app[SETTINGS], app[TOPICS].policy, app[CODEC]
    consumer = AIOKafkaConsumer(
        **settings.kafka.aiokafka_config(),
        group_id=None,
        enable_auto_commit=False,
        fetch_max_wait_ms=settings.kafka.fetch_max_wait_ms,
    )
    await consumer.start()
    highest = 0
    try:
        await consumer.topics()  # refreshes the metadata
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        if not tps:
            return 0
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        pending, deadline = set(tps), time.monotonic() + timeout_s
        while pending and time.monotonic() < deadline:
            for records in (await consumer.getmany(timeout_ms=200)).values():
                for msg in records:
                    try:
                        version = int(codec.decode(msg.value, "Assignment", topic=topic)["version"])
                    except CodecError:
                        continue
                    highest = max(highest, version)
            for tp in list(pending):
                watermark = consumer.highwater(tp)
                if watermark is not None and await consumer.position(tp) >= watermark:
                    pending.discard(tp)
        if pending:
            log.warning("policy topic not read to its end in %.0fs; highest version %s", timeout_s, highest)
    finally:
        await consumer.stop()
    return highest


async def _watch_broker(app: web.Application) -> None:
    """Report broker outages; when the broker lost its data (a restarted in-memory broker),
    re-create the topics and stop gracefully (the snapshot is saved), so the supervisor restarts
    the store, which then publishes every role again on the new broker (spec section 6)."""
    import os
    import signal

    from olp.broker_watch import BrokerWatch, watch_broker

    kafka = app[SETTINGS].kafka
    names = app[TOPICS].all()
    watch = BrokerWatch(kafka.confluent_config(), names, kafka.partitions, kafka.replication_factor)

    def restart(_lost: list[str]) -> None:
        log.error("stopping the policy store so that its supervisor starts it again on the new broker")
        os.kill(os.getpid(), signal.SIGTERM)

    await watch_broker(watch, restart)


async def kafka_ctx(app: web.Application) -> AsyncIterator[None]:
    """Producer + feedback consumer for the app's lifetime, cancelled cleanly on shutdown."""
    settings = app[SETTINGS]
    producer = AIOKafkaProducer(**settings.kafka.aiokafka_config(), linger_ms=0)
    await producer.start()
    app[PRODUCER] = producer
    # Versions only grow, even when the snapshot lags what was published (a crash between
    # publishing and saving) or is gone: processors ignore an assignment whose version is not
    # above the one they hold. When the topic and the snapshot disagree (the topic is ahead, or
    # it lost records with a restarted broker), every role is published again, so processors
    # hold what this restored learner decides.
    state = app[STATE]
    highest = await _highest_published_version(app)
    out_of_step = bool(state.published) and highest != state.version
    if highest != state.version:
        log.warning(
            "policy topic holds version %s, the snapshot %s: versions continue from %s%s",
            highest,
            state.version,
            max(highest, state.version) + 1,
            ", every role is published again" if out_of_step else "",
        )
    state.version = max(highest, state.version)
    for role in ROLES:
        if role not in state.published:
            await publish(app, role, "initial assignment")
        elif out_of_step:
            await publish(app, role, "republished after restart")
    task = asyncio.create_task(_consume_feedback(app), name="feedback-consumer")
    watch = asyncio.create_task(_watch_broker(app), name="broker-watch")
    try:
        yield
    finally:
        for running in (watch, task):
            running.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await running
        save_snapshot(app[STATE], settings.learner.snapshot_path)
        await producer.stop()


def create_app(
    settings: Settings, catalog: Catalog | None = None, seed: int | None = None
) -> web.Application:
    """The policy store: learner state, Kafka loop and HTTP API."""
    from olp.http import error_middleware
    from policy_store import dashboard
    from policy_store.routes import routes

    app = web.Application(middlewares=[error_middleware()], client_max_size=64 * 1024)
    app[SETTINGS] = settings
    app[TOPICS] = TopicNames.with_prefix(settings.topic_prefix)
    app[CODEC] = make_codec(settings.schema_registry_url)
    app[STATE] = initial_state(settings, catalog or load_catalog(settings.catalog_path), seed)
    app.add_routes(routes)
    app.cleanup_ctx.append(kafka_ctx)
    dashboard.setup(app)  # GET /dashboard, /v1/dashboard, /metrics (policy_store/dashboard.py)
    return app
