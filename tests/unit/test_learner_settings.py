"""The learner's knobs are defined once (olp/learner_params.py): the settings, the chart's schema
and the learner the policy store builds (`make_learner`) all derive from that definition."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest

from olp.errors import ConfigError
from olp.learner_params import LearnerParams
from olp.settings import LearnerSettings, load_settings
from policy_store.learner import Budget, PolicyError, RoleRL, RoleRLParams
from policy_store.policies import LEARNERS, POLICIES, make_learner

SCHEMA = Path(__file__).resolve().parents[2] / "deploy" / "helm" / "olp" / "values.schema.json"
POOLS = {"topic_finder": ["small", "large"], "topic_locator": ["small", "large"]}


def test_settings_hold_every_knob_with_the_learners_defaults() -> None:
    assert set(LearnerParams.model_fields) < set(LearnerSettings.model_fields)
    assert LearnerSettings().knobs() == RoleRLParams().knobs()
    assert len(RoleRLParams().knobs()) == len(LearnerParams.model_fields) >= 40


def test_knobs_from_the_config_file_and_environment_reach_the_learner(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(
        "learner:\n  policy: paper_q\n  epsilon: 0.1\n  latency_slo_s: [[topic_finder, 2.5]]\n",
        encoding="utf-8",
    )
    monkeypatch.setenv("OLP_CONFIG_FILE", str(config))
    monkeypatch.setenv("OLP_LEARNER__BUDGET_PRICE_SCALE", "50")
    monkeypatch.setenv("OLP_LEARNER__CHUNK_BUCKETS", "[30, 60]")
    learner_settings = load_settings().learner
    assert learner_settings.knob_overrides() == {
        "epsilon": 0.1,
        "chunk_buckets": (30, 60),
        "budget_price_scale": 50.0,
        "latency_slo_s": (("topic_finder", 2.5),),
    }
    learner = make_learner(learner_settings.policy, POOLS, learner_settings.knob_overrides())
    # The paper's preset, with the knobs set here on top of it.
    params = learner.params
    assert (params.mode, params.failure_quality, params.epsilon) == ("paper", -10.0, 0.1)
    assert params.slo("topic_finder") == 2.5 and params.chunk_buckets == (30, 60)
    assert params.budget_price_scale == 50.0
    assert learner.assignment("topic_finder").mode == "paper"


def test_invalid_knobs_are_rejected_at_start_up() -> None:
    with pytest.raises(ConfigError, match="alpha"):
        load_settings(learner={"alpha": 0.0})
    with pytest.raises(ConfigError, match="no_such_knob"):
        load_settings(learner={"no_such_knob": 1})
    with pytest.raises(PolicyError, match="breaker_failures"):
        RoleRLParams(breaker_failures=0)


def test_the_store_builds_its_learner_through_the_registry() -> None:
    assert set(LEARNERS) == {"role_rl", "paper_q"} and set(LEARNERS) <= set(POLICIES)
    budgets = {"default": Budget(1.0)}
    learner = make_learner("role_rl", POOLS, {"cascade": False}, budgets, random.Random(3))
    assert isinstance(learner, RoleRL)
    assert learner.params == RoleRLParams(cascade=False)
    assert [s.feed for s in learner.budget_status()] == ["default"]
    assert learner.rng.random() == random.Random(3).random()
    with pytest.raises(PolicyError, match="thompson"):
        make_learner("thompson", POOLS)
    with pytest.raises(PolicyError, match="unknown_knob"):
        make_learner("role_rl", POOLS, {"unknown_knob": 1})


def _chart_property(spec: dict[str, Any]) -> dict[str, Any]:
    keys = ("type", "enum", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "items")
    return {k: spec[k] for k in (*keys, "description") if k in spec}


def test_the_charts_learner_schema_is_derived_from_the_settings() -> None:
    """The chart validates every knob with the settings' own types, bounds and descriptions (the
    snapshot path is a chart value of its own)."""
    chart = json.loads(SCHEMA.read_text(encoding="utf-8"))["properties"]["config"]["properties"]["learner"]
    derived = LearnerSettings.model_json_schema()["properties"]
    assert chart["additionalProperties"] is False
    assert chart["properties"] == {
        name: _chart_property(spec) for name, spec in derived.items() if name != "snapshot_path"
    }
    assert chart["properties"]["alpha"] == {
        "type": "number",
        "exclusiveMinimum": 0,
        "maximum": 1,
        "description": "Learning rate of the paper's update Q[s,a] += alpha*(r - Q[s,a]).",
    }
