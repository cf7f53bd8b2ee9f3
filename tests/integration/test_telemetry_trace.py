"""One segment, one trace, across the running services (spec section 7).

The policy store and a worker run as subprocesses with the SDK's standard OTLP/HTTP exporters
pointed (by `OTEL_*` variables only) at a tiny receiver in this test; the receiver puts every span
into an in-memory span exporter, next to the spans this process records while replaying (the
ingest span that starts each segment's trace). The test sends a short stretch of the sample
transcript whose last segment completes the chunk, then checks that the last segment's trace
holds, as one connected tree: its ingest, all six roles, the LLM calls with their GenAI
attributes, the feedback, the policy update it caused and that update reaching the worker; that
the other segments are linked from the chunk; that the metrics arrived; and that the HTTP API is
traced without its probes.
"""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind

from launcher.clients import replay
from launcher.otlp_receiver import OtlpReceiver, process_span_exporter
from launcher.scripted_llm import Reply, ScriptedLLM, scripted_catalog
from launcher.scripted_roles import perfect_answer, role_of
from olp.feeds import read_transcript
from tests.support.stack import ServiceStack

pytestmark = pytest.mark.integration

SAMPLE = Path(__file__).parents[2] / "olp" / "data" / "sample_livestream.jsonl"
STAGES = (
    "chunk_splitter",
    "topic_finder",
    "topic_locator",
    "relationship_checker",
    "content_organizer",
    "format_checker",
)
LLM_ROLES = ("topic_finder", "topic_locator", "relationship_checker", "content_organizer")


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    memory = process_span_exporter()  # this process's spans (the replay's ingest spans) land here too
    memory.clear()
    server = OtlpReceiver(exporter=memory).start()
    yield server
    server.stop()


def _responder(model: str, body: dict) -> Reply:
    """model-a answers the Topic Finder with junk (so feedback moves the policy), the rest is perfect."""
    if model == "model-a" and role_of(body) == "topic_finder":
        return Reply("I am not sure what the products are.")
    return Reply(perfect_answer(body))


def _server_paths(spans: Sequence[ReadableSpan]) -> set[str]:
    """Paths of the policy store's HTTP server spans."""
    return {
        str(s.attributes.get("url.path") or s.attributes.get("http.target"))
        for s in spans
        if s.kind == SpanKind.SERVER and _service(s) == "olp-policy-store"
    }


def _in_trace(spans: Sequence[ReadableSpan], trace_id: int) -> list[ReadableSpan]:
    return [s for s in spans if s.context is not None and s.context.trace_id == trace_id]


def _service(span: ReadableSpan) -> str:
    return str(span.resource.attributes.get("service.name"))


def _complete(trace: Sequence[ReadableSpan]) -> bool:
    names = {s.name for s in trace}
    roles = {s.attributes.get("olp.role") for s in trace if s.name.startswith("chat ")}
    ids = {s.context.span_id for s in trace if s.context is not None}
    return (
        all(f"{stage} process" in names for stage in STAGES)
        and set(LLM_ROLES) <= roles
        and "policy update topic_finder" in names
        and any(s.name.endswith("policy receive") and _service(s) == "olp-processors" for s in trace)
        and all(s.parent is None or s.parent.span_id in ids for s in trace)
    )


def _produce_junk(broker: str, topic: str) -> None:
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": broker, "partitioner": "murmur2_random"})
    producer.produce(topic, key=b"trace-junk", value=b"\x00not avro")
    producer.flush(10)


def _tree(trace: Sequence[ReadableSpan]) -> str:
    """The trace as an indented tree (printed, so a run shows what one segment's trace holds)."""
    children: dict[int | None, list[ReadableSpan]] = {}
    for s in sorted(trace, key=lambda s: s.start_time or 0):
        children.setdefault(s.parent.span_id if s.parent else None, []).append(s)
    lines: list[str] = []

    def walk(parent: int | None, depth: int) -> None:
        for s in children.get(parent, []):
            lines.append(f"{'  ' * depth}{s.name}  [{_service(s)}]")
            walk(s.context.span_id, depth + 1)

    walk(None, 0)
    return "\n".join(lines)


