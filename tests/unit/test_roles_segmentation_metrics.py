"""The QMSum evaluation's pure parts (bench/segmentation_eval.py): turning a meeting into the sentence
stream, the one-to-one matching rule, recall / precision, Pk and WindowDiff, and cutting a
transcript to a context window."""

from __future__ import annotations

import pytest

from bench.segmentation_eval import (
    best_matching,
    clean_turn,
    fit_to_context,
    pk,
    segmentation_scores,
    to_meeting,
    window_diff,
)
from processors.domain import Sentence, render_transcript


def test_turns_become_sentences_with_their_index_as_id() -> None:
    row = {
        "meeting_id": "m1",
        "meeting_transcripts": [
            {"speaker": "A", "content": "Okay {disfmarker} let us start ."},
            {"speaker": "B", "content": "{vocalsound}"},  # nothing said: skipped, id 1 unused
            {"speaker": "C", "content": "The budget is " + "very " * 60 + "tight ."},
        ],
        "topic_list": [
            {"topic": "Opening", "relevant_text_span": [["0", "1"]]},
            {"topic": "Budget", "relevant_text_span": [["2", "2"], ["5", "9"]]},  # 5-9 not in stream
        ],
    }
    meeting = to_meeting(row, max_chars=60)
    assert [s.id for s in meeting.sentences] == [0, 2]
    assert meeting.sentences[0].text == "A: Okay let us start."
    assert meeting.sentences[1].text.startswith("C: The budget is very") and meeting.sentences[
        1
    ].text.endswith(" ...")
    assert len(meeting.sentences[1].text) <= len("C: ") + 60 + 4
    assert meeting.topics == [("Opening", {0}), ("Budget", {2})]
    assert clean_turn("X", "{gap} {pause}", 100) == ""


def test_matching_is_one_to_one_and_maximises_shared_turns() -> None:
    truth = [set(range(0, 10)), set(range(10, 20))]
    # One big predicted topic covers both: it can be matched to one of them only.
    assert best_matching(truth, [set(range(0, 20))]) in ({0: 0}, {1: 0})
    # Greedy would give the big one to truth 0 (10 shared) and leave truth 1 with 3; the optimum
    # gives truth 0 the exact match and truth 1 the big one.
    predicted = [set(range(0, 20)), set(range(0, 10)), set(range(17, 20))]
    assert best_matching(truth, predicted) == {0: 1, 1: 0}
    assert best_matching(truth, [set(range(30, 40))]) == {}


def test_recall_counts_turns_covered_by_the_matched_topic() -> None:
    turns = list(range(20))
    truth = [set(range(0, 10)), set(range(10, 20))]
    perfect = segmentation_scores(turns, truth, truth)
    assert perfect["recall"] == perfect["precision"] == perfect["recall_any"] == 1.0
    assert perfect["pk"] == perfect["window_diff"] == 0.0
    one_blob = segmentation_scores(turns, truth, [set(turns)])
    assert one_blob["recall"] == 0.5 and one_blob["precision"] == 0.5 and one_blob["recall_any"] == 1.0
    assert one_blob["pk"] > 0.3
    # A truncated transcript (non-OLP): the unseen second half is predicted as nothing.
    half = segmentation_scores(turns, truth, [set(range(0, 10))])
    assert half["recall"] == 0.5 and half["precision"] == 1.0
    # Fragments: the best piece of each topic counts.
    pieces = segmentation_scores(turns, truth, [set(range(0, 4)), set(range(4, 10)), set(range(10, 20))])
    assert pieces["recall"] == pytest.approx(16 / 20) and pieces["precision"] == pytest.approx(16 / 20)
    # Turns outside every ground-truth topic are ignored by recall and precision.
    outside = segmentation_scores(list(range(25)), truth, [set(range(0, 10)), set(range(10, 25))])
    assert outside["recall"] == outside["precision"] == 1.0


def test_pk_and_window_diff_on_segment_numbers() -> None:
    ref = [0, 0, 0, 0, 1, 1, 1, 1]
    assert pk(ref, ref, 2) == window_diff(ref, ref, 2) == 0.0
    shifted = [0, 0, 0, 0, 0, 0, 1, 1]
    assert pk(ref, shifted, 2) == pytest.approx(4 / 6)  # pairs starting at 2, 3, 4, 5 disagree
    assert window_diff(ref, shifted, 2) == pytest.approx(4 / 6)
    assert pk([0, 0], [0, 1], 3) == 0.0  # shorter than the window


def test_fit_to_context_keeps_the_longest_prefix_that_fits() -> None:
    sentences = [Sentence(i, "word " * 10) for i in range(50)]

    def count(text: str) -> int:
        return len(text.split())

    kept = fit_to_context(sentences, 200, count)
    assert count(render_transcript(kept)) <= 200 < count(render_transcript(sentences[: len(kept) + 1]))
    assert fit_to_context(sentences, 10_000, count) == sentences
