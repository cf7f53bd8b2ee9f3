"""Learning from one accepted call: the paper's Q-update, then our estimates, calibration and
co-runs, each on the role's state (`RoleState`) and the calls already seen on the same input.

A call may arrive without a quality label (it parsed, nobody judged it), and its label may arrive
later as a record of its own (a judge's verdict): deviation 2 says what each step learns then.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, MutableMapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from olp.contexts import ROLE_LEVEL, context_key
from policy_store.learner.cascade import Calibration, success_of
from policy_store.learner.estimates import Estimate, state_context_key
from policy_store.learner.paper import Call, q_update, quality, reward_of, state_key
from policy_store.learner.params import RoleRLParams
from policy_store.learner.state import LABEL_SUM, Member, RoleState

PROCESSOR = "processor"
AGREEMENT = "agreement"


@dataclass(frozen=True)
class Observation:
    """One accepted record, measured: what every learning step reads."""

    model: str
    label: float | None  # k; None for a success without a quality label
    source: str  # RoleOutcome.source
    kind: str  # the evidence it carries: its source, "failure" or "unlabelled" (`RoleState.evidence`)
    measured: bool  # the record measured the call's cost and latency (False: a late label)
    cost: float
    latency_s: float
    confidence: float | None
    before: str  # the paper's state the call was made in ("" when the record does not say)
    ctx: str
    weight: float

    def reward(self, params: RoleRLParams) -> float | None:
        """The paper's r, None when the call has no label."""
        if self.label is None:
            return None
        return reward_of(self.label, self.cost, self.latency_s, params)

    def after(self, params: RoleRLParams) -> str:
        """The paper's state after the call (success assumed while unlabelled: it parsed)."""
        r = self.reward(params)
        return state_key(self.model, r is None or r > 0)

    def state_before(self, params: RoleRLParams) -> str:
        """Deviation 1: a call without a previous state updates its own-state row."""
        return self.before or self.after(params)

    def completing(self, call: Member) -> Observation:
        """This late label applied to a call seen before: its cost, latency, state and context."""
        confidence = self.confidence if self.confidence is not None else call.confidence
        return replace(
            self,
            measured=False,
            cost=call.cost,
            latency_s=call.latency,
            confidence=confidence,
            before=call.before,
            ctx=call.ctx,
        )

    def member(self, params: RoleRLParams) -> Member:
        """How later records on the same input see this call."""
        labelled = self.label is not None
        k = self.label if self.label is not None else 0.0
        return Member(
            self.model,
            self.reward(params) or 0.0,
            self.after(params),
            success_of(k, params.failure_quality) if labelled else 0.0,
            self.confidence,
            self.weight,
            k,
            self.cost,
            self.latency_s,
            labelled,
            self.before,
            self.ctx,
            params.evidence_weight(self.source) if labelled else 0.0,
            self.source if labelled else "",
        )


def observation(outcome: Mapping[str, Any], weight: float, params: RoleRLParams) -> Observation:
    """Measure one RoleOutcome dict."""
    model = str(outcome["model"])
    prev = outcome.get("prev_model")
    label = quality(outcome, params)
    source = str(outcome.get("source") or PROCESSOR)
    kind = source
    if source == PROCESSOR and outcome.get("quality") is None:
        kind = "unlabelled" if label is None else "failure"
    return Observation(
        model=model,
        label=label,
        source=source,
        kind=kind,
        measured=True,
        cost=float(outcome.get("cost_usd") or 0.0),
        latency_s=float(outcome.get("latency_ms") or 0.0) / 1000.0,
        confidence=_finite(outcome.get("confidence")),
        before=state_key(str(prev), bool(outcome.get("prev_success", True))) if prev else "",
        ctx=context_key(outcome, params),
        weight=weight,
    )


def learn_paper(rs: RoleState, obs: Observation, members: Sequence[Member], params: RoleRLParams) -> None:
    """The paper: Q[s, a] += alpha * (r + gamma * max Q[s'] - Q[s, a]), cross updates with the
    labelled calls on the same input. An unlabelled call has no r: no update (deviation 2b)."""
    rs.calls += 1
    r = obs.reward(params)
    if r is None:
        return
    call = Call(obs.model, r, obs.after(params), obs.weight)
    others = [Call(m.model, m.reward, m.state, m.weight) for m in members if m.labelled]
    rs.last_state = q_update(rs.q, params, obs.state_before(params), call, others)


EXACT_SOURCES = ("canary", "judge", "human")
"""Evidence that scores one answer on its own: what tells how reliable a model is as a partner."""
UNKNOWN_PARTNER = 0.5
"""Reliability of a partner no exact evidence has scored yet: agreement with it counts a quarter."""


