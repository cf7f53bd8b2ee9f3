"""The board of judges: strong models score a sample of the roles' answers (spec section 4).

The board is `JudgeSettings.models`, or, unset, every catalog model flagged `judge: true`
(`board_models`). For a sampled role call, every judge allowed to judge it is shown the role's own
prompt (so the server's cached prefix, system prompt + chunk transcript, is reused) followed by the
answer, and replies "correct" or a correction in the role's own answer form. A correction is
parsed with the role's own parser, so its ids are checked against the chunk like any answer.
Each judge's verdict becomes a score k in [-1, 1] (the k of the paper's reward r = k*v - c - t):

- correct: k = 1;
- Topic Locator: k = 2*IoU - 1 between the answer's span and the correction's (the paper's
  partial credit; several topics in one answer: the mean IoU over the corrected topics);
- Content Organizer: k = 2*similarity - 1, similarity = share of the topic's sentences the answer
  files under the same aspect as the correction (the paper's 11*similarity - 10, on our scale
  where a wrong answer is -1 instead of -10: `policy_store.learner.organizer_quality(s, -1)`);
- Topic Finder and Relationship Checker: no partial credit in the paper: k = 1 when the correction
  equals the answer (same names; same yes/no), else -1;
- a judge that says "incorrect" without a usable correction: k = -1.

The board's score is the weighted mean of its judges' scores (`JudgeSettings.weights`, default
equal; the policy store's board election can set them).

Who judges (`JudgeBoard.judges_for`): never the model that answered (a board whose only judge
answered skips the call: the canaries are the signal then); for a feed with
`external_judges: false`, only judges served on this machine (`ModelSpec.is_local`: a loopback
base_url), since a judge sees the transcript; nobody on a gold canary (scored exactly,
processors/canaries.py).

How often (`role_uncertainty`, `sample_rate_for`): judging everything costs more than the work,
so calls are sampled, and more where the learner's choice is open. From the role's current
Assignment: uncertainty 1 before any assignment, while untried models warm up or while a candidate
has no Q-value; 0 when pinned or with one candidate; else 1 - gap / settled_gap, where gap is the
best minus the second-best candidate's Q-value over the larger magnitude of the two. The rate
moves linearly from `JudgeSettings.settled_rate` (uncertainty 0) to `sample_rate` (uncertainty 1).

Writes, per judged call: one `JudgeVerdict` per judge to `olp.verdicts`
(schemas/judge_verdict.avsc: the judge, its score, its correction, what the judge call cost) and
one `RoleOutcome` with `source = "judge"` and `quality` = the board's score to `olp.feedback`, so
the policy store learns from it. That outcome keeps the judged call's cost and latency (its reward
is about that call) and carries what the judges' own calls cost in `judge_cost_usd`: judge spend,
for the feed's budget and every reported cost. With `apply_corrections`, the board is awaited and the best-
weighted judge's correction replaces the answer downstream (the paper's board); otherwise judging
runs beside the pipeline and never delays it.

Pure logic on top (prompt, schema, verdict parser, scores); `JudgeBoard`, the shell the role-call
shell invokes, at the bottom.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, is_dataclass
from typing import Any

from olp.catalog import Catalog
from olp.errors import ModelCallError, ParseError
from olp.settings import JudgeSettings, Settings
from processors.domain import (
    NO,
    YES,
    JsonSchema,
    Prompt,
    TopicSpan,
    as_bool,
    extract_json,
    name_key,
    span_iou,
)
from processors.evidence import CANARY_PREFIX
from processors.llm_budget import LlmTimeBudget

log = logging.getLogger("olp.processors.judge")

VERDICT_INSTRUCTIONS = (
    "Check that answer against the transcript and the task above. "
    'If it is right, reply with JSON: {"correct": true}. '
    'If it is wrong, reply with JSON: {"correct": false, "correction": ...}, where correction is '
    "the right answer in exactly the JSON form the task asks for."
)


@dataclass(frozen=True, slots=True)
class Verdict:
    """One judge's reply: correct, or not with (maybe) a parsed correction."""

    correct: bool
    correction: Any = None
    """The role's parsed answer value the judge proposes; None when it gave none usable."""


# --- prompt and schema -----------------------------------------------------------------------


