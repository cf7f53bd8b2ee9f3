"""The processors' view of the policy: the newest Assignment per role and per (role, context), read
from `olp.policy` (schemas/assignment.avsc), and the call plan each LLM call draws from it (spec
section 4) with the sampling shared with the learner (olp/call_plan.py): the model that answers,
extra models run on the same input (warm-up, incumbent-vs-challenger duels), confidence-cascade
escalation and the failover order. Hot-swapping is replacing one immutable Assignment with a newer
version; no restart.

A call acts on its context's assignment when the learner published one (the context key of
olp/contexts.py, computed from the chunk as the learner computes it from the call's outcome: an
English-only encoder can serve English chunks and not Chinese ones), else on the role's.

A plan records each model's propensity, and the role call records the policy version it was drawn
from (`version`), so the learner can correct for acting on a stale policy.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from olp.call_plan import Assignment, CallPlan
from olp.contexts import ROLE_LEVEL, context_key, policy_key, record_policy_key
from olp.learner_params import LearnerParams


@dataclass
class PolicyView:
    """Newest assignment per role and context; falls back to the catalog pool before the first arrives."""

    pools: Mapping[str, Sequence[str]]
    assignments: dict[str, Mapping[str, Any]] = field(default_factory=dict)
    """`olp.contexts.policy_key` (the role, or role|context) -> the newest Assignment record."""
    params: LearnerParams = field(default_factory=LearnerParams)
    """The learner's knobs the context key reads (`contextual`, `chunk_buckets`): the settings'
    `learner` section, shared with the policy store."""

    def apply(self, assignment: Mapping[str, Any]) -> bool:
        """Take an Assignment record if it is newer than what we hold for its role and context;
        True when taken."""
        key = record_policy_key(assignment)
        held = self.assignments.get(key)
        if held is not None and int(held["version"]) >= int(assignment["version"]):
            return False
        self.assignments[key] = assignment
        return True

    def context_key(self, context: Mapping[str, Any]) -> str:
        """The key of a call's context ('domain', 'lang', 'chunk_size'), as the learner files it."""
        return context_key(context, self.params)

    def _held(self, role: str, context: str) -> Mapping[str, Any] | None:
        """The context's assignment when the learner published one, else the role's."""
        held = self.assignments.get(policy_key(role, context)) if context != ROLE_LEVEL else None
        return held if held is not None else self.assignments.get(role)

    def version(self, role: str, context: str = ROLE_LEVEL) -> int:
        """The version of the assignment a call of `role` in `context` acts on (0: none yet)."""
        held = self._held(role, context)
        return int(held["version"]) if held else 0

    def assignment(
        self, role: str, allowed: Sequence[str] | None = None, context: str = ROLE_LEVEL
    ) -> Assignment:
        """The plan fields of the assignment held for `role` in `context`, restricted to the role's
        pool and the feed's models."""
        held = self._held(role, context)
        pool = list(self.pools.get(role, ()))
        # Before the learner's first assignment: the pool's first model, no exploration.
        fresh = Assignment(pool[0], 0.0, tuple(pool), mode="role_rl")
        spec = fresh if held is None else Assignment.from_record(held)
        if held is not None and not any(m in pool for m in spec.candidates):
            spec = fresh  # the assignment names none of the models this worker can call
        spec = spec.restricted(pool)
        return spec if allowed is None else spec.restricted(allowed)

    def choose(
        self,
        role: str,
        rng: random.Random,
        allowed: Sequence[str] | None = None,
        context: str = ROLE_LEVEL,
    ) -> CallPlan:
        """Draw one call's plan in `context` (optionally restricted to a feed's models)."""
        return self.assignment(role, allowed, context).sample(rng)
