"""The pure parts of the stack benchmarks (bench/stack_runner.py, bench/olp_mini_rtf.py,
bench/qmsum_recall.py): the pins of each model choice, what the feedback says per role, model and
language, and the streams and topic spans they compare."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import olp_mini_rtf, qmsum_recall, stack_runner
from bench.segmentation_eval import Meeting
from bench.stack_runner import canary_scores, covered, model_shares, role_pins, rtf, shares_text
from olp.errors import OlpError
from processors.domain import Sentence


def _outcome(role: str, model: str, lang: str, source: str, quality: float | None, stream: str) -> dict:
    return {
        "role": role,
        "model": model,
        "lang": lang,
        "source": source,
        "quality": quality,
        "stream_id": stream,
    }


def test_each_choice_pins_the_roles_an_operator_would() -> None:
    assert role_pins("free", "llm", "enc") == {}
    assert role_pins("llm", "llm", "enc") == {
        "topic_finder": "llm",
        "topic_locator": "llm",
        "relationship_checker": "llm",
        "content_organizer": "llm",
    }
    # The encoder names topics extractively: every role it can fill, the Topic Finder too.
    assert role_pins("encoder", "llm", "enc") == {
        "topic_finder": "enc",
        "topic_locator": "enc",
        "relationship_checker": "enc",
        "content_organizer": "enc",
    }
    with pytest.raises(OlpError, match="needs an installed encoder"):
        role_pins("encoder", "llm", None)
    with pytest.raises(OlpError, match="unknown model choice"):
        role_pins("all", "llm", "enc")


def test_canary_scores_average_only_canary_evidence_per_role_model_and_language() -> None:
    outcomes = [
        _outcome("topic_locator", "enc", "en", "canary", 0.5, "canary:f:0:1"),
        _outcome("topic_locator", "enc", "en", "canary", -0.5, "canary:f:1:1"),
        _outcome("topic_locator", "enc", "zh", "canary", 1.0, "canary:g:0:1"),
        _outcome("topic_locator", "enc", "en", "processor", None, "canary:f:0:1"),
        _outcome("topic_locator", "enc", "en", "judge", 0.9, "s1"),
        _outcome("topic_finder", "llm", "en", "canary", None, "canary:f:0:1"),  # unusable answer
    ]
    assert canary_scores(outcomes) == {
        ("topic_locator", "enc", "en"): (0.0, 2),
        ("topic_locator", "enc", "zh"): (1.0, 1),
    }


def test_model_shares_count_the_calls_on_real_chunks_per_role_and_language() -> None:
    outcomes = [
        _outcome("topic_locator", "enc", "en", "processor", None, "s1"),
        _outcome("topic_locator", "enc", "en", "processor", None, "s1"),
        _outcome("topic_locator", "enc", "en", "processor", None, "s1"),
        _outcome("topic_locator", "llm", "en", "processor", None, "s1"),
        _outcome("topic_locator", "llm", "zh", "processor", None, "s2"),
        _outcome("topic_locator", "llm", "en", "processor", None, "canary:f:0:1"),  # a canary
        _outcome("topic_locator", "llm", "en", "canary", 1.0, "canary:f:0:1"),
    ]
    shares = model_shares(outcomes)
    assert shares == {
        ("topic_locator", "en"): {"enc": 0.75, "llm": 0.25},
        ("topic_locator", "zh"): {"llm": 1.0},
    }
    assert shares_text(shares[("topic_locator", "en")]) == "enc 75%, llm 25%"


def test_progress_counts_sentences_in_final_documents_and_rtf_is_speech_over_wall_time() -> None:
    docs = [
        {"first_id": 1, "last_id": 3, "final": True},
        {"first_id": 4, "last_id": 6, "final": False},
        {"first_id": 8, "last_id": 9, "final": True},
    ]
    assert covered(docs, range(1, 11)) == 5
    assert rtf(50, 10.0) == pytest.approx(2.0)  # 50 sentences = 20 s of speech at 2.5/s
    assert rtf(50, 40.0) == pytest.approx(0.5)


def test_olp_mini_feeds_carry_each_languages_canaries_and_streams_end(tmp_path: Path) -> None:
    feeds = olp_mini_rtf.feeds(["en", "zh"], 40, 0.5)
    assert feeds["olp-mini-zh"]["lang"] == "zh"
    assert feeds["olp-mini-zh"]["canaries"] == "canaries_ecommerce_zh.json"
    assert feeds["olp-mini-en"]["canaries"].endswith("sample_livestream.gold.json")
    path = tmp_path / "EN009.txt"
    path.write_text("[[1, 'hello'], [2, None], [3, 'buy now'], [4, 'bye']]", encoding="utf-8")
    segments = olp_mini_rtf.segments_of("en", path, "llm", 2)
    assert [(s["segment_id"], s["feed"], s["stream_id"]) for s in segments] == [
        (1, "olp-mini-en", "llm-en-EN009"),
        (3, "olp-mini-en", "llm-en-EN009"),
    ]
    assert [s["end_of_stream"] for s in segments] == [False, True]
    assert len(olp_mini_rtf.segments_of("en", path, "llm", 0)) == 3


def test_qmsum_turns_become_segments_from_1_and_documents_turn_spans_merged_by_name() -> None:
    meeting = Meeting("m1", [Sentence(0, "A: hi"), Sentence(2, "B: budget")], [("Budget", {2})])
    segments = qmsum_recall.meeting_segments(meeting, "free")
    assert [(s["segment_id"], s["domain"], s["stream_id"]) for s in segments] == [
        (1, "meeting", "free-m1"),
        (3, "meeting", "free-m1"),
    ]
    assert segments[-1]["end_of_stream"]
    docs = [
        {"name": "Budget", "first_id": 1, "last_id": 2, "final": True},
        {"name": "Remote design", "first_id": 3, "last_id": 5, "final": True},
        {"name": "budget ", "first_id": 7, "last_id": 7, "final": True},
        {"name": "Draft", "first_id": 8, "last_id": 9, "final": False},
    ]
    assert qmsum_recall.predicted_turns(docs) == [{0, 1, 6}, {2, 3, 4}]


def test_role_cells_weigh_each_models_canary_score_by_its_calls() -> None:
    scores = {
        ("topic_locator", "enc", "en"): (1.0, 3),
        ("topic_locator", "llm", "en"): (-1.0, 1),
        ("topic_locator", "llm", "zh"): (-0.5, 2),
    }
    assert stack_runner.role_canary_cells(scores, "en") == ["-", "+0.50 (4)", "-", "-"]
    assert stack_runner.role_canary_cells(scores) == ["-", "+0.17 (6)", "-", "-"]  # (3 - 1 - 1) / 6
