"""What keeps learning and assignments safe: stale-policy importance weights (deviation 7),
circuit breakers (deviation 8) and de-duplication of at-least-once feedback (deviation 10).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

# --- Stale-policy correction (deviation 7, after Sparse-RL) -----------------------------------


def importance_weight(
    pi_current: float, propensity: float, lag: int, max_weight: float, max_lag: int
) -> float | None:
    """Weight of one feedback: None = reject (too stale); 1 on the current version or unknown
    propensity; else pi_current(a|s) / propensity clipped at max_weight."""
    if lag > max_lag:
        return None
    if lag <= 0 or propensity <= 0:
        return 1.0
    return min(max_weight, pi_current / propensity)


# --- Circuit breakers (deviation 8) -----------------------------------------------------------


@dataclass
class Breaker:
    """Consecutive failures of one model in one role, and when its breaker opened."""

    failures: int = 0
    opened_at_ms: int | None = None

    def state(self, now_ms: int, cooldown_s: float) -> Literal["closed", "open", "half_open"]:
        if self.opened_at_ms is None:
            return "closed"
        return "open" if now_ms - self.opened_at_ms < cooldown_s * 1000 else "half_open"

    def record(self, ok: bool, now_ms: int, threshold: int) -> None:
        """A success closes the breaker; the threshold-th consecutive failure (re)opens it."""
        if ok:
            self.failures, self.opened_at_ms = 0, None
            return
        self.failures += 1
        if self.failures >= threshold:
            self.opened_at_ms = now_ms


def assignable(
    allowed: Sequence[str], breakers: Mapping[str, Breaker], now_ms: int, cooldown_s: float
) -> tuple[list[str], list[str]]:
    """(models that may be assigned, models whose breaker is open) among the `allowed` ones; when
    every breaker is open, all allowed models stay assignable."""
    open_ = [m for m in allowed if m in breakers and breakers[m].state(now_ms, cooldown_s) == "open"]
    closed = [m for m in allowed if m not in open_]
    return (closed or list(allowed)), open_


# --- De-duplication (deviation 10) ------------------------------------------------------------


class DedupeWindow:
    """Event ids seen within `window_ms` of the learner's clock, at most `capacity` of them; the
    oldest first out (ids arrive roughly in time order)."""

    def __init__(self, seen: Iterable[tuple[str, int]] = ()) -> None:
        self.seen: OrderedDict[str, int] = OrderedDict(seen)  # event id -> learner clock (ms) when seen

    def __contains__(self, event_id: str) -> bool:
        return event_id in self.seen

    def remember(self, event_id: str, now_ms: int, window_ms: int, capacity: int) -> None:
        self.seen[event_id] = now_ms
        horizon = now_ms - window_ms
        seen = self.seen
        while len(seen) > capacity or seen[next(iter(seen))] < horizon:
            seen.popitem(last=False)
