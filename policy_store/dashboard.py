"""Live dashboard of the policy store (spec sections 4 and 7).

    GET /dashboard                 the page (policy_store/static/: HTML, JS, CSS; no external assets)
    GET /dashboard/static/{file}   its files
    GET /v1/dashboard              the JSON the page polls every two seconds (read token, when set;
                                   the page takes it from its address: /dashboard#token=...)
    GET /v1/history                per role, how its model, quality estimate, canary score, reward
                                   and spend moved over time (same read token; polled less often)
    GET /metrics                   Prometheus scrape text when OTEL_METRICS_EXPORTER includes prometheus

What the page shows, and where it comes from:
- the current assignment per role with its Q-values and reason, and per model its quality
  estimate, the evidence behind it by source and its distance from the canary-measured quality
  (the calibration gap): the learner in this process (`PolicyState.role_view`);
- per role, quality estimate and expected reward over time: a ring sampled from the learner in
  this process (policy_store/history.py), and spend per minute: `olp.feedback`, per role;
- spend vs budget over time: `olp.feedback` (RoleOutcome cost_usd, feed, ts_ms), summed per minute
  and per epoch-aligned budget window (the learner's windows), against the feed's
  `budget_usd_per_hour`;
- throughput and lag per stage: the processors' consumer group's committed offsets against the
  end offsets of each stage's input topic (records/s from their change). On Tansu, end offsets of
  topics written in batches (the replay client's transcripts) lag by up to a batch (spec
  section 6); lag is clamped at 0;
- the most recent documents: `olp.documents` (newest version of each topic wins).

The page only reads. The follower (`DashboardFeed`) reads `olp.feedback` and `olp.documents` from
the beginning by assignment (no consumer group, no offsets) and starts on the first dashboard
request, so a policy store nobody looks at does no extra work. Its reads bypass the aiokafka
instrumentation: a dashboard is not part of any record's processing, and its receive spans would
clutter every trace while the page is open. All state is bounded (per-minute buckets for a day,
the newest documents, a minute of offset samples, the history ring).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web
from opentelemetry.metrics import Observation

from olp import telemetry
from olp.errors import CodecError
from olp.kafka import read_from_start
from olp.settings import ROLES
from olp.topic_documents import NewestDocuments
from olp.topics import TopicNames
from policy_store.history import HISTORY_FIELDS, RoleHistory, point_of
from policy_store.keys import CODEC, SETTINGS, STATE, TOPICS
from policy_store.routes import require_reader
from schemas.codec import Codec

log = logging.getLogger("olp.policy_store.dashboard")

STATIC = Path(__file__).parent / "static"
MINUTE_MS = 60_000
BUDGET_WINDOW_S = 3600.0
"""Feeds give budgets per hour; windows are aligned to the epoch, like the learner's."""
DOCUMENTS_KEPT = 200
"""Documents the page can show: the most recently updated topics."""
HISTORY_TICK_S = 5.0
"""How often the history ring is offered a point per role (it keeps the ones that moved)."""
SPEND_HISTORY_MINUTES = 60
"""The span of each role's spend chart, one point a minute."""
CALIBRATION_GAP_WARN = 0.15
"""A quality estimate further than this from its canary score is flagged: the calibration the
embedded stack's learner must reach."""

STAGE_INPUTS: tuple[tuple[str, str], ...] = (
    ("chunk_splitter", "transcripts"),
    ("topic_finder", "chunks"),
    ("topic_locator", "found"),
    ("relationship_checker", "located"),
    ("content_organizer", "checked"),
    ("format_checker", "organized"),
)
"""Each processor stage and the topic (TopicNames field) it consumes."""


# --- pure aggregations (unit-tested) ---------------------------------------------------------


