"""Routing policies behind one small interface, and a registry name -> factory (spec sections 4, 9).

Pure Python, no I/O: no topics or schemas are read or written here. The benchmarks
(`bench/routing_replay.py`, `bench/budget.py`) compare every policy on the same replayed calls,
and the policy store runs, through `make_learner`, the ones that publish assignments.
A policy decides per input of a role (the `role` key of the context), may run more models on the
same input (`follow_up`: warm-up, exploration duel, cascade escalation), and learns from
RoleOutcome-shaped dicts (`update`).

Registered policies:
  paper_q   the paper's Q-learning (RoleRL in mode "paper": state = last LLM and success,
            epsilon-greedy, duels);
  role_rl   our Role-RL (RoleRL with its extensions: cost-aware estimates, budgets, context,
            directed exploration, confidence cascade);
  thompson  Thompson sampling on success (Beta posteriors per role and model);
  cascade   cheap model first, escalate when its confidence is low; the pair and threshold per
            role are fitted offline on a train split (`fit_cascade`);
  random, fixed (one model), cheapest (lowest observed cost),
  oracle    per-input oracle: the cheapest correct model (benchmarks only: it reads the labels
            the benchmark puts in the context).

The policy store publishes assignments (per role, and per context it knows well enough) for the
processors to sample, so it runs the policies whose decision has that form, `paper_q` and
`role_rl` (`LEARNERS`, `make_learner`); the others decide input by input inside the caller.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

from policy_store.learner import Budget, CallPlan, PolicyError, RoleRL, RoleRLParams, reward


class FollowUp(NamedTuple):
    """Another model to run on the same input; `deliver`: its answer replaces the delivered one."""

    model: str
    propensity: float
    deliver: bool


@dataclass(frozen=True)
class Call:
    """A call already made on the current input, as a policy may see it (no label)."""

    model: str
    confidence: float | None = None


class Policy(Protocol):
    """What every routing policy offers (mabwiser-style: select, update, scores, add/remove)."""

    name: str

    def select(self, context: Mapping[str, Any], rng: random.Random) -> tuple[str, float]:
        """The first model to call on this input, and the probability it had to be chosen."""
        ...

    def follow_up(
        self, context: Mapping[str, Any], calls: Sequence[Call], rng: random.Random
    ) -> FollowUp | None:
        """Another model to run on the same input after `calls`, or None when done."""
        ...

    def update(self, context: Mapping[str, Any], model: str, outcome: Mapping[str, Any]) -> None:
        """Learn from one call's outcome (RoleOutcome fields: success, quality, cost_usd, ...)."""
        ...

    def scores(self, context: Mapping[str, Any]) -> dict[str, float]:
        """The policy's current value of each model for the context's role."""
        ...

    def add_model(self, model: str) -> None: ...

    def remove_model(self, model: str) -> None: ...


class _Base:
    """Shared plumbing: the model list and per-role state."""

    name = "base"

    def __init__(self, models: Sequence[str]) -> None:
        if not models:
            raise PolicyError("a policy needs at least one model")
        self.models = list(models)

    def follow_up(
        self, context: Mapping[str, Any], calls: Sequence[Call], rng: random.Random
    ) -> FollowUp | None:
        return None

    def update(self, context: Mapping[str, Any], model: str, outcome: Mapping[str, Any]) -> None:
        return None

    def scores(self, context: Mapping[str, Any]) -> dict[str, float]:
        return {m: 0.0 for m in self.models}

    def add_model(self, model: str) -> None:
        if model not in self.models:
            self.models.append(model)

    def remove_model(self, model: str) -> None:
        if model in self.models and len(self.models) > 1:
            self.models.remove(model)


def _succeeded(outcome: Mapping[str, Any]) -> bool | None:
    """Whether the call's answer was right: its quality label, a failure when it failed, None for
    a success without a label (parsing is not quality)."""
    judged = outcome.get("quality")
    if judged is not None:
        return float(judged) > 0
    if bool(outcome.get("success")) and outcome.get("error") is None:
        return None
    return False


# --- The paper's Q-learning and our Role-RL: both are the RoleRL learner ----------------------


