"""Telemetry pieces without Kafka (olp/telemetry/, processors/role_call.py): exporter
selection, the chunk's trace decision, the GenAI span of an LLM call and its feedback, metrics,
log redaction, and the tests' own OTLP receiver."""

from __future__ import annotations

import asyncio
import json
import logging
import random
from collections.abc import Iterator, Mapping, Sequence
from types import SimpleNamespace
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanContext, TraceFlags

from launcher.otlp_receiver import (
    OtlpReceiver,
    metric_points,
    process_metric_reader,
    process_span_exporter,
)
from olp import telemetry
from olp.catalog import Catalog, ModelSpec
from olp.errors import ModelCallError, ParseError
from processors.model_gateway import Completion
from processors.policy_view import PolicyView
from processors.role_call import CallContext, RoleCaller, RoleFailed

tracer = trace.get_tracer("tests")


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = process_span_exporter()
    exporter.clear()
    yield exporter
    exporter.clear()


def _context(trace_id: int, span_id: int) -> SpanContext:
    return SpanContext(trace_id, span_id, False, TraceFlags(TraceFlags.SAMPLED))


# --- set-up --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "traces", "metrics"),
    [
        ({}, [], []),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, ["otlp"], ["otlp"]),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:4318/v1/traces"}, ["otlp"], []),
        (
            {"OTEL_TRACES_EXPORTER": "console", "OTEL_METRICS_EXPORTER": "prometheus"},
            ["console"],
            ["prometheus"],
        ),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_TRACES_EXPORTER": "none"}, [], ["otlp"]),
        ({"OTEL_TRACES_EXPORTER": "otlp, console"}, ["otlp", "console"], []),
    ],
)
def test_exporters_follow_the_standard_variables(
    env: dict[str, str], traces: list[str], metrics: list[str]
) -> None:
    assert telemetry.setup._exporters("traces", env) == traces
    assert telemetry.setup._exporters("metrics", env) == metrics


def test_otlp_protocol_falls_back_to_http(caplog: pytest.LogCaptureFixture) -> None:
    assert telemetry.setup._otlp_grpc("traces", {}) is False
    assert telemetry.setup._otlp_grpc("traces", {"OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"}) is False
    assert "not available" in caplog.text
    grpc = {"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc", "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL": "http/protobuf"}
    assert telemetry.setup._otlp_grpc("metrics", grpc) is False  # the per-signal variable wins
    try:
        import opentelemetry.exporter.otlp.proto.grpc  # noqa: F401

        installed = True
    except ImportError:
        installed = False
    assert telemetry.setup._otlp_grpc("traces", grpc) is installed


def test_configure_installs_nothing_without_export_and_only_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(telemetry.setup, "_process", telemetry.Telemetry())
    before = trace.get_tracer_provider()
    handle = telemetry.configure_telemetry("svc", env={})
    assert (handle.configured, handle.enabled, handle.kafka_instrumented) == (True, False, False)
    again = telemetry.configure_telemetry("svc", env={"OTEL_TRACES_EXPORTER": "console"})  # once
    assert again is handle and again is telemetry.current() and again.traces == ()
    assert telemetry.prometheus_text() is None and telemetry.kafka_instrumented() is False
    monkeypatch.setattr(telemetry.setup, "_process", telemetry.Telemetry())
    disabled = {"OTEL_SDK_DISABLED": "true", "OTEL_TRACES_EXPORTER": "console"}
    assert telemetry.configure_telemetry("svc", env=disabled).enabled is False
    assert trace.get_tracer_provider() is before


def test_sampler_drops_only_orphan_changelog_writes() -> None:
    from opentelemetry.sdk.trace.sampling import ALWAYS_ON, Decision

    sampler = telemetry.setup._skip_orphan_changelog_writes(ALWAYS_ON)
    parented = telemetry.context_of(_context(1, 2))
    assert sampler.should_sample(None, 1, "app-state-changelog send").decision == Decision.DROP
    assert sampler.should_sample(parented, 1, "app-state-changelog send").decision != Decision.DROP
    assert sampler.should_sample(None, 1, "olp.chunks send").decision != Decision.DROP


# --- one segment, one trace ------------------------------------------------------------------


def _chunk(stream: str, ids: Sequence[int]) -> dict[str, Any]:
    return {
        "stream_id": stream,
        "chunk_id": f"{stream}:0",
        "sentences": [{"id": i, "text": f"s{i}"} for i in ids],
    }