@dataclass
class SpendSeries:
    """LLM spend per feed in one-minute buckets, for the last `keep_minutes`."""

    keep_minutes: int = 24 * 60
    buckets: dict[str, OrderedDict[int, float]] = field(default_factory=dict)
    total_usd: float = 0.0

    def add(self, feed: str, ts_ms: int, usd: float) -> None:
        if usd <= 0:
            return
        minute = ts_ms - ts_ms % MINUTE_MS
        series = self.buckets.setdefault(feed, OrderedDict())
        late = minute not in series and bool(series) and minute < next(reversed(series))
        series[minute] = series.get(minute, 0.0) + usd
        if late:  # keep time order, so the oldest minute is the one dropped
            self.buckets[feed] = series = OrderedDict(sorted(series.items()))
        while len(series) > self.keep_minutes:
            series.popitem(last=False)
        self.total_usd += usd

    def window_points(
        self, feed: str, now_ms: int, window_s: float = BUDGET_WINDOW_S, span_minutes: int = 120
    ) -> list[tuple[int, float]]:
        """(minute, spend so far in that minute's budget window) for the last `span_minutes`,
        one point per minute: the chart's saw-tooth that must stay under the budget line."""
        width = int(window_s * 1000)
        series = self.buckets.get(feed, OrderedDict())
        end = now_ms - now_ms % MINUTE_MS
        start = end - (span_minutes - 1) * MINUTE_MS
        first = min(start - start % width, start)
        spent, window, points = 0.0, None, []
        for minute in range(first, end + MINUTE_MS, MINUTE_MS):
            current = minute - minute % width
            if current != window:
                window, spent = current, 0.0
            spent += series.get(minute, 0.0)
            if minute >= start:
                points.append((minute, round(spent, 9)))
        return points

    def minute_points(self, key: str, now_ms: int, span_minutes: int) -> list[tuple[int, float]]:
        """(minute, spend in that minute) for the last `span_minutes`, zero where nothing was spent."""
        series = self.buckets.get(key, OrderedDict())
        end = now_ms - now_ms % MINUTE_MS
        minutes = range(end - (span_minutes - 1) * MINUTE_MS, end + MINUTE_MS, MINUTE_MS)
        return [(minute, round(series.get(minute, 0.0), 9)) for minute in minutes]

    def window_spent(self, feed: str, now_ms: int, window_s: float = BUDGET_WINDOW_S) -> float:
        points = self.window_points(feed, now_ms, window_s, span_minutes=1)
        return points[-1][1] if points else 0.0


@dataclass
class LlmStats:
    calls: int = 0
    errors: int = 0
    cost_usd: float = 0.0
    latency_ms_sum: float = 0.0

    def add(self, outcome: Mapping[str, Any]) -> None:
        self.calls += 1
        self.errors += 0 if outcome.get("success") else 1
        self.cost_usd += float(outcome.get("cost_usd") or 0.0)
        self.latency_ms_sum += float(outcome.get("latency_ms") or 0.0)

    def as_dict(self) -> dict[str, Any]:
        return {
            "calls": self.calls,
            "errors": self.errors,
            "cost_usd": round(self.cost_usd, 9),
            "mean_latency_ms": round(self.latency_ms_sum / self.calls, 1) if self.calls else None,
        }


def document_view(doc: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "stream_id": doc["stream_id"],
        "topic_id": doc["topic_id"],
        "name": doc["name"],
        "version": doc["version"],
        "first_id": doc["first_id"],
        "last_id": doc["last_id"],
        "final": doc["final"],
        "updated_ms": doc.get("updated_ms"),
        "aspects": [
            {
                "name": a["name"],
                "count": len(a["sentences"]),
                "first": a["sentences"][0]["text"][:160] if a["sentences"] else None,
            }
            for a in doc["aspects"]
        ],
    }


@dataclass
class OffsetSamples:
    """(time, end offset, committed offset) per topic, summed over partitions, for rates."""

    horizon_s: float = 60.0
    samples: dict[str, deque[tuple[float, int, int]]] = field(default_factory=dict)

    def add(self, topic: str, at_s: float, end: int, committed: int) -> None:
        series = self.samples.setdefault(topic, deque())
        series.append((at_s, end, committed))
        while series and at_s - series[0][0] > self.horizon_s:
            series.popleft()

    def view(self, topic: str, window_s: float = 10.0) -> dict[str, Any]:
        """Records/s arriving and done over the last `window_s` (from the sample before it when
        the window holds only the newest one: slow sampling still gives a rate), and the lag now."""
        series = self.samples.get(topic)
        if not series:
            return {"in_per_s": None, "done_per_s": None, "lag": None, "end": None, "committed": None}
        at, end, committed = series[-1]
        first = next(i for i, s in enumerate(series) if at - s[0] <= window_s)
        old = series[max(0, min(first, len(series) - 2))]
        dt = at - old[0]
        return {
            "in_per_s": _rate(end - old[1], dt),
            "done_per_s": _rate(committed - old[2], dt),
            "lag": max(0, end - committed),
            "end": end,
            "committed": committed,
        }


