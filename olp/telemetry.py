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

**One segment, one trace.** The Chunk Splitter batches K segments into one chunk, and a span has
one parent. Decision: a chunk's trace continues the trace of the segment that *completed* it (the
chunk's newest sentence that this chunk carries for the first time); the chunk's emit span links
to the other new segments' contexts (and to the record that released it, e.g. the previous
chunk's ChunkDone). So the trace started by ingesting a segment holds its splitter span and, for
the completing segment, every role, every LLM call, the feedback and the policy update it
caused; the other segments' traces are reachable over links. The segment contexts are kept in
memory per worker (`SegmentTraces`, bounded); after a restart or rebalance a chunk whose
segments another process saw simply continues the current context.

Logs: `install_log_redaction` (installed by `configure_telemetry`) masks secret values and
tokens in every log record and cuts messages longer than `MAX_LOG_CHARS` unless the debug flag
(`log_prompts`) is on; `configure_logging` / `logging_config` make them JSON lines carrying the
current trace and span ids.

A telemetry failure never breaks the data path: set-up errors disable telemetry with a warning,
helpers swallow and log their own errors.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import os
import re
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from opentelemetry import context as otel_context
from opentelemetry import metrics, propagate, trace
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.trace import Link, NonRecordingSpan, Span, SpanContext, SpanKind, StatusCode

if TYPE_CHECKING:
    from opentelemetry.sdk.trace.sampling import Sampler, SamplingResult

log = logging.getLogger("olp.telemetry")

_configured = False
_prometheus_enabled = False
_kafka_instrumented = False

# --- set-up (once per process) --------------------------------------------------------------


def _exporters(signal: str, env: Mapping[str, str]) -> list[str]:
    raw = env.get(f"OTEL_{signal.upper()}_EXPORTER")
    if raw is None:
        endpoint = env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or env.get(
            f"OTEL_EXPORTER_OTLP_{signal.upper()}_ENDPOINT"
        )
        return ["otlp"] if endpoint else []
    return [n for n in (p.strip().lower() for p in raw.split(",")) if n and n != "none"]


def configure_telemetry(service_name: str, env: Mapping[str, str] | None = None) -> bool:
    """Install the SDK (traces, metrics) and the instrumentations if export is configured.

    Idempotent: only the first call in a process does anything. True when something was installed.
    Also installs the log-record redaction (`install_log_redaction`), which needs no SDK.
    """
    global _configured, _prometheus_enabled
    install_log_redaction()
    if _configured:
        return False
    _configured = True
    env = os.environ if env is None else env
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    traces, metric_exporters = _exporters("traces", env), _exporters("metrics", env)
    if not (traces or metric_exporters):
        return False
    try:
        from opentelemetry.sdk.resources import SERVICE_NAME, Resource

        resource = Resource.create({SERVICE_NAME: env.get("OTEL_SERVICE_NAME") or service_name})
        if traces:
            _install_tracing(resource, traces, env)
        if metric_exporters:
            _prometheus_enabled = _install_metrics(resource, metric_exporters, env)
        if traces:
            _install_instrumentations(env)
        log.info("telemetry on: traces=%s metrics=%s", traces or "off", metric_exporters or "off")
        return True
    except Exception as exc:  # telemetry must never take the service down
        log.warning("telemetry disabled: %s: %s", type(exc).__name__, exc)
        return False


def _otlp_grpc(signal: str, env: Mapping[str, str]) -> bool:
    """True when the standard variables ask for OTLP over gRPC and its exporter is installed
    (`opentelemetry-exporter-otlp-proto-grpc`, optional: it pulls in grpcio). Otherwise OTLP goes
    over HTTP/protobuf, the one installed by default; asking for another protocol logs a warning."""
    protocol = env.get(f"OTEL_EXPORTER_OTLP_{signal.upper()}_PROTOCOL") or env.get(
        "OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"
    )
    if protocol == "http/protobuf":
        return False
    if protocol == "grpc":
        try:
            import opentelemetry.exporter.otlp.proto.grpc  # noqa: F401
        except ImportError:
            log.warning("OTLP/gRPC asked for but not installed; exporting %s over HTTP/protobuf", signal)
            return False
        return True
    log.warning("OTLP protocol %r not available; exporting %s over HTTP/protobuf", protocol, signal)
    return False


