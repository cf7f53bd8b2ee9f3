"""The project's metric instruments and the spans of a role's work: records consumed and sent,
dead letters, consumer lag and budget gauges, and one LLM call (GenAI semantic conventions).

Instruments are API proxies: they bind to the SDK once `configure_telemetry` installs it, and cost
next to nothing before. Every recording helper swallows its own errors (`safely`): telemetry never
breaks the data path."""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

from opentelemetry import metrics, trace
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.semconv._incubating.attributes import gen_ai_attributes as gen_ai
from opentelemetry.semconv._incubating.metrics import gen_ai_metrics
from opentelemetry.semconv.attributes import error_attributes, server_attributes
from opentelemetry.trace import Span, SpanKind, StatusCode

from olp.telemetry.setup import capture_message_content

log = logging.getLogger("olp.telemetry")
_tracer = trace.get_tracer("olp")


_meter = metrics.get_meter("olp")

_DURATION_BUCKETS = [0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92]
_TOKEN_BUCKETS = [1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304]

CONSUMED = _meter.create_counter(
    "messaging.client.consumed.messages",
    unit="{message}",
    description="Records a role took from its input topic (error.type set when it failed).",
)
SENT = _meter.create_counter(
    "messaging.client.sent.messages", unit="{message}", description="Records a role produced."
)
PROCESS_DURATION = _meter.create_histogram(
    "messaging.process.duration",
    unit="s",
    description="Time a role spent on one record.",
    explicit_bucket_boundaries_advisory=_DURATION_BUCKETS,
)
DEAD_LETTERS = _meter.create_counter(
    "olp.dlq.records", unit="{record}", description="Records sent to the dead-letter topic."
)
LLM_DURATION = _meter.create_histogram(
    gen_ai_metrics.GEN_AI_CLIENT_OPERATION_DURATION,
    unit="s",
    description="LLM call latency per model and role.",
    explicit_bucket_boundaries_advisory=_DURATION_BUCKETS,
)
LLM_TOKENS = _meter.create_histogram(
    gen_ai_metrics.GEN_AI_CLIENT_TOKEN_USAGE,
    unit="{token}",
    description="Tokens per LLM call (gen_ai.token.type = input | output).",
    explicit_bucket_boundaries_advisory=_TOKEN_BUCKETS,
)
LLM_COST = _meter.create_counter(
    "olp.llm.cost", unit="USD", description="Measured dollar cost of LLM calls (budget spend)."
)
LLM_SKIPPED = _meter.create_counter(
    "olp.llm.skipped",
    unit="{call}",
    description="Optional LLM calls (escalation, extra) skipped: the feed's LLM time budget was spent.",
)
FEEDBACK = _meter.create_counter(
    "olp.feedback.observed", unit="{outcome}", description="Role outcomes the learner observed."
)
REWARD = _meter.create_histogram(
    "olp.reward", unit="1", description="The paper's reward r = k*v - k1*c - k2*t of each outcome."
)
POLICY_UPDATES = _meter.create_counter(
    "olp.policy.updates", unit="{assignment}", description="Assignments published to the policy topic."
)

Observer = Callable[[], Iterable[Observation]]
_lag_observers: list[Observer] = []
_budget_observers: list[Observer] = []
_budget_limit_observers: list[Observer] = []


def _observe(observers: list[Observer]) -> Callable[[CallbackOptions], Iterable[Observation]]:
    def callback(_options: CallbackOptions) -> Iterable[Observation]:
        out: list[Observation] = []
        for observer in list(observers):
            try:
                out.extend(observer())
            except Exception as exc:  # a broken observer must not stop the export
                log.debug("metric observer failed: %s", exc)
        return out

    return callback


_meter.create_observable_gauge(
    "olp.consumer.lag",
    callbacks=[_observe(_lag_observers)],
    unit="{message}",
    description="Records not yet processed per input partition (fetch-reported high watermark).",
)
_meter.create_observable_gauge(
    "olp.budget.spent",
    callbacks=[_observe(_budget_observers)],
    unit="USD",
    description="Spend in the current budget window per feed.",
)
_meter.create_observable_gauge(
    "olp.budget.limit",
    callbacks=[_observe(_budget_limit_observers)],
    unit="USD",
    description="Budget limit of the current window per feed.",
)


