"""The learner's memory: one `RoleState` per role, and the inputs seen recently (for cross updates
between calls on the same input)."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from policy_store.learner.cascade import Calibration, CascadePlan, CoRuns
from policy_store.learner.estimates import Estimate
from policy_store.learner.paper import QTable
from policy_store.learner.safety import Breaker, assignable


@dataclass
class RoleState:
    """Everything the learner knows about one role."""

    # Pool and operator control (deviation 11).
    pool: list[str] = field(default_factory=list)
    banned: set[str] = field(default_factory=set)
    pinned: str | None = None
    version: int = 1
    """Bumped on every change of what the role's calls act on (model, cascade, pool, pin, ban)."""
    signature: tuple[str, str | None] | None = None
    """(model, cascade target) of the last published decision, to detect a change."""
    # The paper.
    q: QTable = field(default_factory=dict)
    calls: int = 0
    """Outcomes accepted for learning."""
    last_state: str | None = None
    """The paper's state: the model kept last and its success; None before any call."""
    # Ours.
    estimates: dict[str, dict[str, Estimate]] = field(default_factory=dict)
    """Context key ('*' for the role level, 'state#context' for the paper's state) -> model -> estimate."""
    calibration: dict[str, Calibration] = field(default_factory=dict)
    coruns: CoRuns = field(default_factory=lambda: CoRuns({}, {}))
    breakers: dict[str, Breaker] = field(default_factory=dict)
    plan: CascadePlan | None = None
    plan_cached: bool = False
    """`plan` holds the last cascade search (None: no cascade helps); False: search again."""
    plan_age: int = 0
    """Outcomes since the last cascade search."""
    evidence: dict[str, dict[str, float]] = field(default_factory=dict)
    """model -> where its estimates come from: weighted labels per source ('judge', 'canary', ...;
    'failure' for a processor's failed call), and 'unlabelled' calls (cost and latency only)."""
    measured_calls: float = 0.0
    labelled_calls: float = 0.0
    """Calls measured (cost, latency) and calls that got a label: the role's label rate."""

    def allowed(self) -> list[str]:
        """The pool without the banned models."""
        return [m for m in self.pool if m not in self.banned]

    def candidates(self, now_ms: int, cooldown_s: float) -> tuple[list[str], list[str]]:
        """(assignable models, models whose breaker is open)."""
        return assignable(self.allowed(), self.breakers, now_ms, cooldown_s)

    def estimate(self, ctx: str, model: str) -> Estimate:
        """The (context, model) estimate, created empty when new."""
        return self.estimates.setdefault(ctx, {}).setdefault(model, Estimate())

    def forget_plan(self) -> None:
        self.plan, self.plan_cached = None, False

    def count_evidence(self, model: str, kind: str, weight: float, label: float | None = None) -> None:
        """Count a call's evidence; a label's weighted k is summed beside its count (`kind` +
        LABEL_SUM), so what each source says of the model can be shown against the estimate."""
        counts = self.evidence.setdefault(model, {})
        counts[kind] = counts.get(kind, 0.0) + weight
        if label is not None:
            counts[kind + LABEL_SUM] = counts.get(kind + LABEL_SUM, 0.0) + weight * label

    def label_rate(self) -> float:
        """Share of the role's calls that got a quality label (1 before any call: one pseudo-call)."""
        return min(1.0, (self.labelled_calls + 1.0) / (self.measured_calls + 1.0))


LABEL_SUM = ".k_sum"
"""Suffix of an evidence key holding the weighted sum of that source's labels (k)."""


@dataclass
class Member:
    """One call already seen on an input (for cross updates)."""

    model: str
    reward: float
    state: str  # the paper's state after this call
    success: float  # 0..1
    confidence: float | None
    weight: float
    quality: float = 0.0
    cost: float = 0.0
    latency: float = 0.0
    labelled: bool = True
    """False until a label arrives: the call's success and reward are unknown."""
    before: str = ""
    """The paper's state the call was made in (for a label arriving later)."""
    ctx: str = "*"
    label_weight: float = 1.0
    """The label's source weight (`RoleRLParams.evidence_weight`)."""
    source: str = ""
    """The label's source (RoleOutcome `source`); "" for a record without one."""


class InputGroups:
    """The calls seen on the last `capacity` inputs (role, stream_id, chunk_id), oldest dropped first."""

    def __init__(self, groups: Mapping[str, list[Member]] | None = None) -> None:
        self.groups: OrderedDict[str, list[Member]] = OrderedDict(groups or {})

    def of(self, outcome: Mapping[str, Any], capacity: int) -> list[Member] | None:
        """The calls already seen on the outcome's input (a new, empty group when none); None when
        the outcome names no input."""
        stream, chunk = outcome.get("stream_id") or "", outcome.get("chunk_id") or ""
        if not stream or not chunk:
            return None
        key = f"{outcome['role']}\x1f{stream}\x1f{chunk}"
        group = self.groups.get(key)
        if group is None:
            group = self.groups[key] = []
            while len(self.groups) > capacity:
                self.groups.popitem(last=False)
        return group
