"""Each role's parser on real model answers: SmolLM2-135M, Qwen2.5-Coder-0.5B and
-1.5B answering this project's prompts through llama.cpp (temperature 0, JSON-schema grammar),
recorded once in tests/fixtures/recorded_answers.json, broken answers included. The transcripts
are the project's own (olp/data/sample_livestream.jsonl, tests/fixtures/transcripts.json).

Every case pins what the parser makes of the answer, or the ParseError it raises (which makes the
role-call shell re-ask once, then record a failure). Further tests run the recorded spans and
verdicts through the Relationship Checker's rules (IoU merge, tiling)."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from olp.errors import ParseError
from olp.settings import DEFAULT_ASPECTS
from processors import content_organizer, relationship_checker, topic_finder, topic_locator
from processors.domain import Sentence, TopicSpan

FIXTURES = Path(__file__).parents[1] / "fixtures"
SAMPLE = Path(__file__).parents[2] / "olp" / "data" / "sample_livestream.jsonl"


@cache
def transcript(key: str) -> tuple[list[Sentence], str]:
    if key == "en_live":
        rows = [json.loads(line) for line in SAMPLE.read_text(encoding="utf-8").splitlines() if line.strip()]
        return [Sentence(r["segment_id"], r["text"]) for r in rows], "ecommerce"
    data = json.loads((FIXTURES / "transcripts.json").read_text(encoding="utf-8"))[key]
    return [Sentence(i, t) for i, t in data["sentences"]], str(data["domain"])


def load_cases() -> list[dict[str, Any]]:
    return list(json.loads((FIXTURES / "recorded_answers.json").read_text(encoding="utf-8"))["cases"])


CASES = load_cases()


def case_id(case: dict[str, Any]) -> str:
    about = case.get("topic") or (case.get("a") or [""])[0] or ""
    return f"{case['model']}-{case['transcript']}-{case['role']}-{about}"[:80]


def parse(case: dict[str, Any]) -> Any:
    """The role's parser on the recorded answer, with the context the call had."""
    sentences, domain = transcript(case["transcript"])
    first, last = case["chunk"]
    chunk = [s for s in sentences if first <= s.id <= last]
    ids = [s.id for s in chunk]
    role, text = case["role"], case["answer"]
    if role == "topic_finder":
        return topic_finder.parse_answer(text, chunk)
    if role == "topic_locator":
        return list(topic_locator.parse_answer(text, ids))
    if role == "relationship_checker":
        verdict = relationship_checker.parse_answer(text)
        return {"related": verdict.related, "merged_name": verdict.merged_name}
    own = [i for i in ids if case["span"][0] <= i <= case["span"][1]]
    return content_organizer.parse_answer(text, own, DEFAULT_ASPECTS[domain])


@pytest.mark.parametrize("case", CASES, ids=[case_id(c) for c in CASES])
def test_recorded_answer_parses_as_pinned(case: dict[str, Any]) -> None:
    expected = case["expect"]
    if isinstance(expected, dict) and set(expected) == {"error"}:
        with pytest.raises(ParseError) as caught:
            parse(case)
        assert str(caught.value) == expected["error"]
    else:
        assert parse(case) == expected


def test_the_fixture_covers_every_role_model_and_language() -> None:
    roles = {c["role"] for c in CASES}
    assert roles == {"topic_finder", "topic_locator", "relationship_checker", "content_organizer"}
    assert {c["model"] for c in CASES} == {"smollm2-135m", "qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b"}
    assert {c["transcript"] for c in CASES} == {"en_live", "zh_live", "en_news"}
    broken = [c for c in CASES if isinstance(c["expect"], dict) and "error" in c["expect"]]
    assert broken, "the fixture must hold broken answers too"


def test_recorded_ids_are_always_ids_of_the_chunk() -> None:
    """Whatever a model answered, a parsed span or label only ever names sentences it was shown."""
    for case in CASES:
        sentences, _ = transcript(case["transcript"])
        ids = {s.id for s in sentences if case["chunk"][0] <= s.id <= case["chunk"][1]}
        try:
            value = parse(case)
        except ParseError:
            continue
        if case["role"] == "topic_locator":
            assert set(value) <= ids and value[0] <= value[1]
        if case["role"] == "content_organizer":
            placed = [i for group in value.values() for i in group]
            assert set(placed) <= ids and len(placed) == len(set(placed))


def _chunk_runs() -> list[tuple[str, str, list[int]]]:
    runs = []
    for case in CASES:
        key = (case["model"], case["transcript"], case["chunk"])
        if case["role"] == "topic_locator" and key not in runs:
            runs.append(key)
    return runs


@pytest.mark.parametrize(("model", "key", "chunk"), _chunk_runs(), ids=lambda v: str(v)[:40])
def test_recorded_spans_and_verdicts_through_the_merge_rules(model: str, key: str, chunk: list[int]) -> None:
    """The recorded locator spans and relationship verdicts of one chunk, through the rules: two
    adjacent topics stay apart only when the model said "not related" and their IoU is below the
    domain's threshold; the result tiles the chunk."""
    sentences, domain = transcript(key)
    ids = [s.id for s in sentences if chunk[0] <= s.id <= chunk[1]]
    mine = [c for c in CASES if (c["model"], c["transcript"], c["chunk"]) == (model, key, chunk)]
    spans = []
    for case in mine:
        if case["role"] == "topic_locator" and isinstance(case["expect"], list):
            spans.append(TopicSpan(case["topic"], *case["expect"]))
    verdicts: dict[tuple[str, str], relationship_checker.RelationVerdict] = {}
    for case in mine:
        if case["role"] == "relationship_checker" and "error" not in case["expect"]:
            verdicts[(case["a"][0], case["b"][0])] = relationship_checker.RelationVerdict(
                case["expect"]["related"], case["expect"]["merged_name"]
            )
    if not spans:
        pytest.skip("no topic of this chunk was located")
    ordered = sorted(spans, key=lambda s: (s.first_id, s.last_id))
    pairs = relationship_checker.adjacent_pairs(ordered)
    given = [verdicts.get((a.name, b.name)) for a, b in pairs]
    threshold = relationship_checker.iou_threshold(domain)
    merged = relationship_checker.merge_adjacent(ordered, given, threshold, ids)
    # The rule, pair by pair: apart only when "no" and IoU below the threshold.
    apart = [
        not (v is not None and v.related) and relationship_checker.iou(a, b, ids) < threshold
        for (a, b), v in zip(pairs, given, strict=True)
    ]
    assert len(merged) == 1 + sum(apart)
    tiled = relationship_checker.tile(relationship_checker.merge_same_names(merged), ids)
    covered = [i for s in tiled for i in ids if s.first_id <= i <= s.last_id]
    assert covered == ids  # every sentence of the chunk in exactly one topic, in order
