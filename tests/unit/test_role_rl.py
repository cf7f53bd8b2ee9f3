"""Unit tests of the pure Role-RL learner (policy_store/learner/; spec section 4): exact, seeded
expectations for the paper's pieces and our extensions, and the learner against a naive
re-implementation of the paper's loop on a replayed sequence."""

from __future__ import annotations

import itertools
import json
import math
import random
from collections import defaultdict
from typing import Any

import pytest

from policy_store.learner import (
    Breaker,
    Budget,
    PolicyError,
    RoleRL,
    RoleRLParams,
    board_weight_update,
    budget_fits,
    budget_price,
    budget_price_step,
    cascade_sweep,
    chunk_bucket,
    context_key,
    expected_improvement,
    expected_remaining_calls,
    importance_weight,
    markov_election,
    organizer_quality,
    q_step,
    quality,
    reward,
    score_models,
    window_start_ms,
)

MODELS = ("cheap", "mid", "strong")


def outcome(
    event: str,
    model: str,
    *,
    role: str = "finder",
    ok: bool = True,
    cost: float = 0.001,
    latency_ms: float = 500.0,
    **extra: Any,
) -> dict[str, Any]:
    record: dict[str, Any] = {
        "event_id": event,
        "role": role,
        "model": model,
        "policy_version": 1,
        "propensity": 1.0,
        "prev_model": None,
        "prev_success": True,
        "domain": "ecommerce",
        "lang": "en",
        "feed": "default",
        "chunk_size": 0,
        "latency_ms": latency_ms,
        "tokens_in": 100,
        "tokens_out": 20,
        "cost_usd": cost,
        "success": ok,
        "error": None,
        "quality": None,
        "source": "processor",
        "stream_id": "",
        "chunk_id": "",
        "ts_ms": 1_000,
    }
    record.update(extra)
    return record


# --- 2. Reward -----------------------------------------------------------------------------------


def test_reward_is_k_v_minus_k1_c_minus_k2_t() -> None:
    p = RoleRLParams()
    assert reward(outcome("e", "mid", quality=1.0, cost=0.002, latency_ms=1500), p) == pytest.approx(
        10 - 0.2 - 0.15, abs=1e-12
    )
    # Parsing is not quality: a success without a label has no quality term (or the caller's estimate).
    assert reward(outcome("e", "mid", cost=0.002, latency_ms=1500), p) == pytest.approx(-0.35, abs=1e-12)
    assert reward(outcome("e", "mid", cost=0.002, latency_ms=1500), p, 0.5) == pytest.approx(4.65)
    assert reward(outcome("e", "mid", ok=False, cost=0.0, latency_ms=0), p) == -10.0
    assert reward(outcome("e", "mid", error="timeout", cost=0.0, latency_ms=0), p) == -10.0
    assert reward(outcome("e", "mid", quality=0.5, cost=0.0, latency_ms=0), p) == 5.0
    paper = RoleRLParams.paper(cost_weight=1.0)
    assert reward(outcome("e", "mid", ok=False, cost=0.002, latency_ms=1000), paper) == pytest.approx(
        -100.102
    )
    # The paper's cached data: claude-3-opus as topic finder, judged correct, $1.125 a call, t = 1 s.
    assert reward(outcome("e", "claude", quality=1.0, cost=1.125, latency_ms=1000), paper) == pytest.approx(
        8.775, abs=1e-12
    )


def test_partial_credit_and_quality() -> None:
    assert organizer_quality(1.0) == 1.0
    assert organizer_quality(0.0) == -10.0
    assert organizer_quality(0.95) == pytest.approx(0.45, abs=1e-12)  # the paper's 11*sim - 10
    assert organizer_quality(0.5, failure_quality=-1.0) == 0.0
    assert quality(outcome("e", "m", quality=-0.25), RoleRLParams()) == -0.25


# --- 3. The paper's core ---------------------------------------------------------------------------


def test_q_update_exact() -> None:
    assert q_step(0.0, 10.0, 0.1) == 1.0
    assert q_step(1.0, -10.0, 0.1) == pytest.approx(-0.1, abs=1e-15)
    learner = RoleRL(
        {"finder": MODELS}, RoleRLParams.paper(reward_value=1.0, cost_weight=0.0, latency_weight=0.0)
    )
    learner.observe(outcome("e1", "mid", quality=4.0, prev_model="cheap", prev_success=True))
    learner.observe(outcome("e2", "mid", quality=-6.0, prev_model="cheap", prev_success=True))
    # Q[(cheap, ok), mid]: 0 -> 0.4 -> 0.4 + 0.1 * (-6 - 0.4) = -0.24
    assert learner.snapshot()["q"]["finder"]["1:cheap"]["mid"] == pytest.approx(-0.24, abs=1e-15)


