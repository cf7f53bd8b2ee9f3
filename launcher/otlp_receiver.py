"""A tiny OTLP/HTTP receiver for tests and benchmarks (spec section 7).

The services run as subprocesses, so an in-memory exporter in the test process cannot see their
spans. They export as in production, with the SDK's standard OTLP/HTTP exporters (configured by
`OTEL_EXPORTER_OTLP_ENDPOINT`); this receiver takes `POST /v1/traces` and `POST /v1/metrics`
(protobuf, optionally gzip), decodes them with `opentelemetry-proto`, and hands every span to an
SDK `InMemorySpanExporter` as a `ReadableSpan`, next to the spans the test process itself
records. Tests then assert on one in-memory exporter holding the whole distributed trace.
Metrics are kept as flat data points. Runs on its own event loop in a thread, like
`launcher.scripted_llm.ScriptedLLM`.
"""

from __future__ import annotations

import gzip
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags

from launcher.background_app import BackgroundApp


def _value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return tuple(_value(v) for v in value.array_value.values)
    if kind == "kvlist_value":
        return _attributes(value.kvlist_value.values)
    return getattr(value, kind) if kind else None


def _attributes(pairs: Iterable[KeyValue]) -> dict[str, Any]:
    return {kv.key: _value(kv.value) for kv in pairs}


def _span_context(trace_id: bytes, span_id: bytes, remote: bool = False) -> SpanContext:
    return SpanContext(
        int.from_bytes(trace_id, "big"),
        int.from_bytes(span_id, "big"),
        remote,
        TraceFlags(TraceFlags.SAMPLED),
    )


_KINDS = {
    1: SpanKind.INTERNAL,
    2: SpanKind.SERVER,
    3: SpanKind.CLIENT,
    4: SpanKind.PRODUCER,
    5: SpanKind.CONSUMER,
}
_STATUS = {0: StatusCode.UNSET, 1: StatusCode.OK, 2: StatusCode.ERROR}


def decode_spans(body: bytes) -> list[ReadableSpan]:
    """SDK ReadableSpans from an OTLP ExportTraceServiceRequest."""
    request = ExportTraceServiceRequest()
    request.ParseFromString(body)
    spans: list[ReadableSpan] = []
    for resource_spans in request.resource_spans:
        resource = Resource(_attributes(resource_spans.resource.attributes))
        for scope_spans in resource_spans.scope_spans:
            scope = InstrumentationScope(scope_spans.scope.name, scope_spans.scope.version or None)
            for s in scope_spans.spans:
                spans.append(
                    ReadableSpan(
                        name=s.name,
                        context=_span_context(s.trace_id, s.span_id),
                        parent=_span_context(s.trace_id, s.parent_span_id, True)
                        if s.parent_span_id
                        else None,
                        resource=resource,
                        attributes=_attributes(s.attributes),
                        links=[
                            Link(
                                _span_context(link.trace_id, link.span_id, True), _attributes(link.attributes)
                            )
                            for link in s.links
                        ],
                        kind=_KINDS.get(s.kind, SpanKind.INTERNAL),
                        status=Status(_STATUS.get(s.status.code, StatusCode.UNSET), s.status.message or None),
                        start_time=s.start_time_unix_nano,
                        end_time=s.end_time_unix_nano,
                        instrumentation_scope=scope,
                    )
                )
    return spans


@dataclass(frozen=True)
class DataPoint:
    service: str
    metric: str
    attributes: dict[str, Any]
    value: float
    """Sum/gauge value, or a histogram's count."""


def decode_metrics(body: bytes) -> list[DataPoint]:
    request = ExportMetricsServiceRequest()
    request.ParseFromString(body)
    points: list[DataPoint] = []
    for resource_metrics in request.resource_metrics:
        service = str(_attributes(resource_metrics.resource.attributes).get("service.name", ""))
        for scope_metrics in resource_metrics.scope_metrics:
            for metric in scope_metrics.metrics:
                kind = metric.WhichOneof("data")
                if kind is None:
                    continue
                for p in getattr(metric, kind).data_points:
                    if kind == "histogram" or kind == "exponential_histogram":
                        value = float(p.count)
                    else:
                        value = float(p.as_double if p.WhichOneof("value") == "as_double" else p.as_int)
                    points.append(DataPoint(service, metric.name, _attributes(p.attributes), value))
    return points


