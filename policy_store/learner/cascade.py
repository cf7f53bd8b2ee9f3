"""The confidence cascade (deviation 9): call a cheap model, escalate to a stronger one when the
cheap answer's confidence is below a threshold.

Calibration is isotonic per (role, model); the gain of escalating at confidence c is an isotonic
(decreasing) fit of (b ok - a ok) over calls on the same input, shrunk toward the
conditional-independence model P(b ok | a ok)*p_a(c) + P(b ok | a wrong)*(1 - p_a(c)) - p_a(c); the
threshold maximises the expected reward over a's recent confidences.
"""

from __future__ import annotations

import bisect
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from policy_store.learner.estimates import ModelScore
from policy_store.learner.params import RoleRLParams


class Calibration:
    """The confidences a model reported in one role, with the success (0..1) of each answer."""

    def __init__(self) -> None:
        self.xs: list[float] = []  # confidences, sorted
        self.ys: list[float] = []  # success of the answer at the same position
        self.order: deque[tuple[float, float]] = deque()  # insertion order, to drop the oldest

    def add(self, x: float, y: float, window: int) -> None:
        i = bisect.bisect_right(self.xs, x)
        self.xs.insert(i, x)
        self.ys.insert(i, y)
        self.order.append((x, y))
        while len(self.order) > window:
            ox, oy = self.order.popleft()
            j = bisect.bisect_left(self.xs, ox)
            while self.ys[j] != oy:
                j += 1
            del self.xs[j]
            del self.ys[j]

    def blocks(self, decreasing: bool = False) -> list[tuple[float, float, float]]:
        """Isotonic fit (pool-adjacent-violators) of y on x: blocks of (largest x, mean y, count)."""
        sign = -1.0 if decreasing else 1.0
        blocks: list[list[float]] = []  # [sum of sign*y, count, largest x]
        for x, y in zip(self.xs, self.ys, strict=True):
            blocks.append([sign * y, 1.0, x])
            while len(blocks) > 1 and blocks[-2][0] / blocks[-2][1] >= blocks[-1][0] / blocks[-1][1]:
                s, c, hi = blocks.pop()  # pool violators and ties: blocks as large as the data allows
                blocks[-1][0] += s
                blocks[-1][1] += c
                blocks[-1][2] = hi
        return [(hi, sign * s / c, c) for s, c, hi in blocks]

    def fitted(self, prior_mean: float, prior_n: float) -> list[float]:
        """P(success) at each stored confidence: the isotonic fit, each block shrunk toward
        prior_mean with prior_n pseudo-observations."""
        out: list[float] = []
        for _, mean, count in self.blocks():
            out.extend([(count * mean + prior_n * prior_mean) / (count + prior_n)] * int(count))
        return out


def block_at(blocks: Sequence[tuple[float, float, float]], x: float) -> tuple[float, float]:
    """(mean, count) of the isotonic block covering x (the nearest block outside the range)."""
    if not blocks:
        return 0.0, 0.0
    i = bisect.bisect_left([b[0] for b in blocks], x)
    _, mean, count = blocks[min(i, len(blocks) - 1)]
    return mean, count


def success_of(k: float, failure_quality: float) -> float:
    """Map a quality k in [failure_quality, 1] to a success probability in [0, 1]."""
    return min(1.0, max(0.0, (k - failure_quality) / (1.0 - failure_quality)))


def cascade_sweep(
    xs: Sequence[float], stop: Sequence[float], escalate: Sequence[float]
) -> tuple[float, float | None, float]:
    """Best threshold of "escalate when confidence < threshold" on one model's history.

    stop[j] / escalate[j] are the expected rewards at history point j of keeping the first answer /
    escalating. Returns (mean reward, threshold or None if never escalating, escalation rate)."""
    n = len(xs)
    total = sum(stop)
    best, best_i = total, 0
    for i in range(n):
        total += escalate[i] - stop[i]
        if (i + 1 == n or xs[i + 1] > xs[i]) and total > best:
            best, best_i = total, i + 1
    if best_i == 0:
        return best / n, None, 0.0
    threshold = xs[-1] + 1.0 if best_i == n else (xs[best_i - 1] + xs[best_i]) / 2.0
    return best / n, threshold, best_i / n


@dataclass(frozen=True)
class CascadePlan:
    """Call `first`; if its answer's confidence is below `threshold`, call `then` and use its answer."""

    first: str
    then: str
    threshold: float
    value: float  # expected reward per input of the plan
    escalation_rate: float  # share of recent inputs that would escalate


