"""Quality evidence in the learner (policy_store/learner/; deviation 2): parsing is not quality,
labels are weighted by their source, a failure is still a failure, and a late label completes
the call it is about. Exact values on hand-made records."""

from __future__ import annotations

from typing import Any

import pytest

from policy_store.learner import RoleRL, RoleRLParams

PARAMS = RoleRLParams(contextual=False, use_state=False, cascade=False)


def record(event: str, model: str, **extra: Any) -> dict[str, Any]:
    out: dict[str, Any] = {
        "event_id": event,
        "role": "qa",
        "model": model,
        "policy_version": 1,
        "propensity": 1.0,
        "latency_ms": 500.0,
        "cost_usd": 0.001,
        "success": True,
        "error": None,
        "quality": None,
        "source": "processor",
        "ts_ms": 1_000,
    }
    out.update(extra)
    return out


def role_estimate(learner: RoleRL, model: str) -> dict[str, float]:
    return dict(learner.snapshot()["est"]["qa"]["*"][model])


def test_an_unlabelled_success_updates_cost_and_latency_but_not_quality() -> None:
    learner = RoleRL({"qa": ["a", "b"]}, PARAMS)
    learner.observe(record("1", "a", quality=-1.0, source="canary"))
    q_after_label = learner.snapshot()["q"]["qa"]
    learner.observe(record("2", "a", cost_usd=0.003, latency_ms=1500.0))
    learner.observe(record("3", "a", cost_usd=0.002, latency_ms=1000.0))
    est = role_estimate(learner, "a")
    assert est["n"] == 3.0
    assert est["cost"] == pytest.approx(0.002, abs=1e-15)
    assert est["latency"] == pytest.approx(1.0, abs=1e-12)
    assert (est["n_quality"], est["quality"], est["quality_sq"]) == (1.0, -1.0, 1.0)
    # The paper's Q-update has no reward for an unlabelled call: the table and state stay.
    assert q_after_label == {"0:a": {"a": pytest.approx(-1.015, abs=1e-12)}}  # 0.1 x (-10 - 0.1 - 0.05)
    assert learner.snapshot()["q"]["qa"] == q_after_label
    assert learner.last_state("qa") == ("a", False)
    assert learner.evidence("qa")["a"]["canary"] == 1.0
    assert learner.evidence("qa")["a"]["unlabelled"] == 2.0
    assert learner.assignment("qa").evidence == {"a": {"canary": 1.0, "unlabelled": 2.0}}


def test_a_success_alone_never_looks_better_than_no_evidence() -> None:
    """A thousand parsed answers of a junk model leave its quality at the prior: the learner
    ranks by cost until a label arrives."""
    learner = RoleRL({"qa": ["junk", "good"]}, PARAMS)
    for i in range(1000):
        learner.observe(record(f"j{i}", "junk", cost_usd=0.0001))
    learner.observe(record("g", "good", cost_usd=0.0001))
    scores = learner.evidence("qa")
    assert scores["junk"]["quality"] == scores["good"]["quality"] == 0.0
    assert scores["junk"]["n_quality"] == 0.0
    learner.observe(record("g1", "good", quality=1.0, source="judge"))
    learner.observe(record("j1", "junk", quality=-1.0, source="judge"))
    assert learner.assignment("qa").model == "good"


def test_labels_are_weighted_by_their_source() -> None:
    p = RoleRLParams()
    assert p.evidence_weight("canary") == 1.0
    assert p.evidence_weight("judge") == pytest.approx(0.64)
    assert p.evidence_weight("agreement") == pytest.approx(0.25)
    assert p.evidence_weight("downstream") == pytest.approx(0.36)
    assert p.evidence_weight("human") == pytest.approx(0.81)
    assert p.evidence_weight("unknown-source") == 1.0
    learner = RoleRL({"qa": ["a"]}, PARAMS)
    learner.observe(record("1", "a", quality=1.0, source="canary"))
    learner.observe(record("2", "a", quality=-1.0, source="judge"))
    est = role_estimate(learner, "a")
    assert est["n_quality"] == pytest.approx(1.64)
    assert est["quality"] == pytest.approx(1.0 - 2.0 * 0.64 / 1.64, abs=1e-12)
    custom = RoleRLParams(contextual=False, evidence=(("judge", 0.5, 0.0),))
    assert custom.evidence_weight("judge") == 0.5


def test_a_parse_failure_is_a_failure() -> None:
    learner = RoleRL({"qa": ["a", "b"]}, PARAMS)
    learner.observe(record("1", "a", success=False, error="unparseable answer", latency_ms=0.0))
    est = role_estimate(learner, "a")
    assert (est["n"], est["n_quality"], est["quality"]) == (1.0, 1.0, -1.0)
    assert learner.snapshot()["q"]["qa"] == {"0:a": {"a": pytest.approx(-1.01, abs=1e-12)}}
    assert learner.evidence("qa")["a"]["failure"] == 1.0
    assert learner.snapshot()["breakers"]["qa"]["a"]["failures"] == 1


