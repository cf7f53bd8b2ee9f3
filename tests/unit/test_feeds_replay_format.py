"""Transcript files for replay: the OLP-MINI list format and JSON lines."""

from __future__ import annotations

from pathlib import Path

import pytest

from olp.errors import OlpError
from olp.feeds import ReplayStats, read_transcript, with_end_marker

SAMPLE = Path(__file__).parents[2] / "olp" / "data" / "sample_livestream.jsonl"


def test_olp_mini_list_with_none_texts(tmp_path: Path) -> None:
    path = tmp_path / "stream.txt"
    path.write_text("[[3, 'hello'], [5, None], [9, 'buy now']]")
    stats = ReplayStats()
    segments = list(with_end_marker(read_transcript(path, "s", stats, domain="ecommerce", lang="zh")))
    assert [(s["segment_id"], s["text"], s["end_of_stream"], s["lang"]) for s in segments] == [
        (3, "hello", False, "zh"),
        (9, "buy now", True, "zh"),
    ]
    assert (stats.read, stats.skipped_empty) == (2, 1)


def test_the_bundled_sample_is_a_valid_jsonl_stream() -> None:
    segments = list(read_transcript(SAMPLE, "demo"))
    assert len(segments) >= 100
    ids = [s["segment_id"] for s in segments]
    assert ids == sorted(set(ids))


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("[[1, 'a'], [1, 'b']]", "does not increase"),
        ("[[1, 'a'], 'oops']", "not an \\[int id, text\\] pair"),
        ("[[1, 'a'", "not an OLP-MINI list"),
        ('{"segment_id": "x", "text": "a"}', "integer segment_id"),
    ],
)
def test_bad_files_get_clear_errors(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "bad.txt"
    path.write_text(content)
    with pytest.raises(OlpError, match=message):
        list(read_transcript(path, "s"))