class RoleRLPolicy(_Base):
    """RoleRL behind the policy interface. Runs the assignment's call plan: the primary model,
    then extras on the same input (warm-up, duel: not delivered), then a cascade escalation."""

    name = "role_rl"

    def __init__(
        self,
        models: Sequence[str],
        params: RoleRLParams | None = None,
        budgets: Mapping[str, Budget] | None = None,
        learner_seed: int = 0,
    ) -> None:
        super().__init__(models)
        self.learner = RoleRL({}, params or RoleRLParams(), random.Random(learner_seed), budgets=budgets)
        # role -> (plan of the current input, version it was drawn from, state before the input)
        self._plans: dict[str, tuple[CallPlan, int, tuple[str, bool] | None]] = {}
        if self.learner.params.mode == "paper":
            self.name = "paper_q"

    def _role(self, context: Mapping[str, Any]) -> str:
        role = str(context["role"])
        if role not in self.learner.roles():
            for m in self.models:
                self.learner.add_model(role, m)
        return role

    def select(self, context: Mapping[str, Any], rng: random.Random) -> tuple[str, float]:
        role = self._role(context)
        plan = self.learner.assignment(role, context).sample(rng)
        self._plans[role] = (plan, self.learner.version(role), self.learner.last_state(role))
        return plan.primary, plan.propensity

    def follow_up(
        self, context: Mapping[str, Any], calls: Sequence[Call], rng: random.Random
    ) -> FollowUp | None:
        plan, _, _ = self._plans[str(context["role"])]
        done = {c.model for c in calls}
        for model, propensity in plan.extras:
            if model not in done:
                return FollowUp(model, propensity, False)
        if plan.escalate_to is not None and plan.escalate_below is not None and plan.escalate_to not in done:
            first = calls[0]
            if (
                first.model == plan.primary
                and first.confidence is not None
                and first.confidence < plan.escalate_below
            ):
                return FollowUp(plan.escalate_to, 1.0, True)
        return None

    def update(self, context: Mapping[str, Any], model: str, outcome: Mapping[str, Any]) -> None:
        role = self._role(context)
        if role in self._plans:
            _, version, last = self._plans[role]
        else:
            version, last = self.learner.version(role), self.learner.last_state(role)
        record = dict(outcome)
        record.setdefault("role", role)
        record.setdefault("model", model)
        record.setdefault("policy_version", version)
        record.setdefault("stream_id", str(context.get("input_id", "")))
        record.setdefault("chunk_id", "0")
        if last is not None:
            record.setdefault("prev_model", last[0])
            record.setdefault("prev_success", last[1])
        self.learner.observe(record)

    def scores(self, context: Mapping[str, Any]) -> dict[str, float]:
        role = self._role(context)
        return dict(self.learner.assignment(role, context).q_values)

    def add_model(self, model: str) -> None:
        super().add_model(model)
        for role in self.learner.roles():
            self.learner.add_model(role, model)

    def remove_model(self, model: str) -> None:
        super().remove_model(model)
        for role in self.learner.roles():
            if model in self.learner.pool(role) and len(self.learner.pool(role)) > 1:
                self.learner.ban(role, model)


# --- Baselines ---------------------------------------------------------------------------------


class ThompsonPolicy(_Base):
    """Thompson sampling: Beta(1 + successes, 1 + failures) per (role, model); the highest draw,
    minus cost_weight x mean cost when cost_weight > 0 (0: accuracy only, the usual baseline)."""

    name = "thompson"

    def __init__(self, models: Sequence[str], cost_weight: float = 0.0) -> None:
        super().__init__(models)
        self.cost_weight = cost_weight
        self._stats: dict[
            str, dict[str, list[float]]
        ] = {}  # role -> model -> [successes, failures, cost sum]

    def _table(self, role: str) -> dict[str, list[float]]:
        table = self._stats.setdefault(role, {})
        for m in self.models:
            table.setdefault(m, [0.0, 0.0, 0.0])
        return table

    def select(self, context: Mapping[str, Any], rng: random.Random) -> tuple[str, float]:
        table = self._table(str(context["role"]))
        best, best_draw = self.models[0], -float("inf")
        for m in self.models:
            s, f, c = table[m]
            n = s + f
            draw = rng.betavariate(1.0 + s, 1.0 + f) - (self.cost_weight * c / n if n else 0.0)
            if draw > best_draw:
                best, best_draw = m, draw
        return best, 1.0  # the propensity of a Thompson draw is not computed (no closed form)

    def update(self, context: Mapping[str, Any], model: str, outcome: Mapping[str, Any]) -> None:
        """Learns from labels only: an unlabelled success leaves the Beta posterior as it was."""
        succeeded = _succeeded(outcome)
        if succeeded is None:
            return
        cell = self._table(str(context["role"]))[model]
        cell[0 if succeeded else 1] += 1.0
        cell[2] += float(outcome.get("cost_usd") or 0.0)

    def scores(self, context: Mapping[str, Any]) -> dict[str, float]:
        table = self._table(str(context["role"]))
        return {m: (s + 1.0) / (s + f + 2.0) for m, (s, f, _) in table.items() if m in self.models}


@dataclass(frozen=True)
class CascadeStage:
    """One role's fitted cascade: call `first`; escalate to `then` when confidence < threshold."""

    first: str
    then: str | None = None
    threshold: float = float("-inf")


class Query(NamedTuple):
    """One input answered by every model (for fitting and oracles): model -> (correct, cost, confidence)."""

    role: str
    results: Mapping[str, tuple[bool, float, float | None]]


