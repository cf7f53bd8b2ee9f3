"""Request bodies -> TranscriptSegment dicts (`schemas/transcript_segment.avsc`). Pure.

A body is JSON lines, one segment per line (a JSON array of segments is accepted too):

    {"stream_id": "shop-7", "segment_id": 12, "text": "Only 20 left!", "ts_ms": 1700000000000,
     "speaker": "host", "end_of_stream": false}

`segment_id` and `text` are required; `stream_id` may instead come from the request (`?stream_id=`
or the WebSocket's URL); `ts_ms` defaults to the time of arrival; other keys (ASR confidence and
the like) are ignored. Domain, language and feed are the feed's, from the configuration, never
the sender's. A request is taken whole or not at all: any bad line rejects it (naming the line),
so a sender can fix and re-send it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from olp.errors import FeedError
from olp.feeds.formats import row_from_object
from olp.http import loads_json
from olp.service_settings import FeedLimits, check_stream_id
from olp.settings import FeedSettings


class TooLargeError(FeedError):
    """A request, a message or one segment is larger than the feed allows (HTTP 413)."""


def parse_body(body: bytes) -> list[Any]:
    """JSON lines (or one JSON array) -> the decoded values, in order."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise FeedError(f"body is not UTF-8: {exc}") from exc
    stripped = text.lstrip("\ufeff \t\r\n")
    if stripped.startswith("["):
        try:
            values = loads_json(stripped)
        except ValueError as exc:
            raise FeedError(f"body is not a JSON array: {exc}") from exc
        return list(values)
    values = []
    for line_no, line in enumerate(stripped.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            values.append(loads_json(line))
        except ValueError as exc:
            raise FeedError(f"line {line_no}: not JSON: {exc}") from exc
    return values


def to_segments(
    values: Sequence[Any],
    *,
    feed_name: str,
    feed: FeedSettings,
    limits: FeedLimits,
    default_stream: str | None,
    now_ms: int,
) -> list[dict[str, Any]]:
    """Validated TranscriptSegment dicts. Raises FeedError (a bad value) or TooLargeError."""
    segments: list[dict[str, Any]] = []
    last: dict[str, int] = {}
    for index, value in enumerate(values, start=1):
        where = f"segment {index}"
        row = row_from_object(value, where)
        stream_id = value.get("stream_id", default_stream)
        if not isinstance(stream_id, str):
            raise FeedError(f"{where}: needs a stream_id (in the segment or as ?stream_id=)")
        try:
            check_stream_id(stream_id)
        except ValueError as exc:
            raise FeedError(f"{where}: {exc}") from exc
        text = row.text or ""
        if len(text) > limits.max_segment_chars:
            raise TooLargeError(
                f"{where}: text of {len(text)} characters exceeds feed {feed_name!r}'s limit of "
                f"{limits.max_segment_chars}"
            )
        if not text.strip() and not row.end_of_stream:
            raise FeedError(f"{where}: text is empty (only an end_of_stream segment may be empty)")
        previous = last.get(stream_id)
        if previous is not None and row.segment_id <= previous:
            raise FeedError(
                f"{where}: segment_id {row.segment_id} of stream {stream_id} does not increase "
                f"(after {previous})"
            )
        last[stream_id] = row.segment_id
        segments.append(
            {
                "stream_id": stream_id,
                "segment_id": row.segment_id,
                "text": text,
                "ts_ms": row.ts_ms if row.ts_ms is not None else now_ms,
                "speaker": row.speaker,
                "domain": feed.domain,
                "lang": feed.lang,
                "feed": feed_name,
                "end_of_stream": row.end_of_stream,
            }
        )
    return segments
