"""The policy store service (spec section 4; STYLE 8): an aiohttp app factory around the pure
Role-RL learner (`policy_store.role_rl`).

Every replica reads all of `olp.feedback` (RoleOutcome), lets its learner observe each outcome,
and keeps its state in a snapshot file (saved after changes and on shutdown, restored at start)
that holds the feedback offsets it contains, so a restart replays exactly what the snapshot lacks.

One replica at a time, the leader, publishes a new versioned Assignment to `olp.policy` (key role)
whenever what a call acts on changes (model, candidates, warm-up, exploration, cascade, pin), so
processors hot-swap. The lease: replicas join consumer group `<app_id>-policy-store` on the
feedback topic (sticky assignment, records never read); the member holding partition 0 leads.
Losing the partition stops publishing before the group moves it (the revocation waits for an
in-flight publish); a new leader reads the policy topic to its end first and continues above the
highest version there, so versions never go backwards across a failover, and republishes every
role whose published plan differs from its own learner's. Followers keep learning, follow
`olp.policy` (the versions processors act on, operator pins), report `follower` in /healthz and
/readyz, and refuse operator changes (409).
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
from olp.errors import CodecError, OlpError
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
    offsets: dict[int, int] = field(default_factory=dict)
    """Feedback partition -> next offset to read; what the snapshot contains."""
    leader: bool = False
    """This replica holds the lease and may publish (always under `lock`)."""
    seen_version: int = 0
    """Highest Assignment version read back from the policy topic (any replica's)."""
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    @property
    def replica_role(self) -> str:
        return "leader" if self.leader else "follower"

    def assignment_record(self, role: str, reason: str | None = None) -> dict[str, Any]:
        view = self.learner.assignment(role)
        # Above everything published, by this replica or another (a lease handed over).
        self.version = max(self.version, self.seen_version) + 1
        self.remember(self.version, role)
        record = view.to_record(int(time.time() * 1000))
        record.update(version=self.version, reason=reason or view.reason)
        return record

    def remember(self, version: int, role: str) -> None:
        """Published `version` of `role` corresponds to the learner's current version of it."""
        self.version_map[version] = self.learner.version(role)
        for old in sorted(self.version_map)[: max(0, len(self.version_map) - VERSION_MAP_SIZE)]:
            del self.version_map[old]

    def stale(self, role: str) -> bool:
        """What a call acts on differs between the learner and the published record of `role`."""
        published = self.published.get(role)
        if published is None:
            return True
        return _plan_key(self.learner.assignment(role).to_record(0)) != _plan_key(published)

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
            "offsets": {str(k): v for k, v in self.offsets.items()},
            "learner": self.learner.snapshot(),
        }


def _plan_key(record: Mapping[str, Any]) -> tuple[Any, ...]:
    """The fields of an Assignment record a call acts on, except drifting numbers (Q-values, the
    cascade threshold, the failover order): a change of these is published."""
    explore = sorted(record.get("explore") or {}) if float(record.get("epsilon") or 0.0) > 0 else []
    return (
        record.get("model"),
        tuple(record.get("candidates") or ()),
        record.get("mode"),
        tuple(record.get("warmup") or ()),
        tuple(explore),
        record.get("incumbent"),
        record.get("cascade_to"),
        bool(record.get("pinned")),
    )


class NotLeader(OlpError):
    """This replica does not hold the publishing lease (another replica publishes)."""


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
            offsets={int(k): int(v) for k, v in data.get("offsets", {}).items()},
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
    if not state.leader:
        raise NotLeader("this policy-store replica is a follower; the leader publishes (retry there)")
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