def test_markov_election_and_board_move() -> None:
    models = ["a", "b", "c"]
    # a failed -> b best; b failed -> b best: fixed point b.
    table = {"a": {"a": 0.0, "b": 2.0, "c": 1.0}, "b": {"a": 0.0, "b": 3.0, "c": 1.0}, "c": {"c": 1.0}}
    assert markov_election(table, models) == "b"
    # a -> c, and c's row is all zeros: stop at c.
    assert markov_election({"a": {"c": 1.0}, "c": {}}, models) == "c"
    # a -> b -> a -> ... never settles within 10 steps: no election.
    assert markov_election({"a": {"b": 1.0}, "b": {"a": 1.0}}, models) is None

    assert board_weight_update({"gem": 1.0}, "cla") == pytest.approx({"gem": 0.99, "cla": 0.01})
    moved = board_weight_update({"a": 0.5, "b": 0.3, "c": 0.2}, "a")
    assert moved == pytest.approx({"a": 0.51, "b": 0.295, "c": 0.195})
    # The last member runs dry: the elected one reaches 1 and the step is cut to what was left.
    assert board_weight_update({"a": 0.995, "b": 0.005}, "a") == pytest.approx({"a": 1.0, "b": 0.0})


def test_learner_elects_the_board_and_combines_verdicts() -> None:
    params = RoleRLParams.paper(board_warmup=0, reward_value=1.0, cost_weight=0.0, latency_weight=0.0)
    learner = RoleRL({"finder": ["a", "b"]}, params, board={"a": 1.0})
    # b is the better choice after a fails: Q[(a, fail), b] > 0, so the chain a -> b -> ... elects b.
    learner.observe(outcome("e1", "b", quality=5.0, prev_model="a", prev_success=False))
    assert learner.board_weights() == pytest.approx({"a": 0.99, "b": 0.01})
    assert learner.counters["elections"] == 1
    assert learner.combine_verdicts({"a": 1.0, "b": -1.0}) == pytest.approx(0.98)
    assert learner.combine_verdicts({"c": 0.5}) == 0.5  # no board weight: plain mean
    assert learner.combine_verdicts({}) is None


# --- 4. Extensions ---------------------------------------------------------------------------------


def test_budget_rules_exact() -> None:
    assert window_start_ms(3_725_000, 3600.0) == 3_600_000
    assert budget_fits(spent=0.7, reserve=0.2, cost=0.1, limit=1.0)
    assert not budget_fits(spent=0.7, reserve=0.2, cost=0.11, limit=1.0)
    assert expected_remaining_calls(calls=10, prev_calls=30, elapsed_frac=0.5) == 20.0
    assert expected_remaining_calls(calls=10, prev_calls=0, elapsed_frac=0.25) == 30.0
    assert expected_remaining_calls(calls=10, prev_calls=0, elapsed_frac=1.0) == 0.0
    assert budget_price_step(
        0.0, spent=0.6, limit=1.0, elapsed_frac=0.5, lr=0.05, mu_max=7.0
    ) == pytest.approx(0.005)
    assert budget_price_step(0.001, spent=0.1, limit=1.0, elapsed_frac=0.5, lr=0.05, mu_max=7.0) == 0.0
    assert budget_price(0.0, 100.0) == 0.0


def test_budget_guard_switches_to_a_model_that_fits() -> None:
    params = RoleRLParams(cascade=False, explore_horizon=0.0)
    learner = RoleRL({"finder": ["cheap", "strong"]}, params, budgets={"default": Budget(0.05, 60.0)})
    # Window 0: both models tried once; strong is better.
    learner.observe(outcome("s1", "cheap", quality=0.2, cost=0.001, ts_ms=0))
    learner.observe(outcome("s2", "strong", quality=1.0, cost=0.01, ts_ms=0))
    # Window 1: 2 calls expected (last window's count): reserve 1.2 x 2 x $0.001, a strong call
    # may cost 2 x $0.01 while it has one observation: 0.0024 + 0.02 <= 0.05 x (1 - 0.02).
    view = learner.assignment("finder", {"ts_ms": 61_000})
    assert view.model == "strong" and not view.budgets[0].guard
    assert view.budgets[0].reserve_usd == pytest.approx(0.0024)
    for i in range(3):
        learner.observe(outcome(f"x{i}", "strong", quality=1.0, cost=0.012, ts_ms=62_000))
    # $0.036 spent 3 s into the window: at this pace the cheap reserve alone no longer fits.
    view = learner.assignment("finder", {"ts_ms": 63_000})
    assert view.model == "cheap"
    assert view.budgets[0].guard and view.budgets[0].spent_usd == pytest.approx(0.036)
    assert "budget" in view.reason
    # The next window is free again.
    assert learner.assignment("finder", {"ts_ms": 121_000}).model == "strong"
    status = learner.budget_status("default", now_ms=63_000)
    assert [s.feed for s in status] == ["default"] and status[0].limit_usd == 0.05
    ledger = learner.snapshot()["ledgers"]["default"]
    assert [start for start, _ in ledger["history"]] == [0] and ledger["window_start_ms"] == 60_000
    assert [spent for _, spent in ledger["history"]] == pytest.approx([0.011])
    assert ledger["spent_usd"] == pytest.approx(0.036)