def build_prompt(role_prompt: Sequence[Mapping[str, str]], answer_text: str) -> Prompt:
    """The role's own prompt (system + transcript + task), then the answer and the question.

    Same prefix as the role call, so a llama.cpp judge that just served (or judged) this chunk
    does not evaluate the transcript again.
    """
    messages = [{"role": str(m["role"]), "content": str(m["content"])} for m in role_prompt[:2]]
    if len(messages) < 2 or messages[-1]["role"] != "user":
        raise ValueError("a role prompt is a system message and a user message")
    answer = " ".join(answer_text.split())[:4000]
    messages[-1]["content"] += f"\n\nAn assistant answered:\n{answer}\n\n{VERDICT_INSTRUCTIONS}"
    return messages


def answer_schema(role_schema: Mapping[str, Any] | None) -> JsonSchema:
    """{"correct": bool, "correction": <the role's answer schema>} (correction optional)."""
    correction: JsonSchema = dict(role_schema) if role_schema else {"type": "object"}
    return {
        "type": "object",
        "properties": {"correct": {"type": "boolean"}, "correction": correction},
        "required": ["correct"],
        "additionalProperties": False,
    }


# --- verdicts --------------------------------------------------------------------------------

_CORRECT = (*YES, "correct", "right", "正确", "对")
_WRONG = (*NO, "incorrect", "wrong", "错误", "不对", "不正确")


def parse_verdict(text: str | None, parse_role_answer: Callable[[str], Any]) -> Verdict:
    """A judge's reply -> Verdict. Raises ParseError on junk.

    Accepts {"correct": bool} (also "yes"/"no" strings, or the keys `verdict` / `is_correct`),
    with an optional `correction` holding the role's answer (JSON object or array, or a string
    holding one); the correction goes through the role's own parser and is dropped (None) when
    that rejects it. An object with a correction but no verdict counts as "not correct".
    """
    value = extract_json(text)
    if not isinstance(value, dict):
        raise ParseError("a verdict is a JSON object")
    raw = next((value[k] for k in ("correct", "verdict", "is_correct") if k in value), None)
    correct = as_bool(raw, _CORRECT, _WRONG)
    correction_raw = value.get("correction")
    if correct is None:
        if correction_raw is None:
            raise ParseError(f"no verdict in the judge's answer: {raw!r:.40}")
        correct = False
    if correct:
        return Verdict(True)
    correction = None
    if correction_raw is not None:
        text_form = correction_raw if isinstance(correction_raw, str) else json.dumps(correction_raw)
        try:
            correction = parse_role_answer(text_form)
        except ParseError:
            correction = None
    return Verdict(False, correction)


# --- scores (k in [-1, 1]) ---------------------------------------------------------------------


def aspect_similarity(answer: Mapping[str, Sequence[int]], correction: Mapping[str, Sequence[int]]) -> float:
    """Share of the sentences (in either) that both file under the same aspect."""
    where_a = {sid: name for name, ids in answer.items() for sid in ids}
    where_c = {sid: name for name, ids in correction.items() for sid in ids}
    sentences = set(where_a) | set(where_c)
    if not sentences:
        return 1.0
    same = sum(1 for sid in sentences if sid in where_a and where_a.get(sid) == where_c.get(sid))
    return same / len(sentences)


def score(role: str, answer: Any, verdict: Verdict) -> float:
    """The judge's k for `answer` (module docstring)."""
    if verdict.correct:
        return 1.0
    correction = verdict.correction
    if correction is None:
        return -1.0
    if role == "topic_locator":
        if isinstance(answer, tuple) and isinstance(correction, tuple):
            return 2.0 * span_iou(answer, correction) - 1.0
        if isinstance(answer, list) and isinstance(correction, list):  # batched: list of TopicSpan
            return 2.0 * _mean_topic_iou(answer, correction) - 1.0
    if role == "content_organizer" and isinstance(answer, Mapping) and isinstance(correction, Mapping):
        return 2.0 * aspect_similarity(answer, correction) - 1.0
    if role == "topic_finder" and isinstance(answer, list) and isinstance(correction, list):
        return 1.0 if [name_key(str(n)) for n in answer] == [name_key(str(n)) for n in correction] else -1.0
    return 1.0 if _same(answer, correction) else -1.0