def _rate(count: int, dt: float) -> float | None:
    """Per second, to three significant digits (a trickle of 0.0333/s is not rounded to 0)."""
    return float(f"{count / dt:.3g}") if dt > 0 else None


# --- state and follower ----------------------------------------------------------------------


@dataclass
class DashboardFeed:
    """What the dashboard has read from Kafka so far."""

    spend: SpendSeries = field(default_factory=SpendSeries)
    documents: NewestDocuments = field(default_factory=lambda: NewestDocuments(keep=DOCUMENTS_KEPT))
    offsets: OffsetSamples = field(default_factory=OffsetSamples)
    llm: dict[str, LlmStats] = field(default_factory=dict)
    role_spend: SpendSeries = field(default_factory=lambda: SpendSeries(keep_minutes=SPEND_HISTORY_MINUTES))
    """Spend per role (keyed by role, not feed), for the role's spend chart."""
    feeds: set[str] = field(default_factory=set)
    feedback_records: int = 0
    document_records: int = 0
    wanted: asyncio.Event = field(default_factory=asyncio.Event)
    running: bool = False

    def reset(self) -> None:
        """Forget what was read (the follower reads from the beginning again)."""
        self.spend, self.llm, self.feeds = SpendSeries(), {}, set()
        self.role_spend = SpendSeries(keep_minutes=SPEND_HISTORY_MINUTES)
        self.documents = NewestDocuments(keep=DOCUMENTS_KEPT)
        self.feedback_records = self.document_records = 0

    def apply_feedback(self, outcome: Mapping[str, Any]) -> None:
        self.feedback_records += 1
        feed = str(outcome.get("feed") or "default")
        self.feeds.add(feed)
        call = outcome.get("source", "processor") == "processor"
        # Evidence outcomes repeat their call's cost; what was spent is each call once, plus judging.
        spent = float(outcome.get("cost_usd") or 0.0) if call else 0.0
        spent += float(outcome.get("judge_cost_usd") or 0.0)
        self.spend.add(feed, int(outcome["ts_ms"]), spent)
        if outcome.get("role"):
            self.role_spend.add(str(outcome["role"]), int(outcome["ts_ms"]), spent)
        if call:
            self.llm.setdefault(str(outcome["model"]), LlmStats()).add(outcome)

    def apply_document(self, document: Mapping[str, Any]) -> None:
        self.document_records += 1
        self.documents.apply(document)


FEED = web.AppKey("dashboard_feed", DashboardFeed)
HISTORY = web.AppKey("dashboard_history", RoleHistory)


def sample_history(app: web.Application, now_ms: int) -> None:
    """Offer the history ring the learner's current view of every role."""
    state, history = app[STATE], app[HISTORY]
    for role in ROLES:
        history.offer(role, point_of(state.role_view(role), now_ms))


async def _sample_history_forever(app: web.Application) -> None:
    """Sample whether or not anyone looks: the chart's past cannot be rebuilt later."""
    while True:
        try:
            sample_history(app, int(time.time() * 1000))
        except Exception as exc:  # a learner mid-change; the next tick samples again
            log.debug("history sample failed: %s", exc)
        await asyncio.sleep(HISTORY_TICK_S)


async def _follow(app: web.Application) -> None:
    """Follow Kafka once someone looks; on a Kafka error, log it and start again (the page shows
    `follower.running`); the policy store itself never depends on this task."""
    await app[FEED].wanted.wait()
    while True:
        try:
            await _follow_once(app)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("dashboard follower stopped (%s: %s); retrying in 5 s", type(exc).__name__, exc)
            await asyncio.sleep(5)