def test_importance_weights_clip_and_reject() -> None:
    assert importance_weight(0.5, 0.25, lag=1, max_weight=5.0, max_lag=8) == 2.0
    assert importance_weight(1.0, 0.1, lag=1, max_weight=5.0, max_lag=8) == 5.0
    assert importance_weight(0.0, 0.5, lag=2, max_weight=5.0, max_lag=8) == 0.0
    assert importance_weight(0.2, 0.9, lag=0, max_weight=5.0, max_lag=8) == 1.0
    assert importance_weight(0.2, 0.0, lag=3, max_weight=5.0, max_lag=8) == 1.0
    assert importance_weight(1.0, 1.0, lag=9, max_weight=5.0, max_lag=8) is None


def test_stale_feedback_is_rejected_but_its_spend_counts() -> None:
    params = RoleRLParams(max_policy_lag=2)
    learner = RoleRL({"finder": MODELS}, params, budgets={"default": Budget(1.0)})
    for _ in range(3):
        learner.pin("finder", "mid")
        learner.unpin("finder")
    assert learner.version("finder") == 7
    before = learner.snapshot()["est"]
    assert learner.observe(outcome("old", "mid", policy_version=4, cost=0.25)) is False
    assert learner.counters["stale"] == 1 and learner.counters["accepted"] == 0
    assert learner.snapshot()["est"] == before
    assert learner.budget_status("default")[0].spent_usd == 0.25
    learner.observe(outcome("recent", "mid", policy_version=5))
    assert learner.counters["accepted"] == 1


def test_duplicate_event_ids_are_ignored() -> None:
    learner = RoleRL({"finder": MODELS}, RoleRLParams())
    first = outcome("same", "mid")
    learner.observe(first)
    snapshot = learner.snapshot()
    assert learner.observe(dict(first, quality=-1.0)) is False
    assert learner.counters["duplicate"] == 1
    after = learner.snapshot()
    assert after["est"] == snapshot["est"] and after["q"] == snapshot["q"]


def test_dedupe_memory_is_bounded_by_the_window_on_an_endless_stream() -> None:
    """10,000 outcomes, one per 100 ms: the learner remembers the ids of the last minute only
    (not all of them up to the count cap), and still drops a duplicate inside the window."""
    learner = RoleRL({"finder": MODELS}, RoleRLParams(dedupe_window_s=60.0))
    for i in range(10_000):
        learner.observe(outcome(f"e{i}", MODELS[i % 3], ts_ms=1_000 + 100 * i))
        if i % 2_000 == 0:
            assert len(learner.snapshot()["seen"]) <= 601
    assert len(learner.snapshot()["seen"]) == 601  # ids of the window's 60 s (both ends included)
    assert learner.observe(outcome("e9500", "mid", ts_ms=1_000 + 100 * 9_999)) is False
    assert learner.counters["duplicate"] == 1
    learner.observe(outcome("e0", "mid", ts_ms=1_000 + 100 * 9_999))  # long gone: learned again
    assert learner.counters["duplicate"] == 1


def test_dedupe_memory_is_bounded_by_the_capacity_within_the_window() -> None:
    learner = RoleRL({"finder": MODELS}, RoleRLParams(dedupe_capacity=500))
    for i in range(5_000):
        learner.observe(outcome(f"e{i}", "mid", ts_ms=1_000))  # all inside the window
    assert len(learner.snapshot()["seen"]) == 500
    assert learner.observe(outcome("e4999", "mid")) is False


def test_restore_takes_a_snapshot_of_bare_event_ids() -> None:
    learner = RoleRL({"finder": MODELS}, RoleRLParams())
    learner.observe(outcome("old", "mid", ts_ms=5_000))
    data = json.loads(json.dumps(learner.snapshot()))
    data["seen"] = ["old"]  # the format before the dedupe window
    clone = RoleRL.restore(data, random.Random(0))
    assert clone.observe(outcome("old", "mid", ts_ms=5_000)) is False
    assert clone.snapshot()["seen"] == [["old", 5_000]]