def fit_cascade(
    train: Sequence[Query], models: Sequence[str], cost_weight: float, reward_value: float = 10.0
) -> dict[str, CascadeStage]:
    """Fit, per role, the two-model cascade (or single model) and threshold maximising the mean of
    v*k - cost_weight*cost on the train split (k = +1 correct, -1 wrong): the tuned cascade baseline."""
    by_role: dict[str, list[Query]] = {}
    for q in train:
        by_role.setdefault(q.role, []).append(q)
    plans: dict[str, CascadeStage] = {}
    for role, queries in by_role.items():
        present = [m for m in models if all(m in q.results for q in queries)]

        def gain(ok: bool, cost: float) -> float:
            return reward_value * (1.0 if ok else -1.0) - cost_weight * cost

        best_value, best = -float("inf"), CascadeStage(present[0])
        for first in present:
            base = sum(gain(*q.results[first][:2]) for q in queries)
            if base > best_value:
                best_value, best = base, CascadeStage(first)
            confident = [q for q in queries if q.results[first][2] is not None]
            ordered = sorted(confident, key=lambda q: q.results[first][2] or 0.0)
            for then in present:
                if then == first:
                    continue
                total = base
                for i, q in enumerate(ordered):  # escalate the i+1 least confident inputs
                    ok1, _, c1 = q.results[first]
                    ok2, cost2, _ = q.results[then]
                    total += gain(ok2, cost2) - gain(ok1, 0.0)  # answer of `then`, plus its cost
                    nxt = ordered[i + 1].results[first][2] if i + 1 < len(ordered) else None
                    if nxt is not None and c1 is not None and nxt <= c1:
                        continue  # thresholds only between distinct confidences
                    if total > best_value:
                        threshold = (c1 + nxt) / 2.0 if (c1 is not None and nxt is not None) else float("inf")
                        best_value, best = total, CascadeStage(first, then, threshold)
        plans[role] = best
    return plans


class CascadePolicy(_Base):
    """Cheap model first; escalate to a stronger one when the first answer's confidence is below a
    threshold fitted offline (`fit_cascade`). Roles without a fitted plan use the first model."""

    name = "cascade"

    def __init__(self, models: Sequence[str], plans: Mapping[str, CascadeStage] | None = None) -> None:
        super().__init__(models)
        self.plans = dict(plans or {})

    def _plan(self, role: str) -> CascadeStage:
        return self.plans.get(role) or CascadeStage(self.models[0])

    def select(self, context: Mapping[str, Any], rng: random.Random) -> tuple[str, float]:
        return self._plan(str(context["role"])).first, 1.0

    def follow_up(
        self, context: Mapping[str, Any], calls: Sequence[Call], rng: random.Random
    ) -> FollowUp | None:
        plan = self._plan(str(context["role"]))
        if plan.then is None or len(calls) != 1:
            return None
        confidence = calls[0].confidence
        if confidence is not None and confidence < plan.threshold:
            return FollowUp(plan.then, 1.0, True)
        return None

    def scores(self, context: Mapping[str, Any]) -> dict[str, float]:
        plan = self._plan(str(context["role"]))
        return {m: 1.0 if m in (plan.first, plan.then) else 0.0 for m in self.models}


class RandomPolicy(_Base):
    """A uniformly random model per input."""

    name = "random"

    def select(self, context: Mapping[str, Any], rng: random.Random) -> tuple[str, float]:
        return self.models[rng.randrange(len(self.models))], 1.0 / len(self.models)


class FixedPolicy(_Base):
    """Always the same model (e.g. the best single model, or the strongest as a cost reference)."""

    name = "fixed"

    def __init__(self, models: Sequence[str], model: str | None = None) -> None:
        super().__init__(models)
        self.model = model or self.models[0]
        if self.model not in self.models:
            raise PolicyError(f"fixed model {self.model!r} is not among the models")

    def select(self, context: Mapping[str, Any], rng: random.Random) -> tuple[str, float]:
        return self.model, 1.0

    def scores(self, context: Mapping[str, Any]) -> dict[str, float]:
        return {m: 1.0 if m == self.model else 0.0 for m in self.models}


class CheapestPolicy(_Base):
    """The model with the lowest mean observed cost in the role (each untried model is tried once)."""

    name = "cheapest"

    def __init__(self, models: Sequence[str]) -> None:
        super().__init__(models)
        self._costs: dict[str, dict[str, list[float]]] = {}  # role -> model -> [sum, n]

    def select(self, context: Mapping[str, Any], rng: random.Random) -> tuple[str, float]:
        costs = self._costs.setdefault(str(context["role"]), {})
        for m in self.models:
            if m not in costs:
                return m, 1.0
        return min(self.models, key=lambda m: costs[m][0] / costs[m][1]), 1.0

    def update(self, context: Mapping[str, Any], model: str, outcome: Mapping[str, Any]) -> None:
        cell = self._costs.setdefault(str(context["role"]), {}).setdefault(model, [0.0, 0.0])
        cell[0] += float(outcome.get("cost_usd") or 0.0)
        cell[1] += 1.0

    def scores(self, context: Mapping[str, Any]) -> dict[str, float]:
        costs = self._costs.get(str(context["role"]), {})
        return {m: -costs[m][0] / costs[m][1] for m in self.models if m in costs}


