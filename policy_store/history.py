"""How each role's assignment moved over time: a bounded ring per role of (time, model, quality
estimate, its sd, canary-measured quality, expected reward), sampled from the learner in this
process, for the dashboard's sparklines (policy_store/dashboard.py).

The learner keeps only its current estimates, and replaying `olp.feedback` to rebuild their past
would mean replaying the learner, so the history lives in memory only: a restarted store starts
with an empty chart. A point is taken when a role's values moved, at most every `min_gap_s`, and
at least every `heartbeat_s` otherwise, so a busy role is drawn finely and an idle one still
reaches back hours within the same `keep` points.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

KEEP_POINTS = 240
MIN_GAP_S = 5.0
HEARTBEAT_S = 60.0


@dataclass(frozen=True)
class HistoryPoint:
    """One role's assigned model and what the learner believed of it at `t_ms`."""

    t_ms: int
    model: str
    quality: float | None
    """The learner's quality estimate of `model` (k, in [-1, 1])."""
    quality_sd: float | None
    canary: float | None
    """Mean k of `model`'s gold canaries so far: the measured truth the estimate is judged by."""
    reward: float | None
    """The learner's expected reward of `model` (its Q-value)."""

    def as_list(self) -> list[Any]:
        return [self.t_ms, self.model, self.quality, self.quality_sd, self.canary, self.reward]


HISTORY_FIELDS = ("t_ms", "model", "quality", "quality_sd", "canary", "reward")
"""The order of a point's values in the JSON (`HistoryPoint.as_list`)."""


def point_of(view: Mapping[str, Any], t_ms: int) -> HistoryPoint:
    """The point of a role view (`PolicyState.role_view`: model, q_values, evidence per model)."""
    model = str(view["model"])
    evidence = (view.get("evidence") or {}).get(model) or {}
    reward = (view.get("q_values") or {}).get(model)
    return HistoryPoint(
        t_ms=t_ms,
        model=model,
        quality=_number(evidence.get("quality")),
        quality_sd=_number(evidence.get("quality_sd")),
        canary=_number(evidence.get("canary_mean")),
        reward=_number(reward),
    )


def _number(x: Any) -> float | None:
    if x is None:
        return None
    value = float(x)
    return round(value, 6) if math.isfinite(value) else None


@dataclass
class RoleHistory:
    """The last `keep` points of every role."""

    keep: int = KEEP_POINTS
    min_gap_s: float = MIN_GAP_S
    heartbeat_s: float = HEARTBEAT_S
    points: dict[str, deque[HistoryPoint]] = field(default_factory=dict)

    def offer(self, role: str, point: HistoryPoint) -> bool:
        """Keep `point` when the role's values moved (and `min_gap_s` passed) or `heartbeat_s`
        passed since the last point; True when kept."""
        ring = self.points.setdefault(role, deque(maxlen=self.keep))
        if ring:
            last = ring[-1]
            age_s = (point.t_ms - last.t_ms) / 1000.0
            moved = _values(point) != _values(last)
            if age_s < (self.min_gap_s if moved else self.heartbeat_s):
                return False
        ring.append(point)
        return True

    def view(self, role: str) -> list[list[Any]]:
        """The role's points, oldest first, as lists in `HISTORY_FIELDS` order."""
        return [p.as_list() for p in self.points.get(role, ())]


def _values(point: HistoryPoint) -> tuple[Any, ...]:
    return (point.model, point.quality, point.quality_sd, point.canary, point.reward)