def test_observe_reports_a_change_of_the_greedy_choice() -> None:
    learner = RoleRL({"finder": ["a", "b"]}, RoleRLParams(explore_horizon=0.0, cascade=False))
    version = learner.version("finder")
    assert learner.observe(outcome("1", "a", quality=1.0, stream_id="s", chunk_id="0")) is False
    assert learner.observe(outcome("2", "b", quality=-1.0, stream_id="s", chunk_id="0")) is False
    models, changed = [learner.assignment("finder").model], []
    for i in range(6):  # a turns out wrong from now on: the learner moves to b once
        changed.append(
            learner.observe(outcome(f"f{i}", "a", quality=-1.0, policy_version=learner.version("finder")))
        )
        models.append(learner.assignment("finder").model)
    assert models[0] == "a" and models[-1] == "b"
    assert changed == [before != after for before, after in itertools.pairwise(models)]
    assert changed.count(True) == 1
    assert learner.version("finder") == version + 1


def test_circuit_breaker_fails_over_and_half_opens() -> None:
    params = RoleRLParams(breaker_failures=2, breaker_cooldown_s=30.0, cascade=False, explore_horizon=0.0)
    learner = RoleRL({"finder": ["good", "backup"]}, params)
    learner.observe(outcome("1", "good", ok=True, ts_ms=0, stream_id="s", chunk_id="0"))
    learner.observe(outcome("2", "backup", ok=True, cost=0.002, ts_ms=0, stream_id="s", chunk_id="0"))
    assert learner.assignment("finder").model == "good"
    learner.observe(outcome("3", "good", error="timeout", success=False, ts_ms=1_000))
    learner.observe(outcome("4", "good", error="timeout", success=False, ts_ms=2_000))
    view = learner.assignment("finder", {"ts_ms": 3_000})
    assert view.model == "backup" and view.candidates == ("backup",) and "circuit open" in view.reason
    half_open = learner.assignment("finder", {"ts_ms": 40_000})
    assert "good" in half_open.candidates
    learner.observe(outcome("5", "good", ok=True, ts_ms=40_000))
    assert learner.snapshot()["breakers"]["finder"]["good"] == {"failures": 0, "opened_at_ms": None}
    b = Breaker()
    b.record(False, 0, 1)
    assert b.state(10_000, 30.0) == "open" and b.state(30_000, 30.0) == "half_open"


def test_operator_control() -> None:
    learner = RoleRL({"finder": MODELS}, RoleRLParams())
    learner.pin("finder", "strong")
    view = learner.assignment("finder")
    assert (view.model, view.epsilon, view.pinned) == ("strong", 0.0, True)
    with pytest.raises(PolicyError):
        learner.ban("finder", "strong")
    learner.unpin("finder")
    learner.ban("finder", "cheap")
    assert "cheap" not in learner.assignment("finder").candidates
    learner.ban("finder", "mid")
    with pytest.raises(PolicyError):
        learner.ban("finder", "strong")  # the last one
    learner.unban("finder", "cheap")
    learner.unban("finder", "mid")
    with pytest.raises(PolicyError):
        learner.pin("finder", "nope")
    with pytest.raises(PolicyError):
        learner.assignment("nope")
    # A new model joins and is tried on the next call; the worst one can be retired.
    for i, (m, ok) in enumerate([("cheap", False), ("mid", True), ("strong", True)]):
        learner.observe(outcome(f"w{i}", m, ok=ok, stream_id="s", chunk_id="0"))
    learner.add_model("finder", "new")
    assert learner.assignment("finder").warmup == ("new",)
    assert learner.retire_worst("finder") == "cheap"
    assert learner.pool("finder") == ["mid", "strong", "new"]


def test_context_decides_per_domain() -> None:
    params = RoleRLParams(explore_horizon=0.0, cascade=False, use_state=False)
    learner = RoleRL({"finder": ["a", "b"]}, params)
    event = 0
    for domain, good in (("news", "a"), ("ecommerce", "b")):
        for _ in range(10):
            for m in ("a", "b"):
                event += 1
                learner.observe(
                    outcome(
                        str(event),
                        m,
                        quality=1.0 if m == good else -1.0,
                        domain=domain,
                        policy_version=learner.version("finder"),
                    )
                )
    assert learner.assignment("finder", {"domain": "news", "lang": "en"}).model == "a"
    assert learner.assignment("finder", {"domain": "ecommerce", "lang": "en"}).model == "b"
    contexts = [c for c in learner.snapshot()["est"]["finder"] if c != "*" and "#" not in c]
    assert sorted(contexts) == ["domain=ecommerce|lang=en", "domain=news|lang=en"]
    assert (
        context_key({"domain": "news", "lang": "zh", "chunk_size": 45}, params)
        == "domain=news|lang=zh|chunk=40-79"
    )
    assert chunk_bucket(10, (40, 80)) == "<40" and chunk_bucket(120, (40, 80)) == ">=80"
    assert context_key({"domain": "news"}, RoleRLParams(contextual=False)) == "*"


