"""The decision for one role, as named steps.

Paper mode (`decide_paper`): argmax Q[last state], epsilon-greedy, a duel when the choice is not the
incumbent. Our mode (`decide`) runs, in order:
  1. pin        an operator's pin wins (unless its breaker is open);
  2. start      no model tried yet: every model runs once (one at a time under a budget);
  3. greedy     the highest expected reward among models meeting the role's latency SLO;
  4. guard      under a budget, the best model whose dearest call still fits (deviation 6);
  5. cascade    a cheap-first cascade when it beats the best single model (deviation 9);
  6. explore    untried models once, the challenger with the best expected improvement, a
                calibration probe, or the uniform floor (deviation 5);
and says why in the view's `reason`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace

from policy_store.learner.budget import BudgetStatus
from policy_store.learner.cascade import Calibration, CascadePlan
from policy_store.learner.estimates import Estimate, ModelScore, expected_improvement
from policy_store.learner.paper import START, argmax_model, state_model
from policy_store.learner.params import RoleRLParams
from policy_store.learner.state import RoleState
from policy_store.learner.views import AssignmentView


@dataclass
class Situation:
    """What one decision of our mode reads: the role's candidates, their scores and the budgets."""

    role: str
    ctx: str
    candidates: list[str]
    scores: dict[str, ModelScore]
    statuses: list[BudgetStatus]
    cost_weight: float
    version: int
    params: RoleRLParams
    pooled: Mapping[str, Estimate]
    """Each model's estimate over all roles: the cost bound of a model untried in this role."""
    notes: list[str] = field(default_factory=list)
    label_rate: float = 1.0
    """Share of the role's calls that get a quality label: what a paired run teaches (deviation 5)."""

    def q_values(self) -> dict[str, float]:
        return {m: round(self.scores[m].value, 6) for m in self.candidates}

    def fits(self, cost: float) -> bool:
        """A call costing `cost` fits every budget (always true without budgets)."""
        return all(s.fits(cost, self.params.budget_margin) for s in self.statuses)

    def bound(self, m: str) -> float:
        """What one call of m may cost, for the budget guard: wider while little is known."""
        score = self.scores[m]
        if score.n > 0:
            return score.cost_max * (1.0 + 1.0 / score.n)
        if m in self.pooled:
            return 2.0 * self.pooled[m].cost_max
        # An untried model: twice the dearest mean call seen so far.
        return 2.0 * max((e.cost_max for e in self.pooled.values()), default=0.0)

    def ranked(self, models: Iterable[str]) -> list[str]:
        return sorted(models, key=lambda m: -self.scores[m].value)

    def view(
        self,
        model: str,
        reason: str,
        *,
        epsilon: float = 0.0,
        explore: Mapping[str, float] | None = None,
        warmup: tuple[str, ...] = (),
        fallbacks: tuple[str, ...] = (),
        cascade: CascadePlan | None = None,
        pinned: bool = False,
    ) -> AssignmentView:
        return AssignmentView(
            self.role,
            model,
            self.q_values(),
            epsilon,
            tuple(self.candidates),
            reason,
            self.version,
            context=self.ctx,
            explore=dict(explore or {}),
            warmup=warmup,
            fallbacks=fallbacks,
            cascade=cascade,
            budgets=tuple(self.statuses),
            pinned=pinned,
        )


# --- 1. pin, 2. start ---------------------------------------------------------------------------


def pinned_view(s: Situation, pinned: str | None) -> AssignmentView | None:
    """The operator's pin, when it is assignable; otherwise a note says why it is not followed."""
    if pinned is None:
        return None
    if pinned in s.candidates:
        fallbacks = tuple(m for m in s.ranked(s.candidates) if m != pinned)
        return s.view(pinned, "pinned by operator", pinned=True, fallbacks=fallbacks)
    s.notes.append(f"pinned {pinned} is unavailable (circuit open)")
    return None


