"""OpenTelemetry SDK set-up, once per process (spec section 7; STYLE 9).

Code elsewhere uses only the OpenTelemetry API. This installs an SDK tracer provider when the
standard variables ask for export: OTLP over HTTP when OTEL_EXPORTER_OTLP_ENDPOINT (or the traces
variant) is set, the console exporter when OTEL_TRACES_EXPORTER=console. Otherwise the API stays
a no-op and tracing costs nothing. A telemetry failure never stops the data path.
"""

from __future__ import annotations

import logging
import os

log = logging.getLogger("olp.telemetry")


def configure_telemetry(service_name: str) -> bool:
    """Install the SDK tracer provider if export is configured; True when installed."""
    env = os.environ
    wants_otlp = bool(env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))
    wants_console = env.get("OTEL_TRACES_EXPORTER", "") == "console"
    if not (wants_otlp or wants_console) or env.get("OTEL_SDK_DISABLED", "").lower() == "true":
        return False
    try:
        from opentelemetry import trace
        from opentelemetry.sdk.resources import SERVICE_NAME, Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter

        exporter: SpanExporter
        if wants_otlp:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            exporter = OTLPSpanExporter()
        else:
            exporter = ConsoleSpanExporter()
        provider = TracerProvider(
            resource=Resource.create({SERVICE_NAME: env.get("OTEL_SERVICE_NAME", service_name)})
        )
        provider.add_span_processor(BatchSpanProcessor(exporter))
        trace.set_tracer_provider(provider)
        return True
    except Exception as exc:  # telemetry must never take the service down
        log.warning("tracing disabled: %s", exc)
        return False