def test_cascade_threshold_sweep() -> None:
    xs = [-3.0, -2.0, -1.0, 0.0]
    stop = [-5.0, 0.0, 5.0, 9.0]
    escalate = [4.0, 4.0, 4.0, 4.0]
    mean, threshold, rate = cascade_sweep(xs, stop, escalate)
    assert (mean, threshold, rate) == ((4 + 4 + 5 + 9) / 4, -1.5, 0.5)
    assert cascade_sweep(xs, [9.0] * 4, escalate) == (9.0, None, 0.0)


def test_confidence_cascade_is_learned() -> None:
    params = RoleRLParams(cost_weight=2000.0, explore_horizon=0.0, use_state=False)
    learner = RoleRL({"qa": ["small", "large"]}, params, random.Random(0))
    rng = random.Random(1)
    for i in range(300):  # small is right when confident (conf > -1), large is right 95% of the time
        confidence = rng.uniform(-2.0, 0.0)
        small_ok = confidence > -1.0
        large_ok = rng.random() < 0.95
        for m, ok, cost, conf in (("small", small_ok, 0.0001, confidence), ("large", large_ok, 0.002, None)):
            learner.observe(
                outcome(
                    f"{i}{m}",
                    m,
                    role="qa",
                    quality=1.0 if ok else -1.0,
                    cost=cost,
                    confidence=conf,
                    stream_id=str(i),
                    chunk_id="0",
                    policy_version=learner.version("qa"),
                )
            )
    view = learner.assignment("qa")
    assert view.cascade is not None
    assert (view.model, view.cascade.then) == ("small", "large")
    assert -1.1 < view.cascade.threshold < -0.9
    plan = view.sample(random.Random(0))
    assert (plan.primary, plan.escalate_to, plan.escalate_below) == ("small", "large", view.cascade.threshold)


def test_params_are_validated() -> None:
    with pytest.raises(PolicyError):
        RoleRLParams(alpha=0.0)
    with pytest.raises(PolicyError):
        RoleRLParams(mode="other")  # type: ignore[arg-type]
    with pytest.raises(PolicyError):
        Budget(0.0)
    with pytest.raises(PolicyError):
        RoleRL({"finder": []})


# --- Decisions and learning, exact on seeded data ----------------------------------------------------


def _fed(params: RoleRLParams, qualities: dict[str, tuple[float, int]]) -> RoleRL:
    """A learner whose models were judged `quality` `n` times each, on one context."""
    learner = RoleRL({"finder": list(qualities)}, params)
    event = 0
    for model, (q, n) in qualities.items():
        for _ in range(n):
            event += 1
            version = learner.version("finder")
            learner.observe(outcome(str(event), model, quality=q, policy_version=version))
    return learner