def start_view(s: Situation, untried: Sequence[str]) -> AssignmentView:
    """No feedback yet: every model runs once beside the assigned one (the paper's start); under a
    budget, the model cheapest elsewhere first and the others one at a time while they fit."""
    model = s.candidates[0]
    others = [m for m in s.candidates if m != model]
    reason = "start: no feedback yet, every model runs once"
    if s.statuses:
        model = untried[0]
        others = [m for m in untried if m != model][:1]
        others = others if others and s.fits(s.bound(model) + s.bound(others[0])) else []
        reason = "start under a budget: untried models run one at a time while they fit"
    fallbacks = tuple(m for m in s.candidates if m != model)
    return s.view(model, reason, warmup=tuple(others), fallbacks=fallbacks)


# --- 3. greedy, 4. budget guard -----------------------------------------------------------------


def eligible_models(s: Situation, tried: Sequence[str]) -> list[str]:
    """The tried models meeting the role's latency SLO (all of them when none does)."""
    slo = s.params.slo(s.role)
    eligible = [m for m in tried if slo is None or s.scores[m].latency <= slo] or list(tried)
    if slo is not None and len(eligible) < len(tried):
        slow = ", ".join(m for m in tried if m not in eligible)
        s.notes.append(f"latency SLO {slo:g}s excludes {slow}")
    return eligible


def budget_guard(s: Situation, model: str, eligible: Sequence[str], untried: Sequence[str]) -> str | None:
    """When `model`'s dearest call does not fit beside the reserve: the best model (tried, or priced
    in other roles) that fits, or the cheapest when none does (budget exhausted). None: it fits."""
    if not s.statuses or s.fits(s.bound(model)):
        return None
    options = [*eligible, *(m for m in untried if m in s.pooled)]
    fitting = [m for m in s.ranked(options) if s.fits(s.bound(m))]
    s.statuses = [replace(status, guard=True) for status in s.statuses]
    spend = "; ".join(
        f"{b.feed} ${b.spent_usd:.4f} of ${b.limit_usd:.4f} spent, ${b.reserve_usd:.4f} reserved"
        for b in s.statuses
    )
    s.notes.append(("budget guard: " if fitting else "budget exhausted, cheapest model: ") + spend)
    return fitting[0] if fitting else min(options, key=s.bound)


def greedy_reason(s: Situation, model: str, runner_up: str | None) -> str:
    best, p = s.scores[model], s.params
    reason = (
        f"highest expected reward {best.value:.3f} = {p.reward_value:g} x quality {best.quality:.3f}"
        f" - {s.cost_weight:.4g} x ${best.cost:.6f} - {p.latency_weight:g} x {best.latency:.3f}s"
        f" (n={best.n:.0f}, context {s.ctx})"
    )
    if runner_up is not None:
        reason += f"; runner-up {runner_up} {s.scores[runner_up].value:.3f}"
    return reason


# --- 5. cascade ---------------------------------------------------------------------------------


def usable_cascade(
    s: Situation, plan: CascadePlan | None, eligible: Sequence[str], single_value: Callable[[], float]
) -> CascadePlan | None:
    """The role's cascade plan when both stages are eligible, fit the budgets together and the
    plan beats the best single model (`single_value()`, its role-level value)."""
    if plan is None:
        return None
    if (
        plan.first not in eligible
        or plan.then not in eligible
        or not s.fits(s.bound(plan.first) + s.bound(plan.then))
        or plan.value <= single_value()
    ):
        return None
    return plan


def cascade_reason(plan: CascadePlan, single_reason: str) -> str:
    return (
        f"cascade: {plan.first} first, escalate to {plan.then} when its confidence"
        f" < {plan.threshold:.4g} (~{100 * plan.escalation_rate:.0f}% of inputs);"
        f" expected reward {plan.value:.3f} beats the best single model ({single_reason})"
    )


# --- 6. exploration -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    """The call the steps so far assigned: `model`, and the cascade's second stage if any."""

    model: str
    cascade: CascadePlan | None

    def reference(self) -> str:
        """The model whose estimates a challenger is compared with."""
        return self.cascade.then if self.cascade else self.model


