"""Every knob of the Role-RL learner, as data (spec section 4).

The one definition of the learner's hyper-parameters: the settings (`olp.settings.LearnerSettings`,
so every knob is settable from the config file, the environment and the chart) and the learner
(`policy_store.learner.RoleRLParams`, which adds the paper preset) both derive from it. It lives in
the base package because the settings may not import the policy store; what each knob does to the
algorithm is told in `policy_store/learner/params.py` (the numbered deviations from the paper).
Defaults are the paper's where the paper has one.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class LearnerParams(BaseModel):
    """Every knob of the learner, validated (each field's docstring is its description)."""

    model_config = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)

    # --- The paper (spec section 4) --------------------------------------------------------
    alpha: float = Field(0.1, gt=0, le=1)
    """Learning rate of the paper's update Q[s,a] += alpha*(r - Q[s,a])."""
    gamma: float = Field(0.0, ge=0, lt=1)
    """Discount; 0 in the paper (every call is its own episode)."""
    epsilon: float = Field(0.03, ge=0, le=1)
    """Paper mode: probability of exploring a uniformly drawn challenger."""
    reward_value: float = 10.0
    """v: reward points of a fully correct answer (k = 1)."""
    cost_weight: float = 100.0
    """k1: reward points per US dollar spent on the call."""
    latency_weight: float = 0.1
    """k2: reward points per second of latency."""
    failure_quality: float = Field(-1.0, lt=1)
    """k of a failed call (parse failure, error) or wrong answer (paper: -10; -1 keeps k in [-1, 1])."""
    board_step: float = 0.01
    """Board weight moved toward the elected LLM per election."""
    board_warmup: int = 100
    """Elections start after this many outcomes of the board role (paper: 100 iterations)."""
    board_cost_weight: float = 1.0
    """Multiplier of the price term added to the summed Q-tables before the election."""
    board_max_steps: int = 10
    """Markov-chain steps before the election gives up (paper: 10)."""
    mode: Literal["role_rl", "paper"] = "role_rl"
    """"paper": decide with the paper's tables only; "role_rl": with our extensions."""

    # --- Ours: quality evidence by source (deviation 2) -------------------------------------
    evidence: tuple[tuple[str, float, float], ...] = (
        ("processor", 1.0, 0.0),
        ("judge", 1.0, 0.1),
        ("canary", 1.0, 0.0),
        ("agreement", 1.0, 0.25),
        ("downstream", 1.0, 0.2),
        ("human", 1.0, 0.05),
    )
    """Per source of a quality label, (source, weight, noise): noise is the probability that the
    label is wrong (a judge disagreeing with the truth ~10% of the time; a gold canary, scored
    exactly, never; two models agreeing share errors; a processor labels only its own failures,
    which are certain). A label moves the quality estimate with weight x (1 - 2 noise)^2, the
    share of an exact label's information a label flipped with that probability carries. A source
    not listed counts as an exact label of weight 1."""
    label_aware_exploration: bool = True
    """Scale a challenger's expected improvement by the role's measured label rate: a paired run
    teaches the quality estimate only when the call gets a label (judge, canary, ...)."""

    # --- Ours: estimates and context (deviation 4) -----------------------------------------
    min_step: float = Field(0.01, gt=0, le=1)
    """Floor of the running-mean step: sample average first, then tracks the last ~1/min_step."""
    pool_prior: float = Field(2.0, gt=0)
    """Pseudo-count of a model's all-roles mean in a role's quality estimate."""
    contextual: bool = True
    """Decide per context (domain, language, chunk-size bucket); False: one table per role."""
    cost_prior: bool = False
    """A model's prior quality follows its measured cost (a line fitted over the labelled models)
    instead of the neutral (1 + failure_quality) / 2: labels are sparse, costs are not. Off by
    default: on the routing file's tune part with a 10% judge it did not help on balance."""
    context_prior: float = Field(5.0, ge=0)
    """Pseudo-count of the role-level estimate in a context's estimate."""
    use_state: bool = True
    """Also condition on the paper's state (LLM used last, success): difficulty persists in a stream."""
    state_prior: float = Field(5.0, ge=0)
    """Pseudo-count of the context's estimate in a (state, context) estimate."""
    chunk_buckets: tuple[int, ...] = (40, 80)
    """Chunk-size bucket edges (sentences) of the context."""

    # --- Ours: directed exploration (deviation 5) ------------------------------------------
    explore_horizon: float = 2.0
    """Future calls over which a challenger's expected improvement is counted."""
    explore_overhead: float = 0.5
    """Reward points a paired exploration run must beat on top of its own expected cost."""
    explore_cap: float = Field(1.0, ge=0, le=1)
    """Probability of a paired run while some challenger is worth one."""
    explore_floor: float = Field(0.0, ge=0, le=1)
    """Probability of a uniform paired run when none is (tracks drift; 0 disables)."""

    # --- Ours: budgets (deviation 6) -------------------------------------------------------
    budget_price_scale: float = 100.0
    """Reward points per USD added to k1 per unit of (e^mu - 1), mu being the budget's dual variable."""
    budget_price_lr: float = 0.05
    """Step of mu per outcome, times (share of the budget spent - share of the window elapsed)."""
    budget_price_max: float = 7.0
    """Cap of mu (the price grows at most e^7 - 1, about 1100x budget_price_scale)."""
    budget_safety: float = 1.2
    """Reserve kept for the rest of the window = safety x expected calls x cheapest adequate cost."""
    budget_margin: float = 0.02
    """Share of each limit the guard keeps unspent (costs are only known after the call)."""
    adequate_quality: float = 0.0
    """Under the guard, models whose quality estimate k is below this are not 'adequate'."""

    # --- Ours: stale-policy correction (deviation 7) ---------------------------------------
    max_importance_weight: float = Field(5.0, gt=0)
    """Clip of pi_current(a|s)/propensity."""
    max_policy_lag: int = Field(8, ge=0)
    """Feedback acting on a role version older than current - max_policy_lag is rejected."""

    # --- Ours: failover and SLOs (deviations 8, 11) ----------------------------------------
    breaker_failures: int = Field(3, ge=1)
    """Consecutive failures that open a model's circuit breaker for a role."""
    breaker_cooldown_s: float = 60.0
    """Seconds an open breaker waits before half-open (assignable, closed by a success)."""
    latency_slo_s: tuple[tuple[str, float], ...] = ()
    """Per-role latency SLOs, (role, seconds): slower models are assigned only if none is faster."""

    # --- Ours: confidence cascade (deviation 9) --------------------------------------------
    cascade: bool = True
    """Consider cheap-first cascades when models report confidences."""
    cascade_firsts: int = 4
    """First-stage candidates tried per plan search (best single-model values)."""
    cascade_seconds: int = 4
    """Second-stage candidates tried per plan search (best values, plus the most accurate)."""
    cascade_min_history: int = 8
    """Confidences a first-stage model needs before it is considered."""
    cascade_probe_cost: float = 0.5
    """Models costing at most this share of the reference model are probed until calibrated."""
    gain_prior: float = 3.0
    """Pseudo-count of the conditional-independence model in the escalation-gain curve."""
    cascade_refresh: int = 5
    """Outcomes of a role between two plan searches (the search is the costly part)."""
    calibration_window: int = 500
    """Confidences kept per (role, model) for calibration (oldest dropped first)."""

    # --- Plumbing ---------------------------------------------------------------------------
    dedupe_window_s: float = Field(1200.0, gt=0)
    """Event ids are remembered for this long (records' time, `ts_ms`) for de-duplication. Must
    exceed the processors' `chunk_timeout_s` (600 s): a chunk sent again after that timeout
    repeats its calls, with the same event ids, that much later."""
    dedupe_capacity: int = Field(100_000, ge=1)
    """At most this many event ids are remembered (the oldest dropped first), whatever the window."""
    group_capacity: int = 4096
    """Inputs (stream_id, chunk_id) remembered for cross updates."""

    def knobs(self) -> dict[str, object]:
        """The learner's knobs only (without a subclass's other fields)."""
        return {name: getattr(self, name) for name in LearnerParams.model_fields}