async def _follow_once(app: web.Application) -> None:
    """Read feedback and documents from the beginning, and sample the processors' offsets."""
    from aiokafka import AIOKafkaConsumer

    feed, settings, topics, codec = app[FEED], app[SETTINGS], app[TOPICS], app[CODEC]
    feed.reset()
    kafka = settings.kafka
    # Not a member of the processors' group: it only asks the group's coordinator for offsets.
    offsets = AIOKafkaConsumer(**kafka.aiokafka_config(), group_id=settings.app_id, enable_auto_commit=False)
    getmany = getattr(AIOKafkaConsumer.getmany, "__wrapped__", AIOKafkaConsumer.getmany)  # untraced
    followed = [topics.feedback, topics.documents]
    try:
        await offsets.start()
        async with read_from_start(kafka, followed, fetch_max_wait_ms=100) as (reader, _partitions):
            feed.running = True
            next_sample = 0.0
            while True:
                batches = await getmany(reader, timeout_ms=500, max_records=1000)
                for tp, records in batches.items():
                    for msg in records:
                        _apply(feed, codec, topics, tp.topic, msg)
                if time.monotonic() >= next_sample:
                    next_sample = time.monotonic() + 2.0
                    try:
                        await _sample_offsets(feed, reader, offsets, topics)
                    except Exception as exc:  # the page shows what it has; the store goes on
                        log.debug("offset sample failed: %s", exc)
    finally:
        feed.running = False
        with contextlib.suppress(Exception):
            await offsets.stop()


def _apply(feed: DashboardFeed, codec: Codec, topics: TopicNames, topic: str, msg: Any) -> None:
    try:
        if topic == topics.feedback:
            feed.apply_feedback(codec.decode(msg.value, "RoleOutcome", topic=topic))
        else:
            feed.apply_document(codec.decode(msg.value, "TopicDocument", topic=topic))
    except (CodecError, KeyError, TypeError, ValueError) as exc:
        log.debug("dashboard skipped %s@%s: %s", topic, msg.offset, exc)


async def _sample_offsets(feed: DashboardFeed, reader: Any, offsets: Any, topics: TopicNames) -> None:
    from aiokafka import TopicPartition

    names = [getattr(topics, field_name) for _, field_name in STAGE_INPUTS]
    cluster = await reader._client.fetch_all_metadata()  # the reader follows other topics
    tps = [TopicPartition(t, p) for t in names for p in sorted(cluster.partitions_for_topic(t) or ())]
    if not tps:
        return
    ends = await reader.end_offsets(tps)
    committed = await asyncio.gather(*(offsets.committed(tp) for tp in tps))
    now = time.monotonic()
    for name in names:
        end = sum(int(ends.get(tp) or 0) for tp in tps if tp.topic == name)
        done = sum(max(0, int(c or 0)) for tp, c in zip(tps, committed, strict=True) if tp.topic == name)
        feed.offsets.add(name, now, end, done)


async def dashboard_ctx(app: web.Application) -> AsyncIterator[None]:
    tasks = [
        asyncio.create_task(_follow(app), name="dashboard-follower"),
        asyncio.create_task(_sample_history_forever(app), name="dashboard-history"),
    ]
    unwatch = telemetry.watch_budget(*_budget_observers(app))
    try:
        yield
    finally:
        unwatch()
        for task in tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task


# --- the JSON snapshot and the routes ------------------------------------------------------


def snapshot(app: web.Application, now_ms: int | None = None) -> dict[str, Any]:
    """Everything the page shows, JSON-friendly."""
    state, settings, feed, topics = app[STATE], app[SETTINGS], app[FEED], app[TOPICS]
    now = int(time.time() * 1000) if now_ms is None else now_ms
    roles = [state.role_view(role) for role in ROLES]
    for view in roles:
        view["q_values"] = {m: round(q, 4) for m, q in view["q_values"].items()}
    feeds = sorted(feed.feeds | set(settings.feeds))
    budgets = []
    for name in feeds:
        limit = settings.feed(name).budget_usd_per_hour
        budgets.append(
            {
                "feed": name,
                "limit_usd": limit,
                "window_s": BUDGET_WINDOW_S,
                "spent_usd": round(feed.spend.window_spent(name, now), 9),
                "points": feed.spend.window_points(name, now),
            }
        )
    inputs = [(stage, getattr(topics, field_name)) for stage, field_name in STAGE_INPUTS]
    throughput = [{"stage": stage, "topic": topic, **feed.offsets.view(topic)} for stage, topic in inputs]
    return {
        "generated_ms": now,
        "policy": {"version": state.version, "observed": state.observed, "roles": roles},
        "calibration_gap_warn": CALIBRATION_GAP_WARN,
        "budgets": budgets,
        "learner_budgets": _learner_budgets(state.learner),
        "spend_total_usd": round(feed.spend.total_usd, 9),
        "llm": {model: stats.as_dict() for model, stats in sorted(feed.llm.items())},
        "throughput": throughput,
        "documents": [document_view(d) for d in feed.documents.recent(10)],
        "follower": {
            "running": feed.running,
            "feedback_records": feed.feedback_records,
            "document_records": feed.document_records,
        },
    }