class OraclePolicy(_Base):
    """Per-input oracle (benchmarks only): the cheapest model that answers this input correctly,
    else the cheapest. Reads `context["oracle"]`: model -> (correct, cost)."""

    name = "oracle"

    def select(self, context: Mapping[str, Any], rng: random.Random) -> tuple[str, float]:
        results: Mapping[str, tuple[bool, float]] = context["oracle"]
        present = [m for m in self.models if m in results]
        correct = [m for m in present if results[m][0]]
        return min(correct or present, key=lambda m: results[m][1]), 1.0


# --- Registry ------------------------------------------------------------------------------------

PolicyFactory = Callable[..., Policy]


def _paper_q(models: Sequence[str], **options: Any) -> Policy:
    params = options.pop("params", None) or RoleRLParams.paper()
    return RoleRLPolicy(models, params, **options)


def _role_rl(models: Sequence[str], **options: Any) -> Policy:
    return RoleRLPolicy(models, options.pop("params", None) or RoleRLParams(), **options)


POLICIES: dict[str, PolicyFactory] = {
    "paper_q": _paper_q,
    "role_rl": _role_rl,
    "thompson": ThompsonPolicy,
    "cascade": CascadePolicy,
    "random": RandomPolicy,
    "fixed": FixedPolicy,
    "cheapest": CheapestPolicy,
    "oracle": OraclePolicy,
}


def make_policy(name: str, models: Sequence[str], **options: Any) -> Policy:
    """Build a registered policy by name, e.g. make_policy("fixed", models, model="gpt-4o")."""
    try:
        factory = POLICIES[name]
    except KeyError as exc:
        raise PolicyError(f"unknown policy {name!r}; known: {', '.join(sorted(POLICIES))}") from exc
    return factory(models, **options)


# --- What the policy store runs ------------------------------------------------------------------

LearnerFactory = Callable[
    [Mapping[str, Sequence[str]], Mapping[str, Any], Mapping[str, Budget], random.Random], RoleRL
]
"""(pools: role -> models, knobs overriding the policy's own defaults, budgets, rng) -> learner."""


def _paper_q_learner(
    pools: Mapping[str, Sequence[str]],
    knobs: Mapping[str, Any],
    budgets: Mapping[str, Budget],
    rng: random.Random,
) -> RoleRL:
    return RoleRL(pools, RoleRLParams.paper(**knobs), rng, budgets=budgets)


def _role_rl_learner(
    pools: Mapping[str, Sequence[str]],
    knobs: Mapping[str, Any],
    budgets: Mapping[str, Budget],
    rng: random.Random,
) -> RoleRL:
    return RoleRL(pools, RoleRLParams(**knobs), rng, budgets=budgets)


LEARNERS: dict[str, LearnerFactory] = {"paper_q": _paper_q_learner, "role_rl": _role_rl_learner}


def make_learner(
    name: str,
    pools: Mapping[str, Sequence[str]],
    knobs: Mapping[str, Any] | None = None,
    budgets: Mapping[str, Budget] | None = None,
    rng: random.Random | None = None,
) -> RoleRL:
    """The learner the policy store runs for the registered policy `name`, e.g.
    make_learner(settings.learner.policy, pools, settings.learner.knob_overrides(), budgets, rng).
    PolicyError for a name without an assignment form, or knobs the learner rejects."""
    factory = LEARNERS.get(name)
    if factory is None:
        per_input = sorted(set(POLICIES) - set(LEARNERS))
        raise PolicyError(
            f"the policy store cannot run policy {name!r}; it runs {', '.join(sorted(LEARNERS))}"
            f" ({', '.join(per_input)} decide per input, in benchmarks)"
        )
    return factory(pools, knobs or {}, budgets or {}, rng if rng is not None else random.Random(0))


__all__ = [
    "LEARNERS",
    "POLICIES",
    "Call",
    "CascadePolicy",
    "CascadeStage",
    "CheapestPolicy",
    "FixedPolicy",
    "FollowUp",
    "LearnerFactory",
    "OraclePolicy",
    "Policy",
    "PolicyFactory",
    "Query",
    "RandomPolicy",
    "RoleRLPolicy",
    "ThompsonPolicy",
    "fit_cascade",
    "make_learner",
    "make_policy",
    "reward",
]