def watch_consumer_lag(observer: Observer) -> None:
    _lag_observers.append(observer)


def watch_budget(spent: Observer, limit: Observer) -> Callable[[], None]:
    """Report budget gauges from these observers until the returned function is called."""
    _budget_observers.append(spent)
    _budget_limit_observers.append(limit)

    def unwatch() -> None:
        with contextlib.suppress(ValueError):
            _budget_observers.remove(spent)
            _budget_limit_observers.remove(limit)

    return unwatch


def safely(fn: Callable[..., None]) -> Callable[..., None]:
    def wrapper(*args: Any, **kwargs: Any) -> None:
        try:
            fn(*args, **kwargs)
        except Exception as exc:  # telemetry never breaks the data path
            log.debug("telemetry: %s failed: %s", fn.__name__, exc)

    wrapper.__name__ = fn.__name__
    wrapper.__doc__ = fn.__doc__
    return wrapper


# --- processors: records in and out ----------------------------------------------------------

_stage: contextvars.ContextVar[str] = contextvars.ContextVar("olp_stage", default="")


@contextlib.contextmanager
def stage_scope(stage: str) -> Iterator[None]:
    """Marks the role whose record is being processed, so records it sends count for it."""
    token = _stage.set(stage)
    try:
        yield
    finally:
        _stage.reset(token)


@safely
def record_consumed(stage: str, topic: str, duration_s: float, error_type: str | None = None) -> None:
    attrs = {"olp.stage": stage, "messaging.destination.name": topic, "messaging.system": "kafka"}
    if error_type:
        attrs[error_attributes.ERROR_TYPE] = error_type
    CONSUMED.add(1, attrs)
    PROCESS_DURATION.record(duration_s, attrs)


@safely
def record_sent(topic: str) -> None:
    SENT.add(
        1,
        {
            "olp.stage": _stage.get() or "none",
            "messaging.destination.name": topic,
            "messaging.system": "kafka",
        },
    )


@safely
def record_llm_skipped(role: str, model: str, feed: str, kind: str) -> None:
    attrs = {gen_ai.GEN_AI_REQUEST_MODEL: model, "olp.role": role, "olp.feed": feed, "olp.call": kind}
    LLM_SKIPPED.add(1, attrs)


@safely
def record_dead_letter(stage: str, error_type: str) -> None:
    DEAD_LETTERS.add(1, {"olp.stage": stage, "error.type": error_type})


def faust_consumer_lag(app: Any) -> Iterator[Observation]:
    """Lag per assigned input partition of a Faust app: high watermark (as the last fetch
    reported it; Tansu's ListOffsets is wrong, spec section 6) minus the next offset to read."""
    consumer, monitor = app.consumer, app.monitor
    read = dict(monitor.tp_read_offsets or {})
    committed = dict(monitor.tp_committed_offsets or {})
    ends = dict(monitor.tp_end_offsets or {})
    group = str(app.conf.id)
    for tp in list(consumer.assignment()):
        if tp.topic.endswith("-changelog"):
            continue
        try:
            end = consumer.highwater(tp)
        except Exception:
            end = None
        end = end if end is not None else ends.get(tp)
        position = read[tp] + 1 if tp in read else committed.get(tp)
        if end is None or position is None:
            continue
        yield Observation(
            max(0, int(end) - int(position)),
            {
                "messaging.destination.name": tp.topic,
                "messaging.destination.partition.id": str(tp.partition),
                "messaging.consumer.group.name": group,
            },
        )


# --- processors: LLM calls (GenAI semantic conventions) ------------------------------------


