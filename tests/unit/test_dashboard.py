"""The dashboard's aggregations and JSON snapshot, without Kafka (policy_store/dashboard.py)."""

from __future__ import annotations

import json
from pathlib import Path

from aiohttp import web

from olp.catalog import Catalog, ModelSpec
from olp.settings import ROLES, load_settings
from olp.topic_documents import NewestDocuments
from olp.topics import TopicNames
from policy_store import dashboard
from policy_store.dashboard import MINUTE_MS, LlmStats, OffsetSamples, SpendSeries, document_view
from policy_store.keys import CODEC, SETTINGS, STATE, TOPICS
from policy_store.state import load_state
from schemas.codec import make_codec

HOUR_MS = 3_600_000
T0 = 1_700_000_000_000 - 1_700_000_000_000 % HOUR_MS  # an hour boundary


def test_spend_restarts_every_budget_window() -> None:
    spend = SpendSeries()
    spend.add("shop", T0 - 2 * MINUTE_MS, 0.25)  # previous window
    spend.add("shop", T0 + 30_000, 0.10)
    spend.add("shop", T0 + MINUTE_MS + 5, 0.05)
    spend.add("shop", T0 + 61_000, 0.0)  # free calls change nothing
    spend.add("news", T0, 1.0)
    points = dict(spend.window_points("shop", T0 + 3 * MINUTE_MS, span_minutes=6))
    assert points == {
        T0 - 2 * MINUTE_MS: 0.25,
        T0 - MINUTE_MS: 0.25,
        T0: 0.10,  # the new window starts from zero
        T0 + MINUTE_MS: 0.15,
        T0 + 2 * MINUTE_MS: 0.15,
        T0 + 3 * MINUTE_MS: 0.15,
    }
    assert spend.window_spent("shop", T0 + 3 * MINUTE_MS) == 0.15
    assert spend.total_usd == 1.40


def test_spend_keeps_late_records_in_order_and_is_bounded() -> None:
    spend = SpendSeries(keep_minutes=3)
    for minute in (5, 1, 3, 4, 2):
        spend.add("f", T0 + minute * MINUTE_MS, 1.0)
    assert list(spend.buckets["f"]) == [T0 + m * MINUTE_MS for m in (3, 4, 5)]


def test_recent_documents_newest_version_wins() -> None:
    docs = NewestDocuments(keep=2)

    def doc(topic: str, version: int, name: str) -> dict:
        sentences = [{"id": 1, "text": "x" * 300}]
        return {
            "stream_id": "s",
            "topic_id": topic,
            "version": version,
            "name": name,
            "first_id": 1,
            "last_id": 2,
            "final": False,
            "aspects": [{"name": "Price", "sentences": sentences}, {"name": "Opening", "sentences": []}],
            "updated_ms": version,
        }

    assert docs.apply(doc("1", 2, "Wig v2"))
    assert not docs.apply(doc("1", 1, "Wig v1"))  # an older version arriving late
    docs.apply(doc("9", 0, "Shoes"))
    docs.apply(doc("7", 0, "Cup"))  # the oldest entry leaves
    recent = [document_view(d) for d in docs.recent(10)]
    assert [d["name"] for d in recent] == ["Cup", "Shoes"]
    assert recent[0]["aspects"] == [
        {"name": "Price", "count": 1, "first": "x" * 160},
        {"name": "Opening", "count": 0, "first": None},
    ]


def test_throughput_and_lag_from_offset_samples() -> None:
    samples = OffsetSamples(horizon_s=60)
    assert samples.view("t")["lag"] is None
    samples.add("t", 0.0, 100, 90)
    samples.add("t", 5.0, 150, 120)
    samples.add("t", 10.0, 200, 210)  # committed past a stale end offset: lag clamps at 0
    view = samples.view("t", window_s=10)
    assert view == {"in_per_s": 10.0, "done_per_s": 12.0, "lag": 0, "end": 200, "committed": 210}
    samples.add("t", 100.0, 200, 200)
    assert len(samples.samples["t"]) == 1  # older than the horizon


def test_llm_stats() -> None:
    stats = LlmStats()
    stats.add({"success": True, "cost_usd": 0.5, "latency_ms": 10})
    stats.add({"success": False, "cost_usd": 0.0, "latency_ms": 30})
    assert stats.as_dict() == {"calls": 2, "errors": 1, "cost_usd": 0.5, "mean_latency_ms": 20.0}


def test_snapshot_shows_every_role_and_budgets(tmp_path: Path) -> None:
    settings = load_settings(
        feeds={"shop": {"budget_usd_per_hour": 2.0}, "default": {"budget_usd_per_hour": None}},
        learner={"snapshot_path": None},
    )
    catalog = Catalog(
        models=tuple(
            ModelSpec(name=n, base_url="http://x/v1", price_in_per_mtok=1, price_out_per_mtok=1) for n in "ab"
        )
    )
    app = web.Application()
    app[SETTINGS] = settings
    app[TOPICS] = TopicNames.with_prefix("olp.")
    app[CODEC] = make_codec(None)
    app[STATE] = load_state(settings, catalog, seed=1)
    app[dashboard.FEED] = feed = dashboard.DashboardFeed()
    feed.apply_feedback(
        {"feed": "shop", "ts_ms": T0, "cost_usd": 0.5, "model": "a", "success": True, "latency_ms": 5}
    )
    # a judge's verdict on that call: the call is not paid twice, the judging is paid
    feed.apply_feedback(
        {
            "feed": "shop",
            "ts_ms": T0,
            "cost_usd": 0.5,
            "model": "a",
            "source": "judge",
            "judge_cost_usd": 0.25,
        }
    )
    snap = dashboard.snapshot(app, now_ms=T0 + MINUTE_MS)
    json.dumps(snap)  # JSON-friendly
    assert [r["role"] for r in snap["policy"]["roles"]] == list(ROLES)
    assert all(r["model"] in ("a", "b") and set(r["q_values"]) <= {"a", "b"} for r in snap["policy"]["roles"])
    budgets = {b["feed"]: b for b in snap["budgets"]}
    assert budgets["shop"]["limit_usd"] == 2.0 and budgets["shop"]["spent_usd"] == 0.75
    assert budgets["default"]["limit_usd"] is None
    assert snap["throughput"][0]["stage"] == "chunk_splitter"
    assert snap["llm"]["a"]["calls"] == 1 and snap["spend_total_usd"] == 0.75


def test_page_never_injects_server_text_as_html() -> None:
    script = (Path(dashboard.__file__).parent / "static" / "dashboard.js").read_text()
    assert "innerHTML" not in script and "insertAdjacentHTML" not in script and "eval(" not in script