# --- What calls on the same input teach the cascade -------------------------------------------


def corun_key(first: str, second: str) -> str:
    return f"{first}>{second}"


@dataclass
class CoRuns:
    """One role's calls on the same input: per "a>b", [n a ok, b ok | a ok, n a wrong, b ok | a wrong]
    and the escalation gain (b ok - a ok) against a's confidence."""

    counts: dict[str, list[float]]
    gains: dict[str, Calibration]

    def add(
        self,
        first: str,
        first_success: float,
        first_confidence: float | None,
        second: str,
        second_success: float,
        window: int,
    ) -> None:
        key = corun_key(first, second)
        cell = self.counts.setdefault(key, [0.0, 0.0, 0.0, 0.0])
        i = 0 if first_success >= 0.5 else 2
        cell[i] += 1.0
        cell[i + 1] += second_success
        if first_confidence is not None:
            gains = self.gains.setdefault(key, Calibration())
            gains.add(first_confidence, second_success - first_success, window)


# --- The plan search --------------------------------------------------------------------------


def stage_candidates(
    scores: Mapping[str, ModelScore], tried: Sequence[str], calib: Mapping[str, Calibration], p: RoleRLParams
) -> tuple[list[str], list[str]]:
    """(first stages: the best-valued calibrated models; second stages: the best-valued models
    plus the most accurate one)."""
    by_value = sorted(tried, key=lambda m: -scores[m].value)
    firsts = [m for m in by_value if m in calib and len(calib[m].xs) >= p.cascade_min_history][
        : p.cascade_firsts
    ]
    seconds = by_value[: p.cascade_seconds]
    if tried:
        most_accurate = max(tried, key=lambda m: scores[m].quality)
        if most_accurate not in seconds:
            seconds.append(most_accurate)
    return firsts, seconds


def escalation_rewards(
    first: Calibration,
    p1: Sequence[float],
    then: ModelScore,
    cell: Sequence[float],
    observed: Calibration | None,
    cost_weight: float,
    p: RoleRLParams,
) -> list[float]:
    """Expected reward of escalating to `then` at each of first's confidences: the empirical,
    decreasing (isotonic) gain curve from calls on the same input, shrunk toward the
    conditional-independence model a*p1 + b*(1 - p1) - p1."""
    f, v = p.failure_quality, p.reward_value
    prior = success_of(then.quality, f)
    a = (cell[1] + 2.0 * prior) / (cell[0] + 2.0)  # P(then ok | first ok)
    b = (cell[3] + 2.0 * prior) / (cell[2] + 2.0)  # P(then ok | first wrong)
    run2 = cost_weight * then.cost + p.latency_weight * then.latency
    blocks = observed.blocks(decreasing=True) if observed is not None else []
    out = []
    for x, p1x in zip(first.xs, p1, strict=True):
        model_gain = a * p1x + b * (1.0 - p1x) - p1x
        emp, count = block_at(blocks, x)
        gain = (count * emp + p.gain_prior * model_gain) / (count + p.gain_prior)
        out.append(v * (f + min(1.0, max(0.0, p1x + gain)) * (1.0 - f)) - run2)
    return out


def search_cascade(
    scores: Mapping[str, ModelScore],
    candidates: Sequence[str],
    calib: Mapping[str, Calibration],
    coruns: CoRuns,
    cost_weight: float,
    p: RoleRLParams,
) -> CascadePlan | None:
    """The best (first, then, threshold) over the top candidates, or None when no cascade helps."""
    tried = [m for m in candidates if scores[m].n > 0]
    firsts, seconds = stage_candidates(scores, tried, calib, p)
    f, v = p.failure_quality, p.reward_value
    best: CascadePlan | None = None
    for first in firsts:
        s1 = scores[first]
        p1 = calib[first].fitted(success_of(s1.quality, f), 2.0)
        stop = [v * (f + x * (1.0 - f)) for x in p1]
        for then in seconds:
            s2 = scores[then]
            if then == first or s2.cost <= s1.cost:
                continue
            key = corun_key(first, then)
            cell = coruns.counts.get(key, [0.0, 0.0, 0.0, 0.0])
            escalate = escalation_rewards(calib[first], p1, s2, cell, coruns.gains.get(key), cost_weight, p)
            mean, threshold, rate = cascade_sweep(calib[first].xs, stop, escalate)
            if threshold is None:
                continue
            value = mean - cost_weight * s1.cost - p.latency_weight * s1.latency
            if best is None or value > best.value:
                best = CascadePlan(first, then, threshold, value, rate)
    return best