def test_exploration_runs_the_challenger_with_the_best_expected_improvement() -> None:
    params = RoleRLParams(cascade=False, contextual=False, use_state=False)
    learner = _fed(params, {"a": (0.6, 20), "b": (0.8, 1), "c": (-0.5, 20)})
    rs = learner.role_states["finder"]
    scores = score_models(rs.pool, rs.estimates, learner.pooled, "*", None, params.cost_weight, params)
    a, b = scores["a"], scores["b"]
    # b, judged once: its quality shrunk toward its all-roles mean (0.8 + 2 x 0.4) / 3, and the
    # sd of one observation under the prior variance 1, over 1 + pool_prior observations.
    assert b.quality == pytest.approx(1.6 / 3, abs=1e-12)
    assert b.quality_sd == pytest.approx(10 * math.sqrt(0.5 / 3), abs=1e-12)
    assert (a.value, b.value) == (pytest.approx(5.824025974, abs=1e-9), pytest.approx(5.183333333, abs=1e-9))
    gain = expected_improvement(b.value, b.quality_sd, a.value, a.quality_sd) * 2.0 - (0.1 + 0.05)
    assert gain == pytest.approx(2.527515313, abs=1e-9)
    view = learner.assignment("finder")
    assert (view.model, view.epsilon, dict(view.explore)) == ("a", 1.0, {"b": 1.0})
    assert view.reason.endswith("explores b with probability 1")
    plan = view.sample(random.Random(0))
    assert (plan.primary, plan.extras) == ("a", (("b", 1.0),))
    # The paired run must pay its overhead: just above the gain, nothing is worth exploring.
    learner.params = RoleRLParams(cascade=False, contextual=False, use_state=False, explore_overhead=2.5275)
    assert dict(learner.assignment("finder").explore) == {"b": 1.0}
    learner.params = RoleRLParams(cascade=False, contextual=False, use_state=False, explore_overhead=2.5276)
    view = learner.assignment("finder")
    assert (view.epsilon, dict(view.explore)) == (0.0, {})
    # The uniform floor: a quarter of the calls run one of the others beside the greedy choice.
    learner.params = RoleRLParams(
        cascade=False, contextual=False, use_state=False, explore_overhead=100.0, explore_floor=0.25
    )
    view = learner.assignment("finder")
    assert (view.epsilon, dict(view.explore)) == (0.25, {"b": 0.5, "c": 0.5})
    extras = {seed: view.sample(random.Random(seed)).extras for seed in range(16)}
    assert {seed: e for seed, e in extras.items() if e} == {
        1: (("c", 0.125),),
        3: (("c", 0.125),),
        4: (("b", 0.125),),
        8: (("c", 0.125),),
        14: (("c", 0.125),),
    }


def test_the_budget_price_enters_the_decision() -> None:
    """The budget's dual variable mu grows by lr x (share spent - share of the window elapsed) per
    call; its price 100 x (e^mu - 1) adds to k1 and here turns the choice to the free model."""
    params = RoleRLParams(
        cascade=False, contextual=False, use_state=False, explore_horizon=0.0, budget_price_lr=3.0
    )
    free = RoleRL({"finder": ["a", "b"]}, params)
    capped = RoleRL({"finder": ["a", "b"]}, params, budgets={"default": Budget(0.1, 100.0)})
    for learner in (free, capped):
        learner.observe(outcome("1", "a", quality=1.0, cost=0.02, ts_ms=10_000))
        learner.observe(outcome("2", "b", quality=0.5, cost=0.0, ts_ms=10_000))
    mu = 3.0 * (0.2 - 0.1) + 3.0 * (0.2 - 0.1)  # 10 s into a 100 s window, 20% spent, twice
    assert capped.snapshot()["ledgers"]["default"]["mu"] == pytest.approx(mu, abs=1e-12)
    (status,) = capped.budget_status(now_ms=10_000)
    price = 100.0 * (math.exp(mu) - 1.0)
    assert status.price == pytest.approx(price, abs=1e-9)
    assert status.reserve_usd == 0.0  # the cheapest adequate model (b) costs nothing
    context = {"ts_ms": 10_000}
    without, with_price = free.assignment("finder", context), capped.assignment("finder", context)
    assert with_price.q_values["a"] - without.q_values["a"] == pytest.approx(-price * 0.02, abs=2e-6)
    assert with_price.q_values["b"] == without.q_values["b"]
    assert (without.model, with_price.model) == ("a", "b")
    assert f"- {100.0 + price:.4g} x $" in with_price.reason and not with_price.budgets[0].guard


def test_importance_weights_scale_the_learning_step() -> None:
    """Feedback one version behind: weight pi_current / propensity, clipped at 5, multiplies the
    paper's step and counts as that many observations; the current policy's zero propensity
    learns nothing."""
    params = RoleRLParams(cascade=False, contextual=False, use_state=False, explore_horizon=0.0)
    learner = RoleRL({"finder": ["a", "b"]}, params)
    learner.pin("finder", "a")
    learner.unpin("finder")
    lag_one = learner.version("finder") - 1
    r = 10.0 - 100 * 0.001 - 0.1 * 0.5
    # Start: a is assigned (pi = 1) and was run with propensity 0.25: weight 4, step 0.4.
    learner.observe(outcome("1", "a", quality=1.0, policy_version=lag_one, propensity=0.25))
    # b runs once beside it (pi = 1), propensity 0.1: weight 10 clipped at 5, step 0.5.
    learner.observe(outcome("2", "b", quality=1.0, policy_version=lag_one, propensity=0.1))
    snap = learner.snapshot()
    assert snap["q"]["finder"] == {"1:a": {"a": pytest.approx(0.4 * r)}, "1:b": {"b": pytest.approx(0.5 * r)}}
    assert (snap["est"]["finder"]["*"]["a"]["n"], snap["est"]["finder"]["*"]["b"]["n"]) == (4.0, 5.0)
    assert learner.assignment("finder").model == "b"  # 5 observations weigh more than 4
    # a is neither assigned nor explored now: pi_current(a) = 0, its lagging feedback is off-policy.
    learner.observe(outcome("3", "a", quality=-1.0, policy_version=learner.version("finder") - 1))
    assert learner.counters["off_policy"] == 1 and learner.snapshot()["q"] == snap["q"]


