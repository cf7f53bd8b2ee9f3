"""Learning from one accepted call: the paper's Q-update, then our estimates, calibration and
co-runs, each on the role's state (`RoleState`) and the calls already seen on the same input."""

from __future__ import annotations

import math
from collections.abc import Mapping, MutableMapping, Sequence
from dataclasses import dataclass
from typing import Any

from policy_store.learner.cascade import Calibration, success_of
from policy_store.learner.estimates import ROLE_LEVEL, Estimate, context_key, state_context_key
from policy_store.learner.paper import Call, q_update, quality, reward, state_key
from policy_store.learner.params import RoleRLParams
from policy_store.learner.state import Member, RoleState


@dataclass(frozen=True)
class Observation:
    """One accepted call, measured: what every learning step reads."""

    model: str
    reward: float
    quality: float
    cost: float
    latency_s: float
    confidence: float | None
    before: str  # the paper's state the call was made in
    after: str  # the paper's state after it
    prev_known: bool  # the outcome names the call before it (its state is not a guess)
    ctx: str
    weight: float

    def member(self, params: RoleRLParams) -> Member:
        """How later calls on the same input see this one."""
        success = success_of(self.quality, params.failure_quality)
        return Member(
            self.model,
            self.reward,
            self.after,
            success,
            self.confidence,
            self.weight,
            self.quality,
            self.cost,
            self.latency_s,
        )


def observation(outcome: Mapping[str, Any], weight: float, params: RoleRLParams) -> Observation:
    """Measure one RoleOutcome dict (deviation 1: without a previous call, its own state)."""
    r = reward(outcome, params)
    model = str(outcome["model"])
    after = state_key(model, r > 0)
    prev = outcome.get("prev_model")
    before = state_key(str(prev), bool(outcome.get("prev_success", True))) if prev else after
    return Observation(
        model=model,
        reward=r,
        quality=quality(outcome, params),
        cost=float(outcome.get("cost_usd") or 0.0),
        latency_s=float(outcome.get("latency_ms") or 0.0) / 1000.0,
        confidence=_finite(outcome.get("confidence")),
        before=before,
        after=after,
        prev_known=bool(prev),
        ctx=context_key(outcome, params),
        weight=weight,
    )


def learn_paper(rs: RoleState, obs: Observation, members: Sequence[Member], params: RoleRLParams) -> None:
    """The paper: Q[s, a] += alpha * (r + gamma * max Q[s'] - Q[s, a]), cross updates included."""
    call = Call(obs.model, obs.reward, obs.after, obs.weight)
    others = [Call(m.model, m.reward, m.state, m.weight) for m in members]
    rs.last_state = q_update(rs.q, params, obs.before, call, others)
    rs.calls += 1


def learn_estimates(
    rs: RoleState,
    pooled: MutableMapping[str, Estimate],
    obs: Observation,
    members: Sequence[Member],
    params: RoleRLParams,
) -> None:
    """Ours: the decomposed running means at the role, context and (state, context) levels, the
    model's mean over all roles, and the paper's cross updates on the (state, context) estimates."""
    p = params
    keys = {ROLE_LEVEL, obs.ctx}
    if p.use_state and obs.prev_known:
        keys.add(state_context_key(obs.before, obs.ctx))
    for key in keys:
        rs.estimate(key, obs.model).add(obs.quality, obs.cost, obs.latency_s, obs.weight, p.min_step)
    pooled.setdefault(obs.model, Estimate()).add(obs.quality, obs.cost, obs.latency_s, obs.weight, p.min_step)
    if not p.use_state:
        return
    for other in members:
        w = min(obs.weight, other.weight)
        rs.estimate(state_context_key(other.state, obs.ctx), obs.model).add(
            obs.quality, obs.cost, obs.latency_s, w, p.min_step
        )
        rs.estimate(state_context_key(obs.after, obs.ctx), other.model).add(
            other.quality, other.cost, other.latency, w, p.min_step
        )


def learn_calibration(
    rs: RoleState, obs: Observation, members: Sequence[Member], params: RoleRLParams
) -> None:
    """Ours: the model's confidence calibration, and what calls on the same input tell about
    escalating from one to the other, in both orders."""
    success = success_of(obs.quality, params.failure_quality)
    window = params.calibration_window
    if obs.confidence is not None:
        rs.calibration.setdefault(obs.model, Calibration()).add(obs.confidence, success, window)
    for other in members:
        rs.coruns.add(other.model, other.success, other.confidence, obs.model, success, window)
        rs.coruns.add(obs.model, success, obs.confidence, other.model, other.success, window)


def _finite(x: Any) -> float | None:
    if x is None:
        return None
    v = float(x)
    if math.isnan(v):
        return None
    return max(-1e9, min(1e9, v))
