"""One LLM role call, the way every LLM role makes it (spec sections 3-4):

draw the call plan from the policy for the chunk's context (processors/policy_view.py,
olp/call_plan.py: primary model with its propensity and the policy version, extras, cascade,
failover order) -> ask the primary through the gateway -> parse the answer with the role's pure
parser -> on junk, re-ask once with the parser's complaint -> on model faults or persistent junk,
fail over (to the cascade's stronger model first, then the next-best). Extras (warm-up of untried
models, exploration duels) are asked the same input concurrently and recorded, but the primary's
answer is delivered without waiting for them (an extra's only when every other model failed); their
outcomes and the evidence that compares them follow when they answer (`settle` waits for them).
Cascade: when the primary's answer has a confidence (token logprobs, or an encoder's `Confident`
answer) below the plan's threshold, the stronger model is asked and its answer delivered if it
parses; no confidence counts as not low. This is the LONDI-style switch: a cheap encoder first, the
LLM only where the encoder is unsure.
The feed's LLM time budget (processors/llm_budget.py) holds the optional LLM calls: extras and
escalations it does not cover are skipped and counted; the primary, re-asks and failover spend.
An encoder model (catalog `kind: encoder`) answers through the role's `encode` task instead of a
prompt (processors/encoder.py): same plan, same parsed answer type, same RoleOutcome (tokens
embedded, compute cost, measured latency, confidence); a role that gives no task cannot use encoders.
Every attempt becomes a RoleOutcome for `olp.feedback` (schemas/role_outcome.avsc) with measured
latency, token counts, cost and confidence, and a span with the GenAI semantic-convention attributes;
a parsed answer carries no quality (`source = processor`, `quality` null). Quality evidence
(processors/evidence.py): models that answered the same input (extras, cascade) are compared with
the judge's rules (`source = agreement`, both sides); on a gold canary chunk every usable answer
is scored by the role's `grade` (`source = canary`) and none is judged.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from opentelemetry import trace
from opentelemetry.trace import Span

from olp import telemetry
from olp.call_plan import CallPlan
from olp.catalog import ModelSpec
from olp.errors import ModelCallError, OlpError, ParseError
from processors.encoder import EncoderTask
from processors.evidence import evidence_outcome, is_canary
from processors.judge import JudgedCall, agreement
from processors.llm_budget import LlmTimeBudget
from processors.model_gateway import Completion, InputRejected, ModelGateway
from processors.policy_view import PolicyView

T = TypeVar("T")
log = logging.getLogger(__name__)
FeedbackSink = Callable[[dict[str, Any]], Awaitable[None]]
JudgeHook = Callable[[JudgedCall], Awaitable[Any]]
Grade = Callable[[Any], float | None]
"""A canary's exact score of one parsed answer, k in [-1, 1]; None: this answer cannot be scored."""


class RoleFailed(OlpError):
    """Every candidate model failed or answered junk for this call."""


@dataclass(frozen=True, slots=True)
class CallContext:
    """Where a call happens: identifies it (for idempotent feedback) and gives Role-RL its context."""

    stream_id: str
    chunk_id: str
    domain: str
    lang: str
    feed: str
    chunk_size: int
    call_key: str = "0"
    """Distinguishes several calls of one role on one chunk (e.g. one per topic)."""

    def learner_context(self) -> dict[str, Any]:
        """What Role-RL decides on, named as in a RoleOutcome (olp/contexts.py reads them)."""
        return {"domain": self.domain, "lang": self.lang, "chunk_size": self.chunk_size, "feed": self.feed}

    @classmethod
    def for_chunk(cls, chunk: Mapping[str, Any], call_key: str = "0") -> CallContext:
        """The context of a call about an Avro Chunk (schemas/chunk.avsc)."""
        return cls(
            stream_id=str(chunk["stream_id"]),
            chunk_id=str(chunk["chunk_id"]),
            domain=str(chunk["domain"]),
            lang=str(chunk["lang"]),
            feed=str(chunk["feed"]),
            chunk_size=len(chunk["sentences"]),
            call_key=call_key,
        )


