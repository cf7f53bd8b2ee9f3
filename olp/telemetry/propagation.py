"""Trace context in Kafka headers: extract it from a record, inject the current one for clients
no instrumentation covers."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.trace import NonRecordingSpan, SpanContext

log = logging.getLogger("olp.telemetry")


def header_carrier(headers: Any) -> dict[str, str]:
    """Kafka headers (list of pairs or mapping, bytes values) as a text carrier."""
    items = headers.items() if isinstance(headers, Mapping) else (headers or ())
    return {
        str(k): v.decode(errors="replace") if isinstance(v, bytes | bytearray) else str(v)
        for k, v in items
        if v is not None
    }


def extract_context(headers: Any) -> otel_context.Context:
    """The trace context a record's headers carry (empty context when none)."""
    return propagate.extract(header_carrier(headers))


def inject_headers() -> list[tuple[str, bytes]]:
    """The current trace context as Kafka headers, for clients no instrumentation covers."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return [(k, v.encode()) for k, v in carrier.items()]


def context_of(span_context: SpanContext) -> otel_context.Context:
    return trace.set_span_in_context(NonRecordingSpan(span_context))
