"""Our estimates (deviation 4): importance-weighted running means of each reward component per
(role, context, model), recomposed into an expected reward at decision time, and their uncertainty.

Decisions condition on the context (domain, language, chunk-size bucket) and on the paper's state
through hierarchical shrinkage: state in context -> context -> role -> the model's mean over all
roles. Counts are capped at the tracking average's effective sample size, so a drifting estimate
never looks more certain than it is; the state shifts the mean but not the uncertainty.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from olp.contexts import ROLE_LEVEL
from policy_store.learner.params import RoleRLParams


@dataclass
class Estimate:
    """Importance-weighted running means of one (role, context, model)'s reward components. Cost
    and latency count every measured call (`n`); quality counts labels only (`n_quality`, each
    label weighted by its source: deviation 2)."""

    n: float = 0.0
    quality: float = 0.0
    quality_sq: float = 0.0
    cost: float = 0.0
    latency: float = 0.0
    cost_max: float = 0.0  # dearest call seen: the budget guard's per-call bound
    n_quality: float = 0.0

    def add(self, k: float | None, cost: float, latency_s: float, weight: float, min_step: float) -> None:
        """One measured call of weight `weight` (and its label k, None when unlabelled)."""
        self.add_call(cost, latency_s, weight, min_step)
        if k is not None:
            self.add_label(k, weight, min_step)

    def add_call(self, cost: float, latency_s: float, weight: float, min_step: float) -> None:
        """Cost and latency: step max(w/n, min_step*w), a sample average first."""
        self.n += weight
        self.cost_max = max(self.cost_max, cost)
        step = min(1.0, max(weight / self.n, min_step * weight))
        self.cost += step * (cost - self.cost)
        self.latency += step * (latency_s - self.latency)

    def add_label(self, k: float, weight: float, min_step: float) -> None:
        """One quality label of weight `weight` (importance weight x source weight)."""
        if weight <= 0:
            return
        self.n_quality += weight
        step = min(1.0, max(weight / self.n_quality, min_step * weight))
        self.quality += step * (k - self.quality)
        self.quality_sq += step * (k * k - self.quality_sq)


def shrink(mean: float, n: float, prior_mean: float, prior_n: float) -> float:
    """Posterior mean of `n` observations averaging `mean` under a prior worth `prior_n` of them."""
    total = n + prior_n
    return (n * mean + prior_n * prior_mean) / total if total > 0 else prior_mean


STATE_SEPARATOR = "#"


def state_context_key(state: str, ctx: str) -> str:
    """The key of the estimates of the paper's `state` within context `ctx`."""
    return f"{state}{STATE_SEPARATOR}{ctx}"


def known_contexts(estimates: Mapping[str, Mapping[str, Estimate]], params: RoleRLParams) -> list[str]:
    """The contexts (keys of `estimates` below the role level) whose own labels can carry a
    decision away from the role's: some model's weighted labels there weigh at least the role
    level's pseudo-count in them (`context_prior`). Sorted, so publishing follows one order."""
    floor = max(params.context_prior, 1e-9)
    return sorted(
        ctx
        for ctx, table in estimates.items()
        if ctx != ROLE_LEVEL
        and STATE_SEPARATOR not in ctx
        and max((e.n_quality for e in table.values()), default=0.0) >= floor
    )


@dataclass(frozen=True)
class ModelScore:
    """What the learner believes about one model in one (role, context)."""

    model: str
    quality: float  # posterior mean of k
    quality_sd: float  # standard deviation of that mean
    cost: float  # expected USD per call
    cost_max: float  # dearest call seen (USD): what the budget guard must allow for
    latency: float  # expected seconds per call
    n: float  # weighted calls in this role
    value: float  # expected reward v*k - (k1 + lambda)*c - k2*t
    n_quality: float = 0.0  # weighted quality labels in this role


Level = tuple[Mapping[str, Estimate], float, bool]
"""Estimates of one level below the role, their prior pseudo-count, whether the level's own count
sets the uncertainty (the state only shifts the mean: exploring each state's difference would not pay)."""


