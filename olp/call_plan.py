"""What one LLM role call does under an assignment: the call plan (spec section 4).

Pure, no I/O, written once and shared by both sides of the policy topic (`olp.policy`, schema
`schemas/assignment.avsc`): the learner (`policy_store/learner/views.py`, `AssignmentView.sample`) and the
processors (`processors/policy_view.py`), which must not import the policy store.

An `Assignment` is the decoded Assignment record, what a call acts on; `Assignment.sample(rng)`
draws one call's `CallPlan`: the model whose answer is delivered (with the probability it runs),
the extra models run on the same input (the paper's warm-up of untried models,
incumbent-vs-challenger duels, directed exploration), when to escalate (confidence cascade) and
the failover order.

Modes:
  - "role_rl": our learner. The assigned model always runs; with probability `epsilon` one
    challenger drawn from `explore` runs beside it; untried `warmup` models run beside it once.
  - "paper": the paper's epsilon-greedy over the candidates; a choice other than the `incumbent`
    runs beside it (a duel).
  - "epsilon_greedy": records written before the plan fields existed (they decode with this
    default): with probability `epsilon` a uniform other candidate serves instead of the model.
"""

from __future__ import annotations

import random
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

LEGACY_MODE = "epsilon_greedy"


@dataclass(frozen=True)
class CallPlan:
    """What one processor call does, sampled from an assignment."""

    primary: str  # its answer is delivered (unless a judge prefers an extra's)
    propensity: float  # probability that `primary` runs under the assignment
    extras: tuple[tuple[str, float], ...] = ()  # (model, propensity) run on the same input
    escalate_to: str | None = None  # cascade: call this when primary's confidence < escalate_below
    escalate_below: float | None = None
    fallbacks: tuple[str, ...] = ()  # failover order when `primary` errs or answers junk


def argmax_model(row: Mapping[str, float], models: Sequence[str]) -> str:
    """argmax over `models` of row (missing = 0); ties go to the earlier model, like np.argmax."""
    best, best_q = models[0], row.get(models[0], 0.0)
    for m in models[1:]:
        q = row.get(m, 0.0)
        if q > best_q:
            best, best_q = m, q
    return best


def epsilon_greedy(
    row: Mapping[str, float], candidates: Sequence[str], epsilon: float, rng: random.Random
) -> tuple[str, bool]:
    """The paper's choice: with probability epsilon a uniform candidate, else argmax. -> (model, explored)."""
    if rng.random() < epsilon:
        return candidates[rng.randrange(len(candidates))], True
    return argmax_model(row, candidates), False


