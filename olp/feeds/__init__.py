"""Feed adapters' common ground (spec section 3, feed adapters): files and feeds in,
TranscriptSegment dicts (`schemas/transcript_segment.avsc`) out, with stable segment ids so that
sending the same input twice is idempotent.

    read_transcript(path, stream_id)      a whole file: JSONL, OLP-MINI, SRT, WebVTT, RSS/Atom
    follow_transcript(path, stream_id)    a JSONL/SRT/WebVTT file that is still being written
    with_end_marker(segments)             mark the last segment of a finite file
    to_segments(rows, stream_id, ...)     rows of any parser -> TranscriptSegment dicts

The parsers live in `olp.feeds.formats` (transcripts, subtitles) and `olp.feeds.news` (RSS,
Atom); pacing and tailing in `olp.feeds.timing`. Nothing here touches Kafka: the CLI
(`olp ingest`), the ingest service (`ingest/`) and tests send what these produce.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from olp.errors import FeedError
from olp.feeds.formats import (
    FORMATS,
    ReplayStats,
    Row,
    detect_format,
    iter_jsonl,
    iter_srt,
    iter_vtt,
    numbered,
    parse_olp_mini,
)
from olp.feeds.news import article_rows, parse_news_feed
from olp.feeds.timing import follow_lines

__all__ = [
    "BASE_TS_MS",
    "FORMATS",
    "SECONDS_PER_SENTENCE",
    "ReplayStats",
    "Row",
    "follow_transcript",
    "read_transcript",
    "rows_from_text",
    "to_segments",
    "with_end_marker",
]

BASE_TS_MS = 1_700_000_000_000
"""Timestamp of a file's time zero when the file has no absolute times (subtitles, OLP-MINI)."""
SECONDS_PER_SENTENCE = 0.4  # ~2.5 spoken sentences per second: the live pace of spec section 9


def rows_from_text(
    text: str,
    fmt: str,
    source: str,
    stats: ReplayStats | None = None,
    base_ts_ms: int = BASE_TS_MS,
    now_ms: int | None = None,
) -> Iterator[Row]:
    """Rows of a whole document in format `fmt` (one of FORMATS, or "auto")."""
    if fmt == "auto":
        fmt = detect_format(source, text)
    if fmt == "olp-mini":
        return iter(parse_olp_mini(text, source))
    if fmt == "jsonl":
        return iter_jsonl(numbered(text), source)
    if fmt == "srt":
        return iter_srt(numbered(text), source, base_ts_ms, stats)
    if fmt == "vtt":
        return iter_vtt(numbered(text), source, base_ts_ms, stats)
    if fmt == "news":
        return iter(article_rows(parse_news_feed(text, source), stats, now_ms))
    raise FeedError(f"unknown format {fmt!r}; choose from auto, {', '.join(FORMATS)}")


def to_segments(
    rows: Iterable[Row],
    stream_id: str,
    source: str,
    stats: ReplayStats | None = None,
    *,
    feed: str = "default",
    domain: str = "ecommerce",
    lang: str = "en",
) -> Iterator[dict[str, Any]]:
    """TranscriptSegment dicts; ids must increase, empty sentences are skipped (and counted),
    missing timestamps are spaced at the live pace from BASE_TS_MS."""
    stats = stats if stats is not None else ReplayStats()
    last_id: int | None = None
    for row_no, row in enumerate(rows, start=1):
        if last_id is not None and row.segment_id <= last_id:
            raise FeedError(
                f"{source}: row {row_no}: segment id {row.segment_id} does not increase (after {last_id})"
            )
        last_id = row.segment_id
        if row.text is None or not row.text.strip():
            stats.skipped_empty += 1
            continue
        stats.read += 1
        ts_ms = row.ts_ms
        if ts_ms is None:
            ts_ms = BASE_TS_MS + int(row_no * SECONDS_PER_SENTENCE * 1000)
        yield {
            "stream_id": stream_id,
            "segment_id": row.segment_id,
            "text": row.text,
            "ts_ms": ts_ms,
            "speaker": row.speaker,
            "domain": domain,
            "lang": lang,
            "feed": feed,
            "end_of_stream": row.end_of_stream,
        }


def read_transcript(
    path: Path,
    stream_id: str,
    stats: ReplayStats | None = None,
    *,
    fmt: str = "auto",
    base_ts_ms: int = BASE_TS_MS,
    **meta: Any,
) -> Iterator[dict[str, Any]]:
    """Segments of a file; `meta` may set `feed`, `domain` and `lang`."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise FeedError(f"cannot read {path}: {exc}") from exc
    rows = rows_from_text(text, fmt, str(path), stats, base_ts_ms)
    yield from to_segments(rows, stream_id, str(path), stats, **meta)


def follow_transcript(
    path: Path,
    stream_id: str,
    stats: ReplayStats | None = None,
    *,
    fmt: str = "auto",
    base_ts_ms: int = BASE_TS_MS,
    stop: Callable[[], bool] = lambda: False,
    poll_s: float = 0.25,
    sleep: Callable[[float], None] | None = None,
    **meta: Any,
) -> Iterator[dict[str, Any]]:
    """Segments of a JSONL, SRT or WebVTT file as lines are appended to it, until `stop()`."""
    if fmt == "auto":
        with Path(path).open(encoding="utf-8") as handle:
            fmt = detect_format(str(path), handle.read(4096))
    extra = {"sleep": sleep} if sleep is not None else {}
    lines = follow_lines(Path(path), stop=stop, poll_s=poll_s, **extra)
    source = str(path)
    rows: Iterator[Row]
    if fmt == "jsonl":
        rows = iter_jsonl(lines, source)
    elif fmt == "srt":
        rows = iter_srt(lines, source, base_ts_ms, stats)
    elif fmt == "vtt":
        rows = iter_vtt(lines, source, base_ts_ms, stats)
    else:
        raise FeedError(f"{path}: only JSONL, SRT and WebVTT files can be followed, not {fmt}")
    yield from to_segments(rows, stream_id, source, stats, **meta)


def with_end_marker(segments: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Mark the last segment of a finite file as the end of its stream."""
    previous: dict[str, Any] | None = None
    for segment in segments:
        if previous is not None:
            yield previous
        previous = segment
    if previous is not None:
        yield {**previous, "end_of_stream": True}