ARMS = {"small": (0.55, 0.0005), "mid": (0.8, 0.002), "large": (0.9, 0.03)}  # (accuracy, USD)
REGRET_THRESHOLD = 0.2
"""Mean regret per input in reward points (0.104 when written; always running `large` costs 0.75)."""


def test_regret_on_a_seeded_synthetic_replay_stays_low() -> None:
    """Learning quality: 600 inputs of one role, three models with Bernoulli success; the regret
    of each input (the best model's expected reward minus the delivered one's, plus the reward
    points spent on extra calls) averages well under random routing's."""

    def expected(model: str) -> float:  # v * E[k] - k1 * c - k2 * t, with k = +1 / -1 and t = 0.5 s
        accuracy, cost = ARMS[model]
        return 10.0 * (2 * accuracy - 1) - 100.0 * cost - 0.05

    best = max(expected(m) for m in ARMS)
    learner = RoleRL({"qa": list(ARMS)}, RoleRLParams(cascade=False))
    rng = random.Random(7)
    regret = 0.0
    for i in range(600):
        last = learner.last_state("qa")
        plan = learner.assignment("qa").sample(rng)
        regret += best - expected(plan.primary)
        for j, model in enumerate([plan.primary, *(m for m, _ in plan.extras)]):
            accuracy, cost = ARMS[model]
            regret += (100.0 * cost + 0.05) if j else 0.0
            prev = {"prev_model": last[0], "prev_success": last[1]} if last else {}
            learner.observe(
                outcome(
                    f"{i}.{j}",
                    model,
                    role="qa",
                    quality=1.0 if rng.random() < accuracy else -1.0,  # labelled: judged on every call
                    cost=cost,
                    stream_id="s",
                    chunk_id=str(i),
                    policy_version=learner.version("qa"),
                    **prev,
                )
            )
    random_regret = best - sum(expected(m) for m in ARMS) / len(ARMS)
    assert learner.assignment("qa").model == "mid"
    assert regret / 600 < REGRET_THRESHOLD < random_regret / 4


# --- 7. Snapshot / restore --------------------------------------------------------------------------


def _drive(learner: RoleRL, rng: random.Random, start: int, steps: int) -> list[Any]:
    """Replay a seeded mix of outcomes; return every decision taken on the way."""
    decisions: list[Any] = []
    for t in range(start, start + steps):
        role = ("finder", "locator")[t % 2]
        context = {
            "domain": ("news", "ecommerce")[t % 3 == 0],
            "lang": "en",
            "chunk_size": 40 + t % 50,
            "feed": "default",
            "ts_ms": t * 1_000,
        }
        view = learner.assignment(role, context)
        plan = view.sample(rng)
        decisions.append((view.as_dict(), plan))
        for model in [plan.primary, *(m for m, _ in plan.extras)]:
            ok = rng.random() < {"cheap": 0.5, "mid": 0.7, "strong": 0.9}[model]
            learner.observe(
                outcome(
                    f"{t}:{model}",
                    model,
                    role=role,
                    ok=ok,
                    cost={"cheap": 1e-4, "mid": 5e-4, "strong": 2e-3}[model],
                    confidence=rng.uniform(-2, 0),
                    stream_id=f"s{t}",
                    chunk_id="0",
                    ts_ms=t * 1_000,
                    policy_version=learner.version(role),
                    domain=context["domain"],
                    chunk_size=context["chunk_size"],
                    error=None if rng.random() > 0.05 else "timeout",
                )
            )
    return decisions


def test_snapshot_restore_round_trip_gives_identical_decisions() -> None:
    params = RoleRLParams(cost_weight=300.0, breaker_failures=2)
    learner = RoleRL(
        {"finder": MODELS, "locator": MODELS},
        params,
        random.Random(3),
        budgets={"default": Budget(0.02, 60.0)},
        board={"strong": 1.0},
    )
    _drive(learner, random.Random(4), 0, 150)
    data = json.loads(json.dumps(learner.snapshot()))
    clone = RoleRL.restore(data, random.Random(3))
    assert json.loads(json.dumps(clone.snapshot())) == data
    ours = _drive(learner, random.Random(5), 150, 100)
    theirs = _drive(clone, random.Random(5), 150, 100)
    assert ours == theirs
    assert learner.snapshot() == clone.snapshot()


