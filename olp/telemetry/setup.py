"""Installing the OpenTelemetry SDK, once per process, from the standard `OTEL_*` variables.

`configure_telemetry` returns the process's `Telemetry` handle: what was installed (tracing, metric
readers, the Kafka instrumentation). The SDK's providers are process-wide, and so is the handle:
`current()` gives it to code that did not call the set-up (a Faust agent, the HTTP scrape).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from opentelemetry import context as otel_context
from opentelemetry import metrics, trace
from opentelemetry.trace import Link, SpanKind

from olp.telemetry.logs import install_log_redaction

if TYPE_CHECKING:
    from opentelemetry.sdk.trace.sampling import Sampler, SamplingResult

log = logging.getLogger("olp.telemetry")

AIOHTTP_SERVER_EXCLUDED_URLS = "healthz,readyz,metrics,dashboard"
"""Paths the aiohttp server instrumentation leaves out unless the standard variables say
otherwise: probes, scrapes and the dashboard's polling would drown the traces that matter."""


@dataclass
class Telemetry:
    """What `configure_telemetry` installed in this process."""

    configured: bool = False
    """The set-up ran (it runs once; later calls return this handle unchanged)."""
    traces: tuple[str, ...] = ()
    """Span exporters installed (`otlp`, `console`); empty: tracing is the API's no-op."""
    metric_exporters: tuple[str, ...] = ()
    prometheus: bool = False
    """A Prometheus reader is installed: `/metrics` serves `prometheus_text()`."""
    kafka_instrumented: bool = False
    """The aiokafka instrumentation writes trace context into the headers of produced records."""

    @property
    def enabled(self) -> bool:
        return bool(self.traces or self.metric_exporters)

    def prometheus_text(self) -> tuple[bytes, str] | None:
        """The Prometheus scrape body and content type, when the prometheus reader is installed."""
        if not self.prometheus:
            return None
        from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

        return generate_latest(REGISTRY), CONTENT_TYPE_LATEST


_process = Telemetry()


def current() -> Telemetry:
    """The handle of this process (not configured until an entry point called the set-up)."""
    return _process


def kafka_instrumented() -> bool:
    """True when the aiokafka instrumentation writes trace context into produced headers."""
    return _process.kafka_instrumented


def prometheus_text() -> tuple[bytes, str] | None:
    return _process.prometheus_text()


def _exporters(signal: str, env: Mapping[str, str]) -> list[str]:
    raw = env.get(f"OTEL_{signal.upper()}_EXPORTER")
    if raw is None:
        endpoint = env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or env.get(
            f"OTEL_EXPORTER_OTLP_{signal.upper()}_ENDPOINT"
        )
        return ["otlp"] if endpoint else []
    return [n for n in (p.strip().lower() for p in raw.split(",")) if n and n != "none"]


def configure_telemetry(service_name: str, env: Mapping[str, str] | None = None) -> Telemetry:
    """Install the SDK (traces, metrics) and the instrumentations if export is configured, and
    return the process's handle saying what was installed.

    Only the first call in a process installs anything. Also installs the log-record redaction
    (`install_log_redaction`), which needs no SDK.
    """
    install_log_redaction()
    handle = _process
    if handle.configured:
        return handle
    handle.configured = True
    env = os.environ if env is None else env
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return handle
    traces, metric_exporters = _exporters("traces", env), _exporters("metrics", env)
    if not (traces or metric_exporters):
        return handle
    try:
        from opentelemetry.sdk.resources import SERVICE_NAME, Resource

        resource = Resource.create({SERVICE_NAME: env.get("OTEL_SERVICE_NAME") or service_name})
        if traces:
            _install_tracing(resource, traces, env)
        if metric_exporters:
            handle.prometheus = _install_metrics(resource, metric_exporters, env)
        if traces:
            handle.kafka_instrumented = _install_instrumentations(env)
        handle.traces, handle.metric_exporters = tuple(traces), tuple(metric_exporters)
        log.info("telemetry on: traces=%s metrics=%s", traces or "off", metric_exporters or "off")
    except Exception as exc:  # telemetry must never take the service down
        log.warning("telemetry disabled: %s: %s", type(exc).__name__, exc)
    return handle


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


def _install_instrumentations(env: Mapping[str, str]) -> bool:
    """The standard instrumentations; each one that fails is skipped with a warning. True when
    the aiokafka one is installed."""

    def aiokafka() -> None:
        from opentelemetry.instrumentation.aiokafka import AIOKafkaInstrumentor

        AIOKafkaInstrumentor().instrument()

    def aiohttp_client() -> None:
        from opentelemetry.instrumentation.aiohttp_client import AioHttpClientInstrumentor

        AioHttpClientInstrumentor().instrument()

    def aiohttp_server() -> None:
        from opentelemetry.instrumentation import aiohttp_server as server
        from opentelemetry.util.http import parse_excluded_urls

        server.AioHttpServerInstrumentor().instrument()
        # The instrumentation reads its exclusions from os.environ when instrumenting and takes
        # no argument for them; set the module's list from `env` instead of writing os.environ.
        excluded = env.get("OTEL_PYTHON_AIOHTTP_SERVER_EXCLUDED_URLS") or env.get("OTEL_PYTHON_EXCLUDED_URLS")
        server._excluded_urls = parse_excluded_urls(excluded or AIOHTTP_SERVER_EXCLUDED_URLS)

    installed = {}
    for install in (aiokafka, aiohttp_client, aiohttp_server):
        try:
            install()
            installed[install.__name__] = True
        except Exception as exc:
            log.warning("instrumentation %s not installed: %s", install.__name__, exc)
    return installed.get("aiokafka", False)


def capture_message_content(env: Mapping[str, str] | None = None) -> bool:
    """The GenAI conventions' opt-in for prompts and answers on spans (off by default)."""
    value = (os.environ if env is None else env).get("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "")
    return value.strip().lower() == "true"