def agreement(role: str, a: Any, b: Any) -> float:
    """How far two answers to the same input agree, in [0, 1], by the judge's rules: span IoU
    (mean over the topics of `b` for batched spans), aspect similarity, and for topic names the
    Jaccard overlap of their keys (names are free text: the judge's all-or-nothing rule would
    make two nearly equal lists disagree completely); other answers: equal or not."""
    if role == "topic_locator":
        if isinstance(a, tuple) and isinstance(b, tuple):
            return span_iou(a, b)
        if isinstance(a, list) and isinstance(b, list):
            return _mean_topic_iou(a, b)
    if role == "content_organizer" and isinstance(a, Mapping) and isinstance(b, Mapping):
        return aspect_similarity(a, b)
    if role == "topic_finder" and isinstance(a, list) and isinstance(b, list):
        keys_a, keys_b = {name_key(str(n)) for n in a}, {name_key(str(n)) for n in b}
        union = keys_a | keys_b
        return len(keys_a & keys_b) / len(union) if union else 1.0
    return 1.0 if _same(a, b) else 0.0


def _mean_topic_iou(answer: Sequence[Any], correction: Sequence[Any]) -> float:
    given = {name_key(s.name): (s.first_id, s.last_id) for s in answer if isinstance(s, TopicSpan)}
    right = [s for s in correction if isinstance(s, TopicSpan)]
    if not right:
        return 0.0
    total = 0.0
    for s in right:
        key = name_key(s.name)
        total += span_iou(given[key], (s.first_id, s.last_id)) if key in given else 0.0
    return total / len(right)


def _same(a: Any, b: Any) -> bool:
    if is_dataclass(a) and is_dataclass(b) and not isinstance(a, type) and not isinstance(b, type):
        return asdict(a) == asdict(b)
    return bool(a == b)


def board_score(scores: Mapping[str, float], weights: Mapping[str, float] | None = None) -> float | None:
    """Weighted mean of the judges' scores; equal weights when none (or none positive) apply."""
    if not scores:
        return None
    weights = weights or {}
    total = sum(max(0.0, weights.get(j, 0.0)) for j in scores)
    if total <= 0:
        return sum(scores.values()) / len(scores)
    return sum(max(0.0, weights.get(j, 0.0)) * k for j, k in scores.items()) / total


def chosen_correction(verdicts: Mapping[str, Verdict], weights: Mapping[str, float] | None = None) -> Any:
    """The correction that replaces the answer downstream: the heaviest judge's, among judges
    that said "incorrect" and gave a usable correction, when they outweigh the judges that said
    "correct"; None otherwise."""
    weights = weights or {}

    def weight(judge: str) -> float:
        return weights.get(judge, 1.0)

    against = {j: v for j, v in verdicts.items() if not v.correct and v.correction is not None}
    if not against:
        return None
    if sum(weight(j) for j in against) <= sum(weight(j) for j, v in verdicts.items() if v.correct):
        return None
    best = max(sorted(against), key=weight)
    return against[best].correction


def describe(value: Any) -> str:
    """An answer value as compact JSON for the verdict record."""
    if isinstance(value, list) and value and all(isinstance(v, TopicSpan) for v in value):
        value = [asdict(v) for v in value]
    elif is_dataclass(value) and not isinstance(value, type):
        value = asdict(value)
    return json.dumps(value, ensure_ascii=False, default=str)[:4000]


# --- who judges, and how often ------------------------------------------------------------------


def board_models(judges: JudgeSettings, catalog: Catalog) -> tuple[str, ...]:
    """The board: `judges.models` when set, else every catalog model flagged `judge: true`."""
    if judges.models is not None:
        return tuple(judges.models)
    return tuple(m.name for m in catalog.models if m.judge)


def feed_judges(
    settings: Settings, catalog: Catalog, board: Sequence[str]
) -> Callable[[str], tuple[str, ...]]:
    """feed name -> the board members it allows: all, or only local ones (loopback base_url)
    when the feed forbids external judges (they would see its transcripts)."""
    local = tuple(j for j in board if catalog.model(j).is_local)

    def permitted(feed: str) -> tuple[str, ...]:
        return tuple(board) if settings.feed(feed).external_judges else local

    return permitted


def role_uncertainty(assignment: Mapping[str, Any] | None, settled_gap: float) -> float:
    """How unsure a role's choice of model is, in [0, 1], from its Assignment.

    1 before any assignment, while untried models warm up, or while a candidate has no Q-value;
    0 when pinned or with one candidate (nothing to choose). Otherwise from the gap between the
    best and the second-best candidate's Q-value relative to the larger magnitude of the two:
    1 - gap / settled_gap, floored at 0 (a role whose leader is `settled_gap` ahead is settled).
    """
    if assignment is None or assignment.get("warmup"):
        return 1.0
    if assignment.get("pinned"):
        return 0.0
    candidates = list(assignment.get("candidates") or ())
    if len(candidates) < 2:
        return 0.0
    q = assignment.get("q_values") or {}
    if any(c not in q for c in candidates):
        return 1.0
    best, second = sorted((float(q[c]) for c in candidates), reverse=True)[:2]
    gap = (best - second) / max(abs(best), abs(second), 1e-9)
    return max(0.0, 1.0 - gap / settled_gap) if settled_gap > 0 else 0.0


