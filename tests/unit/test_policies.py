"""Unit tests of the routing policies behind one interface (policy_store/policies.py; spec
sections 4 and 9): the registry, each baseline's rule, and the offline-fitted cascade."""

from __future__ import annotations

import random
from typing import Any

import pytest

from policy_store.learner import PolicyError, RoleRLParams
from policy_store.policies import (
    POLICIES,
    Call,
    CascadePolicy,
    CascadeStage,
    FollowUp,
    Query,
    RoleRLPolicy,
    fit_cascade,
    make_policy,
)

MODELS = ["small", "large"]


def judged(
    model: str, correct: bool, cost: float, event: str, confidence: float | None = None
) -> dict[str, Any]:
    return {
        "event_id": event,
        "model": model,
        "success": True,
        "quality": 1.0 if correct else -1.0,
        "cost_usd": cost,
        "latency_ms": 100.0,
        "confidence": confidence,
        "propensity": 1.0,
        "ts_ms": 0,
    }


def test_registry_builds_every_policy() -> None:
    assert set(POLICIES) == {
        "paper_q",
        "role_rl",
        "thompson",
        "cascade",
        "random",
        "fixed",
        "cheapest",
        "oracle",
    }
    context = {"role": "qa", "input_id": "q1", "oracle": {"small": (True, 0.1), "large": (True, 1.0)}}
    for name in POLICIES:
        policy = make_policy(name, MODELS)
        model, propensity = policy.select(context, random.Random(0))
        assert model in MODELS and 0.0 <= propensity <= 1.0
        assert isinstance(policy.scores(context), dict)
    with pytest.raises(PolicyError):
        make_policy("nope", MODELS)
    with pytest.raises(PolicyError):
        make_policy("fixed", MODELS, model="other")
    assert make_policy("paper_q", MODELS).name == "paper_q"


def test_fixed_random_cheapest_and_oracle() -> None:
    context = {"role": "qa"}
    assert make_policy("fixed", MODELS, model="large").select(context, random.Random(0)) == ("large", 1.0)
    picks = {make_policy("random", MODELS).select(context, random.Random(seed))[0] for seed in range(20)}
    assert picks == set(MODELS)
    cheapest = make_policy("cheapest", MODELS)
    assert cheapest.select(context, random.Random(0))[0] == "small"  # untried first
    cheapest.update(context, "small", judged("small", True, 0.5, "a"))
    assert cheapest.select(context, random.Random(0))[0] == "large"
    cheapest.update(context, "large", judged("large", True, 0.1, "b"))
    assert cheapest.select(context, random.Random(0))[0] == "large"
    oracle = make_policy("oracle", MODELS)
    both = {"role": "qa", "oracle": {"small": (True, 0.1), "large": (True, 1.0)}}
    only_large = {"role": "qa", "oracle": {"small": (False, 0.1), "large": (True, 1.0)}}
    none = {"role": "qa", "oracle": {"small": (False, 0.1), "large": (False, 1.0)}}
    assert [oracle.select(c, random.Random(0))[0] for c in (both, only_large, none)] == [
        "small",
        "large",
        "small",
    ]


def test_thompson_is_seeded_and_learns() -> None:
    policy = make_policy("thompson", MODELS)
    context = {"role": "qa"}
    for i in range(30):
        policy.update(context, "small", judged("small", i % 3 == 0, 0.1, f"s{i}"))
        policy.update(context, "large", judged("large", True, 1.0, f"l{i}"))
    assert policy.scores(context) == pytest.approx({"small": 11 / 32, "large": 31 / 32})
    draws = [policy.select(context, random.Random(seed))[0] for seed in range(10)]
    assert draws == [policy.select(context, random.Random(seed))[0] for seed in range(10)]
    assert draws.count("large") >= 9


def test_fit_cascade_finds_the_pair_and_threshold() -> None:
    rng = random.Random(0)
    train = []
    for _ in range(200):
        confidence = rng.uniform(-2.0, 0.0)
        train.append(
            Query("qa", {"small": (confidence > -1.0, 0.001, confidence), "large": (True, 0.01, None)})
        )
    plans = fit_cascade(train, MODELS, cost_weight=100.0)
    plan = plans["qa"]
    assert (plan.first, plan.then) == ("small", "large")
    assert -1.1 < plan.threshold < -0.9
    # Expensive escalation: the small model alone is the better plan.
    assert fit_cascade(train, MODELS, cost_weight=100_000.0)["qa"] == CascadeStage("small")


def test_cascade_policy_escalates_on_low_confidence() -> None:
    policy = CascadePolicy(MODELS, {"qa": CascadeStage("small", "large", -1.0)})
    context = {"role": "qa"}
    rng = random.Random(0)
    assert policy.select(context, rng) == ("small", 1.0)
    assert policy.follow_up(context, [Call("small", -1.5)], rng) == FollowUp("large", 1.0, True)
    assert policy.follow_up(context, [Call("small", -0.5)], rng) is None
    assert policy.follow_up(context, [Call("small", -1.5), Call("large", None)], rng) is None
    assert CascadePolicy(MODELS).select({"role": "other"}, rng) == ("small", 1.0)


def test_role_rl_policy_runs_the_start_then_learns() -> None:
    policy = make_policy("role_rl", MODELS, params=RoleRLParams(cascade=False, explore_horizon=0.0))
    assert isinstance(policy, RoleRLPolicy)
    rng = random.Random(0)
    context = {"role": "qa", "input_id": "q0"}
    first, _ = policy.select(context, rng)
    calls = [Call(first)]
    policy.update(context, first, judged(first, first == "large", 0.01, f"q0:{first}"))
    extra = policy.follow_up(context, calls, rng)
    assert (
        extra is not None and extra.deliver is False and extra.model != first
    )  # the start: every model once
    policy.update(
        context, extra.model, judged(extra.model, extra.model == "large", 0.01, f"q0:{extra.model}")
    )
    assert policy.follow_up(context, [*calls, Call(extra.model)], rng) is None
    for i in range(1, 20):
        context = {"role": "qa", "input_id": f"q{i}"}
        model, _ = policy.select(context, rng)
        policy.update(context, model, judged(model, model == "large", 0.01, f"q{i}:{model}"))
    assert policy.select({"role": "qa", "input_id": "last"}, rng)[0] == "large"
    scores = policy.scores({"role": "qa"})
    assert max(scores, key=lambda m: scores[m]) == "large"
    policy.add_model("new")
    assert "new" in policy.learner.pool("qa")
    policy.remove_model("new")
    assert "new" not in policy.learner.assignment("qa").candidates
