"""Budgets (deviation 6, after LONDI-B): hard spend limits per time window, per feed and globally
("*"), a Lagrange-style price on cost while spend runs ahead of time, and the guard's arithmetic.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from policy_store.learner.params import PolicyError, RoleRLParams

ALL_FEEDS = "*"
"""The feed name of a budget that limits all feeds together."""


@dataclass(frozen=True)
class Budget:
    """A hard spend limit: at most `limit_usd` in every window of `window_s` seconds.

    Windows are aligned to the epoch (a window starts at a multiple of `window_s`)."""

    limit_usd: float
    window_s: float = 3600.0

    def __post_init__(self) -> None:
        if not self.limit_usd > 0 or not self.window_s > 0:
            raise PolicyError(f"a budget needs limit_usd > 0 and window_s > 0, got {self}")


def window_start_ms(ts_ms: int, window_s: float) -> int:
    """Start of the epoch-aligned budget window containing ts_ms."""
    width = int(window_s * 1000)
    return ts_ms - ts_ms % width


def expected_remaining_calls(calls: float, prev_calls: float, elapsed_frac: float) -> float:
    """Calls still to come in this window: the larger of last window's count and this window's pace."""
    if elapsed_frac >= 1.0:
        return 0.0
    projected = calls / max(elapsed_frac, 0.05) if calls else 0.0
    return max(0.0, max(prev_calls, projected) - calls)


def budget_fits(spent: float, reserve: float, cost: float, limit: float) -> bool:
    """The guard's rule: a call may cost `cost` if the reserve for the rest of the window still fits."""
    return spent + cost + reserve <= limit


def budget_price_step(
    mu: float, spent: float, limit: float, elapsed_frac: float, lr: float, mu_max: float
) -> float:
    """Dual step: mu grows while the window's spend runs ahead of its elapsed share, shrinks otherwise."""
    return min(mu_max, max(0.0, mu + lr * (spent / limit - elapsed_frac)))


def budget_price(mu: float, scale: float) -> float:
    """Reward points per USD the budget adds to k1."""
    return scale * (math.exp(mu) - 1.0)


@dataclass
class BudgetLedger:
    """Spend of one budget's current window."""

    window_start_ms: int = 0
    spent_usd: float = 0.0
    calls: dict[str, int] = field(default_factory=dict)  # role -> calls this window
    prev_calls: dict[str, int] = field(default_factory=dict)  # role -> calls last window
    mu: float = 0.0
    history: list[tuple[int, float]] = field(default_factory=list)  # closed windows (start, spent)

    def roll(self, start_ms: int, window_ms: int, keep: int = 48) -> None:
        """Move to the window starting at start_ms (no-op if already there or older)."""
        if start_ms <= self.window_start_ms:
            return
        self.history.append((self.window_start_ms, self.spent_usd))
        del self.history[:-keep]
        self.prev_calls = self.calls if start_ms - self.window_start_ms == window_ms else {}
        self.calls = {}
        self.spent_usd = 0.0
        self.window_start_ms = start_ms


@dataclass(frozen=True)
class BudgetStatus:
    """Spend vs budget of one window (feed '*' = all feeds)."""

    feed: str
    limit_usd: float
    window_s: float
    window_start_ms: int
    spent_usd: float
    reserve_usd: float  # kept to finish the window on the cheapest adequate models
    price: float  # reward points per USD added to k1
    guard: bool = False  # the greedy choice did not fit; a cheaper one was assigned

    @property
    def remaining_usd(self) -> float:
        return self.limit_usd - self.spent_usd

    def fits(self, cost: float, margin: float) -> bool:
        """A call may cost `cost` and leave the reserve and `margin` of the limit unspent."""
        return budget_fits(self.spent_usd, self.reserve_usd, cost, self.limit_usd * (1.0 - margin))


class Budgets:
    """The limits (feed -> Budget) and the ledger of each one's current window."""

    def __init__(self, limits: Mapping[str, Budget] | None = None) -> None:
        self.limits: dict[str, Budget] = dict(limits or {})
        self.ledgers: dict[str, BudgetLedger] = {}

    def configure(self, limits: Mapping[str, Budget]) -> None:
        """The limits in force now (a restored learner follows the settings, not its snapshot);
        a feed that keeps its limit keeps its window's ledger."""
        self.limits = dict(limits)
        self.ledgers = {feed: ledger for feed, ledger in self.ledgers.items() if feed in self.limits}

    def spend(
        self, role: str, feed: str, cost: float, ts: int, params: RoleRLParams, call: bool = True
    ) -> None:
        """Book one call of `role` on `feed` (and on the global budget), and step the price;
        `call=False` books money spent about a call (judging it) without counting another call."""
        for name in (feed, ALL_FEEDS):
            budget = self.limits.get(name)
            if budget is None:
                continue
            ledger = self.ledgers.setdefault(
                name, BudgetLedger(window_start_ms=window_start_ms(ts, budget.window_s))
            )
            width = int(budget.window_s * 1000)
            ledger.roll(window_start_ms(ts, budget.window_s), width)
            ledger.spent_usd += cost
            if call:
                ledger.calls[role] = ledger.calls.get(role, 0) + 1
            elapsed = (ts - ledger.window_start_ms) / width
            ledger.mu = budget_price_step(
                ledger.mu,
                ledger.spent_usd,
                budget.limit_usd,
                elapsed,
                params.budget_price_lr,
                params.budget_price_max,
            )

    def status(
        self, feed: str, now_ms: int, params: RoleRLParams, cheapest_cost: Callable[[str], float | None]
    ) -> BudgetStatus | None:
        """Spend vs limit of `feed`'s current window at `now_ms`; the reserve counts each role's
        expected remaining calls at `cheapest_cost(role)` (None: not a role of the learner)."""
        budget = self.limits.get(feed)
        if budget is None:
            return None
        width = int(budget.window_s * 1000)
        start = window_start_ms(now_ms, budget.window_s)
        ledger = self.ledgers.get(feed, BudgetLedger(window_start_ms=start))
        spent, calls, prev, mu = ledger.spent_usd, ledger.calls, ledger.prev_calls, ledger.mu
        if start > ledger.window_start_ms:  # a new window without outcomes yet
            prev = calls if start - ledger.window_start_ms == width else {}
            spent, calls = 0.0, {}
        else:
            start = ledger.window_start_ms
        elapsed = min(1.0, max(0.0, (now_ms - start) / width))
        reserve = 0.0
        for role in set(calls) | set(prev):
            cost = cheapest_cost(role)
            if cost is not None:
                remaining = expected_remaining_calls(calls.get(role, 0), prev.get(role, 0), elapsed)
                reserve += remaining * cost
        return BudgetStatus(
            feed,
            budget.limit_usd,
            budget.window_s,
            start,
            spent,
            params.budget_safety * reserve,
            budget_price(mu, params.budget_price_scale),
        )
