"""The dashboard's history ring and its JSON (policy_store/history.py, `GET /v1/history`), the
calibration gap shown per model, and stage rates that stay numbers at a trickle."""

from __future__ import annotations

import json
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from olp.catalog import Catalog, ModelSpec
from olp.settings import ROLES, load_settings
from olp.topics import TopicNames
from policy_store import dashboard
from policy_store.dashboard import MINUTE_MS, OffsetSamples
from policy_store.history import HISTORY_FIELDS, HistoryPoint, RoleHistory, point_of
from policy_store.keys import CODEC, SETTINGS, STATE, TOPICS
from policy_store.state import load_state
from schemas.codec import make_codec

T0 = 1_700_000_000_000 - 1_700_000_000_000 % MINUTE_MS


def point(t_s: float, quality: float = 0.5, model: str = "a") -> HistoryPoint:
    return HistoryPoint(int(T0 + t_s * 1000), model, quality, 0.1, None, 7.0)


def test_ring_keeps_moves_at_most_every_min_gap_and_a_heartbeat_otherwise() -> None:
    ring = RoleHistory(keep=100, min_gap_s=5, heartbeat_s=60)
    assert ring.offer("r", point(0))
    assert not ring.offer("r", point(3, quality=0.6))  # moved, but too soon
    assert ring.offer("r", point(5, quality=0.6))
    assert not ring.offer("r", point(30, quality=0.6))  # unchanged: no point before the heartbeat
    assert ring.offer("r", point(65, quality=0.6))
    assert ring.offer("r", point(70, quality=0.6, model="b"))  # the assignment switched
    assert [p[0] for p in ring.view("r")] == [T0 + s * 1000 for s in (0, 5, 65, 70)]
    assert ring.view("r")[-1] == [T0 + 70_000, "b", 0.6, 0.1, None, 7.0]
    assert ring.view("other") == []


def test_ring_is_bounded_per_role_oldest_dropped() -> None:
    ring = RoleHistory(keep=3, min_gap_s=0, heartbeat_s=0)
    for second in range(10):
        ring.offer("r", point(second, quality=second / 10))
    ring.offer("s", point(0))
    assert [p[2] for p in ring.view("r")] == [0.7, 0.8, 0.9]
    assert len(ring.view("s")) == 1


def test_point_of_a_role_view_takes_the_chosen_models_estimate_canary_and_reward() -> None:
    view = {
        "model": "b",
        "q_values": {"a": 6.5, "b": 7.25},
        "evidence": {
            "a": {"quality": 0.1, "quality_sd": 0.5},
            "b": {"quality": 0.8, "quality_sd": 0.05, "canary": 4.0, "canary_mean": 0.5},
        },
    }
    assert point_of(view, T0) == HistoryPoint(T0, "b", 0.8, 0.05, 0.5, 7.25)
    assert point_of({"model": "c", "q_values": {}, "evidence": {}}, T0) == HistoryPoint(
        T0, "c", None, None, None, None
    )


def test_rates_at_a_trickle_are_numbers_not_zero_or_missing() -> None:
    samples = OffsetSamples(horizon_s=120)
    samples.add("t", 0.0, 10, 10)
    samples.add("t", 30.0, 11, 10)  # one record in 30 s, sampled slower than the window
    view = samples.view("t", window_s=10)
    assert view["in_per_s"] == pytest.approx(0.0333) and view["done_per_s"] == 0.0
    only = OffsetSamples()
    only.add("t", 0.0, 5, 5)
    assert only.view("t")["in_per_s"] is None  # one sample: no rate yet


def _app(seed: int = 1) -> web.Application:
    settings = load_settings(feeds={"default": {"budget_usd_per_hour": 1.0}}, learner={"snapshot_path": None})
    catalog = Catalog(
        models=tuple(
            ModelSpec(name=n, base_url="http://x/v1", price_in_per_mtok=1, price_out_per_mtok=1) for n in "ab"
        )
    )
    app = web.Application()
    app[SETTINGS] = settings
    app[TOPICS] = TopicNames.with_prefix("olp.")
    app[CODEC] = make_codec(None)
    app[STATE] = load_state(settings, catalog, seed=seed)
    app[dashboard.FEED] = dashboard.DashboardFeed()
    app[dashboard.HISTORY] = RoleHistory(min_gap_s=0)
    return app


def _outcome(role: str, model: str, ts_ms: int, **extra: Any) -> dict[str, Any]:
    return {
        "event_id": f"{role}:{ts_ms}:{extra.get('source', 'processor')}",
        "role": role,
        "model": model,
        "ts_ms": ts_ms,
        "feed": "default",
        "cost_usd": 0.002,
        "success": True,
        "latency_ms": 5.0,
        **extra,
    }


def test_history_json_has_every_roles_points_and_spend_per_minute() -> None:
    app = _app()
    learner, feed = app[STATE].learner, app[dashboard.FEED]
    dashboard.sample_history(app, T0)
    model = app[STATE].role_view("topic_finder")["model"]
    canary = _outcome(
        "topic_finder", model, T0, source="canary", quality=-1.0, stream_id="canary:x", chunk_id="1"
    )
    learner.observe(canary)
    dashboard.sample_history(app, T0 + 10_000)
    feed.apply_feedback(_outcome("topic_finder", model, T0 + 1_000))
    feed.apply_feedback(_outcome("topic_finder", model, T0 + 2_000, source="judge", judge_cost_usd=0.001))
    feed.apply_feedback(_outcome("topic_locator", model, T0 + MINUTE_MS))

    data = dashboard.history(app, now_ms=T0 + MINUTE_MS + 1)
    json.dumps(data)
    assert data["fields"] == list(HISTORY_FIELDS)
    assert set(data["roles"]) == set(ROLES)
    finder = data["roles"]["topic_finder"]
    assert [p[0] for p in finder["points"]] == [T0, T0 + 10_000]
    first, second = (dict(zip(HISTORY_FIELDS, p, strict=True)) for p in finder["points"])
    assert first["canary"] is None and second["canary"] == -1.0  # the canary reached the estimate
    assert second["model"] == model and isinstance(second["reward"], float)
    assert finder["spend_per_minute"][-2:] == [(T0, 0.003), (T0 + MINUTE_MS, 0.0)]  # call + judging
    assert len(finder["spend_per_minute"]) == dashboard.SPEND_HISTORY_MINUTES
    assert data["roles"]["topic_locator"]["spend_per_minute"][-1] == (T0 + MINUTE_MS, 0.002)


async def test_history_route_needs_the_read_token_when_one_is_set() -> None:
    app = _app()
    app[SETTINGS] = load_settings(read_token="r-token", learner={"snapshot_path": None})
    app.add_routes(dashboard.routes)
    dashboard.sample_history(app, T0)
    async with TestClient(TestServer(app)) as client:
        assert (await client.get("/v1/history")).status == 401
        ok = await client.get("/v1/history", headers={"Authorization": "Bearer r-token"})
        assert ok.status == 200
        body = await ok.json()
    assert all(len(body["roles"][r]["points"]) == 1 for r in ROLES)