# --- The learner against a naive re-implementation of the paper's loop ------------------------------


def _paper_reference(
    rewards: list[dict[str, float]], models: list[str], eps: float, alpha: float, rng: random.Random
) -> tuple[dict[tuple[str, bool], dict[str, float]], list[str]]:
    """The paper's update() loop, written plainly (main_Role_RL.py, one role)."""
    q: dict[tuple[str, bool], dict[str, float]] = defaultdict(lambda: defaultdict(float))
    state: tuple[str, bool] | None = None
    kept: list[str] = []
    for r in rewards:
        if state is None:  # Q-table all zeros: run every LLM once, update every (state_i, j)
            for i in models:
                si = (i, r[i] > 0)
                for j in models:
                    q[si][j] += alpha * (r[j] - q[si][j])
            current = max(models, key=lambda m: r[m])
        else:
            current = state[0]
            here = state
            if rng.random() < eps:
                new = models[rng.randrange(len(models))]
            else:
                new = max(models, key=lambda m: (q[here][m], -models.index(m)))
            if new == current:
                q[state][new] += alpha * (r[new] - q[state][new])
            else:  # duel: cross update, keep the better
                r1, r2 = r[current], r[new]
                q[state][current] += alpha * (r1 - q[state][current])
                s1 = (current, r1 > 0)
                q[s1][new] += alpha * (r2 - q[s1][new])
                q[state][new] += alpha * (r2 - q[state][new])
                s2 = (new, r2 > 0)
                q[s2][current] += alpha * (r1 - q[s2][current])
                current = new if r2 > r1 else current
        state = (current, r[current] > 0)
        kept.append(current)
    return q, kept


def test_learner_matches_the_naive_paper_loop_on_a_replay() -> None:
    models = ["llama", "mixtral", "command-r", "gemini", "claude"]
    data_rng = random.Random(11)
    mean = {"llama": -3.0, "mixtral": 1.0, "command-r": 4.0, "gemini": 6.0, "claude": 5.0}
    rewards = [{m: mean[m] + data_rng.uniform(-8, 8) for m in models} for _ in range(400)]
    eps, alpha = 0.2, 0.1
    ref_q, ref_kept = _paper_reference(rewards, models, eps, alpha, random.Random(7))

    params = RoleRLParams.paper(
        epsilon=eps, alpha=alpha, reward_value=1.0, cost_weight=0.0, latency_weight=0.0
    )
    learner = RoleRL({"finder": models}, params)
    rng = random.Random(7)
    kept = []
    for t, r in enumerate(rewards):
        prev = learner.last_state("finder")
        plan = learner.assignment("finder").sample(rng)
        for model in [plan.primary, *(m for m, _ in plan.extras)]:
            learner.observe(
                outcome(
                    f"{t}:{model}",
                    model,
                    quality=r[model],
                    stream_id=str(t),
                    chunk_id="0",
                    prev_model=prev[0] if prev else None,
                    prev_success=prev[1] if prev else True,
                    policy_version=learner.version("finder"),
                )
            )
        state = learner.last_state("finder")
        assert state is not None
        kept.append(state[0])
    assert kept == ref_kept
    table = learner.snapshot()["q"]["finder"]
    expected = {f"{int(ok)}:{m}": row for (m, ok), row in ref_q.items()}
    assert set(table) == {key for key, row in expected.items() if any(row.values())}
    for key, row in expected.items():  # cells never updated are 0 in both (missing in ours)
        ours = {m: table.get(key, {}).get(m, 0.0) for m in models}
        assert ours == pytest.approx({m: row.get(m, 0.0) for m in models}, abs=1e-12), key


def test_judge_spend_is_booked_against_the_feeds_budget_without_counting_a_call() -> None:
    learner = RoleRL({"finder": ["cheap", "strong"]}, RoleRLParams(), budgets={"default": Budget(1.0, 60.0)})
    chunk = {"stream_id": "s", "chunk_id": "s:0"}
    learner.observe(outcome("c1", "cheap", cost=0.002, ts_ms=1_000, **chunk))
    verdict = outcome("c1:judge", "cheap", cost=0.002, ts_ms=1_500, source="judge", quality=1.0, **chunk)
    learner.observe({**verdict, "judge_cost_usd": 0.03})
    [status] = learner.budget_status("default", now_ms=2_000)
    assert status.spent_usd == pytest.approx(0.032)  # the call once, and what judging it cost
    assert learner.snapshot()["ledgers"]["default"]["calls"] == {"finder": 1}