def history(app: web.Application, now_ms: int | None = None) -> dict[str, Any]:
    """Per role: the ring's points (fields in `HISTORY_FIELDS` order) and spend per minute over
    the last `SPEND_HISTORY_MINUTES`, JSON-friendly."""
    rings, feed = app[HISTORY], app[FEED]
    now = int(time.time() * 1000) if now_ms is None else now_ms
    return {
        "generated_ms": now,
        "fields": list(HISTORY_FIELDS),
        "roles": {
            role: {
                "points": rings.view(role),
                "spend_per_minute": feed.role_spend.minute_points(role, now, SPEND_HISTORY_MINUTES),
            }
            for role in ROLES
        },
    }


def _learner_budgets(learner: Any) -> list[dict[str, Any]]:
    """The learner's own budget ledger (limits it enforces, its price on cost), when it has one."""
    status = getattr(learner, "budget_status", None)
    if status is None:
        return []
    try:
        return [
            {
                "feed": s.feed,
                "limit_usd": s.limit_usd,
                "window_s": s.window_s,
                "spent_usd": s.spent_usd,
                "price": s.price,
                "guard": s.guard,
            }
            for s in status()
        ]
    except Exception as exc:
        log.debug("learner budget status unavailable: %s", exc)
        return []


routes = web.RouteTableDef()


@routes.get("/dashboard")
async def page(request: web.Request) -> web.StreamResponse:
    request.app[FEED].wanted.set()
    return web.FileResponse(STATIC / "dashboard.html")


@routes.get("/v1/dashboard")
async def data(request: web.Request) -> web.Response:
    require_reader(request)  # documents' sentences and the policy
    request.app[FEED].wanted.set()
    return web.json_response(snapshot(request.app))


@routes.get("/v1/history")
async def role_history(request: web.Request) -> web.Response:
    require_reader(request)  # the policy over time
    request.app[FEED].wanted.set()  # its spend per role comes from the follower
    return web.json_response(history(request.app))


@routes.get("/metrics")
async def prometheus_metrics(request: web.Request) -> web.Response:
    scrape = telemetry.prometheus_text()
    if scrape is None:
        return web.json_response({"error": "prometheus exporter off (OTEL_METRICS_EXPORTER)"}, status=404)
    body, content_type = scrape
    return web.Response(body=body, headers={"Content-Type": content_type})


def _budget_observers(app: web.Application) -> tuple[telemetry.Observer, telemetry.Observer]:
    """Budget gauges: the learner's ledger when it enforces budgets, else the dashboard's sums."""

    def spent() -> list[Observation]:
        ledger = _learner_budgets(app[STATE].learner)
        if ledger:
            return [Observation(b["spent_usd"], {"olp.feed": b["feed"]}) for b in ledger]
        now, feed = int(time.time() * 1000), app[FEED]
        return [Observation(feed.spend.window_spent(f, now), {"olp.feed": f}) for f in sorted(feed.feeds)]

    def limits() -> list[Observation]:
        ledger = _learner_budgets(app[STATE].learner)
        if ledger:
            return [Observation(b["limit_usd"], {"olp.feed": b["feed"]}) for b in ledger]
        settings = app[SETTINGS]
        names = sorted(set(settings.feeds) | app[FEED].feeds)
        limits = [(n, settings.feed(n).budget_usd_per_hour) for n in names]
        return [Observation(limit, {"olp.feed": n}) for n, limit in limits if limit is not None]

    return spent, limits


def setup(app: web.Application) -> None:
    """Register the dashboard on the policy store app (called by `service.create_app`)."""
    app[FEED] = DashboardFeed()
    app[HISTORY] = RoleHistory()
    app.add_routes(routes)
    app.router.add_static("/dashboard/static", STATIC, name="dashboard-static")
    app.cleanup_ctx.append(dashboard_ctx)
