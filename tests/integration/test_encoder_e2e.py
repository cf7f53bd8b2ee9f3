"""End to end on the real embedded broker with the real encoder filling the similarity roles
(Topic Locator, Relationship Checker, Content Organizer) and the scripted server naming the
products (spec section 5, "Encoder models")."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from launcher.clients import replay
from launcher.embedded import installed_encoders
from launcher.scripted_llm import ScriptedLLM, scripted_catalog
from launcher.scripted_roles import PRODUCTS, perfect
from olp.catalog import Catalog
from processors.gold import load_labelled, score_against_gold
from tests.integration.test_pipeline_e2e import sample_segments
from tests.support.stack import ServiceStack

pytestmark = pytest.mark.integration
ENCODER = "minilm-l6-int8"
SIMILARITY_ROLES = ("topic_locator", "relationship_checker", "content_organizer")


@pytest.fixture
def scripted() -> Iterator[ScriptedLLM]:
    server = ScriptedLLM(perfect).start()
    yield server
    server.stop()


def test_the_encoder_fills_the_similarity_roles(
    broker: str, topic_prefix: str, run_dir: Path, scripted: ScriptedLLM
) -> None:
    if ENCODER not in installed_encoders():
        pytest.skip("the encoder is not installed (make install)")
    from launcher.stack import local_encoder_spec

    chat = scripted_catalog(scripted.base_url).models[0]
    catalog = Catalog(
        models=(chat, local_encoder_spec(ENCODER)),
        roles={"topic_finder": (chat.name,), **{role: (ENCODER,) for role in SIMILARITY_ROLES}},
    )
    stack = ServiceStack(
        broker, topic_prefix, run_dir, catalog, {"OLP_FEEDS": json.dumps({"default": {"chunk_size": 30}})}
    )
    try:
        stack.start_policy_store()
        stack.start_worker()
        segments = sample_segments("enc-1")
        assert replay(stack.settings(), segments) == len(segments)
        view = stack.wait_for_documents("enc-1", [s["segment_id"] for s in segments])
        documents = view.stream("enc-1")
        score = score_against_gold(documents, load_labelled(Path("sample_livestream.gold.json")))
        print(f"encoder pipeline on the sample: {score}")
        print([(d["name"], d["first_id"], d["last_id"]) for d in documents])
        assert {d["name"] for d in documents} <= {name for name, _, _ in PRODUCTS}
        assert score["products_found"] == len(PRODUCTS)
        # Measured: span recall 0.72, aspect accuracy 0.67 (a random aspect: 0.25).
        assert score["span_recall"] >= 0.6 and score["aspect_accuracy"] >= 0.5
    finally:
        stack.stop()
