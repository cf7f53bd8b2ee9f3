"""What the learner publishes: the decision for one role in one context (`AssignmentView`, the
`Assignment` record of `schemas/assignment.avsc`), and what a call does under it (`CallPlan`,
sampled with the pure code shared with the processors, `olp/call_plan.py`)."""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from olp.call_plan import Assignment as Assignment
from olp.call_plan import CallPlan as CallPlan
from olp.contexts import ROLE_LEVEL
from policy_store.learner.budget import BudgetStatus
from policy_store.learner.cascade import CascadePlan


@dataclass(frozen=True)
class AssignmentView:
    """The learner's decision for one role (and context): what processors need and why."""

    role: str
    model: str
    q_values: Mapping[str, float]
    epsilon: float
    candidates: tuple[str, ...]
    reason: str
    version: int
    mode: str = "role_rl"
    context: str = ROLE_LEVEL
    explore: Mapping[str, float] = field(default_factory=dict)  # challenger distribution
    warmup: tuple[str, ...] = ()  # untried models: run once beside `model` (paper's start)
    incumbent: str | None = None  # paper mode: model kept last; a different `model` means a duel
    fallbacks: tuple[str, ...] = ()  # failover order when `model` fails
    cascade: CascadePlan | None = None
    budgets: tuple[BudgetStatus, ...] = ()
    pinned: bool = False
    evidence: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    """model -> where its estimates come from: weighted labels per source, 'failure', 'unlabelled'."""

    def assignment(self) -> Assignment:
        """What a call acts on (olp/call_plan.py); equal to `Assignment.from_record(self.to_record(...))`."""
        return Assignment(
            model=self.model,
            epsilon=self.epsilon,
            candidates=tuple(self.candidates),
            q_values=self.q_values,
            mode=self.mode,
            explore=self.explore,
            warmup=self.warmup,
            incumbent=self.incumbent,
            fallbacks=self.fallbacks,
            cascade_to=self.cascade.then if self.cascade else None,
            cascade_below=self.cascade.threshold if self.cascade else None,
            pinned=self.pinned,
        )

    def propensity(self, model: str) -> float:
        """Probability that a call following this view runs `model`."""
        return self.assignment().propensity(model)

    def sample(self, rng: random.Random) -> CallPlan:
        """Draw one call's plan (what a processor does with this assignment; olp/call_plan.py)."""
        return self.assignment().sample(rng)

    def to_record(self, ts_ms: int) -> dict[str, Any]:
        """The `Assignment` Avro record (schemas/assignment.avsc) of this view."""
        return {
            "role": self.role,
            "model": self.model,
            "q_values": {m: float(q) for m, q in self.q_values.items()},
            "epsilon": float(self.epsilon),
            "candidates": list(self.candidates),
            "version": self.version,
            "reason": self.reason,
            "ts_ms": ts_ms,
            "mode": self.mode,
            "explore": {m: float(p) for m, p in self.explore.items()},
            "warmup": list(self.warmup),
            "incumbent": self.incumbent,
            "fallbacks": list(self.fallbacks),
            "cascade_to": self.cascade.then if self.cascade else None,
            "cascade_below": float(self.cascade.threshold) if self.cascade else None,
            "pinned": self.pinned,
            "context": self.context,
        }

    def as_dict(self) -> dict[str, Any]:
        """Everything, JSON-friendly (HTTP API)."""
        out = asdict(self)
        out["budgets"] = [dict(asdict(b), remaining_usd=b.remaining_usd) for b in self.budgets]
        return out