def _install_tracing(resource: Any, names: Sequence[str], env: Mapping[str, str]) -> None:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
    from opentelemetry.sdk.trace.sampling import _get_from_env_or_default

    # The sampler the standard OTEL_TRACES_SAMPLER variables choose, minus one kind of noise.
    provider = TracerProvider(
        resource=resource, sampler=_skip_orphan_changelog_writes(_get_from_env_or_default())
    )
    for name in names:
        exporter: SpanExporter
        if name == "otlp":
            if _otlp_grpc("traces", env):
                from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
                    OTLPSpanExporter as GrpcSpanExporter,
                )

                exporter = GrpcSpanExporter()
            else:
                from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

                exporter = OTLPSpanExporter()
        elif name == "console":
            exporter = ConsoleSpanExporter()
        else:
            log.warning("unknown OTEL_TRACES_EXPORTER %r ignored", name)
            continue
        provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)


def _skip_orphan_changelog_writes(inner: Sampler) -> Sampler:
    """A sampler that drops Faust's table changelog writes when they have no parent: Faust
    flushes them from a background buffer, so the aiokafka instrumentation would otherwise open
    a one-span trace per table update. The record's own processing span already covers it."""
    from opentelemetry.sdk.trace.sampling import Decision, SamplingResult
    from opentelemetry.sdk.trace.sampling import Sampler as SdkSampler

    class SkipOrphanChangelogWrites(SdkSampler):
        def should_sample(
            self,
            parent_context: otel_context.Context | None,
            trace_id: int,
            name: str,
            kind: SpanKind | None = None,
            attributes: Any = None,
            links: Sequence[Link] | None = None,
            trace_state: Any = None,
        ) -> SamplingResult:
            if name.endswith("-changelog send") and not (
                trace.get_current_span(parent_context).get_span_context().is_valid
            ):
                return SamplingResult(Decision.DROP)
            return inner.should_sample(parent_context, trace_id, name, kind, attributes, links, trace_state)

        def get_description(self) -> str:
            return f"SkipOrphanChangelogWrites{{{inner.get_description()}}}"

    return SkipOrphanChangelogWrites()


def _install_metrics(resource: Any, names: Sequence[str], env: Mapping[str, str]) -> bool:
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import (
        ConsoleMetricExporter,
        MetricReader,
        PeriodicExportingMetricReader,
    )

    readers: list[MetricReader] = []
    prometheus = False
    for name in names:
        if name == "otlp":
            if _otlp_grpc("metrics", env):
                from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import (
                    OTLPMetricExporter as GrpcMetricExporter,
                )

                readers.append(PeriodicExportingMetricReader(GrpcMetricExporter()))
            else:
                from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter

                readers.append(PeriodicExportingMetricReader(OTLPMetricExporter()))
        elif name == "console":
            readers.append(PeriodicExportingMetricReader(ConsoleMetricExporter()))
        elif name == "prometheus":
            from opentelemetry.exporter.prometheus import PrometheusMetricReader

            readers.append(PrometheusMetricReader())
            prometheus = True
        else:
            log.warning("unknown OTEL_METRICS_EXPORTER %r ignored", name)
    metrics.set_meter_provider(MeterProvider(resource=resource, metric_readers=readers))
    return prometheus


def _install_instrumentations(env: Mapping[str, str]) -> None:
    """The standard instrumentations; each one that fails is skipped with a warning."""
    if "OTEL_PYTHON_AIOHTTP_SERVER_EXCLUDED_URLS" not in env and env is os.environ:
        # Probes, scrapes and the dashboard's polling would drown the traces that matter.
        os.environ["OTEL_PYTHON_AIOHTTP_SERVER_EXCLUDED_URLS"] = "healthz,readyz,metrics,dashboard"

    def aiokafka() -> None:
        global _kafka_instrumented
        from opentelemetry.instrumentation.aiokafka import AIOKafkaInstrumentor

        AIOKafkaInstrumentor().instrument()
        _kafka_instrumented = True

    def aiohttp_client() -> None:
        from opentelemetry.instrumentation.aiohttp_client import AioHttpClientInstrumentor

        AioHttpClientInstrumentor().instrument()

    def aiohttp_server() -> None:
        from opentelemetry.instrumentation.aiohttp_server import AioHttpServerInstrumentor

        AioHttpServerInstrumentor().instrument()

    for install in (aiokafka, aiohttp_client, aiohttp_server):
        try:
            install()
        except Exception as exc:
            log.warning("instrumentation %s not installed: %s", install.__name__, exc)