async def _feedback_start(app: web.Application, consumer: Any, tps: Sequence[Any]) -> None:
    """Position the learning consumer: the snapshot's offsets; for a snapshot written before they
    were kept there, the group's committed offsets; otherwise the beginning (replay everything)."""
    state = app[STATE]
    legacy: dict[int, int] = {}
    if not state.offsets and state.observed == 0 and state.learner.counters.get("accepted", 0) > 0:
        legacy = await _committed_offsets(app, tps)
    for tp in tps:
        offset = state.offsets.get(tp.partition, legacy.get(tp.partition))
        if offset is None:
            await consumer.seek_to_beginning(tp)
        else:
            consumer.seek(tp, offset)


async def _committed_offsets(app: web.Application, tps: Sequence[Any]) -> dict[int, int]:
    from aiokafka import AIOKafkaConsumer

    settings = app[SETTINGS]
    consumer = AIOKafkaConsumer(
        **settings.kafka.aiokafka_config(), group_id=_group(settings), enable_auto_commit=False
    )
    await consumer.start()
    try:
        out = {}
        for tp in tps:
            committed = await consumer.committed(tp)
            if committed is not None:
                out[tp.partition] = int(committed)
        return out
    finally:
        await consumer.stop()


def _group(settings: Settings) -> str:
    return f"{settings.app_id}-policy-store"