def sample_rate_for(uncertainty: float, uncertain_rate: float, settled_rate: float) -> float:
    """The judging rate: `uncertain_rate` at uncertainty 1, `settled_rate` at 0, linear between."""
    u = max(0.0, min(1.0, uncertainty))
    return settled_rate + (uncertain_rate - settled_rate) * u


# --- shell: the board the role-call shell invokes --------------------------------------------

Emit = Callable[[str, str, str, dict[str, Any]], Awaitable[None]]
"""emit(topic, key, record_type, record)."""


@dataclass(frozen=True, slots=True)
class JudgedCall:
    """A role call the board may judge (what `RoleCaller` knows after a parsed answer)."""

    role: str
    model: str
    event_id: str
    prompt: Sequence[Mapping[str, str]]
    answer_text: str
    value: Any
    parse: Callable[[str], Any]
    schema: Mapping[str, Any] | None
    outcome: Mapping[str, Any]
    """The RoleOutcome the processor recorded for the call (context, cost, latency)."""


def _feed(call: JudgedCall) -> str:
    return str(call.outcome.get("feed") or "default")


class JudgeBoard:
    """Samples role calls, asks the judges allowed to judge each, publishes verdicts and the
    board's score.

    `gateway` is the worker's ModelGateway; `emit` sends a record (the pipeline's `send`).
    `permitted(feed)` names the judges a feed allows (`feed_judges`); `assignment_of(role)` is the
    role's current Assignment, from which the sample rate adapts (`sample_rate_for`): from
    `sample_rate` while the role's choice is uncertain down to `settled_rate` once it is settled.
    `budget` is the worker's LLM time per feed (processors/llm_budget.py): judging only teaches,
    so a sampled call is judged only by the judges the feed's bucket covers, the others skipped
    and counted like skipped duels.
    """

    def __init__(
        self,
        gateway: Any,
        models: Sequence[str],
        emit: Emit,
        verdicts_topic: str,
        feedback_topic: str,
        rng: random.Random,
        *,
        sample_rate: float,
        settled_rate: float | None = None,
        settled_gap: float = 0.5,
        roles: Sequence[str] | None = None,
        weights: Mapping[str, float] | None = None,
        apply_corrections: bool = False,
        max_pending: int = 4,
        permitted: Callable[[str], Sequence[str]] | None = None,
        assignment_of: Callable[[str], Mapping[str, Any] | None] | None = None,
        budget: LlmTimeBudget | None = None,
    ) -> None:
        self._gateway = gateway
        self.models = tuple(models)
        self._emit = emit
        self._verdicts_topic = verdicts_topic
        self._feedback_topic = feedback_topic
        self._rng = rng
        self.sample_rate = sample_rate
        self.settled_rate = sample_rate if settled_rate is None else settled_rate
        self.settled_gap = settled_gap
        self.roles = set(roles) if roles else None
        self.weights = dict(weights or {})
        self.apply_corrections = apply_corrections
        self._pending: set[asyncio.Task[Any]] = set()
        self._max_pending = max_pending
        self._permitted = permitted
        self._assignment_of = assignment_of
        self._budget = budget
        self.skipped = 0

    def rate(self, role: str) -> float:
        """The share of `role`'s calls judged now."""
        assignment = self._assignment_of(role) if self._assignment_of is not None else None
        if self._assignment_of is None:
            return self.sample_rate
        u = role_uncertainty(assignment, self.settled_gap)
        return sample_rate_for(u, self.sample_rate, self.settled_rate)

    def wants(self, role: str) -> bool:
        """Sample this call? (Drawn once per successful call.)"""
        if not self.models or (self.roles is not None and role not in self.roles):
            return False
        return self._rng.random() < self.rate(role)

    def judges_for(self, call: JudgedCall) -> tuple[str, ...]:
        """The judges that may judge `call`: never the model that answered, only those its feed
        allows, none on a canary (scored exactly against its labels)."""
        if str(call.outcome.get("stream_id") or "").startswith(CANARY_PREFIX):
            return ()
        feed = _feed(call)
        allowed = self._permitted(feed) if self._permitted is not None else self.models
        return tuple(j for j in self.models if j != call.model and j in allowed)

    async def review(self, call: JudgedCall) -> Any:
        """Judge `call` if sampled; returns the value to pass downstream (maybe a correction)."""
        if not self.judges_for(call) or not self.wants(call.role):
            return call.value
        judges = self.affordable(call)
        if not judges:
            return call.value
        if self.apply_corrections:
            correction = await self.judge(call, judges)
            return call.value if correction is None else correction
        if len(self._pending) >= self._max_pending:  # the board is behind: skip, never queue up
            self.skipped += 1
            return call.value
        task = asyncio.create_task(self.judge(call, judges))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)
        return call.value

    def affordable(self, call: JudgedCall) -> tuple[str, ...]:
        """The judges of `call` its feed's LLM time budget covers now; the others are skipped."""
        judges, budget = self.judges_for(call), self._budget
        if budget is None:
            return judges
        return tuple(budget.admit(_feed(call), call.role, "judge", judges))

    async def judge(self, call: JudgedCall, judges: Sequence[str] | None = None) -> Any:
        """Ask every judge (or `judges`), publish the verdicts and the board's score; the chosen
        correction."""
        prompt = build_prompt(call.prompt, call.answer_text)
        schema = answer_schema(call.schema)
        verdicts: dict[str, Verdict] = {}
        scores: dict[str, float] = {}
        spent = 0.0
        for judge in self.judges_for(call) if judges is None else judges:
            started = time.monotonic()
            record: dict[str, Any] = {
                "event_id": f"{call.event_id}:judge:{judge}",
                "judged_event_id": call.event_id,
                "role": call.role,
                "model": call.model,
                "judge": judge,
                "correct": None,
                "score": None,
                "answer": describe(call.value),
                "correction": None,
                "stream_id": str(call.outcome.get("stream_id") or ""),
                "chunk_id": str(call.outcome.get("chunk_id") or ""),
                "latency_ms": 0.0,
                "tokens_in": 0,
                "tokens_out": 0,
                "cost_usd": 0.0,
                "error": None,
                "ts_ms": int(time.time() * 1000),
            }
            held = self._budget.begin(_feed(call), judge) if self._budget is not None else 0.0
            try:
                completion = await self._gateway.complete(judge, prompt, schema)
                if self._budget is not None:
                    self._budget.spend(_feed(call), judge, completion.latency_ms / 1000.0, held)
                    held = 0.0
                record.update(
                    latency_ms=completion.latency_ms,
                    tokens_in=completion.tokens_in,
                    tokens_out=completion.tokens_out,
                    cost_usd=completion.cost_usd,
                )
                spent += completion.cost_usd
                verdict = parse_verdict(completion.text, call.parse)
            except (ModelCallError, ParseError) as exc:
                record.update(error=f"{type(exc).__name__}: {exc}"[:500])
                if not record["latency_ms"]:
                    record["latency_ms"] = (time.monotonic() - started) * 1000.0
            else:
                verdicts[judge] = verdict
                scores[judge] = score(call.role, call.value, verdict)
                record.update(
                    correct=verdict.correct,
                    score=scores[judge],
                    correction=None if verdict.correction is None else describe(verdict.correction),
                )
            if self._budget is not None and held:  # the judge failed: its seconds are not booked
                self._budget.release(_feed(call), held)
            await self._safe_emit(self._verdicts_topic, call.role, "JudgeVerdict", record)
        k = board_score(scores, self.weights)
        if k is not None:
            feedback = {
                **dict(call.outcome),
                "event_id": f"{call.event_id}:board",
                "quality": max(-1.0, min(1.0, k)),
                "source": "judge",
                "judge_cost_usd": spent,
                "ts_ms": int(time.time() * 1000),
            }
            await self._safe_emit(self._feedback_topic, call.role, "RoleOutcome", feedback)
        return chosen_correction(verdicts, self.weights)

    async def _safe_emit(self, topic: str, key: str, record_type: str, record: dict[str, Any]) -> None:
        try:
            await self._emit(topic, key, record_type, record)
        except Exception:  # a lost verdict must not break the data path
            log.exception("could not publish a %s", record_type)

    async def close(self) -> None:
        """Wait for the judging in flight (bounded by the gateway's timeouts)."""
        if self._pending:
            await asyncio.gather(*self._pending, return_exceptions=True)