def agreement_partner(outcome: Mapping[str, Any]) -> str | None:
    """The model an agreement label compared the call with (processors/evidence.py: the event id
    ends in `:agree:<model>`)."""
    head, sep, partner = str(outcome.get("event_id") or "").rpartition(":agree:")
    return partner if sep and head else None


def partner_reliability(counts: Mapping[str, float]) -> float:
    """How far agreeing with a model says "right", from what the exact sources measured of it:
    (mean k + 1) / 2 in [0, 1]. Agreeing with a model that is mostly wrong says little (two small
    models agreeing on junk, or a good model disagreeing with junk), so an agreement label weighs
    the partner's reliability squared, like a label of noise (1 - r) / 2 would."""
    n = sum(counts.get(source, 0.0) for source in EXACT_SOURCES)
    if n <= 0:
        return UNKNOWN_PARTNER
    k_sum = sum(counts.get(source + LABEL_SUM, 0.0) for source in EXACT_SOURCES)
    return min(1.0, max(0.0, (k_sum / n + 1.0) / 2.0))


def weigh_agreement(obs: Observation, outcome: Mapping[str, Any], rs: RoleState) -> Observation:
    """An agreement label, weighted by its partner's reliability in this role."""
    partner = agreement_partner(outcome) if obs.source == AGREEMENT else None
    if partner is None:
        return obs
    return replace(obs, weight=obs.weight * partner_reliability(rs.evidence.get(partner, {})) ** 2)


def learn_estimates(
    rs: RoleState,
    pooled: MutableMapping[str, Estimate],
    obs: Observation,
    members: Sequence[Member],
    params: RoleRLParams,
) -> None:
    """Ours: cost and latency of every measured call, quality of labels only (weighted by their
    source), at the role, context and (state, context) levels and in the model's mean over all
    roles; then the paper's cross updates on the (state, context) estimates, between labelled calls."""
    p = params
    label_weight = obs.weight * p.evidence_weight(obs.source)
    keys = {ROLE_LEVEL, obs.ctx}
    if p.use_state and obs.before:
        keys.add(state_context_key(obs.before, obs.ctx))
    for e in [*(rs.estimate(key, obs.model) for key in keys), pooled.setdefault(obs.model, Estimate())]:
        if obs.measured:
            e.add_call(obs.cost, obs.latency_s, obs.weight, p.min_step)
        if obs.label is not None:
            e.add_label(obs.label, label_weight, p.min_step)
    _count(rs, obs)
    if not p.use_state or obs.label is None:
        return
    after = obs.after(p)
    for other in members:
        if not other.labelled:
            continue
        w = min(obs.weight, other.weight)
        ours = rs.estimate(state_context_key(other.state, obs.ctx), obs.model)
        ours.add_call(obs.cost, obs.latency_s, w, p.min_step)
        ours.add_label(obs.label, w * p.evidence_weight(obs.source), p.min_step)
        theirs = rs.estimate(state_context_key(after, obs.ctx), other.model)
        theirs.add_call(other.cost, other.latency, w, p.min_step)
        theirs.add_label(other.quality, w * other.label_weight, p.min_step)


def _count(rs: RoleState, obs: Observation) -> None:
    """The evidence counts per source and the role's label rate."""
    rs.count_evidence(obs.model, obs.kind, obs.weight, obs.label)
    if obs.measured:
        rs.measured_calls += 1.0
    if obs.label is not None:
        rs.labelled_calls += 1.0


def learn_calibration(
    rs: RoleState, obs: Observation, members: Sequence[Member], params: RoleRLParams
) -> None:
    """Ours: the model's confidence calibration, and what labelled calls on the same input tell
    about escalating from one to the other, in both orders (labelled calls only). A pair whose
    two labels are both agreement teaches the calibration but not the co-runs: agreement scores
    the two answers alike, so it would say escalating never changes the outcome."""
    if obs.label is None:
        return
    success = success_of(obs.label, params.failure_quality)
    window = params.calibration_window
    if obs.confidence is not None:
        rs.calibration.setdefault(obs.model, Calibration()).add(obs.confidence, success, window)
    for other in members:
        if other.labelled and not (obs.source == AGREEMENT and other.source == AGREEMENT):
            rs.coruns.add(other.model, other.success, other.confidence, obs.model, success, window)
            rs.coruns.add(obs.model, success, obs.confidence, other.model, other.success, window)


def _finite(x: Any) -> float | None:
    if x is None:
        return None
    v = float(x)
    if math.isnan(v):
        return None
    return max(-1e9, min(1e9, v))