def kafka_instrumented() -> bool:
    """True when the aiokafka instrumentation writes trace context into produced headers."""
    return _kafka_instrumented


def prometheus_text() -> tuple[bytes, str] | None:
    """The Prometheus scrape body and content type, when the prometheus reader is installed."""
    if not _prometheus_enabled:
        return None
    from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST


def capture_message_content(env: Mapping[str, str] | None = None) -> bool:
    """The GenAI conventions' opt-in for prompts and answers on spans (off by default)."""
    value = (os.environ if env is None else env).get("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "")
    return value.strip().lower() == "true"


_tracer = trace.get_tracer("olp")

# --- instruments (API proxies: they bind to the SDK once `configure_telemetry` installs it) ----

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
    "gen_ai.client.operation.duration",
    unit="s",
    description="LLM call latency per model and role.",
    explicit_bucket_boundaries_advisory=_DURATION_BUCKETS,
)
LLM_TOKENS = _meter.create_histogram(
    "gen_ai.client.token.usage",
    unit="{token}",
    description="Tokens per LLM call (gen_ai.token.type = input | output).",
    explicit_bucket_boundaries_advisory=_TOKEN_BUCKETS,
)
LLM_COST = _meter.create_counter(
    "olp.llm.cost", unit="USD", description="Measured dollar cost of LLM calls (budget spend)."
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


def _safely(fn: Callable[..., None]) -> Callable[..., None]:
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


@_safely
def record_consumed(stage: str, topic: str, duration_s: float, error_type: str | None = None) -> None:
    attrs = {"olp.stage": stage, "messaging.destination.name": topic, "messaging.system": "kafka"}
    if error_type:
        attrs["error.type"] = error_type
    CONSUMED.add(1, attrs)
    PROCESS_DURATION.record(duration_s, attrs)


@_safely
def record_sent(topic: str) -> None:
    SENT.add(
        1,
        {
            "olp.stage": _stage.get() or "none",
            "messaging.destination.name": topic,
            "messaging.system": "kafka",
        },
    )


@_safely
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
) -> contextlib.AbstractContextManager[Span]:
    """A CLIENT span `chat <model>` around one LLM call (and the feedback it produces)."""
    attributes: dict[str, Any] = {
        "gen_ai.operation.name": "chat",
        "gen_ai.request.model": model,
        "olp.role": role,
        "olp.policy_version": int(policy_version),
        "olp.propensity": float(propensity),
        "olp.attempt": int(attempt),
    }
    if server_url:
        from urllib.parse import urlsplit

        parts = urlsplit(server_url)
        if parts.hostname:
            attributes["server.address"] = parts.hostname
        if parts.port:
            attributes["server.port"] = parts.port
    if messages is not None and capture_message_content():
        attributes["gen_ai.input.messages"] = json.dumps(
            [
                {"role": m.get("role", "user"), "parts": [{"type": "text", "content": m.get("content", "")}]}
                for m in messages
            ]
        )
    return _tracer.start_as_current_span(
        f"chat {model}", kind=SpanKind.CLIENT, attributes=attributes, record_exception=False
    )


@_safely
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
) -> None:
    """Attributes on the LLM span and the LLM metrics, in one place."""
    if span.is_recording():
        span.set_attribute("gen_ai.usage.input_tokens", int(tokens_in))
        span.set_attribute("gen_ai.usage.output_tokens", int(tokens_out))
        span.set_attribute("olp.cost_usd", float(cost_usd))
        span.set_attribute("olp.feed", feed)
        if response_model:
            span.set_attribute("gen_ai.response.model", response_model)
        if finish_reason:
            span.set_attribute("gen_ai.response.finish_reasons", [finish_reason])
        if answer is not None and capture_message_content():
            span.set_attribute(
                "gen_ai.output.messages",
                json.dumps([{"role": "assistant", "parts": [{"type": "text", "content": answer}]}]),
            )
        if error_type:
            span.set_attribute("error.type", error_type)
            span.set_status(StatusCode.ERROR, error_type)
    attrs: dict[str, Any] = {"gen_ai.operation.name": "chat", "gen_ai.request.model": model, "olp.role": role}
    if error_type:
        attrs["error.type"] = error_type
    LLM_DURATION.record(max(0.0, duration_s), attrs)
    if tokens_in or tokens_out:
        LLM_TOKENS.record(int(tokens_in), {**attrs, "gen_ai.token.type": "input"})
        LLM_TOKENS.record(int(tokens_out), {**attrs, "gen_ai.token.type": "output"})
    if cost_usd:
        LLM_COST.add(float(cost_usd), {"gen_ai.request.model": model, "olp.role": role, "olp.feed": feed})


