"""Parsers of transcript files into rows (spec section 3, feed adapters). Pure: text in,
rows out, no I/O.

Formats and where each row's `segment_id` comes from (ids must increase within a stream, and
stay the same when the same input is read again, so re-sending is idempotent):

- OLP-MINI `[[sentence_id, text], ...]` (a Python literal): the given ids.
- JSON lines `{"segment_id" | "id": int, "text": str, "ts_ms"?: int, "speaker"?: str,
  "end_of_stream"?: bool}`: the given ids.
- SRT: the cue counter. WebVTT: the cue identifier when it is a number. When a cue has no usable
  number (a VTT cue without identifier, a counter that does not increase), it gets the previous
  id + 1, so ids depend only on the cues before it: stable when a file is read again *and* when it
  grows (tailing an ASR's output). `ts_ms` is `base_ts_ms` + the cue's start time.

The line-based parsers take `(line_no, line)` pairs, so the same code reads a whole file and a
file that is still being written (`olp.feeds.timing.follow_lines`). Malformed input raises
`olp.errors.FeedError` naming the source and line.
"""

from __future__ import annotations

import ast
import html
import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from olp.errors import FeedError

Lines = Iterable[tuple[int, str]]
"""(1-based line number, line without its line break)."""


@dataclass(frozen=True, slots=True)
class Row:
    """One sentence as read from a source, before it becomes a TranscriptSegment."""

    segment_id: int
    text: str | None
    ts_ms: int | None = None
    speaker: str | None = None
    end_of_stream: bool = False


@dataclass
class ReplayStats:
    """What a reader did with its input, so nothing is skipped silently."""

    read: int = 0
    skipped_empty: int = 0
    renumbered: int = 0
    """Cues whose own number was missing or did not increase (they got the previous id + 1)."""
    skipped_undated: int = 0
    """News articles without a usable date (no stable id can be derived)."""
    skipped_future: int = 0
    """News articles dated in the future (taken on a later poll)."""
    truncated: int = 0
    """News sentences beyond the per-minute id space."""


def numbered(text: str) -> Iterator[tuple[int, str]]:
    """Lines of `text` with 1-based numbers; a leading byte-order mark is dropped."""
    return enumerate(text.removeprefix("\ufeff").splitlines(), start=1)


# --- OLP-MINI and JSON lines ----------------------------------------------------------------


def parse_olp_mini(text: str, source: str) -> list[Row]:
    """`[[id, text], ...]`, as the paper's data files hold it (literals only, never code)."""
    try:
        data = ast.literal_eval(text)
    except (ValueError, SyntaxError, MemoryError, RecursionError) as exc:
        raise FeedError(f"{source}: not an OLP-MINI list [[id, text], ...]: {exc}") from exc
    if not isinstance(data, list):
        raise FeedError(f"{source}: expected a list of [id, text] pairs")
    rows: list[Row] = []
    for index, item in enumerate(data):
        if not (
            isinstance(item, list | tuple)
            and len(item) == 2
            and isinstance(item[0], int)
            and not isinstance(item[0], bool)
        ):
            raise FeedError(f"{source}: item {index} is not an [int id, text] pair: {item!r:.80}")
        rows.append(Row(int(item[0]), None if item[1] is None else str(item[1])))
    return rows


def jsonl_row(line: str, where: str) -> Row | None:
    """One JSON line -> Row; None for a blank line. `where` names source and line in errors."""
    if not line.strip():
        return None
    try:
        obj = json.loads(line)
    except ValueError as exc:
        raise FeedError(f"{where}: not JSON: {exc}") from exc
    return row_from_object(obj, where)