@dataclass(frozen=True, slots=True)
class Answer(Generic[T]):
    value: T
    model: str
    outcome: Mapping[str, Any] | None = None
    """The RoleOutcome recorded for the delivered call (for evidence about it later)."""


@dataclass(frozen=True, slots=True)
class _Call(Generic[T]):
    """One `ask`: what every model of its plan is asked."""

    messages: Sequence[Mapping[str, str]]
    parse: Callable[[str], T]
    ctx: CallContext
    json_schema: Mapping[str, Any] | None
    plan: CallPlan
    policy_version: int
    encode: EncoderTask[T] | None = None


@dataclass(frozen=True, slots=True)
class _Got(Generic[T]):
    """A usable answer of one model, with its completion and the RoleOutcome recorded for it."""

    value: T
    model: str
    completion: Completion
    outcome: dict[str, Any]
    event_id: str


class RoleCaller:
    """Makes one role's LLM calls for one worker; remembers the paper's state (last model, success)."""

    def __init__(
        self,
        role: str,
        gateway: ModelGateway,
        policy: PolicyView,
        emit_feedback: FeedbackSink,
        rng: random.Random,
        reask: int = 1,
        judge: JudgeHook | None = None,
        budget: LlmTimeBudget | None = None,
    ) -> None:
        self.role = role
        self._gateway = gateway
        self._policy = policy
        self._emit = emit_feedback
        self._rng = rng
        self._reask = reask
        self._judge = judge
        """The judge board's `review` (processors/judge.py): may judge a sample of the parsed
        answers, and may replace an answer with the board's correction."""
        self._budget = budget
        """The worker's LLM seconds per feed (processors/llm_budget.py): optional calls it does
        not cover are skipped."""
        self._last_model: str | None = None
        self._last_success = True
        self._settling: set[asyncio.Future[None]] = set()
        """Extras still running after their call's answer was delivered."""

    async def ask(
        self,
        messages: Sequence[Mapping[str, str]],
        parse: Callable[[str], T],
        ctx: CallContext,
        json_schema: Mapping[str, Any] | None = None,
        allowed_models: Sequence[str] | None = None,
        grade: Grade | None = None,
        encode: EncoderTask[T] | None = None,
    ) -> Answer[T]:
        """Run the call plan drawn from the policy; deliver one parsed answer or raise RoleFailed.
        `grade` scores the answers to a canary chunk (processors/canaries.py); `encode` is how an
        encoder model gives the same answer (processors/similarity.py)."""
        context = self._policy.context_key(ctx.learner_context())
        version = self._policy.version(self.role, context)  # the plan's version: no await between
        plan = self._policy.choose(self.role, self._rng, allowed_models, context)
        call = _Call(messages, parse, ctx, json_schema, plan, version, encode)
        prev = (self._last_model, self._last_success)  # the state the extras act from
        extras = self._admitted([m for m, _ in plan.extras if m != plan.primary], "extra", ctx, plan.primary)
        # (their LLM seconds are held from here: the extras start only once this call awaits)
        # Failover: the cascade's stronger model first (a junk answer is as low as confidence
        # gets), then the fallbacks; models already running as extras are not asked twice.
        order = [plan.primary]
        for m in (plan.escalate_to, *plan.fallbacks):
            if m is not None and m not in order and m not in extras:
                order.append(m)
        errors: list[str] = []
        running = [
            asyncio.ensure_future(self._try(call, m, p, errors, prev, extras[m]))
            for m, p in plan.extras
            if m in extras
        ]
        primary = await self._first_usable(call, order, errors)
        others: list[_Got[T] | None] = []
        if primary is None and running:  # an extra's answer is not lost when every other failed
            others = list(await asyncio.gather(*running))
            running = []
        got = primary
        escalated: _Got[T] | None = None
        if (
            got is not None
            and got.model == plan.primary
            and plan.escalate_to is not None
            and plan.escalate_below is not None
            and (confidence := _confidence(got.completion)) is not None
            and confidence < plan.escalate_below
            and (admitted_now := self._admitted([plan.escalate_to], "escalation", ctx))
        ):
            # Confidence cascade: the cheap answer is unsure; the stronger model's answer wins if usable.
            escalated = await self._try(
                call, plan.escalate_to, 1.0, errors, None, admitted_now[plan.escalate_to]
            )
            got = escalated or got
        if got is None:  # the primary and every fallback failed: an extra's answer is not lost
            got = next((r for r in others if r is not None), None)
        if got is None:
            raise RoleFailed(f"{self.role}: no model gave a usable answer: {'; '.join(errors)[:1000]}")
        answered = [g for g in (primary, escalated, *others) if g is not None]
        await self._evidence(got, answered, ctx, grade)
        if running:
            # Extras (warm-up runs, duels) teach the learner but never hold up the answer: a
            # local LLM beside an encoder takes seconds where the encoder took milliseconds.
            self._settle_later(self._evidence_after(running, got, ctx, grade))
        value = got.value
        if self._judge is not None and not is_canary(ctx.stream_id):
            value = await self._judge(
                JudgedCall(
                    self.role,
                    got.model,
                    got.event_id,
                    messages,
                    got.completion.text,
                    got.value,
                    parse,
                    json_schema,
                    got.outcome,
                )
            )
        return Answer(value, got.model, got.outcome)

    async def _evidence_after(
        self,
        running: Sequence[asyncio.Future[_Got[T] | None]],
        got: _Got[T],
        ctx: CallContext,
        grade: Grade | None,
    ) -> None:
        """The evidence the extras give once they have answered: their canary scores, or their
        agreement with the delivered answer."""
        extras = await asyncio.gather(*running)
        await self._evidence(got, [g for g in extras if g is not None], ctx, grade)

    def _settle_later(self, work: Awaitable[None]) -> None:
        task = asyncio.ensure_future(work)
        self._settling.add(task)
        task.add_done_callback(self._settled)

    def _settled(self, task: asyncio.Future[None]) -> None:
        self._settling.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("%s: recording a call's extras failed: %r", self.role, task.exception())

    async def settle(self, timeout_s: float | None = None) -> None:
        """Wait for the extras still running (their outcomes and evidence); at shutdown, those
        not done within `timeout_s` are cancelled: only feedback is lost, never a document."""
        if not self._settling:
            return
        _done, pending = await asyncio.wait(set(self._settling), timeout=timeout_s)
        for task in pending:
            task.cancel()

    def _admitted(
        self, optional: Sequence[str], kind: str, ctx: CallContext, primary: str | None = None
    ) -> dict[str, float | None]:
        """The optional calls (`kind`: extra or escalation) the feed's LLM time budget covers,
        after the primary's own call, each with the LLM seconds held for it from now on (None:
        an encoder or no budget); the others are skipped and counted."""
        budget = self._budget
        if budget is None:
            return dict.fromkeys(optional, None)

        def cost(model: str) -> float:
            return 0.0 if self._is_encoder(model) else budget.expected(model)

        reserve = cost(primary) if primary is not None else 0.0
        make = budget.admit(ctx.feed, self.role, kind, optional, cost, reserve)
        return {m: None if self._is_encoder(m) else budget.begin(ctx.feed, m) for m in make}

    async def _evidence(
        self, got: _Got[T], answered: Sequence[_Got[T]], ctx: CallContext, grade: Grade | None
    ) -> None:
        """Canary scores of every usable answer; else agreement of each other answer with the
        delivered one."""
        if is_canary(ctx.stream_id):
            for each in answered:
                quality = grade(each.value) if grade is not None else None
                if quality is not None:
                    await self._emit(evidence_outcome(each.outcome, "canary", quality, "canary"))
            return
        for other in answered:
            if other.model == got.model:
                continue
            k = 2.0 * agreement(self.role, got.value, other.value) - 1.0
            await self._emit(evidence_outcome(got.outcome, "agreement", k, f"agree:{other.model}"))
            await self._emit(evidence_outcome(other.outcome, "agreement", k, f"agree:{got.model}"))

    async def _first_usable(self, call: _Call[T], order: Sequence[str], errors: list[str]) -> _Got[T] | None:
        """The first model in `order` that gives a usable answer (the primary with its propensity)."""
        for rank, model in enumerate(order):
            got = await self._try(call, model, call.plan.propensity if rank == 0 else 1.0, errors)
            if got is not None:
                return got
        return None

    async def _try(
        self,
        call: _Call[T],
        model: str,
        propensity: float,
        errors: list[str],
        prev: tuple[str | None, bool] | None = None,
        held: float | None = None,
    ) -> _Got[T] | None:
        """Ask one model, re-asking on junk; one RoleOutcome per attempt. None when it gave nothing
        usable. `prev` fixes the paper's state for a call beside the primary (which does not move it);
        `held`: the LLM seconds its admission already holds for the first attempt."""
        ctx, version = call.ctx, call.policy_version
        if self._is_encoder(model):
            return await self._try_encoder(call, model, propensity, errors, prev)
        conversation = [dict(m) for m in call.messages]
        for attempt in range(1 + self._reask):
            outcome_id = f"{ctx.chunk_id}:{self.role}:{ctx.call_key}:{model}:{attempt}"
            # One span per call; the feedback record is sent inside it, so it carries the
            # call's trace context to the policy store.
            with self._span(
                model, version, propensity, attempt, conversation, call.json_schema is not None
            ) as span:
                started = time.monotonic()
                if held is None:
                    held = self._budget.begin(ctx.feed, model) if self._budget is not None else 0.0
                try:
                    completion = await self._gateway.complete(model, conversation, call.json_schema)
                except InputRejected as exc:
                    # The input's fault, not the model's: no other model is asked and none is
                    # charged; the worker dead-letters the chunk with the provider's reason.
                    span.set_attribute("error.type", exc.reason)
                    self._release(ctx.feed, held)
                    raise
                except asyncio.CancelledError:  # an extra cut off when the worker stops
                    self._release(ctx.feed, held)
                    raise
                except ModelCallError as exc:
                    telemetry.record_llm_call(
                        span,
                        self.role,
                        model,
                        ctx.feed,
                        time.monotonic() - started,
                        error_type=type(exc).__name__,
                    )
                    errors.append(f"{model}: {exc}")
                    self._spend(ctx.feed, model, time.monotonic() - started, held)
                    await self._record(outcome_id, model, version, propensity, ctx, None, str(exc), prev)
                    return None  # a model fault: the next model, not a re-ask
                self._spend(ctx.feed, model, completion.latency_ms / 1000.0, held)
                held = None  # a re-ask is a new call
                self._annotate(span, model, ctx, completion)
                try:
                    value = call.parse(completion.text)
                except ParseError as exc:
                    span.set_attribute("error.type", "ParseError")
                    span.set_status(trace.StatusCode.ERROR, "unusable answer")
                    errors.append(f"{model}: {exc}")
                    await self._record(
                        outcome_id, model, version, propensity, ctx, completion, str(exc), prev
                    )
                    complaint = f"That answer was invalid ({exc}). Reply again with only the JSON."
                    conversation += [
                        {"role": "assistant", "content": completion.text[:2000]},
                        {"role": "user", "content": complaint},
                    ]
                    continue
                outcome = await self._record(
                    outcome_id, model, version, propensity, ctx, completion, None, prev
                )
                return _Got(value, model, completion, outcome, outcome_id)
        return None

    def _release(self, feed: str, held: float) -> None:
        if self._budget is not None:
            self._budget.release(feed, held)

    def _spend(self, feed: str, model: str, seconds: float, held: float) -> None:
        if self._budget is not None:
            self._budget.spend(feed, model, seconds, held)

    def _is_encoder(self, model: str) -> bool:
        try:
            return self._gateway.catalog.model(model).kind == "encoder"
        except Exception:
            return False

    async def _try_encoder(
        self,
        call: _Call[T],
        model: str,
        propensity: float,
        errors: list[str],
        prev: tuple[str | None, bool] | None,
    ) -> _Got[T] | None:
        """Ask an encoder model: one attempt (it answers the same again), one RoleOutcome."""
        ctx, version = call.ctx, call.policy_version
        outcome_id = f"{ctx.chunk_id}:{self.role}:{ctx.call_key}:{model}:0"
        with self._span(model, version, propensity, 0, call.messages, False) as span:
            if call.encode is None:
                error = f"{model}: the role {self.role} has no encoder task"
                errors.append(error)
                await self._record(outcome_id, model, version, propensity, ctx, None, error, prev)
                return None
            started = time.monotonic()
            try:
                value, completion = await self._gateway.encode(model, call.encode)
            except ModelCallError as exc:
                elapsed = time.monotonic() - started
                error_type = type(exc).__name__
                telemetry.record_llm_call(span, self.role, model, ctx.feed, elapsed, error_type=error_type)
                errors.append(f"{model}: {exc}")
                await self._record(outcome_id, model, version, propensity, ctx, None, str(exc), prev)
                return None
            self._annotate(span, model, ctx, completion)
            outcome = await self._record(outcome_id, model, version, propensity, ctx, completion, None, prev)
            return _Got(value, model, completion, outcome, outcome_id)

    # --- telemetry (GenAI semantic conventions; olp/telemetry.py) --------------------------

    def _span(
        self,
        model: str,
        policy_version: int,
        propensity: float,
        attempt: int,
        conversation: Sequence[Mapping[str, str]],
        structured: bool,
    ) -> AbstractContextManager[Span]:
        try:
            spec: ModelSpec | None = self._gateway.catalog.model(model)
        except Exception:
            spec = None
        return telemetry.start_llm_span(
            model,
            self.role,
            policy_version,
            propensity,
            attempt,
            spec.base_url if spec else None,
            conversation,
            provider=spec.provider_name if spec else "openai",
            structured=structured,
        )

    def _annotate(self, span: Span, model: str, ctx: CallContext, completion: Completion) -> None:
        telemetry.record_llm_call(
            span,
            self.role,
            model,
            ctx.feed,
            completion.latency_ms / 1000.0,
            completion.tokens_in,
            completion.tokens_out,
            completion.cost_usd,
            response_model=completion.model,
            finish_reason=completion.finish_reason,
            answer=completion.text,
            response_id=completion.response_id,
        )

    async def _record(
        self,
        event_id: str,
        model: str,
        policy_version: int,
        propensity: float,
        ctx: CallContext,
        completion: Completion | None,
        error: str | None,
        prev: tuple[str | None, bool] | None = None,
    ) -> dict[str, Any]:
        prev_model, prev_success = prev if prev is not None else (self._last_model, self._last_success)
        outcome = {
            "event_id": event_id,
            "role": self.role,
            "model": model,
            "policy_version": policy_version,
            "propensity": propensity,
            "prev_model": prev_model,
            "prev_success": prev_success,
            "domain": ctx.domain,
            "lang": ctx.lang,
            "feed": ctx.feed,
            "chunk_size": ctx.chunk_size,
            "latency_ms": completion.latency_ms if completion else 0.0,
            "tokens_in": completion.tokens_in if completion else 0,
            "tokens_out": completion.tokens_out if completion else 0,
            "cost_usd": completion.cost_usd if completion else 0.0,
            "success": error is None,
            "error": error[:500] if error else None,
            "quality": None,
            "source": "processor",
            "stream_id": ctx.stream_id,
            "chunk_id": ctx.chunk_id,
            "ts_ms": int(time.time() * 1000),
            "confidence": _confidence(completion),
            "judge_cost_usd": 0.0,
        }
        if prev is None:  # calls beside the primary do not move the paper's state
            self._last_model, self._last_success = model, error is None
        await self._emit(outcome)
        return outcome


def _confidence(completion: Completion | None) -> float | None:
    """The completion's confidence; None without one (also for gateways that report none)."""
    value = getattr(completion, "confidence", None)
    return None if value is None else float(value)
