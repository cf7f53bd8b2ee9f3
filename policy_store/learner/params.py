"""Parameters of the learner, and how it deviates from the paper (read this module first).

Role-RL (spec section 4) decides which LLM fills each OLP role. The package reads top to bottom,
CleanRL-style, one concept per module:
  params    the knobs (`RoleRLParams`; their definition is data in `olp/learner_params.py`, shared
            with the settings) and the deviations from the paper, numbered below;
  paper     the paper's reward, Q-learning over states (LLM used last, success) and board election;
  estimates our decomposed, context-aware estimates and their uncertainty (deviation 4);
  budget    spend limits, their price and the guard's arithmetic (deviation 6);
  safety    stale-policy importance weights, circuit breakers, de-duplication (7, 8, 10);
  cascade   calibration and the cheap-first cascade search (deviation 9);
  state     the learner's memory: one `RoleState` per role, inputs seen for cross updates;
  views     what the service publishes (`AssignmentView`, `CallPlan`);
  decide    the decision as named steps: pin, start, SLO, greedy, budget guard, cascade, exploration;
  learner   `RoleRL`, which wires them together (mode "paper" runs `paper` alone);
  snapshot  the learner's whole state as a JSON document and back.

Deviations from the paper (Role-RL's released code, `main_Role_RL.py`), numbered:
  1. Feedback arrives one call at a time (Kafka), not as a synchronous step. Each call updates
     Q[s_prev, model]; calls on the same input (same `stream_id` and `chunk_id`: a duel, a warm-up,
     a cascade) are cross-updated as in the paper's duel, Q[(a, ok_a), b] <- r_b, when the later one
     arrives; a call without a previous state updates its own-state row, which reproduces the
     paper's start (every LLM once, then Q[(i, ok_i), j] <- r_j for all i, j) exactly. Rewards of
     exactly 0 are not skipped (the paper skips them; with costs they do not occur).
  2. Reward and evidence: t is the measured latency (the paper fixed t = 1) and c the measured
     dollar cost of the call. Parsing is not quality: a failed call (parse failure, error) has
     k = `failure_quality` (the default -1 keeps k in the schema's [-1, 1]; the paper used -10,
     `RoleRLParams.paper()` restores it), but a call that merely parsed carries no quality label.
     Labels have sources (`RoleOutcome.source`: judge, canary, agreement, downstream, human; a
     processor labels only its own failures), each with a weight and a noise (`evidence`): a
     label moves our quality estimates with weight x (1 - 2 noise)^2. What an unlabelled success
     does:
     a. Our estimates (deviation 4): it updates the model's cost, latency and call count, never
        its quality estimate, whose count and uncertainty are those of the labels alone.
     b. The paper's Q-update is skipped: Q[s, a] estimates r, and r of an unlabelled call is not
        observed; filling k with the current estimate would pull Q toward what it already believes
        and shrink alpha's memory of real labels. The paper's state (LLM used last, success) moves
        only on calls whose success is known, so it is the last judged outcome. With a label on
        every call (the paper's board judges every answer) this is the paper's loop unchanged.
     c. A label arriving as its own record (a judge's verdict on a call the processor reported
        before) completes that call: found among the calls on the same input, it is learned with
        the call's measured cost, latency and state, and cost and latency are not counted twice.
        A labelled record whose call was not seen (a replay that sends one record per call) is
        the call itself.
     The learner counts, per role and model, the evidence of each source (`RoleRL.evidence`,
     shown in the views and the snapshot).
  3. Board: the price added to the summed Q-tables before the election is each LLM's mean
     measured cost per call times the number of roles (the paper: catalog price at 25k tokens in and
     out, times 4 roles; identical on its cached data). `combine_verdicts` weights the judges'
     scores with the board weights renormalised over the judges that voted.
  4. Estimates (mode "role_rl"): instead of one exponential average of r per (state, model), each
     (role, context, model) keeps importance-weighted running means of its reward components
     (quality k, cost, latency) with step max(w/n, min_step): a sample average first, a tracking
     average later. Q = v*k - (k1 + lambda)*c - k2*t is recomposed at decision time, so a budget's
     price lambda changes decisions without relearning; with step alpha and lambda = 0 this is the
     paper's update. Decisions condition on the context (domain, language, chunk-size bucket) and
     on the paper's state (LLM kept last, success) through hierarchical shrinkage: state in
     context -> context -> role -> the model's mean over all roles; counts are capped at the
     tracking average's effective sample size; the state shifts the mean but not the
     uncertainty that drives exploration. A model's all-roles mean is shrunk toward a neutral
     prior, or with `cost_prior` toward a line of quality over log cost fitted on the labelled
     models (labels are sparse, costs are measured on every call). The paper's cross updates
     also feed the (state, context) estimates. The paper's Q-tables are still kept (board
     election, `mode="paper"`, which decides with them exactly as the paper does).
  5. Exploration: the paper explores a uniform challenger with epsilon = 0.03 and runs it beside
     the incumbent. We keep the paired run but choose the challenger by expected improvement: a
     model is worth a paired run when E[max(0, Q_m - Q_incumbent)] * explore_horizon (times the
     role's measured label rate with `label_aware_exploration`: an unlabelled run teaches nothing
     about quality) exceeds the run's expected cost in reward points plus explore_overhead
     (Q_incumbent: the assigned plan's expected reward, the cascade's when one is assigned), so
     exploration stops once the
     estimates are sure and costly challengers run only when they may pay back. Cheap models that
     report confidences are also probed until they can be judged as a cascade's first stage;
     `explore_floor` adds the paper's uniform exploration (off by default). The paired run's
     answer is not delivered unless a judge prefers it.
  6. Budgets (after LONDI-B): a hard spend limit per time window, per feed and globally ("*").
     A Lagrange-style price lambda (reward points per USD, grown while the window's spend runs
     ahead of its elapsed share) adds to k1. A guard keeps a reserve (safety x the calls expected
     in the rest of the window x the cheapest adequate model's mean cost) and assigns the best
     model whose dearest call so far (widened while few are known) still fits under
     limit x (1 - budget_margin), without exploration or escalation; untried models are tried one
     at a time while they fit. When nothing fits, the cheapest model is assigned and the view says
     the budget is exhausted: the limit holds as long as the cheapest call fits.
  7. Stale-policy correction (after Sparse-RL): feedback carries `policy_version` and
     `propensity`; feedback lagging the role's version by more than `max_policy_lag` is rejected,
     lagging feedback is weighted by pi_current(model)/propensity, clipped at
     `max_importance_weight` (feedback on the current version has weight 1).
  8. Failover: consecutive failures open a per-role circuit breaker for a model; it leaves the
     candidates, the next-best model is assigned (`fallbacks` gives the order), and after
     `breaker_cooldown_s` it is half-open: assignable again and closed by its next success.
  9. Confidence cascade: when models report a confidence (`confidence` in the outcome, e.g. the
     answer's log-probability), the learner also considers "call a cheap model, escalate to a
     stronger one when the cheap answer's confidence is below a threshold". Calibration is
     isotonic per (role, model); the gain of escalating at confidence c is an isotonic
     (decreasing) fit of (b ok - a ok) over calls on the same input, shrunk toward the
     conditional-independence model P(b ok | a ok)*p_a(c) + P(b ok | a wrong)*(1 - p_a(c)) - p_a(c);
     the threshold maximises the expected reward over a's recent confidences, and the plan is used
     when it beats the best single model.
  10. At-least-once delivery: duplicate `event_id`s are ignored. The ids are remembered for
      `dedupe_window_s` of the records' time (a replay after a worker restart repeats calls of
      the last seconds; a chunk re-sent after `chunk_timeout_s` repeats them minutes later) and
      at most `dedupe_capacity` of them (~250 B each), so at a low feedback rate the memory
      stops growing long before the count cap.
  11. Operator control: pin / unpin, ban / unban, add a model, retire the worst one per role
      (the paper replaced the worst LLM with a new one by hand); per-role latency SLOs.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from olp.errors import OlpError
from olp.learner_params import LearnerParams


class PolicyError(OlpError):
    """A request to the learner names an unknown role or model, or breaks a rule (e.g. empty pool)."""


class RoleRLParams(LearnerParams):
    """Every knob of the learner (fields and their meaning: `olp.learner_params.LearnerParams`).

    Defaults are the paper's where the paper has one; `paper()` is the paper's algorithm alone."""

    def __init__(self, **knobs: Any) -> None:
        try:
            super().__init__(**knobs)
        except ValidationError as exc:
            raise PolicyError(f"invalid learner parameters: {exc}") from exc

    @classmethod
    def paper(cls, **overrides: Any) -> RoleRLParams:
        """The paper's algorithm alone: its state, epsilon-greedy and k = -10 for a wrong answer."""
        base: dict[str, Any] = {
            "mode": "paper",
            "failure_quality": -10.0,
            "cascade": False,
            "contextual": False,
        }
        base.update(overrides)
        return cls(**base)

    def evidence_weight(self, source: str) -> float:
        """Weight of one label of `source` in the quality estimates: weight x (1 - 2 noise)^2."""
        for name, weight, noise in self.evidence:
            if name == source:
                return weight * (1.0 - 2.0 * min(0.5, noise)) ** 2
        return 1.0

    def slo(self, role: str) -> float | None:
        """The role's latency SLO in seconds, None when it has none."""
        for name, seconds in self.latency_slo_s:
            if name == role:
                return seconds
        return None