def row_from_object(obj: Any, where: str) -> Row:
    """A decoded JSON object -> Row, checking every field's type."""
    if not isinstance(obj, dict):
        raise FeedError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    segment_id = obj.get("segment_id", obj.get("id"))
    if isinstance(segment_id, bool) or not isinstance(segment_id, int):
        raise FeedError(f"{where}: needs an integer segment_id, got {segment_id!r:.40}")
    if not 0 <= segment_id < 2**63:
        raise FeedError(f"{where}: segment_id must be a non-negative 64-bit integer, got {segment_id}")
    text = obj.get("text")
    if text is not None and not isinstance(text, str):
        raise FeedError(f"{where}: text must be a string, got {type(text).__name__}")
    ts = obj.get("ts_ms")
    if ts is not None and (isinstance(ts, bool) or not isinstance(ts, int) or not 0 <= ts < 2**63):
        raise FeedError(f"{where}: ts_ms must be a non-negative integer (epoch ms), got {ts!r:.40}")
    speaker = obj.get("speaker")
    if speaker is not None and not isinstance(speaker, str):
        raise FeedError(f"{where}: speaker must be a string, got {type(speaker).__name__}")
    eos = obj.get("end_of_stream", False)
    if not isinstance(eos, bool):
        raise FeedError(f"{where}: end_of_stream must be true or false, got {eos!r:.20}")
    return Row(segment_id, text, ts, speaker, eos)


def iter_jsonl(lines: Lines, source: str) -> Iterator[Row]:
    for line_no, line in lines:
        row = jsonl_row(line, f"{source}:{line_no}")
        if row is not None:
            yield row


# --- subtitles (SRT, WebVTT) ----------------------------------------------------------------

_SRT_TIME = re.compile(r"(\d+):([0-5]\d):([0-5]\d)[,.](\d{1,3})")
_VTT_TIME = re.compile(r"(?:(\d+):)?([0-5]\d):([0-5]\d)\.(\d{3})")
_VOICE = re.compile(r"<v(?:\.[^\s>]*)?\s+([^>]+)>")
_TAG = re.compile(r"<[^>]*>")
_ASS_TAG = re.compile(r"\{\\[^}]*\}")  # {\an8} position tags some SRT writers add


def _ms(match: re.Match[str]) -> int:
    hours, minutes, seconds, fraction = match.groups()
    return ((int(hours or 0) * 60 + int(minutes)) * 60 + int(seconds)) * 1000 + int(fraction.ljust(3, "0"))


def _timing(line: str, pattern: re.Pattern[str], where: str) -> int:
    """Start time in ms of a `start --> end [settings]` line."""
    start, arrow, rest = line.partition("-->")
    begin = pattern.fullmatch(start.strip())
    end = pattern.match(rest.strip())
    if not arrow or begin is None or end is None:
        raise FeedError(f"{where}: bad cue timing {line.strip()!r:.80} (want `start --> end`)")
    return _ms(begin)


def _blocks(lines: Lines) -> Iterator[list[tuple[int, str]]]:
    """Runs of non-blank lines; a block ends at a blank line (or at the end of the input)."""
    block: list[tuple[int, str]] = []
    for line_no, line in lines:
        if line.strip():
            block.append((line_no, line.rstrip()))
        elif block:
            yield block
            block = []
    if block:
        yield block


class _Ids:
    """The cue's own number when it increases, else the previous id + 1 (module docstring)."""

    def __init__(self, stats: ReplayStats | None) -> None:
        self.last: int | None = None
        self.stats = stats

    def next(self, own: str | None) -> int:
        number = int(own) if own is not None and own.isdigit() else None
        if number is not None and (self.last is None or number > self.last):
            self.last = number
        else:
            if self.stats is not None and own is not None:
                self.stats.renumbered += 1
            self.last = 1 if self.last is None else self.last + 1
        return self.last


def _cue_text(lines: list[tuple[int, str]]) -> tuple[str, str | None]:
    """Cue payload -> (plain text on one line, speaker of the first <v Speaker> tag)."""
    raw = " ".join(line.strip() for _, line in lines)
    voice = _VOICE.search(raw)
    text = html.unescape(_TAG.sub("", _ASS_TAG.sub("", raw)))
    return " ".join(text.split()), voice.group(1).strip() if voice else None


