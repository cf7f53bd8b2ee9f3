"""The paper's core: the reward, one Q-table per role, its update and the board election.

A role's Q-table maps a state to {model: Q}. The state is the LLM used last and whether it
succeeded (r > 0), encoded "1:model" / "0:model"; "start" before the first call. The update is
`Q[s,a] += alpha*(r + gamma*max Q[s'] - Q[s,a])`, with cross updates between calls on the same
input (the paper's duel and start; deviation 1). The board election is a Markov chain over the
summed Q-tables, moving 0.01 of weight per step toward the elected judge. The paper's
epsilon-greedy lives in `olp/call_plan.py`, because the processors sample with it too.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from olp.call_plan import argmax_model as argmax_model
from olp.call_plan import epsilon_greedy as epsilon_greedy
from policy_store.learner.params import RoleRLParams

START = "start"
QTable = dict[str, dict[str, float]]


# --- Reward: r = k*v - k1*c - k2*t ------------------------------------------------------------


def quality(outcome: Mapping[str, Any], params: RoleRLParams) -> float | None:
    """k of the paper, when the call has one: the label's score when labelled, `failure_quality`
    when the call failed (parse failure, error), None for a success without a label (parsing is
    not quality, deviation 2)."""
    judged = outcome.get("quality")
    if judged is not None:
        return float(judged)
    ok = bool(outcome.get("success")) and outcome.get("error") is None
    return None if ok else params.failure_quality


def reward(outcome: Mapping[str, Any], params: RoleRLParams, unlabelled_quality: float = 0.0) -> float:
    """The paper's reward of one call: r = k*v - k1*c - k2*t (c in USD, t in seconds); k of a
    success without a label is `unlabelled_quality` (the caller's estimate; 0: no quality term)."""
    k = quality(outcome, params)
    cost = float(outcome.get("cost_usd") or 0.0)
    latency_s = float(outcome.get("latency_ms") or 0.0) / 1000.0
    return reward_of(k if k is not None else unlabelled_quality, cost, latency_s, params)


def reward_of(k: float, cost: float, latency_s: float, params: RoleRLParams) -> float:
    """r = k*v - k1*c - k2*t (c in USD, t in seconds)."""
    return params.reward_value * k - params.cost_weight * cost - params.latency_weight * latency_s


def organizer_quality(similarity: float, failure_quality: float = -10.0) -> float:
    """Paper's partial credit of a corrected Content Organizer answer: k = 11*similarity - 10.

    Generally similarity interpolates between failure_quality (similarity 0) and 1."""
    return failure_quality + similarity * (1.0 - failure_quality)


# --- States and the update --------------------------------------------------------------------


def state_key(model: str, ok: bool) -> str:
    """The paper's state after calling `model`: (model, succeeded)."""
    return f"{int(ok)}:{model}"


def state_model(state: str) -> str | None:
    """The model of a state key (None for the start state)."""
    return None if state == START else state[2:]


def q_step(q: float, target: float, step: float) -> float:
    """The paper's update of one cell: Q += alpha * (target - Q)."""
    return q + step * (target - q)


@dataclass(frozen=True)
class Call:
    """One call as the Q-update sees it: the model, its reward, the state after it, its weight."""

    model: str
    reward: float
    state: str
    weight: float


def q_update(table: QTable, params: RoleRLParams, before: str, call: Call, others: Sequence[Call]) -> str:
    """The paper's update of one call taken in state `before`, and the cross updates with the
    `others` already made on the same input. Returns the next state: the state of the best
    answer on the input (the paper keeps the better answer)."""

    def target(rew: float, next_state: str) -> float:
        if params.gamma == 0.0:
            return rew
        row = table.get(next_state, {})
        return rew + params.gamma * max(row.values(), default=0.0)

    def update(state: str, model: str, rew: float, next_state: str, step: float) -> None:
        row = table.setdefault(state, {})
        row[model] = q_step(row.get(model, 0.0), target(rew, next_state), step)

    update(before, call.model, call.reward, call.state, min(1.0, params.alpha * call.weight))
    for other in others:  # the paper's duel / start: cross updates between calls on one input
        cross = min(1.0, params.alpha * min(call.weight, other.weight))
        update(other.state, call.model, call.reward, call.state, cross)
        update(call.state, other.model, other.reward, other.state, cross)
    best = call
    for other in others:
        if other.reward > best.reward:
            best = other
    return best.state


# --- The board election -----------------------------------------------------------------------


def markov_election(
    table: Mapping[str, Mapping[str, float]], models: Sequence[str], max_steps: int = 10
) -> str | None:
    """The paper's board election (`markov()`).

    `table[a][b]` is the summed Q of calling b after a failed (plus the price term). Start at the
    first model and follow argmax until a fixed point or a row of zeros; None after max_steps."""
    start = models[0]
    for _ in range(max_steps):
        end = argmax_model(table.get(start, {}), models)
        if end == start or all(table.get(end, {}).get(m, 0.0) == 0.0 for m in models):
            return end
        start = end
    return None


def election_table(
    tables: Sequence[QTable], models: Sequence[str], prices: Mapping[str, float], price_weight: float
) -> dict[str, dict[str, float]]:
    """What the election walks: the roles' summed Q of calling b after a failed, plus b's price
    (mean cost per call) times the number of roles (deviation 3)."""
    out: dict[str, dict[str, float]] = {}
    for a in models:
        row = out[a] = {}
        failed = state_key(a, False)
        for b in models:
            summed = sum(q.get(failed, {}).get(b, 0.0) for q in tables)
            row[b] = summed + price_weight * len(tables) * prices.get(b, 0.0)
    return out


def board_weight_update(weights: Mapping[str, float], elected: str, step: float = 0.01) -> dict[str, float]:
    """The paper's `weight_update()`, verbatim: move `step` of weight to the elected LLM, taken evenly
    from the other board members in ascending order of weight (members that run dry drop out)."""
    w = dict(weights)
    w.setdefault(elected, 0.0)
    count = sum(1 for m, x in w.items() if x != 0 and m != elected)
    adjust = step if 1 - w[elected] > step else 1 - w[elected]
    w[elected] += adjust
    for m, value in sorted(w.items(), key=lambda kv: kv[1]):
        if m != elected and value != 0:
            if w[m] > adjust / count:
                w[m] -= adjust / count
            else:
                residual = w[m]
                w[m] = 0.0
                adjust -= residual
                count -= 1
    return w


def combine_verdicts(weights: Mapping[str, float], verdicts: Mapping[str, float]) -> float | None:
    """Board score k of one answer from the judges' scores, weighted by the board (deviation 3)."""
    if not verdicts:
        return None
    total = sum(weights.get(j, 0.0) for j in verdicts)
    if total <= 0:
        return sum(verdicts.values()) / len(verdicts)
    return sum(weights.get(j, 0.0) * k for j, k in verdicts.items()) / total
