"""Call plans sampled from Assignment records (olp/call_plan.py), shared by the learner and the
processors: records without plan fields keep plain epsilon-greedy; warm-up, duels, cascade, pins."""

from __future__ import annotations

import random
from typing import Any

import pytest

from olp.call_plan import Assignment, CallPlan
from policy_store.learner import RoleRL, RoleRLParams
from policy_store.state import PolicyState, plan_key
from processors.policy_view import PolicyView

OLD = {
    "role": "r",
    "model": "b",
    "q_values": {"a": 1.0, "b": 3.0, "c": 2.0},
    "epsilon": 0.2,
    "candidates": ["a", "b", "c"],
    "version": 4,
    "reason": "",
    "ts_ms": 0,
}


def record(**plan: Any) -> dict[str, Any]:
    return {**OLD, "epsilon": 0.0, "mode": "role_rl", **plan}


def test_an_old_record_is_todays_epsilon_greedy() -> None:
    spec = Assignment.from_record(OLD)
    assert spec.mode == "epsilon_greedy"
    rng = random.Random(3)
    plans = [spec.sample(rng) for _ in range(4000)]
    assert all(not p.extras and p.escalate_to is None for p in plans)
    explored = [p for p in plans if p.primary != "b"]
    assert abs(len(explored) / 4000 - 0.2) < 0.02
    assert {p.propensity for p in explored} == {0.1}
    assert {p.propensity for p in plans if p.primary == "b"} == {0.8}
    assert spec.sample(random.Random(0)).fallbacks == ("c", "a")  # by Q-value, best first


def test_warm_up_models_run_beside_the_assigned_one() -> None:
    plan = Assignment.from_record(record(warmup=["a", "c"])).sample(random.Random(0))
    assert plan == CallPlan("b", 1.0, (("a", 1.0), ("c", 1.0)), fallbacks=("c", "a"))


def test_role_rl_exploration_is_a_paired_run_with_its_propensity() -> None:
    spec = Assignment.from_record(record(epsilon=0.5, explore={"c": 1.0}, fallbacks=["c", "a"]))
    rng = random.Random(1)
    plans = [spec.sample(rng) for _ in range(2000)]
    assert {p.primary for p in plans} == {"b"}
    duels = [p for p in plans if p.extras]
    assert abs(len(duels) / 2000 - 0.5) < 0.04
    assert {p.extras for p in duels} == {(("c", 0.5),)}


def test_paper_mode_duels_the_incumbent_on_the_same_input() -> None:
    spec = Assignment.from_record(record(mode="paper", epsilon=0.0, incumbent="c"))
    plan = spec.sample(random.Random(0))
    # argmax Q is b; the incumbent c runs beside it.
    assert (plan.primary, plan.extras) == ("b", (("c", 1.0),))


def test_cascade_and_pin() -> None:
    spec = Assignment.from_record(record(model="a", cascade_to="b", cascade_below=0.7))
    plan = spec.sample(random.Random(0))
    assert (plan.primary, plan.escalate_to, plan.escalate_below) == ("a", "b", 0.7)
    assert plan.fallbacks[0] == "b"
    pinned = Assignment.from_record(record(pinned=True, epsilon=1.0, explore={"c": 1.0}, warmup=["a"]))
    assert pinned.sample(random.Random(0)) == CallPlan("b", 1.0, fallbacks=("c", "a"))


def test_a_restriction_drops_disallowed_models_and_their_cascade() -> None:
    spec = Assignment.from_record(
        record(epsilon=1.0, explore={"c": 1.0}, warmup=["a"], cascade_to="c", cascade_below=0.5)
    )
    narrowed = spec.restricted(["a", "b"])
    assert (narrowed.model, narrowed.explore, narrowed.warmup, narrowed.cascade_to) == ("b", {}, ("a",), None)
    moved = spec.restricted(["a", "c"])
    assert (moved.model, moved.cascade_to, moved.cascade_below) == ("c", None, None)
    assert spec.restricted(["z"]) is spec  # nothing allowed: unrestricted


def test_the_processor_view_samples_the_learners_plan() -> None:
    learner = RoleRL({"r": ["a", "b", "c"]}, RoleRLParams())
    view = learner.assignment("r")
    assert view.warmup, "a cold learner runs every model once"
    rec = view.to_record(0)
    assert Assignment.from_record(rec) == view.assignment()
    policy = PolicyView({"r": ["a", "b", "c"]})
    policy.apply(rec)
    assert policy.choose("r", random.Random(0)) == view.sample(random.Random(0))
    # A feed that allows two models: only those run.
    limited = policy.choose("r", random.Random(0), allowed=["a", "b"])
    assert {limited.primary, *(m for m, _ in limited.extras)} <= {"a", "b"}


def test_the_service_record_is_the_views_record_with_its_version() -> None:
    state = PolicyState(RoleRL({"r": ["a", "b"]}, RoleRLParams()))
    state.seen_version = 7  # another replica published up to 7
    rec = state.assignment_record("r", "why")
    assert rec["version"] == 8 and rec["reason"] == "why"
    assert {k: v for k, v in rec.items() if k not in ("version", "reason", "ts_ms")} == {
        k: v
        for k, v in state.learner.assignment("r").to_record(0).items()
        if k not in ("version", "reason", "ts_ms")
    }
    state.published["r"] = rec
    assert not state.stale("r")
    state.learner.pin("r", "b")
    assert state.stale("r")
    assert plan_key(rec) != plan_key({**rec, "warmup": []})


@pytest.mark.parametrize("mode", ["role_rl", "paper"])
def test_learner_sampling_goes_through_the_shared_plan(mode: str) -> None:
    params = RoleRLParams() if mode == "role_rl" else RoleRLParams.paper()
    view = RoleRL({"r": ["a", "b", "c"]}, params).assignment("r")
    for seed in range(20):
        assert view.sample(random.Random(seed)) == view.assignment().sample(random.Random(seed))
        for m in ("a", "b", "c"):
            assert view.propensity(m) == view.assignment().propensity(m)