def iter_srt(lines: Lines, source: str, base_ts_ms: int, stats: ReplayStats | None = None) -> Iterator[Row]:
    """SubRip: `counter`, `hh:mm:ss,mmm --> hh:mm:ss,mmm`, text lines, a blank line."""
    ids = _Ids(stats)
    for block in _blocks(lines):
        first_no, first = block[0]
        if "-->" in first:  # counter missing: tolerated, the cue gets the previous id + 1
            counter, timing_at = None, 0
        else:
            counter, timing_at = first.strip(), 1
            if not counter.isdigit():
                raise FeedError(f"{source}:{first_no}: expected a cue number, got {first.strip()!r:.60}")
        if timing_at >= len(block):
            raise FeedError(f"{source}:{first_no}: cue {counter} has no timing line")
        line_no, timing = block[timing_at]
        start_ms = _timing(timing, _SRT_TIME, f"{source}:{line_no}")
        text, speaker = _cue_text(block[timing_at + 1 :])
        yield Row(ids.next(counter), text, base_ts_ms + start_ms, speaker)


def iter_vtt(lines: Lines, source: str, base_ts_ms: int, stats: ReplayStats | None = None) -> Iterator[Row]:
    """WebVTT: a `WEBVTT` header, then cues `[identifier]`, `start --> end [settings]`, text.

    NOTE, STYLE and REGION blocks are skipped; `<v Speaker>` gives the speaker; other tags
    (`<c>`, `<i>`, karaoke timestamps) are removed.
    """
    ids = _Ids(stats)
    blocks = _blocks(lines)
    header = next(blocks, None)
    if header is None or not re.fullmatch(r"WEBVTT([ \t].*)?", header[0][1].strip()):
        raise FeedError(f"{source}:1: a WebVTT file starts with the line WEBVTT")
    if any("-->" in line for _, line in header):
        raise FeedError(
            f"{source}:{header[0][0]}: put a blank line between the WEBVTT header and the first cue"
        )
    for block in blocks:
        first_no, first = block[0]
        if re.match(r"(NOTE|STYLE|REGION)(\s|$)", first):
            continue
        if "-->" in first:
            identifier, timing_at = None, 0
        elif len(block) > 1 and "-->" in block[1][1]:
            identifier, timing_at = first.strip(), 1
        else:
            raise FeedError(f"{source}:{first_no}: expected a cue timing `start --> end`, got {first!r:.60}")
        line_no, timing = block[timing_at]
        start_ms = _timing(timing, _VTT_TIME, f"{source}:{line_no}")
        text, speaker = _cue_text(block[timing_at + 1 :])
        yield Row(ids.next(identifier), text, base_ts_ms + start_ms, speaker)


# --- which format ---------------------------------------------------------------------------

FORMATS: tuple[str, ...] = ("jsonl", "olp-mini", "srt", "vtt", "news")
_SUFFIXES = {".srt": "srt", ".vtt": "vtt", ".rss": "news", ".atom": "news", ".xml": "news"}


def detect_format(name: str, text: str) -> str:
    """The format of a file: subtitle and feed suffixes decide; otherwise the first characters
    (`[` OLP-MINI, `WEBVTT`, `<` a news feed, a number over a timing line SRT, else JSON lines)."""
    suffix = name[name.rfind(".") :].lower() if "." in name else ""
    if suffix in _SUFFIXES:
        return _SUFFIXES[suffix]
    head = text.removeprefix("\ufeff").lstrip()
    if head.startswith("WEBVTT"):
        return "vtt"
    if head.startswith("["):
        return "olp-mini"
    if head.startswith("<"):
        return "news"
    first_lines = head.splitlines()[:2]
    if len(first_lines) == 2 and first_lines[0].strip().isdigit() and "-->" in first_lines[1]:
        return "srt"
    return "jsonl"