def call_bound(s: Situation, plan: Plan) -> float:
    """What the assigned call may cost already (both stages of a cascade)."""
    return s.bound(plan.model) + (s.bound(plan.cascade.then) if plan.cascade else 0.0)


def warmup_models(s: Situation, plan: Plan, untried: Sequence[str]) -> tuple[str, ...]:
    """Untried models run once beside the assigned one; under a budget, whose costs are unknown,
    one per call while it fits."""
    warmup = tuple(untried)
    if s.statuses and untried:
        warmup = warmup[:1] if s.fits(call_bound(s, plan) + s.bound(warmup[0])) else ()
    return warmup


def directed_challenger(s: Situation, plan: Plan, tried: Sequence[str]) -> str | None:
    """The challenger whose expected improvement over `explore_horizon` calls most exceeds the
    paired run's expected cost plus `explore_overhead`, among those that fit the budgets. The
    incumbent it must beat is the assigned plan: with a cascade, the cascade's expected reward."""
    p, ref = s.params, s.scores[plan.reference()]
    incumbent_value = plan.cascade.value if plan.cascade else ref.value
    call = call_bound(s, plan)
    best, best_gain = None, 0.0
    for m in tried:
        if m in (plan.model, ref.model):
            continue
        score = s.scores[m]
        run_cost = s.cost_weight * score.cost + p.latency_weight * score.latency
        gain = expected_improvement(score.value, score.quality_sd, incumbent_value, ref.quality_sd)
        gain = gain * p.explore_horizon * s.label_rate - (run_cost + p.explore_overhead)
        if gain > best_gain and s.fits(call + s.bound(m)):
            best, best_gain = m, gain
    return best


def calibration_probe(
    s: Situation, plan: Plan, tried: Sequence[str], calib: Mapping[str, Calibration]
) -> str | None:
    """A cheap model that reports confidences but has too few of them to be judged as a cascade's
    first stage runs beside the assigned one (the least calibrated, then the cheapest)."""
    p, ref = s.params, s.scores[plan.reference()]
    call = call_bound(s, plan)
    probes = [
        m
        for m in tried
        if m not in (plan.model, ref.model)
        and m in calib
        and len(calib[m].xs) < p.cascade_min_history
        and s.scores[m].cost <= p.cascade_probe_cost * ref.cost
        and s.fits(call + s.bound(m))
    ]
    return min(probes, key=lambda m: (len(calib[m].xs), s.scores[m].cost)) if probes else None


def exploration(
    s: Situation, plan: Plan, tried: Sequence[str], calib: Mapping[str, Calibration]
) -> tuple[float, dict[str, float]]:
    """(probability of a paired run, the challenger distribution): a directed challenger, else a
    calibration probe, else the uniform floor over the other tried models."""
    p = s.params
    challenger = directed_challenger(s, plan, tried)
    if challenger is None and p.cascade:
        challenger = calibration_probe(s, plan, tried, calib)
    if challenger is not None:
        return p.explore_cap, {challenger: 1.0}
    others = [m for m in tried if m != plan.model]
    if p.explore_floor > 0 and others:
        return p.explore_floor, {m: 1.0 / len(others) for m in others}
    return 0.0, {}


# --- The decision ---------------------------------------------------------------------------------