def test_chunk_continues_the_completing_segment_and_links_the_others() -> None:
    traces = telemetry.SegmentTraces()
    for i in (3, 1, 2):
        traces.remember("s", i, _context(100 + i, 200 + i))
    traces.remember("other", 1, _context(999, 999))
    parent, links = traces.take(_chunk("s", [1, 2, 3, 4]))
    assert parent == _context(103, 203)  # the newest sentence completed the chunk
    assert [link.context.trace_id for link in links] == [101, 102]
    assert [link.attributes["olp.segment_id"] for link in links] == [1, 2]
    # Each segment starts one trace only: a carry-over seen again in the next chunk adds nothing.
    assert traces.take(_chunk("s", [2, 3, 4])) == (None, [])
    assert len(traces) == 1  # the other stream's segment is still waiting for its chunk


def test_segment_memory_is_bounded_and_ignores_tracing_off() -> None:
    traces = telemetry.SegmentTraces(max_segments=3)
    traces.remember("s", 0, trace.INVALID_SPAN_CONTEXT)
    assert len(traces) == 0
    for i in range(5):
        traces.remember("s", i, _context(1 + i, 1 + i))
    assert len(traces) == 3
    parent, links = traces.take(_chunk("s", range(5)))
    assert parent is not None and parent.trace_id == 5 and len(links) == 2


def test_chunk_span_is_child_of_the_segment_with_links(spans: InMemorySpanExporter) -> None:
    traces = telemetry.SegmentTraces()
    for i in (1, 2):
        with tracer.start_as_current_span(f"segment {i}") as segment:
            traces.remember("s", i, segment.get_span_context())
    with tracer.start_as_current_span("previous chunk done") as done, traces.chunk_span(_chunk("s", [1, 2])):
        inner = trace.get_current_span()
    (emit,) = [s for s in spans.get_finished_spans() if s.name == "chunk_splitter emit"]
    by_name = {s.name: s for s in spans.get_finished_spans()}
    assert inner.get_span_context() == emit.context
    assert emit.parent.span_id == by_name["segment 2"].context.span_id
    assert emit.context.trace_id == by_name["segment 2"].context.trace_id
    linked = {(link.context.span_id, link.attributes.get("olp.link")) for link in emit.links}
    assert linked == {
        (by_name["segment 1"].context.span_id, None),
        (done.get_span_context().span_id, "released_by"),
    }
    assert emit.attributes["olp.chunk_id"] == "s:0" and emit.attributes["olp.chunk.sentences"] == 2


def test_chunk_without_known_segments_continues_the_current_trace(spans: InMemorySpanExporter) -> None:
    with (
        tracer.start_as_current_span("current") as current,
        telemetry.SegmentTraces().chunk_span(_chunk("s", [1])),
    ):
        pass
    (emit,) = [s for s in spans.get_finished_spans() if s.name == "chunk_splitter emit"]
    assert emit.parent.span_id == current.get_span_context().span_id and not emit.links


def test_kafka_headers_round_trip_the_trace_context(spans: InMemorySpanExporter) -> None:
    with tracer.start_as_current_span("producer") as producer:
        headers = telemetry.inject_headers()
    assert headers and all(isinstance(v, bytes) for _, v in headers)
    restored = trace.get_current_span(telemetry.extract_context(headers)).get_span_context()
    assert restored.trace_id == producer.get_span_context().trace_id
    assert restored.span_id == producer.get_span_context().span_id
    assert telemetry.header_carrier({"traceparent": b"x", "skip": None}) == {"traceparent": "x"}


# --- the LLM call span and its feedback -------------------------------------------------------


class FakeGateway:
    def __init__(self, answers: list[str | Exception]) -> None:
        self.catalog = Catalog(
            models=(
                ModelSpec(
                    name="m1", base_url="http://llm.local:8000/v1", price_in_per_mtok=1, price_out_per_mtok=2
                ),
                ModelSpec(
                    name="m2", base_url="http://llm.local:8000/v1", price_in_per_mtok=1, price_out_per_mtok=2
                ),
            )
        )
        self.answers = answers

    async def complete(
        self, model: str, messages: Sequence[Mapping[str, str]], json_schema: Any = None
    ) -> Completion:
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return Completion(model, answer, 120, 8, 12.5, 0.000136, "stop", response_id=f"chatcmpl-{answer}")


def _parse(text: str) -> int:
    if not text.isdigit():
        raise ParseError("not a number")
    return int(text)


