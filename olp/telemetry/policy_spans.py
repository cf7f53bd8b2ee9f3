"""The policy store's spans: one per feedback record (continuing the trace of the LLM call that
produced it), judge verdicts, and one per published assignment (continuing the feedback that
changed it)."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Mapping, Sequence
from typing import Any

from opentelemetry import trace
from opentelemetry.semconv._incubating.attributes.gen_ai_attributes import GEN_AI_REQUEST_MODEL
from opentelemetry.trace import Link, Span, SpanContext, SpanKind

from olp.telemetry.instruments import FEEDBACK, POLICY_UPDATES, REWARD, safely
from olp.telemetry.propagation import context_of, extract_context

log = logging.getLogger("olp.telemetry")
_tracer = trace.get_tracer("olp")


def feedback_span(message: Any) -> contextlib.AbstractContextManager[Span]:
    """A CONSUMER span for one feedback record, continuing the trace of the LLM call that
    produced it (its headers). Renamed by `record_feedback` once the record is decoded."""
    try:
        parent = extract_context(getattr(message, "headers", None))
    except Exception:
        parent = None
    return _tracer.start_as_current_span(
        "feedback process",
        context=parent,
        kind=SpanKind.CONSUMER,
        attributes={
            "messaging.system": "kafka",
            "messaging.destination.name": str(getattr(message, "topic", "")),
            "messaging.destination.partition.id": str(getattr(message, "partition", "")),
            "messaging.kafka.offset": int(getattr(message, "offset", -1)),
        },
    )


@safely
def record_feedback(span: Span, outcome: Mapping[str, Any], changed: bool, reward: float | None) -> None:
    """Name and annotate the feedback span (a judge verdict gets its own name) and count it."""
    source = str(outcome.get("source") or "processor")
    role, model = str(outcome.get("role")), str(outcome.get("model"))
    if span.is_recording():
        span.update_name(f"judge verdict {role}" if source == "judge" else f"feedback {source} {role}")
        span.set_attribute("olp.role", role)
        span.set_attribute(GEN_AI_REQUEST_MODEL, model)
        span.set_attribute("olp.feedback.source", source)
        span.set_attribute("olp.policy.changed", bool(changed))
        span.set_attribute("olp.policy_version", int(outcome.get("policy_version") or 0))
        if outcome.get("quality") is not None:
            span.set_attribute("olp.quality", float(outcome["quality"]))
        if reward is not None:
            span.set_attribute("olp.reward", float(reward))
    attrs = {"olp.role": role, GEN_AI_REQUEST_MODEL: model, "olp.feedback.source": source}
    FEEDBACK.add(1, {**attrs, "olp.policy.changed": bool(changed)})
    if reward is not None:
        REWARD.record(float(reward), attrs)


def policy_update_span(
    role: str, causes: Sequence[SpanContext] = ()
) -> contextlib.AbstractContextManager[Span]:
    """A span per published assignment. With `causes` (the feedback spans that changed the
    role's choice) it continues the newest cause's trace and links the others; without, it is
    a child of the current span (an operator's HTTP call, the initial assignment)."""
    valid = [c for c in causes if c.is_valid]
    ctx = context_of(valid[-1]) if valid else None
    links = [Link(c) for c in valid[:-1]][-64:]
    return _tracer.start_as_current_span(
        f"policy update {role}",
        context=ctx,
        kind=SpanKind.PRODUCER,
        links=links,
        attributes={"olp.role": role},
    )


@safely
def record_policy_update(span: Span, record: Mapping[str, Any]) -> None:
    if span.is_recording():
        span.set_attribute("olp.policy.model", str(record.get("model")))
        span.set_attribute("olp.policy.context", str(record.get("context") or "*"))
        span.set_attribute("olp.policy_version", int(record.get("version") or 0))
        span.set_attribute("olp.policy.reason", str(record.get("reason") or "")[:200])
    POLICY_UPDATES.add(
        1, {"olp.role": str(record.get("role")), GEN_AI_REQUEST_MODEL: str(record.get("model"))}
    )
