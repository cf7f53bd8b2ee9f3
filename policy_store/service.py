"""The policy store's app factory (spec section 4; STYLE 8): settings in, an aiohttp app out, the
Role-RL learner (`policy_store.learner`) inside.

Everything with a lifetime lives in `cleanup_ctx`, in this order: the state (read from the
snapshot file at start, written at the end), the bus (Kafka, unless one is handed in), and the
replica's loops on it, each restarted after a Kafka failure:
- the feedback loop (policy_store/feedback.py): every replica learns from all of `olp.feedback`;
- the policy follower and the lease (policy_store/leadership.py): one replica, the leader,
  publishes to `olp.policy`; followers keep learning, report `follower` in /healthz and /readyz
  and refuse operator changes (409).
Start-up waits (bounded) until this replica knows whether it leads, so a single replica has
published every role before it serves. The HTTP API is in policy_store/routes.py, the dashboard in
policy_store/dashboard.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

from aiohttp import web
from aiokafka.errors import KafkaError

from olp.catalog import Catalog, load_catalog
from olp.errors import OlpError, UnavailableError
from olp.kafka import stop_when_data_lost
from olp.settings import Settings
from olp.topics import TopicNames
from policy_store.bus import PolicyBus
from policy_store.feedback import run_feedback_loop
from policy_store.keys import BUS, CODEC, SETTINGS, STATE, TOPICS
from policy_store.leadership import Leadership, follow_policy
from policy_store.state import NotLeader, load_state, save_snapshot
from schemas.codec import make_codec

log = logging.getLogger("olp.policy_store")

AppContext = Callable[[web.Application], AsyncIterator[None]]
RETRY_S = 2.0


def state_ctx(catalog: Catalog, seed: int | None) -> AppContext:
    """The state from the snapshot file (or fresh) for the app's lifetime, saved at the end."""

    async def ctx(app: web.Application) -> AsyncIterator[None]:
        settings = app[SETTINGS]
        app[STATE] = load_state(settings, catalog, seed)
        yield
        save_snapshot(app[STATE], settings.learner.snapshot_path)

    return ctx


async def kafka_bus_ctx(app: web.Application) -> AsyncIterator[None]:
    """The Kafka bus, and the broker watch: when the broker lost its data (a restarted in-memory
    broker) the store stops gracefully (the snapshot is saved), so its supervisor restarts it and
    it publishes every role again on the new broker (spec section 6)."""
    from policy_store.kafka_bus import KafkaBus

    settings, topics = app[SETTINGS], app[TOPICS]
    bus = KafkaBus(settings, topics, app[CODEC])
    await bus.start()
    app[BUS] = bus
    watch = asyncio.create_task(
        stop_when_data_lost(settings.kafka, topics.all(), "policy store", settings.recreate_lost_topics)
    )
    try:
        yield
    finally:
        await _stop(watch)
        await bus.stop()


async def replica_ctx(app: web.Application) -> AsyncIterator[None]:
    """The policy follower, the feedback loop and the lease, cancelled cleanly on shutdown."""
    settings, state, bus = app[SETTINGS], app[STATE], app[BUS]
    leadership = Leadership(state, bus, settings.learner.snapshot_path)
    tasks = [
        _supervised("policy follower", lambda: follow_policy(state, bus)),
        _supervised("feedback loop", lambda: run_feedback_loop(state, bus, settings.learner)),
        _supervised("policy lease", leadership.hold),
    ]
    wait_s = 2 * settings.kafka.rebalance_timeout_ms / 1000.0 + 10.0
    try:
        await asyncio.wait_for(leadership.decided.wait(), wait_s)
    except TimeoutError:
        log.warning("no lease decision after %.0fs; serving as a follower until one comes", wait_s)
    try:
        yield
    finally:
        for task in reversed(tasks):
            await _stop(task)


def _supervised(name: str, run: Callable[[], Awaitable[None]]) -> asyncio.Task[None]:
    """`run` as a task, started again after a Kafka failure (every loop resumes from the state)."""

    async def forever() -> None:
        while True:
            try:
                await run()
                return
            except (KafkaError, OlpError, OSError) as exc:
                log.error("%s failed, restarting in %.0fs: %r", name, RETRY_S, exc)
                await asyncio.sleep(RETRY_S)

    return asyncio.create_task(forever(), name=name)


async def _stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def classify(exc: OlpError) -> tuple[int, float | None]:
    """Domain errors of the API: a follower refuses changes with 409 (ask the leader), Kafka not
    taking a record is 503, the rest 400."""
    if isinstance(exc, NotLeader):
        return 409, None
    if isinstance(exc, UnavailableError):
        return 503, 1.0
    return 400, None


def create_app(
    settings: Settings,
    catalog: Catalog | None = None,
    seed: int | None = None,
    *,
    bus: PolicyBus | None = None,
) -> web.Application:
    """The policy store. `bus` replaces Kafka (tests: `policy_store.bus.MemoryBus`); `seed` seeds
    the learner's random generator. ConfigError when it would serve reads to other machines
    without a read token (`olp.http.require_read_token`)."""
    from olp.http import error_middleware, require_read_token
    from policy_store import dashboard
    from policy_store.routes import MAX_BODY_BYTES, routes

    require_read_token(
        "the policy store",
        settings.policy_store_host,
        settings.read_token,
        settings.allow_unauthenticated_reads,
        ("read_token (OLP_READ_TOKEN)", "allow_unauthenticated_reads (OLP_ALLOW_UNAUTHENTICATED_READS)"),
    )
    middlewares = [error_middleware(classify, settings.secret_values())]
    app = web.Application(middlewares=middlewares, client_max_size=MAX_BODY_BYTES)
    app[SETTINGS] = settings
    app[TOPICS] = TopicNames.with_prefix(settings.topic_prefix)
    app[CODEC] = make_codec(settings.schema_registry_url)
    app.add_routes(routes)
    app.cleanup_ctx.append(state_ctx(catalog or load_catalog(settings.catalog_path), seed))
    if bus is None:
        app.cleanup_ctx.append(kafka_bus_ctx)
    else:
        app[BUS] = bus
    app.cleanup_ctx.append(replica_ctx)
    dashboard.setup(app)  # GET /dashboard, /v1/dashboard, /metrics (policy_store/dashboard.py)
    return app