def test_one_segment_is_one_trace_through_every_role(
    broker: str, topic_prefix: str, run_dir: Path, receiver: OtlpReceiver
) -> None:
    llm = ScriptedLLM(_responder).start()
    stack = ServiceStack(
        broker,
        topic_prefix,
        run_dir,
        scripted_catalog(llm.base_url, ("model-a", "model-b")),
        {"OLP_FEEDS": json.dumps({"default": {"chunk_size": 30}}), **receiver.env()},
    )
    try:
        stack.start_policy_store()
        stack.start_worker()
        # Sentences 25-40 cross from the wig to the shoes (ids are not contiguous); the last one
        # ends the stream, so it completes the chunk and its trace runs through every role.
        segments = [s for s in read_transcript(SAMPLE, "trace-1") if 25 <= s["segment_id"] <= 40]
        segments[-1]["end_of_stream"] = True
        ids = [s["segment_id"] for s in segments]
        last = ids[-1]
        _produce_junk(broker, f"{topic_prefix}transcripts")  # counts as a dead letter, nothing more
        replay(stack.settings(), segments)
        stack.wait_for_documents("trace-1", last, timeout_s=60)

        ingest = {
            s.attributes["olp.segment_id"]: s
            for s in receiver.spans()
            if s.name == "ingest segment" and s.attributes.get("olp.stream_id") == "trace-1"
        }
        assert sorted(ingest) == ids
        trace_id = ingest[last].context.trace_id
        deadline = time.monotonic() + 30
        while not _complete(trace := _in_trace(receiver.spans(), trace_id)):
            if time.monotonic() > deadline:
                names = sorted({f"{_service(s)}: {s.name}" for s in trace})
                raise AssertionError(f"trace incomplete after 30 s; has {names}\n{stack.logs()}")
            time.sleep(0.3)

        print(f"\ntrace {trace_id:032x} of segment {last}:\n{_tree(trace)}")
        # One tree: the ingest span is the only root, every other span's parent is in the trace.
        roots = [s for s in trace if s.parent is None]
        assert [r.name for r in roots] == ["ingest segment"]
        services = {_service(s) for s in trace}
        assert {"olp-processors", "olp-policy-store"} <= services

        # Every role processed this segment's chunk within the trace, in the worker.
        for stage in STAGES:
            processed = [s for s in trace if s.name == f"{stage} process"]
            assert processed and all(_service(s) == "olp-processors" for s in processed), stage

        # Each LLM call is a GenAI client span with model, tokens, cost and the policy version,
        # and the aiohttp client instrumentation's HTTP span sits under it.
        chats = [s for s in trace if s.name.startswith("chat ")]
        assert {s.attributes["olp.role"] for s in chats} == set(LLM_ROLES)
        for chat in chats:
            a = chat.attributes
            assert a["gen_ai.operation.name"] == "chat"
            assert chat.name == f"chat {a['gen_ai.request.model']}"
            assert a["gen_ai.request.model"] in ("model-a", "model-b")
            assert a["gen_ai.usage.input_tokens"] > 0 and a["gen_ai.usage.output_tokens"] > 0
            assert a["olp.cost_usd"] > 0 and isinstance(a["olp.policy_version"], int)
            assert a["server.address"] == "127.0.0.1"
            assert "gen_ai.input.messages" not in a  # prompts stay out unless opted in
        chat_ids = {s.context.span_id for s in chats}
        http = [
            s for s in trace if s.parent is not None and s.parent.span_id in chat_ids and s.name == "POST"
        ]
        assert len(http) == len(chats)
        junk = [
            s for s in chats if s.attributes["olp.role"] == "topic_finder" and s.attributes.get("error.type")
        ]
        assert junk and all(s.attributes["gen_ai.request.model"] == "model-a" for s in junk)

        # The feedback of those calls continued the trace in the policy store, and the junk
        # answers' feedback caused a policy update that reached the worker's policy follower.
        feedback = [s for s in trace if s.name.startswith("feedback processor ")]
        assert {s.attributes["olp.role"] for s in feedback} == set(LLM_ROLES)
        assert all(_service(s) == "olp-policy-store" for s in feedback)
        (update,) = [s for s in trace if s.name == "policy update topic_finder"][:1]
        assert update.attributes["olp.policy.model"] == "model-b"
        assert update.parent is not None and update.parent.span_id in {s.context.span_id for s in feedback}
        received = [s for s in trace if s.name.endswith("policy receive") and _service(s) == "olp-processors"]
        assert received

        # The chunk continued the last segment's trace and links the others it carries.
        (emit,) = [s for s in trace if s.name == "chunk_splitter emit"]
        linked = {link.context.trace_id for link in emit.links}
        assert linked == {ingest[i].context.trace_id for i in ids[:-1]}
        # ...and those segments' own traces hold their ingest and splitter spans only.
        other = _in_trace(receiver.spans(), ingest[ids[0]].context.trace_id)
        assert {s.name for s in other} == {"ingest segment", "chunk_splitter process"}

        # Metrics: throughput per role, lag, LLM latency per model and role, cost, reward, DLQ.
        wanted = {
            "messaging.client.consumed.messages",
            "messaging.client.sent.messages",
            "messaging.process.duration",
            "olp.consumer.lag",
            "gen_ai.client.operation.duration",
            "gen_ai.client.token.usage",
            "olp.llm.cost",
            "olp.feedback.observed",
            "olp.reward",
            "olp.policy.updates",
            "olp.dlq.records",
        }

        def by_name() -> dict[str, list]:
            grouped: dict[str, list] = {}
            for p in receiver.metrics():
                grouped.setdefault(p.metric, []).append(p)
            return grouped

        def complete(m: dict[str, list]) -> bool:  # every name, every stage, every role exported
            return (
                wanted <= set(m)
                and {p.attributes.get("olp.stage") for p in m["messaging.client.consumed.messages"]}
                >= set(STAGES)
                and {p.attributes["olp.role"] for p in m["gen_ai.client.operation.duration"]}
                >= set(LLM_ROLES)
            )

        deadline = time.monotonic() + 20
        while not complete(metrics := by_name()) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert wanted <= set(metrics), sorted(metrics)
        consumed_stages = {
            p.attributes.get("olp.stage") for p in metrics["messaging.client.consumed.messages"]
        }
        assert consumed_stages >= set(STAGES)
        latency_keys = {
            (p.attributes["olp.role"], p.attributes["gen_ai.request.model"])
            for p in metrics["gen_ai.client.operation.duration"]
        }
        assert {role for role, _ in latency_keys} == set(LLM_ROLES)
        assert ("topic_finder", "model-a") in latency_keys
        assert max(p.value for p in metrics["olp.llm.cost"]) > 0
        assert all(p.service == "olp-policy-store" for p in metrics["olp.reward"])
        (dead,) = {
            (p.attributes["olp.stage"], p.attributes["error.type"]) for p in metrics["olp.dlq.records"]
        }
        assert dead == ("chunk_splitter", "CodecError")
        # Faust's buffered table writes would be one-span traces; the sampler leaves them out.
        assert not [s for s in receiver.spans() if s.parent is None and s.name.endswith("-changelog send")]

        # The policy store's API is traced, its readiness probes (polled by the launcher) are not.
        with urllib.request.urlopen(f"{stack.api_url}/v1/policy", timeout=5) as resp:
            assert resp.status == 200
        deadline = time.monotonic() + 20
        while not (served := _server_paths(receiver.spans())) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert "/v1/policy" in served and "/readyz" not in served, served
    finally:
        stack.stop()
        llm.stop()
