"""End to end with an OpenAI-dialect catalog against the scripted server in strict mode, which
answers any request outside the official OpenAI request contract with OpenAI's HTTP 400: a
transcript becomes the same documents as against the lenient server, and no request is rejected."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from launcher import openai_contract
from launcher.clients import replay
from launcher.scripted_llm import ScriptedLLM
from launcher.scripted_roles import perfect, role_of
from olp.catalog import Catalog, ModelSpec
from tests.integration.test_pipeline_e2e import expected_documents, sample_segments
from tests.support.stack import ServiceStack

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not openai_contract.available(), reason="no OpenAI API description"),
]


@pytest.fixture
def strict_openai() -> Iterator[ScriptedLLM]:
    server = ScriptedLLM(perfect, strict=True).start()
    yield server
    server.stop()


def openai_catalog(base_url: str) -> Catalog:
    """Two OpenAI-style models: the standard form, and a reasoning model's fields."""
    return Catalog(
        models=(
            ModelSpec(
                name="gpt-4o-mini",
                base_url=base_url,
                structured_output="json_schema",
                price_in_per_mtok=0.15,
                price_out_per_mtok=0.6,
                timeout_s=10,
            ),
            ModelSpec(
                name="o4-mini",
                base_url=base_url,
                structured_output="json_schema",
                token_limit_field="max_completion_tokens",
                temperature=None,
                price_in_per_mtok=1.1,
                price_out_per_mtok=4.4,
                timeout_s=10,
            ),
        )
    )


def test_openai_dialect_pipeline_passes_the_strict_server(
    broker: str, topic_prefix: str, run_dir: Path, strict_openai: ScriptedLLM
) -> None:
    stack = ServiceStack(
        broker,
        topic_prefix,
        run_dir,
        openai_catalog(strict_openai.base_url),
        {"OLP_FEEDS": json.dumps({"default": {"chunk_size": 30}})},
    )
    try:
        stack.start_policy_store()
        stack.start_worker()
        segments = sample_segments("openai-1")
        assert replay(stack.settings(), segments) == len(segments)
        view = stack.wait_for_documents("openai-1", [s["segment_id"] for s in segments])
        got = [
            {k: d[k] for k in ("topic_id", "name", "first_id", "last_id", "final", "aspects")}
            for d in view.stream("openai-1")
        ]
        assert got == expected_documents(segments)
    finally:
        stack.stop()
    assert strict_openai.rejected == []
    bodies = [body for _, body in strict_openai.requests]
    assert {role_of(b) for b in bodies} == {
        "topic_finder",
        "topic_locator",
        "relationship_checker",
        "content_organizer",
    }
    assert all(b["response_format"]["type"] == "json_schema" for b in bodies)
    # Strict where the role's schema fits OpenAI's subset (the locator), off where it does not.
    assert {b["response_format"]["json_schema"]["strict"] for b in bodies} == {True, False}
    assert {b["model"] for b in bodies} <= {"gpt-4o-mini", "o4-mini"}