@dataclass
class OtlpReceiver:
    """OTLP/HTTP on 127.0.0.1; `endpoint` is what OTEL_EXPORTER_OTLP_ENDPOINT should say."""

    exporter: InMemorySpanExporter = field(default_factory=InMemorySpanExporter)
    host: str = "127.0.0.1"
    port: int = 0
    metric_points: list[DataPoint] = field(default_factory=list)
    requests: int = 0
    _server: BackgroundApp | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def endpoint(self) -> str:
        return f"http://{self.host}:{self.port}"

    def env(self, metric_interval_ms: int = 1000) -> dict[str, str]:
        """Standard OTEL_* variables that point a service's SDK at this receiver, exporting fast."""
        return {
            "OTEL_EXPORTER_OTLP_ENDPOINT": self.endpoint,
            "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
            "OTEL_TRACES_EXPORTER": "otlp",
            "OTEL_METRICS_EXPORTER": "otlp",
            "OTEL_BSP_SCHEDULE_DELAY": "200",
            "OTEL_METRIC_EXPORT_INTERVAL": str(metric_interval_ms),
        }

    def spans(self) -> Sequence[ReadableSpan]:
        return self.exporter.get_finished_spans()

    def metrics(self) -> list[DataPoint]:
        with self._lock:
            return list(self.metric_points)

    @staticmethod
    async def _body(request: web.Request) -> bytes:
        body = await request.read()
        return gzip.decompress(body) if request.headers.get("Content-Encoding") == "gzip" else body

    async def _traces(self, request: web.Request) -> web.Response:
        spans = decode_spans(await self._body(request))
        self.exporter.export(spans)
        with self._lock:
            self.requests += 1
        return web.Response(
            body=ExportTraceServiceResponse().SerializeToString(), content_type="application/x-protobuf"
        )

    async def _metrics(self, request: web.Request) -> web.Response:
        points = decode_metrics(await self._body(request))
        with self._lock:
            self.metric_points.extend(points)
            self.requests += 1
        return web.Response(
            body=ExportMetricsServiceResponse().SerializeToString(), content_type="application/x-protobuf"
        )

    def start(self) -> OtlpReceiver:
        self._server = BackgroundApp("otlp-receiver", self._app, self.host, self.port)
        self.port = self._server.start()
        return self

    def _app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v1/traces", self._traces)
        app.router.add_post("/v1/metrics", self._metrics)
        return app

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()


_process_exporter: InMemorySpanExporter | None = None


def process_span_exporter() -> InMemorySpanExporter:
    """This process's spans (e.g. the replay client's ingest spans), exported synchronously into
    one in-memory exporter. Installs an SDK tracer provider once per test session."""
    global _process_exporter
    if _process_exporter is None:
        from opentelemetry import trace
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor

        exporter = InMemorySpanExporter()
        provider = trace.get_tracer_provider()
        if not isinstance(provider, TracerProvider):
            provider = TracerProvider(resource=Resource.create({"service.name": "olp-tests"}))
            trace.set_tracer_provider(provider)
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        _process_exporter = exporter
    return _process_exporter


_process_metric_reader: Any = None


def process_metric_reader() -> Any:
    """An SDK InMemoryMetricReader on this process's global meter provider (installed once), so
    unit tests can read what the project's instruments recorded."""
    global _process_metric_reader
    if _process_metric_reader is None:
        from opentelemetry import metrics
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import InMemoryMetricReader

        reader = InMemoryMetricReader()
        metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))
        _process_metric_reader = reader
    return _process_metric_reader


def metric_points(reader: Any, name: str) -> list[tuple[dict[str, Any], float]]:
    """(attributes, value or histogram count) of every data point of metric `name` now."""
    data = reader.get_metrics_data()
    out: list[tuple[dict[str, Any], float]] = []
    for resource_metrics in data.resource_metrics if data else ():
        for scope_metrics in resource_metrics.scope_metrics:
            for metric in scope_metrics.metrics:
                if metric.name != name:
                    continue
                for point in metric.data.data_points:
                    value = point.count if hasattr(point, "bucket_counts") else point.value
                    out.append((dict(point.attributes or {}), float(value)))
    return out