def decide(
    s: Situation,
    pinned: str | None,
    calib: Mapping[str, Calibration],
    cascade_plan: Callable[[], CascadePlan | None],
    role_level_value: Callable[[str], float],
) -> AssignmentView:
    """Our decision for one role: the steps of the module docstring, in order. `cascade_plan`
    runs the role's (cached) cascade search; `role_level_value(m)` is m's value over all contexts."""
    view = pinned_view(s, pinned)
    if view is not None:
        return view
    tried = [m for m in s.candidates if s.scores[m].n > 0]
    untried = sorted((m for m in s.candidates if s.scores[m].n == 0), key=s.bound)
    if not tried:
        return start_view(s, untried)
    eligible = eligible_models(s, tried)
    order = s.ranked(eligible)
    guarded = budget_guard(s, order[0], eligible, untried)
    if guarded is not None:  # the guard assigns without cascade or exploration
        reason = greedy_reason(s, guarded, None)
        fallbacks = tuple(m for m in s.ranked(tried) if m != guarded)
        return s.view(guarded, _with_notes(reason, s.notes), fallbacks=fallbacks)
    reason = greedy_reason(s, order[0], order[1] if len(order) > 1 else None)
    cascade = None
    if s.params.cascade:
        cascade = usable_cascade(s, cascade_plan(), eligible, lambda: role_level_value(order[0]))
    if cascade is not None:
        reason = cascade_reason(cascade, reason)
    plan = Plan(cascade.first if cascade else order[0], cascade)
    return explored_view(s, plan, reason, tried, untried, calib)


def explored_view(
    s: Situation,
    plan: Plan,
    reason: str,
    tried: Sequence[str],
    untried: Sequence[str],
    calib: Mapping[str, Calibration],
) -> AssignmentView:
    """The view of `plan`, with its warm-up and exploration."""
    warmup = warmup_models(s, plan, untried)
    epsilon, explore = exploration(s, plan, tried, calib)
    if explore and epsilon > 0:
        s.notes.append(f"explores {', '.join(explore)} with probability {epsilon:g}")
    if warmup:
        s.notes.append(f"new models run once: {', '.join(warmup)}")
    return s.view(
        plan.model,
        _with_notes(reason, s.notes),
        epsilon=epsilon,
        explore=explore,
        warmup=warmup,
        fallbacks=tuple(m for m in s.ranked(tried) if m != plan.model),
        cascade=plan.cascade,
    )


def _with_notes(reason: str, notes: Sequence[str]) -> str:
    return reason + "; " + "; ".join(notes) if notes else reason


# --- The paper's decision -------------------------------------------------------------------------


def decide_paper(
    role: str, rs: RoleState, candidates: Sequence[str], open_: Sequence[str], epsilon: float
) -> AssignmentView:
    """The paper: argmax Q[last state], epsilon-greedy, a duel when the choice is not the incumbent;
    every model runs once before the first call is learned from (the paper's start)."""
    state = rs.last_state or START
    row = rs.q.get(state, {})
    q_values = {m: row.get(m, 0.0) for m in candidates}
    if rs.pinned is not None and rs.pinned in candidates:
        reason = "pinned by operator"
        return AssignmentView(
            role, rs.pinned, q_values, 0.0, tuple(candidates), reason, rs.version, mode="paper", pinned=True
        )
    model = argmax_model(row, candidates)
    incumbent = state_model(state)
    incumbent = incumbent if incumbent in candidates else None
    warmup = tuple(m for m in candidates if m != model) if rs.calls == 0 else ()
    reason = (
        f"paper Q-learning: argmax Q[{state}] = {model} (Q={q_values[model]:.3f}), epsilon {epsilon}"
        + _paper_notes(model, incumbent, bool(warmup), open_)
    )
    return AssignmentView(
        role,
        model,
        q_values,
        epsilon,
        tuple(candidates),
        reason,
        rs.version,
        mode="paper",
        explore={m: 1.0 / len(candidates) for m in candidates},
        warmup=warmup,
        incumbent=incumbent,
        fallbacks=tuple(sorted((m for m in candidates if m != model), key=lambda m: -q_values[m])),
    )


def _paper_notes(model: str, incumbent: str | None, warmup: bool, open_: Sequence[str]) -> str:
    return (
        (f"; incumbent {incumbent} runs beside it" if incumbent and incumbent != model else "")
        + ("; warm-up: every model runs once" if warmup else "")
        + (f"; circuit open: {', '.join(open_)}" if open_ else "")
    )
