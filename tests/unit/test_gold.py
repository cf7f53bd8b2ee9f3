"""Gold labels and the scores against them (processors/gold.py), and the canary book
(processors/canaries.py)."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest

from olp.errors import ConfigError
from olp.settings import FeedSettings, Settings
from processors.canaries import CanaryBook, chunk_record, parse_canary_id
from processors.domain import TopicSpan
from processors.gold import (
    canary_chunks,
    checker_score,
    finder_score,
    label_problems,
    load_labelled,
    locator_score,
    organizer_score,
    score_against_gold,
)

DATA = Path(__file__).parents[2] / "olp" / "data"
SAMPLE = DATA / "sample_livestream.jsonl"
GOLD = DATA / "sample_livestream.gold.json"


def test_the_sample_gold_labels_every_sentence_exactly_once() -> None:
    gold = load_labelled(GOLD)
    ids = [json.loads(line)["segment_id"] for line in SAMPLE.read_text().splitlines()]
    labelled = [sid for topic in gold.topics for ids_ in topic.aspects.values() for sid in ids_]
    assert len(ids) == 145 and sorted(labelled) == ids  # every sentence, none twice
    assert [t.name for t in gold.topics] == [
        "Human hair wig",
        "Running shoes",
        "Chili crisp",
        "Thermos cup",
        "Face cream",
    ]
    # the spans tile the stream
    assert gold.topics[0].first_id == 1 and gold.topics[-1].last_id == 171
    for before, after in zip(gold.topics, gold.topics[1:], strict=False):
        assert after.first_id == before.last_id + 1
    truth = {sid: a for t in gold.topics for sid, a in t.aspect_of().items()}
    assert (truth[11], truth[22], truth[4], truth[98]) == (
        "Price",
        "Order Urging",
        "Opening",
        "Product Description",
    )


@pytest.mark.parametrize(
    ("name", "domain", "lang"),
    [("canaries_news_en.json", "news", "en"), ("canaries_ecommerce_zh.json", "ecommerce", "zh")],
)
def test_the_news_and_chinese_sets_are_labelled_completely(name: str, domain: str, lang: str) -> None:
    stream = load_labelled(DATA / name)
    assert (stream.domain, stream.lang) == (domain, lang)
    assert label_problems(stream) == [] and len(stream.topics) == 2


def test_a_bundled_set_is_found_by_its_file_name() -> None:
    assert load_labelled(Path("canaries_ecommerce_zh.json")) == load_labelled(
        DATA / "canaries_ecommerce_zh.json"
    )


def test_a_sentence_labelled_twice_or_not_at_all_is_refused(tmp_path: Path) -> None:
    bad = {
        "domain": "news",
        "sentences": [[1, "a"], [2, "b"], [3, "c"]],
        "topics": [{"name": "T", "first_id": 1, "last_id": 3, "aspects": {"Facts": [1, 1], "Opinions": [2]}}],
    }
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(bad))
    with pytest.raises(ConfigError, match=r"labelled twice.*without a label: \[3\]"):
        load_labelled(path)


def _perfect_documents() -> list[dict[str, Any]]:
    gold = load_labelled(GOLD)
    return [
        {
            "name": t.name,
            "first_id": t.first_id,
            "last_id": t.last_id,
            "aspects": [
                {"name": a, "sentences": [{"id": i, "text": ""} for i in ids]} for a, ids in t.aspects.items()
            ],
        }
        for t in gold.topics
    ]


def test_score_against_gold() -> None:
    gold = load_labelled(GOLD)
    assert score_against_gold(_perfect_documents(), gold) == {
        "products": 5.0,
        "products_found": 5.0,
        "span_recall": 1.0,
        "aspect_accuracy": 1.0,
    }
    # the demo's failure: two topics with made-up names, everything under one aspect
    junk = [
        {
            "name": "Mint Julep",
            "first_id": 1,
            "last_id": 70,
            "aspects": [{"name": "Price", "sentences": [{"id": 11}]}],
        },
        {"name": "Running shoes sale", "first_id": 40, "last_id": 171, "aspects": []},
    ]
    scores = score_against_gold(junk, gold)
    shoes = next(t for t in gold.topics if t.name == "Running shoes").aspect_of()
    assert scores["products_found"] == 1.0
    assert scores["span_recall"] == pytest.approx(sum(1 for i in shoes if i >= 40) / 145)
    assert scores["aspect_accuracy"] == pytest.approx(1 / 145)


def test_role_scores_use_the_judges_rules() -> None:
    chunk = canary_chunks(load_labelled(GOLD), 40)[0]  # sentences 1..44: the wig, then the shoes
    assert [t.name for t in chunk.topics] == ["Human hair wig", "Running shoes"]
    assert finder_score(["18 inch wig", "Running shoes"], chunk) == 1.0
    assert finder_score(["Wig", "Mint Julep"], chunk) == pytest.approx(0.0)
    assert finder_score([], chunk) == -1.0
    assert locator_score(["Human hair wig"], (1, 32), chunk) == 1.0
    assert locator_score(["wig"], (1, 16), chunk) == pytest.approx(2 * 16 / 32 - 1)  # IoU over ids
    assert locator_score(["Mint Julep"], (1, 16), chunk) is None
    batch = [TopicSpan("wig", 1, 32), TopicSpan("shoes", 33, 33)]
    assert [s.id for s in chunk.sentences if s.id >= 33] == list(range(33, 45))
    assert locator_score(["wig", "shoes"], batch, chunk) == pytest.approx(2 * (1 + 1 / 12) / 2 - 1)
    answer = {"Opening": [1, 2, 3, 4], "Price": [5], "Order Urging": [], "Product Description": []}
    assert organizer_score(answer, [1, 2, 3, 4, 5, 6], chunk) == pytest.approx(2 * 4 / 6 - 1)
    assert checker_score(True, ["wig", "Lace front wig"], chunk) == 1.0
    assert checker_score(True, ["wig", "shoes"], chunk) == -1.0
    assert checker_score(False, ["wig", "Mint Julep"], chunk) is None


def test_canary_chunks_start_where_a_topic_starts() -> None:
    chunks = canary_chunks(load_labelled(GOLD), 40)
    assert [c.sentences[0].id for c in chunks] == [1, 33, 69, 107, 139]
    assert len(chunks[0].sentences) == 40 and len(chunks[-1].sentences) == 29  # the stream's end


def test_the_canary_book_interleaves_at_its_rate_under_canary_stream_ids() -> None:
    settings = Settings(feeds={"default": FeedSettings(canaries=GOLD, canary_rate=0.5)})
    book = CanaryBook.from_settings(settings, random.Random(3))
    due = [book.after_real_chunk("default", 1) for _ in range(6)]
    assert [len(d) for d in due] == [0, 1, 0, 1, 0, 1]
    records = [r for d in due for r in d]
    assert all(r["stream_id"].startswith("canary:default:") and r["is_last"] for r in records)
    indexes = [parse_canary_id(r["stream_id"]) for r in records]
    assert [i for _, i in indexes] == [(indexes[0][1] + k) % 5 for k in range(3)]  # round robin
    ref = book.reference(records[0]["stream_id"])
    assert ref is not None and [s.to_avro() for s in ref.sentences] == records[0]["sentences"]
    assert book.reference("live-1") is None and book.after_real_chunk("other", 1) == []
    assert parse_canary_id("canary:a:b:3:99") == ("a:b", 3)


def test_canaries_whose_aspects_are_not_the_feeds_are_refused() -> None:
    settings = Settings(feeds={"default": FeedSettings(canaries=DATA / "canaries_news_en.json")})
    with pytest.raises(ConfigError, match="aspects"):
        CanaryBook.from_settings(settings)


def test_a_canary_chunk_record_is_a_whole_stream() -> None:
    chunk = canary_chunks(load_labelled(DATA / "canaries_ecommerce_zh.json"), 40)[1]
    record = chunk_record("shop", 1, chunk, 42, 1000)
    assert (record["stream_id"], record["chunk_id"], record["seq"]) == (
        "canary:shop:1:42",
        "canary:shop:1:42:0",
        0,
    )
    assert record["lang"] == "zh" and record["sentences"][0] == {"id": 9, "text": chunk.sentences[0].text}
