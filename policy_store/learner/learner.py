"""The learner `RoleRL`: one for every LLM role, wiring the paper's core and our extensions.

Pure Python, no I/O, no clock: time comes from the records (`ts_ms`). `observe` learns from one
RoleOutcome dict; `assignment` gives the decision for a role; operators pin, ban, add and retire
models (deviation 11).
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from olp.contexts import ROLE_LEVEL, context_key
from policy_store.learner.budget import Budget, Budgets, BudgetStatus
from policy_store.learner.cascade import CascadePlan, search_cascade
from policy_store.learner.decide import Situation, decide, decide_paper
from policy_store.learner.estimates import Estimate, ModelScore, known_contexts, score_models
from policy_store.learner.learn import (
    learn_calibration,
    learn_estimates,
    learn_paper,
    observation,
    weigh_agreement,
)
from policy_store.learner.paper import (
    board_weight_update,
    combine_verdicts,
    election_table,
    markov_election,
    state_key,
)
from policy_store.learner.params import PolicyError, RoleRLParams
from policy_store.learner.safety import Breaker, DedupeWindow, importance_weight
from policy_store.learner.snapshot import dump, load, params_of
from policy_store.learner.state import LABEL_SUM, InputGroups, Member, RoleState
from policy_store.learner.views import AssignmentView, CallPlan

COUNTERS = ("accepted", "duplicate", "stale", "off_policy", "unknown", "elections")
"""What happened to each feedback record (and how many board elections ran)."""


class RoleRL:
    """One learner for every LLM role. See `policy_store.learner.params` for the algorithm."""

    def __init__(
        self,
        pools: Mapping[str, Sequence[str]],
        params: RoleRLParams | None = None,
        rng: random.Random | None = None,
        *,
        budgets: Mapping[str, Budget] | None = None,
        board: Mapping[str, float] | None = None,
    ) -> None:
        self.params = params if params is not None else RoleRLParams()
        self.rng = rng if rng is not None else random.Random(0)
        self.role_states: dict[str, RoleState] = {}
        self.models: list[str] = []  # every model ever seen, in first-seen order (election order)
        self.board: dict[str, float] = dict(board or {})
        self.board_role: str | None = None  # the role whose outcomes pace the elections
        self.board_count = 0
        self.groups = InputGroups()
        self.pooled: dict[str, Estimate] = {}  # model -> estimate over all roles
        self.budgets = Budgets(budgets)
        self.dedupe = DedupeWindow()
        self.now_ms = 0  # the latest record time seen
        self.counters: dict[str, int] = dict.fromkeys(COUNTERS, 0)
        for role, models in pools.items():
            for model in models:
                self._add(role, model)
            if role not in self.role_states:
                raise PolicyError(f"role {role!r} has an empty pool")

    # ------------------------------------------------------------------ pools and control (11)

    def _add(self, role: str, model: str) -> None:
        if role not in self.role_states:
            self.role_states[role] = RoleState()
            if self.board_role is None:
                self.board_role = role
        pool = self.role_states[role].pool
        if model not in pool:
            pool.append(model)
        if model not in self.models:
            self.models.append(model)

    def _changed(self, role: str) -> None:
        rs = self.role_states[role]
        rs.version += 1
        rs.forget_plan()
        rs.signature = self._signature(role)

    def _role(self, role: str, model: str | None = None) -> RoleState:
        """The role's state; PolicyError when the role, or the model in its pool, is unknown."""
        rs = self.role_states.get(role)
        if rs is None:
            raise PolicyError(f"unknown role {role!r}")
        if model is not None and model not in rs.pool:
            raise PolicyError(f"model {model!r} is not in the pool of role {role!r}")
        return rs

    def roles(self) -> list[str]:
        return list(self.role_states)

    def pool(self, role: str) -> list[str]:
        return list(self._role(role).pool)

    def version(self, role: str) -> int:
        return self._role(role).version

    def pin(self, role: str, model: str) -> None:
        """Always assign `model` to `role` (no exploration) until unpinned."""
        rs = self._role(role, model)
        if model in rs.banned:
            raise PolicyError(f"model {model!r} is banned for role {role!r}; unban it first")
        rs.pinned = model
        self._changed(role)

    def unpin(self, role: str) -> None:
        rs = self._role(role)
        if rs.pinned is not None:
            rs.pinned = None
            self._changed(role)

    def ban(self, role: str, model: str) -> None:
        """Never assign `model` to `role` until unbanned."""
        rs = self._role(role, model)
        if rs.pinned == model:
            raise PolicyError(f"model {model!r} is pinned for role {role!r}; unpin it first")
        if len(rs.allowed()) <= 1:
            raise PolicyError(f"cannot ban the last model of role {role!r}")
        rs.banned.add(model)
        self._changed(role)

    def unban(self, role: str, model: str) -> None:
        rs = self._role(role, model)
        if model in rs.banned:
            rs.banned.discard(model)
            self._changed(role)

    def add_model(self, role: str, model: str) -> None:
        """A new LLM joins the role's pool (a new role is created if needed); it is tried on the next call."""
        known = role in self.role_states and model in self.role_states[role].pool
        self._add(role, model)
        if not known:
            self._changed(role)

    def retire_worst(self, role: str) -> str | None:
        """Remove the role's worst model from its pool and return it: the lowest expected reward over
        all contexts (paper mode: the lowest mean Q over states). The pinned model is never retired;
        None when the pool holds a single model. The paper replaced its worst LLM by hand."""
        rs = self._role(role)
        pool = [m for m in rs.pool if m != rs.pinned]
        if len(rs.pool) <= 1 or not pool:
            return None
        if self.params.mode == "paper":

            def mean_q(m: str) -> float:
                values = [row[m] for row in rs.q.values() if m in row]
                return sum(values) / len(values) if values else 0.0

            worst = min(pool, key=mean_q)
        else:
            scores = self._scores(role, ROLE_LEVEL, self._cost_weight(None, self.now_ms))
            worst = min(pool, key=lambda m: scores[m].value)
        rs.pool.remove(worst)
        rs.banned.discard(worst)
        self._changed(role)
        return worst

    # ------------------------------------------------------------------ learning

    def observe(self, outcome: Mapping[str, Any]) -> bool:
        """Learn from one RoleOutcome dict. True when the role's assignment (model or cascade) changed."""
        event_id = str(outcome["event_id"])
        if event_id in self.dedupe:
            self.counters["duplicate"] += 1
            return False
        ts = int(outcome.get("ts_ms") or self.now_ms)
        self.now_ms = max(self.now_ms, ts)
        self.dedupe.remember(
            event_id, self.now_ms, int(self.params.dedupe_window_s * 1000), self.params.dedupe_capacity
        )
        role, model = str(outcome["role"]), str(outcome["model"])
        rs = self.role_states.get(role)
        if rs is None or model not in self.models:
            self.counters["unknown"] += 1
            return False
        before = rs.signature or self._signature(role)
        seen = self._seen_call(outcome)
        if seen is None:  # a label on a call seen before was booked with that call
            self._book_call(role, rs, outcome, ts)
        judging = float(outcome.get("judge_cost_usd") or 0.0)
        if judging > 0:  # the board's own calls: the feed pays for them like for any call
            feed = str(outcome.get("feed") or "default")
            self.budgets.spend(role, feed, judging, ts, self.params, call=False)
        weight = self._importance_weight(role, rs, outcome)
        if weight is None:
            self.counters["stale"] += 1
        elif weight > 0:
            self._learn(role, rs, outcome, weight, seen)
            self.counters["accepted"] += 1
        else:
            self.counters["off_policy"] += 1  # the current policy would never run this model
        after = rs.signature = self._signature(role)
        if after != before:
            rs.version += 1
            return True
        return False

    def _seen_call(self, outcome: Mapping[str, Any]) -> Member | None:
        """The call a label record (judge, canary, human, ...) is about, when it was seen on the
        same input; None for a processor's record and for a labelled record that is the call itself."""
        if str(outcome.get("source") or "processor") == "processor":
            return None
        group = self.groups.of(outcome, self.params.group_capacity)
        model = str(outcome["model"])
        return next((m for m in reversed(group or []) if m.model == model), None)

    def _book_call(self, role: str, rs: RoleState, outcome: Mapping[str, Any], ts: int) -> None:
        """A call spent money and showed the model's health, however stale its policy."""
        ok = bool(outcome.get("success")) and outcome.get("error") is None
        feed = str(outcome.get("feed") or "default")
        self.budgets.spend(role, feed, float(outcome.get("cost_usd") or 0.0), ts, self.params)
        breaker = rs.breakers.setdefault(str(outcome["model"]), Breaker())
        breaker.record(ok, ts, self.params.breaker_failures)

    def _importance_weight(self, role: str, rs: RoleState, outcome: Mapping[str, Any]) -> float | None:
        """Stale-policy correction (deviation 7): None rejects the feedback as too stale."""
        lag = rs.version - int(outcome.get("policy_version", rs.version))
        pi = self.assignment(role, outcome).propensity(str(outcome["model"])) if lag > 0 else 1.0
        propensity = float(outcome.get("propensity") or 0.0)
        p = self.params
        return importance_weight(pi, propensity, lag, p.max_importance_weight, p.max_policy_lag)

    def _learn(
        self, role: str, rs: RoleState, outcome: Mapping[str, Any], weight: float, seen: Member | None
    ) -> None:
        obs = weigh_agreement(observation(outcome, weight, self.params), outcome, rs)
        if seen is not None:
            obs = obs.completing(seen)
        group = self.groups.of(outcome, self.params.group_capacity)
        members = [m for m in group if m.model != obs.model] if group is not None else []
        learn_paper(rs, obs, members, self.params)
        learn_estimates(rs, self.pooled, obs, members, self.params)
        learn_calibration(rs, obs, members, self.params)
        if group is not None:
            if seen is not None:
                group.remove(seen)
            group.append(obs.member(self.params))
        rs.plan_age += 1
        if role == self.board_role:  # the paper: an election after each outcome of the board role
            self.board_count += 1
            if self.board_count > self.params.board_warmup:
                self._elect()

    # ------------------------------------------------------------------ the board (paper, deviation 3)

    def _elect(self) -> None:
        """The paper's board election over the summed Q-tables plus the price term."""
        p = self.params
        prices = {m: e.cost for m, e in self.pooled.items()}
        tables = [rs.q for rs in self.role_states.values()]
        table = election_table(tables, self.models, prices, p.board_cost_weight)
        elected = markov_election(table, self.models, p.board_max_steps)
        if elected is not None:
            self.board = board_weight_update(self.board, elected, p.board_step)
            self.counters["elections"] += 1

    def board_weights(self) -> dict[str, float]:
        """Current weight of each board member (judge)."""
        return {m: w for m, w in self.board.items() if w != 0}

    def combine_verdicts(self, verdicts: Mapping[str, float]) -> float | None:
        """Board score k of one answer from the judges' scores, weighted by the board (deviation 3)."""
        return combine_verdicts(self.board, verdicts)

    # ------------------------------------------------------------------ budgets (6)

    def budget_status(self, feed: str | None = None, now_ms: int | None = None) -> list[BudgetStatus]:
        """Spend vs budget of one feed (and '*'), or of every budget when feed is None."""
        now = self.now_ms if now_ms is None else now_ms
        feeds = list(self.budgets.limits) if feed is None else [feed, "*"]
        statuses = (self.budgets.status(f, now, self.params, self._cheapest_adequate_cost) for f in feeds)
        return [s for s in statuses if s is not None]

    def _cheapest_adequate_cost(self, role: str) -> float | None:
        """Mean cost of the role's cheapest adequate model (else its cheapest); None: unknown role."""
        rs = self.role_states.get(role)
        if rs is None:
            return None
        est = rs.estimates.get(ROLE_LEVEL, {})
        allowed = [(m, e) for m, e in est.items() if m in rs.pool and m not in rs.banned and e.n > 0]
        costs = [e.cost for _, e in allowed]
        adequate = [e.cost for _, e in allowed if e.quality >= self.params.adequate_quality]
        return min(adequate or costs or [0.0])

    def _cost_weight(self, context: Mapping[str, Any] | None, now_ms: int) -> float:
        """k1 plus the price of every budget the context's feed spends from."""
        feed = str((context or {}).get("feed") or "default")
        return self.params.cost_weight + sum(s.price for s in self.budget_status(feed, now_ms))

    # ------------------------------------------------------------------ deciding

    def _scores(
        self, role: str, ctx: str, cost_weight: float, state: str | None = None
    ) -> dict[str, ModelScore]:
        rs = self.role_states[role]
        return score_models(rs.pool, rs.estimates, self.pooled, ctx, state, cost_weight, self.params)

    def assignment(self, role: str, context: Mapping[str, Any] | None = None) -> AssignmentView:
        """The current decision for `role` in `context` (domain, lang, chunk_size, feed, ts_ms)."""
        return self._decide(role, context_key(context, self.params), context)

    def context_assignment(self, role: str, ctx: str) -> AssignmentView:
        """The decision for `role` in the context with key `ctx` (`ROLE_LEVEL`: the role's), as the
        policy store publishes it: for the default feed, at the learner's clock."""
        return self._decide(role, ctx, None)

    def contexts(self, role: str) -> list[str]:
        """The contexts of `role` known well enough to be decided on their own (none in paper
        mode, whose decision ignores the context)."""
        if self.params.mode == "paper":
            return []
        return known_contexts(self._role(role).estimates, self.params)

    def _decide(self, role: str, ctx: str, context: Mapping[str, Any] | None) -> AssignmentView:
        rs = self._role(role)
        now = int((context or {}).get("ts_ms") or self.now_ms)
        candidates, open_ = rs.candidates(now, self.params.breaker_cooldown_s)
        evidence = {
            m: {k: v for k, v in counts.items() if not k.endswith(LABEL_SUM)}
            for m, counts in rs.evidence.items()
        }
        if self.params.mode == "paper":
            view = decide_paper(role, rs, candidates, open_, self.params.epsilon)
            return replace(view, evidence=evidence, context=ctx)  # the paper's ignores the context
        s = self._situation(role, rs, ctx, context, candidates, now)
        if open_:
            s.notes.append(f"circuit open: {', '.join(open_)}")
        view = decide(
            s,
            rs.pinned,
            rs.calibration,
            lambda: self._cascade_plan(role, s.cost_weight),
            lambda m: self._scores(role, ROLE_LEVEL, s.cost_weight)[m].value,
        )
        return replace(view, evidence=evidence)

    def _situation(
        self,
        role: str,
        rs: RoleState,
        ctx: str,
        context: Mapping[str, Any] | None,
        candidates: list[str],
        now: int,
    ) -> Situation:
        feed = str((context or {}).get("feed") or "default")
        prev = (context or {}).get("prev_model")
        state = (
            state_key(str(prev), bool((context or {}).get("prev_success", True))) if prev else rs.last_state
        )
        statuses = self.budget_status(feed, now)
        cost_weight = self.params.cost_weight + sum(s.price for s in statuses)
        scores = self._scores(role, ctx, cost_weight, state)
        label_rate = rs.label_rate() if self.params.label_aware_exploration else 1.0
        return Situation(
            role,
            ctx,
            candidates,
            scores,
            statuses,
            cost_weight,
            rs.version,
            self.params,
            self.pooled,
            label_rate=label_rate,
        )

    def evidence(self, role: str) -> dict[str, dict[str, float]]:
        """Per model of the role: where its estimates come from (weighted labels per source,
        'failure', 'unlabelled' calls), and its role-level quality estimate, the estimate's
        standard deviation (in k) and the weighted labels behind it (`n_quality`); once gold
        canaries scored it, `canary_gap`: how far that estimate is from their mean (calibration)."""
        rs = self._role(role)
        scores = self._scores(role, ROLE_LEVEL, self.params.cost_weight)
        out: dict[str, dict[str, float]] = {}
        for m in rs.pool:
            s = scores[m]
            counts = rs.evidence.get(m, {})
            means = {
                f"{k[: -len(LABEL_SUM)]}_mean": round(v / counts[k[: -len(LABEL_SUM)]], 6)
                for k, v in counts.items()
                if k.endswith(LABEL_SUM) and counts.get(k[: -len(LABEL_SUM)])
            }
            out[m] = {
                **{k: round(v, 6) for k, v in sorted(counts.items()) if not k.endswith(LABEL_SUM)},
                **means,
                "quality": round(s.quality, 6),
                "quality_sd": round(s.quality_sd / self.params.reward_value, 6),
                "n_quality": round(s.n_quality, 6),
            }
            if "canary_mean" in means:
                out[m]["canary_gap"] = round(abs(s.quality - means["canary_mean"]), 6)
        return out

    def select(self, role: str, context: Mapping[str, Any] | None = None) -> CallPlan:
        """Sample one call's plan with the learner's own generator (tests, benchmarks, in-process use)."""
        return self.assignment(role, context).sample(self.rng)

    def _cascade_plan(self, role: str, cost_weight: float) -> CascadePlan | None:
        """The role's cascade plan, searched again every `cascade_refresh` outcomes."""
        rs = self.role_states[role]
        if rs.plan_cached and rs.plan_age < self.params.cascade_refresh:
            return rs.plan
        rs.plan_age = 0
        candidates, _ = rs.candidates(self.now_ms, self.params.breaker_cooldown_s)
        scores = self._scores(role, ROLE_LEVEL, cost_weight)
        rs.plan = search_cascade(scores, candidates, rs.calibration, rs.coruns, cost_weight, self.params)
        rs.plan_cached = True
        return rs.plan

    def _signature(self, role: str) -> tuple[str, str | None]:
        view = self.assignment(role)
        return view.model, view.cascade.then if view.cascade else None

    def last_state(self, role: str) -> tuple[str, bool] | None:
        """The paper's state of the role: (model kept last, whether it succeeded); None before any call."""
        state = self._role(role).last_state
        return None if state is None else (state[2:], state[0] == "1")

    # ------------------------------------------------------------------ snapshot

    def snapshot(self) -> dict[str, Any]:
        """The learner's complete state as JSON-serialisable data (`policy_store.learner.snapshot`)."""
        return dump(self)

    @classmethod
    def restore(cls, data: Mapping[str, Any], rng: random.Random | None = None) -> RoleRL:
        """Rebuild a learner from `snapshot()` data; it decides exactly as the original did."""
        learner = cls({}, params_of(data), rng)
        load(learner, data)
        return learner