async def _consume_feedback(app: web.Application) -> None:
    """Learn from every feedback partition (every replica); the leader publishes what changed."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    settings, state, topics, codec = app[SETTINGS], app[STATE], app[TOPICS], app[CODEC]
    kafka = settings.kafka
    consumer = AIOKafkaConsumer(
        **kafka.aiokafka_config(),
        group_id=None,
        enable_auto_commit=False,
        fetch_max_wait_ms=max(kafka.fetch_max_wait_ms, kafka.policy_fetch_max_wait_ms),
    )
    await consumer.start()
    try:
        await consumer.topics()  # refreshes the metadata
        partitions = sorted(consumer.partitions_for_topic(topics.feedback) or ())
        tps = [TopicPartition(topics.feedback, p) for p in partitions]
        consumer.assign(tps)
        await _feedback_start(app, consumer, tps)
        state.kafka_ready = True
        saved_at, unsaved = time.monotonic(), False
        while True:
            batches = await consumer.getmany(timeout_ms=200, max_records=500)
            if not batches:
                if unsaved:
                    async with state.lock:  # not in the middle of an API call's change
                        save_snapshot(state, settings.learner.snapshot_path)
                    saved_at, unsaved = time.monotonic(), False
                continue
            changed: dict[str, list[SpanContext]] = {}  # role -> the feedback spans that changed it
            async with state.lock:
                for tp, records in batches.items():
                    for msg in records:
                        state.offsets[tp.partition] = msg.offset + 1
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
                            role = str(outcome["role"])
                            moved = role in ROLES and state.learner.observe(learned)
                            telemetry.record_feedback(span, outcome, moved, _reward(state, outcome))
                            if role in ROLES:
                                spans = changed.setdefault(role, [])
                                if moved:
                                    spans.append(span.get_span_context())
                if state.leader:
                    for role in sorted(changed):
                        if changed[role] or state.stale(role):
                            await publish(app, role, causes=changed[role])
                # Snapshots are throttled: under a flood, writing the whole learner after every
                # batch was most of this process's CPU.
                unsaved = True
                if time.monotonic() - saved_at >= settings.learner.snapshot_interval_s:
                    save_snapshot(state, settings.learner.snapshot_path)
                    saved_at, unsaved = time.monotonic(), False
    finally:
        state.kafka_ready = False
        with contextlib.suppress(Exception):
            await consumer.stop()


async def _follow_policy(app: web.Application) -> None:
    """Read `olp.policy` from its start for as long as the app runs: the highest version any
    replica published (a new leader continues above it), and, on a follower, the leader's records
    (shown by the API, mapped to this learner's versions for stale-policy correction, pins mirrored)."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    settings, state, topic, codec = app[SETTINGS], app[STATE], app[TOPICS].policy, app[CODEC]
    kafka = settings.kafka
    consumer = AIOKafkaConsumer(
        **kafka.aiokafka_config(),
        group_id=None,
        enable_auto_commit=False,
        fetch_max_wait_ms=max(kafka.fetch_max_wait_ms, kafka.policy_fetch_max_wait_ms),
    )
    await consumer.start()
    try:
        await consumer.topics()
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        while True:
            for records in (await consumer.getmany(timeout_ms=500)).values():
                for msg in records:
                    try:
                        record = codec.decode(msg.value, "Assignment", topic=topic)
                    except CodecError as exc:
                        log.warning("policy record at %s/%s undecodable: %s", msg.partition, msg.offset, exc)
                        continue
                    version, role = int(record["version"]), str(record["role"])
                    state.seen_version = max(state.seen_version, version)
                    if version <= state.version:
                        continue  # ours, or older than what this replica published
                    if role not in ROLES:
                        continue
                    async with state.lock:
                        if state.leader:
                            log.error(
                                "another replica published %s version %s while this one leads;"
                                " versions continue above it",
                                role,
                                version,
                            )
                        _mirror(state, role, record)
    finally:
        with contextlib.suppress(Exception):
            await consumer.stop()


def _mirror(state: PolicyState, role: str, record: Mapping[str, Any]) -> None:
    """Take another replica's published record of `role` as what processors act on."""
    from policy_store.role_rl import PolicyError

    state.published[role] = dict(record)
    state.remember(int(record["version"]), role)
    view = state.learner.assignment(role)
    try:
        if record.get("pinned") and not (view.pinned and view.model == record["model"]):
            state.learner.pin(role, str(record["model"]))
        elif not record.get("pinned") and view.pinned:
            state.learner.unpin(role)
    except PolicyError as exc:
        log.warning("cannot mirror the leader's pin of %s: %s", role, exc)


async def _take_over(app: web.Application) -> None:
    """Become the leader: continue above every version on the policy topic, and publish each role
    whose published plan is not this learner's (or is out of step with the snapshot)."""
    state = app[STATE]
    highest = await _highest_published_version(app)
    async with state.lock:
        ours = state.version
        state.version = max(state.version, state.seen_version, highest)
        state.leader = True
        # The topic and this replica disagree (another replica published last, a crash between
        # publishing and saving, a restarted broker lost the topic): publish every role again, so
        # processors hold what this learner decides.
        out_of_step = bool(state.published) and highest != ours
        log.info(
            "leader: this policy-store replica publishes now (highest version on %s: %s; continuing from %s)",
            app[TOPICS].policy,
            highest,
            state.version + 1,
        )
        for role in ROLES:
            if role not in state.published:
                await publish(app, role, "initial assignment")
            elif out_of_step or state.stale(role):
                await publish(app, role, "republished by a new leader")
        save_snapshot(state, app[SETTINGS].learner.snapshot_path)


async def _hold_lease(app: web.Application, decided: asyncio.Event) -> None:
    """Membership in the lease group; the holder of feedback partition 0 leads (`_take_over`).
    `decided` is set once this replica knows whether it leads."""
    from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
    from aiokafka.coordinator.assignors.sticky.sticky_assignor import StickyPartitionAssignor

    settings, state, feedback = app[SETTINGS], app[STATE], app[TOPICS].feedback
    kafka = settings.kafka
    lease = TopicPartition(feedback, 0)
    consumer = AIOKafkaConsumer(
        **kafka.aiokafka_config(),
        group_id=_group(settings),
        enable_auto_commit=False,
        auto_offset_reset="latest",  # nothing is read; avoid fetching the topic's history
        fetch_max_wait_ms=kafka.fetch_max_wait_ms,
        session_timeout_ms=kafka.session_timeout_ms,
        heartbeat_interval_ms=kafka.heartbeat_interval_ms,
        rebalance_timeout_ms=kafka.rebalance_timeout_ms,
        partition_assignment_strategy=(StickyPartitionAssignor,),
    )
    taking_over: list[asyncio.Task[None]] = []

    class Listener(ConsumerRebalanceListener):  # type: ignore[misc]
        async def on_partitions_revoked(self, revoked: Any) -> None:
            for task in taking_over:
                task.cancel()
            taking_over.clear()
            async with state.lock:  # waits for a publish in flight
                if state.leader:
                    log.warning("follower: the lease moves; this replica stops publishing")
                state.leader = False

        async def on_partitions_assigned(self, assigned: Any) -> None:
            consumer.pause(*assigned)
            if lease in assigned:
                task = asyncio.create_task(_take_over(app), name="policy-take-over")
                task.add_done_callback(lambda t: _took_over(t, decided))
                taking_over.append(task)
            else:
                log.info("follower: partition 0 of %s is held by another replica", feedback)
                decided.set()

    await consumer.start()
    consumer.subscribe([feedback], listener=Listener())
    try:
        while True:
            await consumer.getmany(timeout_ms=1000)  # keeps the membership alive; nothing is read
    finally:
        for task in taking_over:
            task.cancel()
        with contextlib.suppress(Exception):
            await consumer.stop()  # leaves the group: the lease moves at once
        state.leader = False


def _took_over(task: asyncio.Task[None], decided: asyncio.Event) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("taking over as leader failed: %s", task.exception())
    decided.set()


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
    from olp.kafka import stop_when_data_lost

    await stop_when_data_lost(app[SETTINGS].kafka, app[TOPICS].all(), "policy store")


async def kafka_ctx(app: web.Application) -> AsyncIterator[None]:
    """Producer, policy follower, feedback learner and lease for the app's lifetime, cancelled
    cleanly on shutdown. Start-up waits (bounded) until this replica knows whether it leads, so a
    single replica has published every role before it serves."""
    settings = app[SETTINGS]
    producer = AIOKafkaProducer(**settings.kafka.aiokafka_config(), linger_ms=0)
    await producer.start()
    app[PRODUCER] = producer
    decided = asyncio.Event()
    tasks = [
        asyncio.create_task(_follow_policy(app), name="policy-follower"),
        asyncio.create_task(_consume_feedback(app), name="feedback-consumer"),
        asyncio.create_task(_hold_lease(app, decided), name="policy-lease"),
        asyncio.create_task(_watch_broker(app), name="broker-watch"),
    ]
    wait_s = 2 * settings.kafka.rebalance_timeout_ms / 1000.0 + 10.0
    try:
        await asyncio.wait_for(decided.wait(), wait_s)
    except TimeoutError:
        log.warning("no lease decision after %.0fs; serving as a follower until one comes", wait_s)
    try:
        yield
    finally:
        for running in reversed(tasks):
            running.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await running
        save_snapshot(app[STATE], settings.learner.snapshot_path)
        await producer.stop()


def _classify(exc: OlpError) -> tuple[int, float | None]:
    """Domain errors of the API: a follower refuses changes with 409 (ask the leader), else 400."""
    return (409, None) if isinstance(exc, NotLeader) else (400, None)


def create_app(
    settings: Settings, catalog: Catalog | None = None, seed: int | None = None
) -> web.Application:
    """The policy store: learner state, Kafka loop and HTTP API."""
    from olp.http import error_middleware
    from policy_store import dashboard
    from policy_store.routes import routes

    app = web.Application(middlewares=[error_middleware(_classify)], client_max_size=64 * 1024)
    app[SETTINGS] = settings
    app[TOPICS] = TopicNames.with_prefix(settings.topic_prefix)
    app[CODEC] = make_codec(settings.schema_registry_url)
    app[STATE] = initial_state(settings, catalog or load_catalog(settings.catalog_path), seed)
    app.add_routes(routes)
    app.cleanup_ctx.append(kafka_ctx)
    dashboard.setup(app)  # GET /dashboard, /v1/dashboard, /metrics (policy_store/dashboard.py)
    return app
