"""The processors' call plan from the newest Assignment (hot swap by version)."""

from __future__ import annotations

import random

from processors.policy_view import PolicyView


def assignment(model: str, version: int, epsilon: float = 0.0) -> dict:
    return {
        "role": "r",
        "model": model,
        "q_values": {"a": 1.0, "b": 3.0, "c": 2.0},
        "epsilon": epsilon,
        "candidates": ["a", "b", "c"],
        "mode": "role_rl",
        "explore": {"a": 0.5, "c": 0.5},
        "version": version,
        "reason": "",
        "ts_ms": 0,
    }


def test_before_any_assignment_the_first_model_of_the_pool_serves() -> None:
    view = PolicyView({"r": ["a", "b"]})
    plan = view.choose("r", random.Random(0))
    assert (plan.primary, plan.propensity, view.version("r"), plan.fallbacks) == ("a", 1.0, 0, ("b",))


def test_newer_versions_replace_older_ones_only() -> None:
    view = PolicyView({"r": ["a", "b", "c"]})
    assert view.apply(assignment("b", 2))
    assert not view.apply(assignment("a", 1))
    assert not view.apply(assignment("a", 2))
    plan = view.choose("r", random.Random(0))
    assert (plan.primary, view.version("r")) == ("b", 2)
    assert plan.fallbacks == ("c", "a")  # by Q-value, best first


def test_exploration_rate_and_propensities() -> None:
    view = PolicyView({"r": ["a", "b", "c"]})
    view.apply(assignment("b", 1, epsilon=0.2))
    rng = random.Random(7)
    plans = [view.choose("r", rng) for _ in range(5000)]
    assert {(p.primary, p.propensity) for p in plans} == {("b", 1.0)}  # the assigned model always serves
    explored = [p for p in plans if p.extras]
    assert abs(len(explored) / 5000 - 0.2) < 0.02  # a challenger runs beside it with probability epsilon
    assert {p.extras for p in explored} == {(("a", 0.1),), (("c", 0.1),)}


def test_a_feed_restriction_narrows_the_candidates() -> None:
    view = PolicyView({"r": ["a", "b", "c"]})
    view.apply(assignment("b", 1))
    plan = view.choose("r", random.Random(0), allowed=["a", "c"])
    assert plan.primary == "c" and plan.fallbacks == ("a",)
