"""The processors' view of the policy: the newest Assignment per role, read from `olp.policy`
(schemas/assignment.avsc), and the call plan each LLM call draws from it (spec section 4) with the
sampling shared with the learner (olp/call_plan.py): the model that answers, extra models run on the
same input (warm-up, incumbent-vs-challenger duels), confidence-cascade escalation and the failover
order. Hot-swapping is replacing one immutable Assignment with a newer version; no restart.

A plan records each model's propensity, and the role call records the policy version it was drawn
from (`version`), so the learner can correct for acting on a stale policy.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from olp.call_plan import Assignment, CallPlan


@dataclass
class PolicyView:
    """Newest assignment per role; falls back to the catalog pool before the first arrives."""

    pools: Mapping[str, Sequence[str]]
    assignments: dict[str, Mapping[str, Any]] = field(default_factory=dict)

    def apply(self, assignment: Mapping[str, Any]) -> bool:
        """Take an Assignment record if it is newer than what we hold; True when taken."""
        role = str(assignment["role"])
        held = self.assignments.get(role)
        if held is not None and int(held["version"]) >= int(assignment["version"]):
            return False
        self.assignments[role] = assignment
        return True

    def version(self, role: str) -> int:
        held = self.assignments.get(role)
        return int(held["version"]) if held else 0

    def assignment(self, role: str, allowed: Sequence[str] | None = None) -> Assignment:
        """The held assignment's plan fields, restricted to the role's pool and the feed's models."""
        held = self.assignments.get(role)
        pool = list(self.pools.get(role, ()))
        # Before the learner's first assignment: the pool's first model, no exploration.
        fresh = Assignment(pool[0], 0.0, tuple(pool), mode="role_rl")
        spec = fresh if held is None else Assignment.from_record(held)
        if held is not None and not any(m in pool for m in spec.candidates):
            spec = fresh  # the assignment names none of the models this worker can call
        spec = spec.restricted(pool)
        return spec if allowed is None else spec.restricted(allowed)

    def choose(self, role: str, rng: random.Random, allowed: Sequence[str] | None = None) -> CallPlan:
        """Draw one call's plan (optionally restricted to a feed's models)."""
        return self.assignment(role, allowed).sample(rng)