# --- Kafka headers <-> context -------------------------------------------------------------


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


# --- Chunk Splitter: one segment, one trace (see the module docstring) ----------------------


class SegmentTraces:
    """Remembers the span context under which each segment reached the splitter (bounded)."""

    def __init__(self, max_segments: int = 20_000, max_links: int = 64) -> None:
        self._contexts: OrderedDict[tuple[str, int], SpanContext] = OrderedDict()
        self._max = max_segments
        self._max_links = max_links

    def __len__(self) -> int:
        return len(self._contexts)

    def remember(self, stream_id: str, segment_id: int, span_context: SpanContext) -> None:
        if not span_context.is_valid:
            return  # tracing off: nothing to continue
        key = (str(stream_id), int(segment_id))
        self._contexts[key] = span_context
        self._contexts.move_to_end(key)
        while len(self._contexts) > self._max:
            self._contexts.popitem(last=False)

    def take(self, chunk: Mapping[str, Any]) -> tuple[SpanContext | None, list[Link]]:
        """(parent, links) for a chunk: the newest segment it carries for the first time is the
        parent, the other first-time segments are links. Each segment is used once."""
        if not self._contexts:
            return None, []
        stream = str(chunk["stream_id"])
        found = [
            (int(s["id"]), sc)
            for s in chunk["sentences"]
            if (sc := self._contexts.pop((stream, int(s["id"])), None)) is not None
        ]
        if not found:
            return None, []
        found.sort(key=lambda item: item[0])
        parent = found[-1][1]
        links = [Link(sc, {"olp.segment_id": sid}) for sid, sc in found[:-1]][-self._max_links :]
        return parent, links

    @contextlib.contextmanager
    def chunk_span(self, chunk: Mapping[str, Any]) -> Iterator[None]:
        """Around sending a chunk: continue the completing segment's trace (module docstring)."""
        try:
            parent, links = self.take(chunk)
            current = trace.get_current_span().get_span_context()
            if parent is None:
                ctx = None
            else:
                ctx = context_of(parent)
                if current.is_valid and current.trace_id != parent.trace_id:
                    links.append(Link(current, {"olp.link": "released_by"}))
            span_cm: contextlib.AbstractContextManager[Any] = _tracer.start_as_current_span(
                "chunk_splitter emit",
                context=ctx,
                kind=SpanKind.INTERNAL,
                links=links,
                attributes={
                    "olp.stream_id": str(chunk["stream_id"]),
                    "olp.chunk_id": str(chunk["chunk_id"]),
                    "olp.chunk.sentences": len(chunk["sentences"]),
                    "olp.chunk.linked_segments": len(links),
                },
            )
        except Exception as exc:
            log.debug("telemetry: chunk span failed: %s", exc)
            span_cm = contextlib.nullcontext()
        with span_cm:
            yield


# --- policy store: feedback, judge verdicts and policy updates ------------------------------


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


@_safely
def record_feedback(span: Span, outcome: Mapping[str, Any], changed: bool, reward: float | None) -> None:
    """Name and annotate the feedback span (a judge verdict gets its own name) and count it."""
    source = str(outcome.get("source") or "processor")
    role, model = str(outcome.get("role")), str(outcome.get("model"))
    if span.is_recording():
        span.update_name(f"judge verdict {role}" if source == "judge" else f"feedback {source} {role}")
        span.set_attribute("olp.role", role)
        span.set_attribute("gen_ai.request.model", model)
        span.set_attribute("olp.feedback.source", source)
        span.set_attribute("olp.policy.changed", bool(changed))
        span.set_attribute("olp.policy_version", int(outcome.get("policy_version") or 0))
        if outcome.get("quality") is not None:
            span.set_attribute("olp.quality", float(outcome["quality"]))
        if reward is not None:
            span.set_attribute("olp.reward", float(reward))
    attrs = {"olp.role": role, "gen_ai.request.model": model, "olp.feedback.source": source}
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