def _ask(answers: list[str | Exception]) -> tuple[Any, list[tuple[dict[str, Any], Any]]]:
    sent: list[tuple[dict[str, Any], Any]] = []

    async def emit(outcome: dict[str, Any]) -> None:
        sent.append((outcome, trace.get_current_span().get_span_context()))

    policy = PolicyView({"topic_finder": ["m1", "m2"]})
    caller = RoleCaller("topic_finder", FakeGateway(answers), policy, emit, random.Random(0))  # type: ignore[arg-type]
    ctx = CallContext("s", "s:0", "ecommerce", "en", "shop", 30)
    prompt = [{"role": "user", "content": "secret prompt text"}]
    try:
        answer: Any = asyncio.run(caller.ask(prompt, _parse, ctx))
    except RoleFailed as exc:
        answer = exc
    return answer, sent


def test_llm_call_span_has_genai_attributes_and_feedback_inside(spans: InMemorySpanExporter) -> None:
    with tracer.start_as_current_span("topic_finder process") as process:
        answer, sent = _ask(["junk", "42"])
    assert answer.value == 42 and answer.model == "m1"
    chats = [s for s in spans.get_finished_spans() if s.name.startswith("chat ")]
    assert [s.name for s in chats] == ["chat m1", "chat m1"]
    for attempt, span in enumerate(chats):
        a = span.attributes
        assert a["gen_ai.operation.name"] == "chat" and a["gen_ai.request.model"] == "m1"
        assert a["gen_ai.usage.input_tokens"] == 120 and a["gen_ai.usage.output_tokens"] == 8
        assert a["gen_ai.response.finish_reasons"] == ("stop",)
        assert a["gen_ai.provider.name"] == "openai" and a["gen_ai.output.type"] == "text"
        assert a["gen_ai.response.id"] == ("chatcmpl-junk", "chatcmpl-42")[attempt]
        assert a["olp.cost_usd"] == pytest.approx(0.000136) and a["olp.role"] == "topic_finder"
        assert a["olp.policy_version"] == 0 and a["olp.attempt"] == attempt and a["olp.feed"] == "shop"
        assert a["server.address"] == "llm.local" and a["server.port"] == 8000
        assert "gen_ai.input.messages" not in a and "gen_ai.output.messages" not in a
        assert span.parent.span_id == process.get_span_context().span_id
    assert chats[0].attributes["error.type"] == "ParseError"
    assert chats[0].status.status_code == trace.StatusCode.ERROR
    assert "error.type" not in chats[1].attributes
    # Each feedback record was sent while its call's span was current: it carries that context.
    assert [ctx.span_id for _, ctx in sent] == [s.context.span_id for s in chats]
    assert [o["success"] for o, _ in sent] == [False, True]


def test_model_fault_marks_the_span_and_fails_over(spans: InMemorySpanExporter) -> None:
    answer, sent = _ask([ModelCallError("HTTP 503"), "7"])
    assert answer.model == "m2"
    chats = [s for s in spans.get_finished_spans() if s.name.startswith("chat ")]
    assert [(s.name, s.attributes.get("error.type")) for s in chats] == [
        ("chat m1", "ModelCallError"),
        ("chat m2", None),
    ]
    assert [o["model"] for o, _ in sent] == ["m1", "m2"]


def test_prompts_reach_spans_only_with_the_genai_opt_in(
    spans: InMemorySpanExporter, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "true")
    _ask(["5"])
    (chat,) = [s for s in spans.get_finished_spans() if s.name.startswith("chat ")]
    assert (
        json.loads(chat.attributes["gen_ai.input.messages"])[0]["parts"][0]["content"] == "secret prompt text"
    )
    assert json.loads(chat.attributes["gen_ai.output.messages"])[0]["parts"][0]["content"] == "5"


def test_llm_metrics_per_model_and_role() -> None:
    reader = process_metric_reader()
    _ask(["junk", "junk", ModelCallError("timeout")])  # m1 junk twice, m2 down: the role fails
    durations = metric_points(reader, "gen_ai.client.operation.duration")
    keys = {(a["olp.role"], a["gen_ai.request.model"], a.get("error.type")) for a, _ in durations}
    assert {("topic_finder", "m1", None), ("topic_finder", "m2", "ModelCallError")} <= keys
    cost = {
        a["gen_ai.request.model"]: v
        for a, v in metric_points(reader, "olp.llm.cost")
        if a["olp.feed"] == "shop"
    }
    assert cost["m1"] >= 2 * 0.000136 - 1e-12
    tokens = {a["gen_ai.token.type"] for a, _ in metric_points(reader, "gen_ai.client.token.usage")}
    assert tokens == {"input", "output"}


def test_record_helpers_never_raise() -> None:
    telemetry.record_consumed("stage", "topic", float("nan"), None)
    telemetry.record_llm_call(None, "r", "m", "f", 1.0)  # type: ignore[arg-type]
    telemetry.record_feedback(None, {}, True, None)  # type: ignore[arg-type]


