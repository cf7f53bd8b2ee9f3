"""Spend is bounded by default: every configured feed has an hourly budget the learner holds, unless
its configuration turns it off (`budget_usd_per_hour: null`), and the configured budgets hold for a
learner restored from its snapshot too."""

from __future__ import annotations

import random

from olp.catalog import Catalog, ModelSpec
from olp.settings import DEFAULT_BUDGET_USD_PER_HOUR, FeedSettings, load_settings
from policy_store.state import build_learner

CATALOG = Catalog(models=(ModelSpec(name="small", base_url="http://127.0.0.1:9/v1"),))


def limits(learner: object) -> dict[str, float]:
    return {s.feed: s.limit_usd for s in learner.budget_status()}  # type: ignore[attr-defined]


def test_a_feed_has_a_budget_by_default() -> None:
    assert DEFAULT_BUDGET_USD_PER_HOUR == 5.0
    assert FeedSettings().budget_usd_per_hour == DEFAULT_BUDGET_USD_PER_HOUR
    assert load_settings().feed("any").budget_usd_per_hour == DEFAULT_BUDGET_USD_PER_HOUR


def test_the_learner_holds_the_default_budget_and_an_explicit_none_is_open() -> None:
    settings = load_settings(
        feeds={"default": {}, "shop": {"budget_usd_per_hour": 2.0}, "lab": {"budget_usd_per_hour": None}}
    )
    learner = build_learner(settings, CATALOG, random.Random(1))
    assert limits(learner) == {"default": 5.0, "shop": 2.0}


def test_configured_budgets_hold_for_a_restored_learner() -> None:
    old = build_learner(
        load_settings(feeds={"default": {"budget_usd_per_hour": None}, "gone": {}}), CATALOG, random.Random(1)
    )
    assert limits(old) == {"gone": 5.0}
    settings = load_settings(feeds={"default": {}, "shop": {"budget_usd_per_hour": 2.0}})
    restored = build_learner(settings, CATALOG, random.Random(1), old.snapshot())
    assert limits(restored) == {"default": 5.0, "shop": 2.0}