@dataclass(frozen=True)
class Assignment:
    """An Assignment record as a call acts on it (see the module docstring for the modes); the
    learner's `AssignmentView` is the same decision with its reasons and estimates."""

    model: str
    epsilon: float
    candidates: tuple[str, ...]
    q_values: Mapping[str, float] = field(default_factory=dict)
    mode: str = LEGACY_MODE
    explore: Mapping[str, float] = field(default_factory=dict)  # challenger distribution
    warmup: tuple[str, ...] = ()  # untried models: run once beside `model`
    incumbent: str | None = None  # paper mode: model kept last; a different choice means a duel
    fallbacks: tuple[str, ...] = ()  # failover order when `model` fails
    cascade_to: str | None = None  # call this when `model`'s confidence < cascade_below
    cascade_below: float | None = None
    pinned: bool = False

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> Assignment:
        """The spec of an Assignment record; a record without the plan fields is legacy epsilon-greedy."""
        q = {str(k): float(v) for k, v in (record.get("q_values") or {}).items()}
        below = record.get("cascade_below")
        return cls(
            model=str(record["model"]),
            epsilon=float(record.get("epsilon") or 0.0),
            candidates=tuple(str(m) for m in record.get("candidates") or ()) or (str(record["model"]),),
            q_values=q,
            mode=str(record.get("mode") or LEGACY_MODE),
            explore={str(k): float(v) for k, v in (record.get("explore") or {}).items()},
            warmup=tuple(str(m) for m in record.get("warmup") or ()),
            incumbent=record.get("incumbent"),
            fallbacks=tuple(str(m) for m in record.get("fallbacks") or ()),
            cascade_to=record.get("cascade_to"),
            cascade_below=None if below is None else float(below),
            pinned=bool(record.get("pinned", False)),
        )

    def restricted(self, allowed: Collection[str]) -> Assignment:
        """The spec with only `allowed` models (a processor's pool, a feed's models). Unchanged when
        none of the candidates is allowed; a model that is not allowed gives way to the best allowed
        candidate by Q-value, and its cascade goes with it."""
        candidates = tuple(m for m in self.candidates if m in allowed)
        if not candidates:
            return self
        model = self.model
        if model not in candidates:
            model = max(candidates, key=lambda m: self.q_values.get(m, float("-inf")))
        cascade_ok = model == self.model and self.cascade_to in candidates
        return replace(
            self,
            model=model,
            candidates=candidates,
            explore={m: p for m, p in self.explore.items() if m in candidates},
            warmup=tuple(m for m in self.warmup if m in candidates),
            incumbent=self.incumbent if self.incumbent in candidates else None,
            fallbacks=tuple(m for m in self.fallbacks if m in candidates),
            cascade_to=self.cascade_to if cascade_ok else None,
            cascade_below=self.cascade_below if cascade_ok else None,
        )

    # ------------------------------------------------------------------ propensities

    def _others(self) -> list[str]:
        return [m for m in self.candidates if m != self.model]

    def propensity(self, model: str) -> float:
        """Probability that a call following this spec runs `model`."""
        if self.mode == LEGACY_MODE:
            others = self._others()
            if model == self.model:
                return 1.0 - self.epsilon if others and not self.pinned else 1.0
            return self.epsilon / len(others) if model in others and not self.pinned else 0.0
        if model == self.model and (self.pinned or self.mode != "paper"):
            return 1.0
        if model in self.warmup or (self.cascade_to is not None and model == self.cascade_to):
            return 1.0
        if self.mode == "paper":
            n = len(self.candidates)
            uniform = self.epsilon / n if model in self.candidates else 0.0
            if model == self.incumbent:
                return 1.0
            return (1.0 - self.epsilon) + uniform if model == self.model else uniform
        return self.epsilon * self.explore.get(model, 0.0)

    def failover(self, primary: str) -> tuple[str, ...]:
        """Models to fail over to from `primary`: the spec's order, then the other candidates by Q."""
        first = [m for m in self.fallbacks if m != primary and m in self.candidates]
        if self.model != primary and self.model not in first:
            first.insert(0, self.model)
        rest = sorted(
            (m for m in self.candidates if m != primary and m not in first),
            key=lambda m: -self.q_values.get(m, 0.0),
        )
        return tuple(first + rest)

    # ------------------------------------------------------------------ sampling

    def sample(self, rng: random.Random) -> CallPlan:
        """Draw one call's plan."""
        plan = self._draw(rng)
        return replace(plan, fallbacks=self.failover(plan.primary))

    def _draw(self, rng: random.Random) -> CallPlan:
        if self.mode == LEGACY_MODE:
            # Epsilon-greedy: an explored model serves instead of the assigned one.
            others = self._others()
            explore = bool(others) and not self.pinned and rng.random() < self.epsilon
            model = rng.choice(others) if explore else self.model
            return CallPlan(model, self.propensity(model))
        extras: list[tuple[str, float]] = [(m, 1.0) for m in self.warmup if m != self.model]
        if self.pinned:
            return CallPlan(self.model, 1.0)
        if self.mode == "paper":
            if self.warmup:  # the paper's start: every LLM once, no exploration draw
                return CallPlan(self.model, 1.0, tuple(extras))
            # The paper: epsilon-greedy; a choice other than the incumbent runs beside it (a duel).
            chosen, explored = epsilon_greedy(self.q_values, self.candidates, self.epsilon, rng)
            primary = chosen
            if self.incumbent is not None and chosen != self.incumbent:
                primary, other = (self.incumbent, chosen) if explored else (chosen, self.incumbent)
                extras.append((other, self.propensity(other)))
            return CallPlan(primary, self.propensity(primary), tuple(extras))
        if self.epsilon > 0 and self.explore and rng.random() < self.epsilon:
            u, acc = rng.random(), 0.0
            for m, p in self.explore.items():
                acc += p
                if u < acc:
                    if m != self.model and m not in self.warmup:
                        extras.append((m, self.propensity(m)))
                    break
        return CallPlan(self.model, 1.0, tuple(extras), self.cascade_to, self.cascade_below)
