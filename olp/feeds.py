"""Transcript file readers for replay (spec section 3, feed adapters): the OLP-MINI list format
`[[sentence_id, text], ...]` and JSON lines. Each yields TranscriptSegment dicts (schemas/
transcript_segment.avsc) with stable segment ids, so replaying a file twice is idempotent.
"""

from __future__ import annotations

import ast
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from olp.errors import OlpError

BASE_TS_MS = 1_700_000_000_000
SECONDS_PER_SENTENCE = 0.4  # ~2.5 spoken sentences per second: the live pace of spec section 9


@dataclass
class ReplayStats:
    """What a reader did with a file, so nothing is skipped silently."""

    read: int = 0
    skipped_empty: int = 0


def read_transcript(
    path: Path, stream_id: str, stats: ReplayStats | None = None, **meta: Any
) -> Iterator[dict[str, Any]]:
    """Segments of `path`: `.jsonl`/`.json` lines or an OLP-MINI Python-literal list."""
    stats = stats if stats is not None else ReplayStats()
    text = Path(path).read_text(encoding="utf-8")
    first = text.lstrip()[:1]
    rows = _olp_mini_rows(path, text) if first == "[" else _jsonl_rows(path, text)
    last_id: int | None = None
    for row_no, (segment_id, body, ts_ms, speaker) in enumerate(rows, start=1):
        if last_id is not None and segment_id <= last_id:
            raise OlpError(
                f"{path}: row {row_no}: segment id {segment_id} does not increase (after {last_id})"
            )
        last_id = segment_id
        if body is None or not str(body).strip():
            stats.skipped_empty += 1
            continue
        stats.read += 1
        yield {
            "stream_id": stream_id,
            "segment_id": segment_id,
            "text": str(body),
            "ts_ms": ts_ms if ts_ms is not None else BASE_TS_MS + int(row_no * SECONDS_PER_SENTENCE * 1000),
            "speaker": speaker,
            "domain": meta.get("domain", "ecommerce"),
            "lang": meta.get("lang", "en"),
            "feed": meta.get("feed", "default"),
            "end_of_stream": False,
        }


def with_end_marker(segments: Iterator[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Mark the last segment of a finite file as the end of its stream."""
    previous: dict[str, Any] | None = None
    for segment in segments:
        if previous is not None:
            yield previous
        previous = segment
    if previous is not None:
        yield {**previous, "end_of_stream": True}


Row = tuple[int, Any, "int | None", "str | None"]


def _olp_mini_rows(path: Path, text: str) -> list[Row]:
    try:
        data = ast.literal_eval(text)
    except (ValueError, SyntaxError) as exc:
        raise OlpError(f"{path}: not an OLP-MINI list [[id, text], ...]: {exc}") from exc
    if not isinstance(data, list):
        raise OlpError(f"{path}: expected a list of [id, text] pairs")
    rows: list[Row] = []
    for index, item in enumerate(data):
        if not (isinstance(item, list | tuple) and len(item) == 2 and isinstance(item[0], int)):
            raise OlpError(f"{path}: item {index} is not an [int id, text] pair: {item!r:.80}")
        rows.append((int(item[0]), item[1], None, None))
    return rows


def _jsonl_rows(path: Path, text: str) -> list[Row]:
    rows: list[Row] = []
    for line_no, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
            segment_id = int(obj.get("segment_id", obj.get("id")))
        except (ValueError, TypeError, AttributeError) as exc:
            raise OlpError(f"{path}:{line_no}: not a JSON object with an integer segment_id: {exc}") from exc
        ts = obj.get("ts_ms")
        rows.append((segment_id, obj.get("text"), int(ts) if ts is not None else None, obj.get("speaker")))
    return rows
