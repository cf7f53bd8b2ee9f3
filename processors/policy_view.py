"""The processors' view of the policy: the newest Assignment per role, read from `olp.policy`
(schemas/assignment.avsc), and the epsilon-greedy choice each LLM call makes from it (spec
section 4). Hot-swapping is replacing one immutable Assignment with a newer version; no restart.

The choice records its propensity and the policy version it acted on, so the learner can correct
for acting on a stale policy.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class Choice:
    """Which model serves one call, with what probability, under which policy version."""

    model: str
    propensity: float
    policy_version: int
    explored: bool
    fallbacks: tuple[str, ...]
    """Other candidates, best first, to fail over to when `model` errors or answers junk."""


@dataclass
class PolicyView:
    """Newest assignment per role; falls back to the catalog pool before the first arrives."""

    pools: Mapping[str, Sequence[str]]
    assignments: dict[str, Mapping[str, Any]] = field(default_factory=dict)
    default_epsilon: float = 0.0

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

    def choose(self, role: str, rng: random.Random, allowed: Sequence[str] | None = None) -> Choice:
        """Epsilon-greedy over the role's candidates (optionally restricted by a feed)."""
        held = self.assignments.get(role)
        pool = list(self.pools.get(role, ()))
        if held is not None:
            candidates = [m for m in held.get("candidates") or pool if m in pool] or pool
            best, epsilon = str(held["model"]), float(held["epsilon"])
            q = {str(k): float(v) for k, v in (held.get("q_values") or {}).items()}
        else:
            candidates, best, epsilon, q = pool, pool[0], self.default_epsilon, {}
        if allowed is not None:
            candidates = [m for m in candidates if m in allowed] or candidates
        if best not in candidates:
            best = max(candidates, key=lambda m: q.get(m, float("-inf")))
        others = [m for m in candidates if m != best]
        explore = bool(others) and rng.random() < epsilon
        model = rng.choice(others) if explore else best
        propensity = (epsilon / len(others)) if explore else (1.0 - epsilon if others else 1.0)
        ranked = sorted((m for m in candidates if m != model), key=lambda m: -q.get(m, 0.0))
        return Choice(model, propensity, self.version(role), explore, tuple(ranked))
