"""The LONDI-style switch on the learner's side (deviation 9 with an encoder first): a cheap encoder
answers with a confidence, an LLM costs seconds; from canary scores of both on the same inputs the
learner publishes "encoder first, LLM when the encoder is unsure" only when the LLM helps there.
Pure: records in the shape the processors send (processors/role_call.py, processors/evidence.py)."""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

from policy_store.learner import RoleRL, RoleRLParams
from processors.evidence import evidence_outcome

ROLE = "topic_locator"
ENCODER = dict(cost=2e-8, latency_ms=5.0)  # ~200 tokens embedded at the compute price
LLM = dict(cost=5e-6, latency_ms=4000.0)  # ~500 prompt tokens, 4 s on two cores


def call(
    learner: RoleRL, i: int, model: str, confidence: float | None, spent: dict[str, float]
) -> dict[str, Any]:
    """The processor's RoleOutcome of one call on canary chunk i: it parsed, no quality."""
    return {
        "event_id": f"canary:s:{i}:{ROLE}:0:{model}:0",
        "role": ROLE,
        "model": model,
        "policy_version": learner.version(ROLE),
        "propensity": 1.0,
        "prev_model": None,
        "prev_success": True,
        "domain": "ecommerce",
        "lang": "en",
        "feed": "default",
        "chunk_size": 40,
        "latency_ms": spent["latency_ms"],
        "tokens_in": 200,
        "tokens_out": 0,
        "cost_usd": spent["cost"],
        "success": True,
        "error": None,
        "quality": None,
        "source": "processor",
        "stream_id": "canary:s",
        "chunk_id": f"canary:s:{i}",
        "ts_ms": 1_000 + i,
        "confidence": confidence,
        "judge_cost_usd": 0.0,
    }


def learned(
    llm_right: Callable[[float, random.Random], bool], n: int = 300, source: str | None = "canary"
) -> RoleRL:
    """A learner fed n chunks answered by both models: the encoder is right when its confidence
    is above 0.5 (95%) and mostly wrong below (20%); `llm_right(confidence, rng)`. Each answer is
    scored by `source`: "canary" exactly, "agreement" as the processors do (both sides 2a - 1),
    None: no evidence (they parsed)."""
    learner = RoleRL({ROLE: ["enc", "llm"]}, RoleRLParams(explore_horizon=0.0, use_state=False))
    rng = random.Random(7)
    for i in range(n):
        confidence = rng.random()
        enc_ok = rng.random() < (0.95 if confidence > 0.5 else 0.2)
        llm_ok = llm_right(confidence, rng)
        calls = [call(learner, i, "enc", confidence, ENCODER), call(learner, i, "llm", None, LLM)]
        for record in calls:
            learner.observe(record)
        scores = (enc_ok, llm_ok) if source == "canary" else (enc_ok == llm_ok,) * 2
        for record, ok in zip(calls, scores, strict=True):
            if source is not None:
                learner.observe(evidence_outcome(record, source, 1.0 if ok else -1.0, source, 1_000 + i))
    return learner


def test_the_learner_escalates_from_an_unsure_encoder_to_the_llm() -> None:
    learner = learned(lambda confidence, rng: rng.random() < 0.8)
    view = learner.assignment(ROLE, {"domain": "ecommerce", "lang": "en", "chunk_size": 40})
    assert view.cascade is not None, view.reason
    assert (view.model, view.cascade.then) == ("enc", "llm")
    assert 0.4 < view.cascade.threshold < 0.6
    assert 0.4 < view.cascade.escalation_rate < 0.6
    record = view.to_record(0)
    assert (record["model"], record["cascade_to"]) == ("enc", "llm")
    assert record["cascade_below"] == view.cascade.threshold


def test_no_cascade_when_the_llm_never_beats_the_encoder() -> None:
    # The LLM is right exactly when the encoder is likely right anyway, and wrong elsewhere.
    learner = learned(lambda confidence, rng: confidence > 0.5 and rng.random() < 0.9)
    view = learner.assignment(ROLE, {"domain": "ecommerce", "lang": "en", "chunk_size": 40})
    assert view.cascade is None, view.reason
    assert view.model == "enc"


def test_parsed_answers_alone_teach_no_switch() -> None:
    learner = learned(lambda confidence, rng: rng.random() < 0.8, source=None)
    snapshot = learner.snapshot()
    assert snapshot["calib"][ROLE] == {} and snapshot["corun"][ROLE] == {}
    assert learner.assignment(ROLE).cascade is None


def test_agreement_calibrates_the_encoder_but_teaches_no_escalation_gain() -> None:
    """Agreement scores both answers alike: as co-runs it would say escalating never helps."""
    learner = learned(lambda confidence, rng: rng.random() < 0.8, source="agreement")
    snapshot = learner.snapshot()
    assert len(snapshot["calib"][ROLE]["enc"]) == 300
    assert snapshot["corun"][ROLE] == {} and snapshot["gains"][ROLE] == {}