def score_models(
    models: Sequence[str],
    estimates: Mapping[str, Mapping[str, Estimate]],
    pooled: Mapping[str, Estimate],
    ctx: str,
    state: str | None,
    cost_weight: float,
    params: RoleRLParams,
) -> dict[str, ModelScore]:
    """Each model's score in one role (`estimates`: context key -> model -> estimate), shrunk
    from the model's mean over all roles (`pooled`) down to the paper's state in the context."""
    levels: list[Level] = []
    if ctx != ROLE_LEVEL:
        levels.append((estimates.get(ctx, {}), params.context_prior, True))
    if state is not None and params.use_state:
        levels.append((estimates.get(state_context_key(state, ctx), {}), params.state_prior, False))
    role_level = estimates.get(ROLE_LEVEL, {})
    priors = cost_prior(pooled, params) if params.cost_prior else {}
    neutral = (1.0 + params.failure_quality) / 2.0
    return {
        m: _score(
            m,
            role_level.get(m, Estimate()),
            pooled.get(m, Estimate()),
            levels,
            cost_weight,
            params,
            priors.get(m, neutral),
        )
        for m in models
    }


def cost_prior(pooled: Mapping[str, Estimate], params: RoleRLParams) -> dict[str, float]:
    """Each priced model's prior quality from its measured cost (deviation 4): a weighted
    least-squares line of the labelled models' mean quality over log cost, not falling with cost,
    clipped to [failure_quality, 1]. Cost is measured on every call, labels are sparse: until a
    model has labels of its own, its price says more about it than nothing. Empty while fewer than
    two models with distinct costs have labels."""
    points = [
        (math.log(e.cost), e.quality, e.n_quality / (e.n_quality + 1.0))
        for e in pooled.values()
        if e.cost > 0 and e.n_quality > 0
    ]
    total = sum(w for _, _, w in points)
    if len(points) < 2 or total <= 0:
        return {}
    mx = sum(w * x for x, _, w in points) / total
    my = sum(w * y for _, y, w in points) / total
    sxx = sum(w * (x - mx) ** 2 for x, _, w in points)
    if sxx <= 1e-12:
        return {}
    slope = max(0.0, sum(w * (x - mx) * (y - my) for x, y, w in points) / sxx)
    f = params.failure_quality
    return {
        m: min(1.0, max(f, my + slope * (math.log(e.cost) - mx))) for m, e in pooled.items() if e.cost > 0
    }


def _score(
    model: str,
    er: Estimate,
    pooled: Estimate,
    levels: Sequence[Level],
    cost_weight: float,
    p: RoleRLParams,
    prior: float,
) -> ModelScore:
    f = p.failure_quality
    prior_var = ((1.0 - f) / 2.0) ** 2
    n_cap = (2.0 - p.min_step) / p.min_step
    k_pool = shrink(pooled.quality, min(pooled.n_quality, n_cap), prior, 1.0)
    n_role = min(er.n_quality, n_cap)
    k = shrink(er.quality, n_role, k_pool, p.pool_prior)
    n_eff = n_role + p.pool_prior
    cost = er.cost if er.n > 0 else pooled.cost
    cost_max = er.cost_max if er.n > 0 else pooled.cost_max
    latency = er.latency if er.n > 0 else pooled.latency
    var = (n_role * max(0.0, er.quality_sq - er.quality**2) + prior_var) / (n_role + 1.0)
    for table, prior_n, sets_uncertainty in levels:
        e = table.get(model)
        if e is None:
            continue
        if e.n_quality > 0:
            n_level = min(e.n_quality, n_cap)
            k = shrink(e.quality, n_level, k, prior_n)
            if sets_uncertainty:
                n_eff = n_level + min(prior_n, n_eff)
        if e.n > 0:
            cost, latency = e.cost, e.latency
    sd = p.reward_value * math.sqrt(var / n_eff)
    value = p.reward_value * k - cost_weight * cost - p.latency_weight * latency
    return ModelScore(model, k, sd, cost, cost_max, latency, er.n, value, er.n_quality)


# --- Directed exploration (deviation 5): the expected improvement of a challenger ------------


def _phi(z: float) -> float:
    return 0.5 * (1.0 + math.erf(z / math.sqrt(2.0)))


def _pdf(z: float) -> float:
    return math.exp(-0.5 * z * z) / math.sqrt(2.0 * math.pi)


def expected_improvement(mean: float, sd: float, best_mean: float, best_sd: float) -> float:
    """E[max(0, X - Y)] for independent normal X ~ (mean, sd), Y ~ (best_mean, best_sd)."""
    s = math.sqrt(sd * sd + best_sd * best_sd)
    if s <= 0:
        return max(0.0, mean - best_mean)
    z = (mean - best_mean) / s
    return s * (z * _phi(z) + _pdf(z))
