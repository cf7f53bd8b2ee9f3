"""One LLM role call, the way every LLM role makes it (spec sections 3-4):

choose the model from the policy (epsilon-greedy, with propensity and policy version) -> ask it
through the gateway -> parse the answer with the role's pure parser -> on junk, re-ask once with
the parser's complaint -> on model faults or persistent junk, fail over to the next-best model.
Every attempt becomes a RoleOutcome for `olp.feedback` (schemas/role_outcome.avsc) with measured
latency, token counts and cost, and a span with the GenAI semantic-convention attributes.
"""

from __future__ import annotations

import random
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from opentelemetry import trace
from opentelemetry.trace import Span

from olp import telemetry
from olp.errors import ModelCallError, OlpError, ParseError
from processors.judge import JudgedCall
from processors.model_gateway import Completion, ModelGateway
from processors.policy_view import Choice, PolicyView

T = TypeVar("T")
FeedbackSink = Callable[[dict[str, Any]], Awaitable[None]]
JudgeHook = Callable[[JudgedCall], Awaitable[Any]]


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


@dataclass(frozen=True, slots=True)
class Answer(Generic[T]):
    value: T
    model: str


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
        self._last_model: str | None = None
        self._last_success = True

    async def ask(
        self,
        messages: Sequence[Mapping[str, str]],
        parse: Callable[[str], T],
        ctx: CallContext,
        json_schema: Mapping[str, Any] | None = None,
        allowed_models: Sequence[str] | None = None,
    ) -> Answer[T]:
        choice = self._policy.choose(self.role, self._rng, allowed_models)
        errors: list[str] = []
        for rank, model in enumerate((choice.model, *choice.fallbacks)):
            propensity = choice.propensity if rank == 0 else 1.0
            conversation = [dict(m) for m in messages]
            for attempt in range(1 + self._reask):
                outcome_id = f"{ctx.chunk_id}:{self.role}:{ctx.call_key}:{model}:{attempt}"
                # One span per call; the feedback record is sent inside it, so it carries the
                # call's trace context to the policy store.
                with self._span(model, choice, propensity, attempt, conversation) as span:
                    started = time.monotonic()
                    try:
                        completion = await self._gateway.complete(model, conversation, json_schema)
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
                        await self._record(outcome_id, model, choice, propensity, ctx, None, str(exc))
                        break  # a model fault: the next model, not a re-ask
                    self._annotate(span, model, ctx, completion)
                    try:
                        value = parse(completion.text)
                    except ParseError as exc:
                        span.set_attribute("error.type", "ParseError")
                        span.set_status(trace.StatusCode.ERROR, "unusable answer")
                        errors.append(f"{model}: {exc}")
                        await self._record(outcome_id, model, choice, propensity, ctx, completion, str(exc))
                        complaint = f"That answer was invalid ({exc}). Reply again with only the JSON."
                        conversation += [
                            {"role": "assistant", "content": completion.text[:2000]},
                            {"role": "user", "content": complaint},
                        ]
                        continue
                    outcome = await self._record(outcome_id, model, choice, propensity, ctx, completion, None)
                    if self._judge is not None:
                        value = await self._judge(
                            JudgedCall(
                                self.role, model, outcome_id, messages, completion.text, value, parse,
                                json_schema, outcome,
                            )
                        )
                    return Answer(value, model)
        raise RoleFailed(f"{self.role}: no model gave a usable answer: {'; '.join(errors)[:1000]}")

    # --- telemetry (GenAI semantic conventions; olp/telemetry.py) --------------------------

    def _span(
        self,
        model: str,
        choice: Choice,
        propensity: float,
        attempt: int,
        conversation: Sequence[Mapping[str, str]],
    ) -> AbstractContextManager[Span]:
        try:
            base_url: str | None = self._gateway.catalog.model(model).base_url
        except Exception:
            base_url = None
        return telemetry.start_llm_span(
            model, self.role, choice.policy_version, propensity, attempt, base_url, conversation
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
        )

    async def _record(
        self,
        event_id: str,
        model: str,
        choice: Choice,
        propensity: float,
        ctx: CallContext,
        completion: Completion | None,
        error: str | None,
    ) -> dict[str, Any]:
        outcome = {
            "event_id": event_id,
            "role": self.role,
            "model": model,
            "policy_version": choice.policy_version,
            "propensity": propensity,
            "prev_model": self._last_model,
            "prev_success": self._last_success,
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
        }
        self._last_model, self._last_success = model, error is None
        await self._emit(outcome)
        return outcome