def test_a_late_judge_verdict_completes_the_call_it_is_about() -> None:
    learner = RoleRL({"qa": ["a", "b"]}, PARAMS)
    call = {"stream_id": "s", "chunk_id": "0"}
    learner.observe(record("1", "a", cost_usd=0.002, latency_ms=500.0, **call))
    verdict = record("1/judge", "a", quality=1.0, source="judge", cost_usd=0.5, latency_ms=9000.0, **call)
    learner.observe(verdict)
    est = role_estimate(learner, "a")
    # Cost and latency are the call's, counted once; the label has the judge's weight.
    assert (est["n"], est["cost"], est["latency"]) == (1.0, 0.002, 0.5)
    assert (est["n_quality"], est["quality"]) == (pytest.approx(0.64), 1.0)
    # The paper's update uses the call's own cost and latency: r = 10 - 0.2 - 0.05.
    assert learner.snapshot()["q"]["qa"] == {"1:a": {"a": pytest.approx(0.975, abs=1e-12)}}
    evidence = learner.evidence("qa")["a"]
    assert (evidence["judge"], evidence["unlabelled"], evidence["n_quality"]) == (
        1.0,
        1.0,
        pytest.approx(0.64),
    )
    # shrunk toward the model's all-roles mean (itself shrunk toward 0 with one pseudo-label)
    k_pool = 0.64 / 1.64
    assert evidence["quality"] == pytest.approx((0.64 + 2.0 * k_pool) / 2.64, abs=1e-6)


def test_evidence_survives_a_snapshot() -> None:
    learner = RoleRL({"qa": ["a", "b"]}, PARAMS)
    learner.observe(record("1", "a", quality=1.0, source="human"))
    learner.observe(record("2", "b"))
    restored = RoleRL.restore(learner.snapshot())
    assert restored.evidence("qa") == learner.evidence("qa")
    assert restored.snapshot() == learner.snapshot()


def test_evidence_shows_what_each_source_says_beside_the_estimate() -> None:
    learner = RoleRL({"qa": ["a", "b"]}, PARAMS)
    for i, k in enumerate((1.0, 0.0, 0.5)):
        learner.observe(record(f"c{i}", "a", quality=k, source="canary"))
    learner.observe(record("j", "a", quality=-1.0, source="judge"))
    shown = learner.evidence("qa")["a"]
    assert shown["canary"] == 3.0 and shown["canary_mean"] == pytest.approx(0.5)
    assert shown["judge"] == 1.0 and shown["judge_mean"] == pytest.approx(-1.0)
    assert not any(key.endswith(".k_sum") for key in shown)
    # calibration: the estimate's distance from what the canaries measured; none without canaries
    assert shown["canary_gap"] == pytest.approx(abs(shown["quality"] - 0.5)) and shown["canary_gap"] > 0
    assert "canary_gap" not in learner.evidence("qa")["b"]
    assert RoleRL.restore(learner.snapshot()).evidence("qa") == learner.evidence("qa")


def agreement_learner(partner_canary_k: float | None) -> RoleRL:
    """Model "a" disagrees with "b" four times; the canaries scored "b" first (or never)."""
    learner = RoleRL({"qa": ["a", "b"]}, PARAMS)
    if partner_canary_k is not None:
        for i in range(3):
            learner.observe(record(f"c{i}", "b", quality=partner_canary_k, source="canary"))
    learner.observe(record("a1", "a", quality=0.5, source="canary"))
    for i in range(4):
        # Current-policy records (no staleness correction): only the partner weighting differs.
        learner.observe(record(f"x{i}:agree:b", "a", quality=-1.0, source="agreement", policy_version=99))
    return learner


def test_agreement_weighs_the_partners_measured_reliability() -> None:
    """Disagreeing with a model the canaries found wrong is no evidence against "a"; disagreeing
    with one they found right is; an unscored partner counts a quarter (r = 0.5)."""
    junk_partner = agreement_learner(-1.0).evidence("qa")["a"]
    good_partner = agreement_learner(1.0).evidence("qa")["a"]
    unknown_partner = agreement_learner(None).evidence("qa")["a"]
    canary_only = RoleRL({"qa": ["a", "b"]}, PARAMS)
    canary_only.observe(record("a1", "a", quality=0.5, source="canary"))
    assert junk_partner["agreement"] == 0.0
    assert junk_partner["quality"] == pytest.approx(canary_only.evidence("qa")["a"]["quality"])
    assert good_partner["agreement"] == pytest.approx(4.0)
    assert unknown_partner["agreement"] == pytest.approx(1.0)
    assert good_partner["quality"] < unknown_partner["quality"] < junk_partner["quality"]
