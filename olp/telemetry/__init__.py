"""OpenTelemetry for every process: SDK set-up once, the project's instruments, and the few
trace-shaping helpers the services share (spec section 7; STYLE 9).

Code elsewhere talks to the OpenTelemetry *API* only; `configure_telemetry` (called once by each
entry point) installs the SDK and the standard instrumentations when the standard variables ask
for export, and leaves the API a no-op otherwise, so tracing off costs next to nothing.

Configuration (standard `OTEL_*` variables only; nothing project-specific):

- Traces: `OTEL_TRACES_EXPORTER` = `otlp`, `console` or `none` (comma-separated). Unset means
  `otlp` when `OTEL_EXPORTER_OTLP_ENDPOINT` / `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` is set, else
  off. OTLP is OTLP/HTTP protobuf; the exporter reads every other `OTEL_EXPORTER_OTLP_*` variable
  itself, the batch processor the `OTEL_BSP_*` ones. `OTEL_EXPORTER_OTLP_PROTOCOL=grpc` uses
  OTLP/gRPC when the optional `opentelemetry-exporter-otlp-proto-grpc` is installed (it pulls in
  grpcio), else HTTP/protobuf with a warning.
- Metrics: `OTEL_METRICS_EXPORTER` = `otlp`, `console`, `prometheus` or `none`; unset follows
  the OTLP endpoint like traces. `prometheus` serves the scrape text on the process's own HTTP
  port at `/metrics` (policy store and worker web port); `OTEL_METRIC_EXPORT_INTERVAL` applies.
- `OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_SDK_DISABLED`, `OTEL_TRACES_SAMPLER` as
  usual; the sampler only adds one rule: Faust's table changelog writes, flushed from a background
  buffer without a parent, are dropped instead of each becoming a one-span trace.
- `OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT=true` (the GenAI conventions' opt-in) puts
  prompts and answers on LLM spans; without it, spans and logs never hold prompt text.

Instrumentations installed with tracing: aiokafka (every producer send opens a PRODUCER span and
writes W3C `traceparent` into the record's headers; plain consumers' `getmany` opens receive
spans), aiohttp client (model calls) and aiohttp server (policy store API; probes and the
dashboard's polling excluded unless `OTEL_PYTHON_AIOHTTP_SERVER_EXCLUDED_URLS` says otherwise).
Faust's fetcher is not covered by the aiokafka instrumentation, so `processors.app.Pipeline`
extracts the context from each record's headers and opens the per-record CONSUMER span itself.

The package, by concern (everything is re-exported here, so callers import from `olp.telemetry`):

    setup.py         `configure_telemetry` -> the process's `Telemetry` handle (SDK, instrumentations)
    instruments.py   metric instruments; record and LLM-call spans of the processors
    propagation.py   trace context <-> Kafka headers
    segments.py      the Chunk Splitter's "one segment, one trace" (`SegmentTraces`)
    policy_spans.py  the policy store's feedback, verdict and policy-update spans
    logs.py          redaction of every log record, JSON lines with trace ids

Logs: `install_log_redaction` (installed by `configure_telemetry`) masks secret values and
tokens in every log record and cuts messages longer than `MAX_LOG_CHARS` unless the debug flag
(`log_prompts`) is on; `configure_logging` / `logging_config` make them JSON lines carrying the
current trace and span ids.

A telemetry failure never breaks the data path: set-up errors disable telemetry with a warning,
helpers swallow and log their own errors.
"""

from olp.telemetry.instruments import (
    CONSUMED,
    DEAD_LETTERS,
    FEEDBACK,
    LLM_COST,
    LLM_DURATION,
    LLM_SKIPPED,
    LLM_TOKENS,
    POLICY_UPDATES,
    PROCESS_DURATION,
    REWARD,
    SENT,
    Observer,
    faust_consumer_lag,
    record_consumed,
    record_dead_letter,
    record_llm_call,
    record_llm_skipped,
    record_sent,
    stage_scope,
    start_llm_span,
    watch_budget,
    watch_consumer_lag,
)
from olp.telemetry.logs import (
    MAX_LOG_CHARS,
    JsonFormatter,
    Redaction,
    configure_logging,
    install_log_redaction,
    logging_config,
    redact,
)
from olp.telemetry.policy_spans import (
    feedback_span,
    policy_update_span,
    record_feedback,
    record_policy_update,
)
from olp.telemetry.propagation import context_of, extract_context, header_carrier, inject_headers
from olp.telemetry.segments import SegmentTraces
from olp.telemetry.setup import (
    Telemetry,
    capture_message_content,
    configure_telemetry,
    current,
    kafka_instrumented,
    prometheus_text,
)

__all__ = [
    "CONSUMED",
    "DEAD_LETTERS",
    "FEEDBACK",
    "LLM_COST",
    "LLM_DURATION",
    "LLM_SKIPPED",
    "LLM_TOKENS",
    "MAX_LOG_CHARS",
    "POLICY_UPDATES",
    "PROCESS_DURATION",
    "REWARD",
    "SENT",
    "JsonFormatter",
    "Observer",
    "Redaction",
    "SegmentTraces",
    "Telemetry",
    "capture_message_content",
    "configure_logging",
    "configure_telemetry",
    "context_of",
    "current",
    "extract_context",
    "faust_consumer_lag",
    "feedback_span",
    "header_carrier",
    "inject_headers",
    "install_log_redaction",
    "kafka_instrumented",
    "logging_config",
    "policy_update_span",
    "prometheus_text",
    "record_consumed",
    "record_dead_letter",
    "record_feedback",
    "record_llm_call",
    "record_llm_skipped",
    "record_policy_update",
    "record_sent",
    "redact",
    "stage_scope",
    "start_llm_span",
    "watch_budget",
    "watch_consumer_lag",
]