def start_llm_span(
    model: str,
    role: str,
    policy_version: int,
    propensity: float,
    attempt: int,
    server_url: str | None = None,
    messages: Sequence[Mapping[str, str]] | None = None,
    provider: str = gen_ai.GenAiProviderNameValues.OPENAI.value,
    structured: bool = False,
) -> contextlib.AbstractContextManager[Span]:
    """A CLIENT span `chat <model>` around one LLM call (and the feedback it produces)."""
    output_type = gen_ai.GenAiOutputTypeValues.JSON if structured else gen_ai.GenAiOutputTypeValues.TEXT
    attributes: dict[str, Any] = {
        gen_ai.GEN_AI_OPERATION_NAME: gen_ai.GenAiOperationNameValues.CHAT.value,
        gen_ai.GEN_AI_PROVIDER_NAME: provider,
        gen_ai.GEN_AI_OUTPUT_TYPE: output_type.value,
        gen_ai.GEN_AI_REQUEST_MODEL: model,
        "olp.role": role,
        "olp.policy_version": int(policy_version),
        "olp.propensity": float(propensity),
        "olp.attempt": int(attempt),
    }
    if server_url:
        from urllib.parse import urlsplit

        parts = urlsplit(server_url)
        if parts.hostname:
            attributes[server_attributes.SERVER_ADDRESS] = parts.hostname
        if parts.port:
            attributes[server_attributes.SERVER_PORT] = parts.port
    if messages is not None and capture_message_content():
        attributes[gen_ai.GEN_AI_INPUT_MESSAGES] = json.dumps(
            [
                {"role": m.get("role", "user"), "parts": [{"type": "text", "content": m.get("content", "")}]}
                for m in messages
            ]
        )
    return _tracer.start_as_current_span(
        f"chat {model}", kind=SpanKind.CLIENT, attributes=attributes, record_exception=False
    )


@safely
def record_llm_call(
    span: Span,
    role: str,
    model: str,
    feed: str,
    duration_s: float,
    tokens_in: int = 0,
    tokens_out: int = 0,
    cost_usd: float = 0.0,
    error_type: str | None = None,
    response_model: str | None = None,
    finish_reason: str | None = None,
    answer: str | None = None,
    response_id: str | None = None,
) -> None:
    """Attributes on the LLM span and the LLM metrics, in one place."""
    if span.is_recording():
        span.set_attribute(gen_ai.GEN_AI_USAGE_INPUT_TOKENS, int(tokens_in))
        span.set_attribute(gen_ai.GEN_AI_USAGE_OUTPUT_TOKENS, int(tokens_out))
        span.set_attribute("olp.cost_usd", float(cost_usd))
        span.set_attribute("olp.feed", feed)
        if response_model:
            span.set_attribute(gen_ai.GEN_AI_RESPONSE_MODEL, response_model)
        if finish_reason:
            span.set_attribute(gen_ai.GEN_AI_RESPONSE_FINISH_REASONS, [finish_reason])
        if response_id:
            span.set_attribute(gen_ai.GEN_AI_RESPONSE_ID, response_id)
        if answer is not None and capture_message_content():
            span.set_attribute(
                gen_ai.GEN_AI_OUTPUT_MESSAGES,
                json.dumps([{"role": "assistant", "parts": [{"type": "text", "content": answer}]}]),
            )
        if error_type:
            span.set_attribute(error_attributes.ERROR_TYPE, error_type)
            span.set_status(StatusCode.ERROR, error_type)
    attrs: dict[str, Any] = {
        gen_ai.GEN_AI_OPERATION_NAME: gen_ai.GenAiOperationNameValues.CHAT.value,
        gen_ai.GEN_AI_REQUEST_MODEL: model,
        "olp.role": role,
    }
    if error_type:
        attrs[error_attributes.ERROR_TYPE] = error_type
    LLM_DURATION.record(max(0.0, duration_s), attrs)
    if tokens_in or tokens_out:
        tokens = gen_ai.GenAiTokenTypeValues
        for count, kind in ((tokens_in, tokens.INPUT), (tokens_out, tokens.OUTPUT)):
            LLM_TOKENS.record(int(count), {**attrs, gen_ai.GEN_AI_TOKEN_TYPE: kind.value})
    if cost_usd:
        cost_attrs = {gen_ai.GEN_AI_REQUEST_MODEL: model, "olp.role": role, "olp.feed": feed}
        LLM_COST.add(float(cost_usd), cost_attrs)
