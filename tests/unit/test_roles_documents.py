"""Documents across chunks (spec section 3): the end-of-stream merge of identically named topics
(`format_checker.merge_documents_by_name`), and a topic that grows over a chunk boundary: the
unfinished last topic is carried into the next chunk whole and its document is replaced by the
newer version."""

from __future__ import annotations

from typing import Any

from processors import format_checker
from processors.chunk_splitter import (
    SplitterState,
    add_segment,
    apply_done,
    carry_limit,
    next_chunk,
    next_start_id,
)
from processors.domain import Sentence, TopicSpan
from processors.relationship_checker import RelationVerdict, merge_adjacent, merge_same_names, tile

ASPECTS = ("Opening", "Order Urging", "Price", "Product Description")


def doc(
    topic_id: int, name: str, first: int, last: int, aspects: dict[str, list[int]], **kw: Any
) -> dict[str, Any]:
    return {
        "stream_id": "s",
        "topic_id": str(topic_id),
        "version": kw.get("version", 0),
        "name": name,
        "first_id": first,
        "last_id": last,
        "final": kw.get("final", True),
        "domain": "ecommerce",
        "lang": "en",
        "aspects": [
            {"name": a, "sentences": [{"id": i, "text": f"s{i}"} for i in aspects.get(a, [])]}
            for a in ASPECTS
        ],
        "repairs": kw.get("repairs", []),
        "updated_ms": kw.get("updated_ms", 1),
    }


def test_identically_named_topics_merge_at_the_end_of_the_stream() -> None:
    docs = [
        doc(20, "Running shoes", 20, 29, {"Price": [25]}, version=1),
        doc(1, "Lace wig", 1, 19, {"Opening": [1], "Product Description": [2, 3]}, version=0, repairs=["r0"]),
        doc(
            30,
            " lace  WIG ",
            30,
            35,
            {"Price": [31], "Product Description": [30, 32]},
            version=2,
            final=False,
        ),
    ]
    merged, members = format_checker.merge_documents_by_name(docs)
    assert [(d["topic_id"], d["name"], d["first_id"], d["last_id"]) for d in merged] == [
        ("1", "Lace wig", 1, 35),
        ("20", "Running shoes", 20, 29),
    ]
    wig = merged[0]
    assert {a["name"]: [s["id"] for s in a["sentences"]] for a in wig["aspects"]} == {
        "Opening": [1],
        "Order Urging": [],
        "Price": [31],
        "Product Description": [2, 3, 30, 32],
    }
    assert wig["version"] == 2 and wig["final"] is False
    assert wig["repairs"] == ["r0", "merged 2 documents named 'Lace wig': topic ids 1, 30"]
    assert [d["topic_id"] for d in members["1"]] == ["1", "30"] and len(members["20"]) == 1
    assert merged[1] == docs[0]  # a document with a unique name is passed on unchanged


def test_merge_keeps_each_sentence_once() -> None:
    docs = [doc(1, "Wig", 1, 5, {"Price": [2]}), doc(3, "wig", 3, 8, {"Price": [2], "Opening": [3]})]
    merged, _ = format_checker.merge_documents_by_name(docs)
    assert [s["id"] for a in merged[0]["aspects"] for s in a["sentences"]] == [3, 2]


def _documents(
    chunk: dict[str, Any], spans: list[TopicSpan], verdicts: list[RelationVerdict | None], k: int
) -> list[dict[str, Any]]:
    """What the Relationship Checker and the Format Checker make of located spans."""
    ids = [s["id"] for s in chunk["sentences"]]
    tiled = tile(merge_same_names(merge_adjacent(spans, verdicts, 0.5, ids)), ids)
    drafts = [
        {
            "name": s.name,
            "first_id": s.first_id,
            "last_id": s.last_id,
            "final": chunk["is_last"] or i < len(tiled) - 1,
            "aspects": {},
        }
        for i, s in enumerate(tiled)
    ]
    return [
        format_checker.check_document(chunk, d, ASPECTS, chunk["seq"], 0, carry_limit=carry_limit(k))
        for d in drafts
    ]


def test_the_unfinished_topic_is_carried_over_and_its_document_replaced() -> None:
    k = 10
    state = SplitterState("s")
    for i in range(1, 26):
        state = add_segment(state, Sentence(i, f"sentence {i}"), end_of_stream=i == 25)
    newest: dict[str, dict[str, Any]] = {}

    # Chunk 0 (1-10): the wig (1-6), then the shoes start at 7 and are not finished.
    state, spec = next_chunk(state, k)
    assert spec is not None and [s.id for s in spec.sentences] == list(range(1, 11))
    docs = _documents(
        spec.to_avro(0), [TopicSpan("Wig", 1, 6), TopicSpan("Shoes", 7, 10)], [RelationVerdict(False)], k
    )
    assert [(d["name"], d["first_id"], d["last_id"], d["final"]) for d in docs] == [
        ("Wig", 1, 6, True),
        ("Shoes", 7, 10, False),
    ]
    newest.update({d["topic_id"]: d for d in docs})
    state = apply_done(state, spec.seq, next_start_id(docs, spec.is_last))

    # Chunk 1: the shoes again whole (7-10), then 10 new sentences (11-20).
    state, spec = next_chunk(state, k)
    assert spec is not None and [s.id for s in spec.sentences] == list(range(7, 21)) and spec.new_count == 10
    docs = _documents(
        spec.to_avro(0),
        [TopicSpan("Running shoes", 7, 15), TopicSpan("Cup", 16, 20)],
        [RelationVerdict(False)],
        k,
    )
    assert [(d["topic_id"], d["first_id"], d["last_id"], d["final"], d["version"]) for d in docs] == [
        ("7", 7, 15, True, 1),
        ("16", 16, 20, False, 1),
    ]
    for d in docs:  # newest version wins per topic id
        if d["topic_id"] not in newest or newest[d["topic_id"]]["version"] <= d["version"]:
            newest[d["topic_id"]] = d
    state = apply_done(state, spec.seq, next_start_id(docs, spec.is_last))

    # Chunk 2 (last): the cup again whole, and the rest of the stream.
    state, spec = next_chunk(state, k)
    assert spec is not None and spec.is_last and [s.id for s in spec.sentences] == list(range(16, 26))
    docs = _documents(spec.to_avro(0), [TopicSpan("Cup", 16, 25)], [], k)
    newest.update({d["topic_id"]: d for d in docs})
    state = apply_done(state, spec.seq, next_start_id(docs, spec.is_last))
    assert next_chunk(state, k)[1] is None

    final = sorted(newest.values(), key=lambda d: d["first_id"])
    assert [(d["name"], d["first_id"], d["last_id"], d["final"]) for d in final] == [
        ("Wig", 1, 6, True),
        ("Running shoes", 7, 15, True),  # the chunk-0 version "Shoes" 7-10 was replaced
        ("Cup", 16, 25, True),
    ]
    covered = [s["id"] for d in final for a in d["aspects"] for s in a["sentences"]]
    assert sorted(covered) == list(range(1, 26))  # every sentence in exactly one document