@_safely
def record_policy_update(span: Span, record: Mapping[str, Any]) -> None:
    if span.is_recording():
        span.set_attribute("olp.policy.model", str(record.get("model")))
        span.set_attribute("olp.policy_version", int(record.get("version") or 0))
        span.set_attribute("olp.policy.reason", str(record.get("reason") or "")[:200])
    POLICY_UPDATES.add(
        1, {"olp.role": str(record.get("role")), "gen_ai.request.model": str(record.get("model"))}
    )


# --- logs: redaction and structure ---------------------------------------------------------

_SECRET_PATTERNS = [
    re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/=-]{6,}"),
    re.compile(r"\bsk-[A-Za-z0-9_-]{12,}"),
    re.compile(r"(?i)((?:api[_-]?key|token|password|secret)[\"']?\s*[:=]\s*[\"']?)[^\s\"',;&]{4,}"),
]
MAX_LOG_CHARS = 2000
"""Longer log messages are cut: prompts and transcripts never reach logs whole by accident."""

_redaction: dict[str, Any] = {"secrets": (), "log_prompts": False, "installed": False}


def redact(text: str, secrets: Iterable[str] = (), max_chars: int | None = MAX_LOG_CHARS) -> str:
    """`text` with known secret values and secret-looking tokens masked, cut to `max_chars`."""
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, "***")
    for pattern in _SECRET_PATTERNS:
        text = pattern.sub(lambda m: (m.group(1) if m.groups() else "") + "***", text)
    if max_chars is not None and len(text) > max_chars:
        text = f"{text[:max_chars]}... [{len(text) - max_chars} chars cut]"
    return text


def install_log_redaction(secrets: Iterable[str] = (), log_prompts: bool = False) -> None:
    """Redact every log record at creation, whatever handlers Faust or aiohttp install later:
    secret values and tokens are masked; messages are cut to MAX_LOG_CHARS unless
    `log_prompts` (the debug flag) is on. Adds trace_id/span_id to records for correlation."""
    _redaction["secrets"] = tuple(s for s in secrets if s)
    _redaction["log_prompts"] = bool(log_prompts)
    if _redaction["installed"]:
        return
    _redaction["installed"] = True
    base = logging.getLogRecordFactory()

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = base(*args, **kwargs)
        try:
            message = record.getMessage()
            cleaned = redact(
                message, _redaction["secrets"], None if _redaction["log_prompts"] else MAX_LOG_CHARS
            )
            if cleaned != message:
                # () not None: mode's formatter (Faust workers) turns None into (None,) and
                # then fails to format the already formatted message ("not all arguments converted").
                record.msg, record.args = cleaned, ()
            span_context = trace.get_current_span().get_span_context()
            if span_context.is_valid:
                record.trace_id = format(span_context.trace_id, "032x")
                record.span_id = format(span_context.span_id, "016x")
        except Exception:  # a record that cannot be formatted is left as it is
            pass
        return record

    logging.setLogRecordFactory(factory)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, message, trace ids, exception."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key in ("trace_id", "span_id"):
            if hasattr(record, key):
                entry[key] = getattr(record, key)
        if record.exc_info:
            entry["exception"] = redact(self.formatException(record.exc_info), _redaction["secrets"], 8000)
        return json.dumps(entry, ensure_ascii=False)


def logging_config(level: str = "INFO", json_format: bool = True) -> dict[str, Any]:
    """A `logging.config.dictConfig` dict (also what `faust.Worker(logging_config=...)` takes):
    one stderr handler, JSON lines by default."""
    formatter = (
        {"()": f"{__name__}.JsonFormatter"}
        if json_format
        else {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}
    )
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"default": formatter},
        "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "default"}},
        "root": {"level": level.upper(), "handlers": ["stderr"]},
    }


def configure_logging(
    level: str = "INFO", json_format: bool = True, secrets: Iterable[str] = (), log_prompts: bool = False
) -> None:
    """Structured, redacted logs for a process (entry points call it once)."""
    import logging.config

    install_log_redaction(secrets, log_prompts)
    logging.config.dictConfig(logging_config(level, json_format))