def test_consumer_lag_from_fetch_high_watermarks() -> None:
    from faust.types import TP

    tp, idle = TP("olp.chunks", 1), TP("olp.found", 0)
    changelog = TP("olp-app-chunk-splitter-state-changelog", 0)
    app = SimpleNamespace(
        conf=SimpleNamespace(id="olp-app"),
        consumer=SimpleNamespace(
            assignment=lambda: {tp, changelog, idle}, highwater=lambda t: {tp: 10, idle: 4}.get(t)
        ),
        monitor=SimpleNamespace(tp_read_offsets={tp: 6}, tp_committed_offsets={idle: 4}, tp_end_offsets={}),
    )
    lags = {o.attributes["messaging.destination.name"]: o.value for o in telemetry.faust_consumer_lag(app)}
    assert lags == {"olp.chunks": 3, "olp.found": 0}


# --- logs ------------------------------------------------------------------------------------


def test_redaction_masks_secrets_and_cuts_long_text() -> None:
    text = 'Authorization: Bearer abc.def-123456 api_key="topsecret99" sk-ABCDEFGHIJKLMNOP1234 pw hunter22'
    cleaned = telemetry.redact(text, secrets=["hunter22"])
    assert "abc.def-123456" not in cleaned and "topsecret99" not in cleaned
    assert "sk-ABCDEFGHIJKLMNOP1234" not in cleaned and "hunter22" not in cleaned
    assert "Bearer ***" in cleaned and "tokens_in=5" in telemetry.redact("tokens_in=5")
    long = "x" * 5000
    assert len(telemetry.redact(long)) < 2100
    assert telemetry.redact(long, max_chars=None) == long


def test_log_records_are_redacted_and_carry_trace_ids(
    caplog: pytest.LogCaptureFixture, spans: InMemorySpanExporter
) -> None:
    telemetry.install_log_redaction(secrets=["s3cr3t-value"])
    try:
        with caplog.at_level(logging.INFO, logger="olp.test"), tracer.start_as_current_span("work") as span:
            logging.getLogger("olp.test").info(
                "calling with key %s and prompt %s", "s3cr3t-value", "p" * 3000
            )
        (record,) = [r for r in caplog.records if r.name == "olp.test"]
        assert "s3cr3t-value" not in record.getMessage() and "***" in record.getMessage()
        assert len(record.getMessage()) < 2100
        assert record.trace_id == format(span.get_span_context().trace_id, "032x")
        line = json.loads(telemetry.JsonFormatter().format(record))
        assert (
            line["level"] == "INFO" and line["logger"] == "olp.test" and line["trace_id"] == record.trace_id
        )
        telemetry.install_log_redaction(secrets=["s3cr3t-value"], log_prompts=True)  # the debug flag
        with caplog.at_level(logging.INFO, logger="olp.test"):
            logging.getLogger("olp.test").info("prompt %s", "p" * 3000)
        assert len(caplog.records[-1].getMessage()) > 3000
    finally:
        telemetry.install_log_redaction()


def test_logging_config_is_json_lines() -> None:
    config = telemetry.logging_config("debug")
    assert config["root"]["level"] == "DEBUG"
    assert config["formatters"]["default"] == {"()": "olp.telemetry.logs.JsonFormatter"}
    assert "format" in telemetry.logging_config(json_format=False)["formatters"]["default"]


# --- the tests' OTLP receiver decodes what the SDK's OTLP/HTTP exporter sends -----------------


def test_otlp_receiver_round_trip(spans: InMemorySpanExporter) -> None:
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.trace.export import SpanExportResult

    with (
        tracer.start_as_current_span("parent", attributes={"a": 1, "b": ("x", "y")}) as parent,
        tracer.start_as_current_span("child", links=[trace.Link(_context(7, 8), {"k": True})]),
    ):
        pass
    local = list(spans.get_finished_spans())
    receiver = OtlpReceiver(exporter=InMemorySpanExporter()).start()
    try:
        exporter = OTLPSpanExporter(endpoint=f"{receiver.endpoint}/v1/traces")
        assert exporter.export(local) == SpanExportResult.SUCCESS
        got = {s.name: s for s in receiver.spans()}
    finally:
        receiver.stop()
    assert got["parent"].context.trace_id == parent.get_span_context().trace_id
    assert got["parent"].attributes == {"a": 1, "b": ("x", "y")}
    assert got["child"].parent.span_id == parent.get_span_context().span_id
    assert got["child"].links[0].context.trace_id == 7 and got["child"].links[0].attributes == {"k": True}
    assert got["child"].kind == trace.SpanKind.INTERNAL
    assert got["child"].resource.attributes["service.name"] == "olp-tests"
