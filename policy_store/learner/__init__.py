"""Role-RL: the online learner that decides which LLM fills each OLP role (spec section 4).

Pure Python, no I/O, no clock: time comes from the records. The policy store service feeds
`RoleRL.observe` with `RoleOutcome` dicts read from the feedback topic (`olp.feedback`, schema
`schemas/role_outcome.avsc`; judge verdicts and human feedback are RoleOutcomes too, with `source`
= judge / human), and publishes `RoleRL.context_assignment(role, ctx)` as `Assignment` records on
`olp.policy` (`schemas/assignment.avsc`): the role level, and each of `RoleRL.contexts(role)`. A
processor turns the assignment it holds into a `CallPlan` with `AssignmentView.sample(rng)` (pure
sampling shared with the processors, `olp/call_plan.py`). The learner's whole state is a JSON
document (`RoleRL.snapshot` / `RoleRL.restore`).

Read the modules in order, starting with `params` (the knobs and the numbered deviations from the
paper): params, paper, estimates, budget, safety, cascade, state, views, decide, learner, snapshot.
"""

from olp.contexts import ROLE_LEVEL, chunk_bucket, context_key
from policy_store.learner.budget import (
    ALL_FEEDS,
    Budget,
    BudgetLedger,
    Budgets,
    BudgetStatus,
    budget_fits,
    budget_price,
    budget_price_step,
    expected_remaining_calls,
    window_start_ms,
)
from policy_store.learner.cascade import Calibration, CascadePlan, cascade_sweep, search_cascade, success_of
from policy_store.learner.decide import Situation, decide, decide_paper
from policy_store.learner.estimates import Estimate, ModelScore, expected_improvement, score_models, shrink
from policy_store.learner.learner import COUNTERS, RoleRL
from policy_store.learner.paper import (
    START,
    QTable,
    argmax_model,
    board_weight_update,
    combine_verdicts,
    epsilon_greedy,
    markov_election,
    organizer_quality,
    q_step,
    q_update,
    quality,
    reward,
    state_key,
    state_model,
)
from policy_store.learner.params import PolicyError, RoleRLParams
from policy_store.learner.safety import Breaker, DedupeWindow, importance_weight
from policy_store.learner.state import RoleState
from policy_store.learner.views import Assignment, AssignmentView, CallPlan

__all__ = [
    "ALL_FEEDS",
    "COUNTERS",
    "ROLE_LEVEL",
    "START",
    "Assignment",
    "AssignmentView",
    "Breaker",
    "Budget",
    "BudgetLedger",
    "BudgetStatus",
    "Budgets",
    "Calibration",
    "CallPlan",
    "CascadePlan",
    "DedupeWindow",
    "Estimate",
    "ModelScore",
    "PolicyError",
    "QTable",
    "RoleRL",
    "RoleRLParams",
    "RoleState",
    "Situation",
    "argmax_model",
    "board_weight_update",
    "budget_fits",
    "budget_price",
    "budget_price_step",
    "cascade_sweep",
    "chunk_bucket",
    "combine_verdicts",
    "context_key",
    "decide",
    "decide_paper",
    "epsilon_greedy",
    "expected_improvement",
    "expected_remaining_calls",
    "importance_weight",
    "markov_election",
    "organizer_quality",
    "q_step",
    "q_update",
    "quality",
    "reward",
    "score_models",
    "search_cascade",
    "shrink",
    "state_key",
    "state_model",
    "success_of",
    "window_start_ms",
]
