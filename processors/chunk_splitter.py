"""Chunk Splitter: the per-stream OLP cursor (spec section 3, "Chunk Splitter"; no LLM).

Reads `olp.transcripts` (TranscriptSegment) and `olp.progress` (ChunkDone), writes `olp.chunks`
(Chunk, `schemas/chunk.avsc`). This module holds the cursor rules, pure; `splitter_store` keeps one
`SplitterState` per stream in a Faust table (a head and pages) and `splitter_agent` runs them:

    state = add_segment(state, sentence, end_of_stream)   # for every segment
    state, spec = next_chunk(state, k)                     # after segments and after done records
    state = apply_done(state, done["seq"], done["next_start_id"])

Chunking rule (the paper's OLP, made safe for an endless stream):

1. One chunk per stream is in flight at a time: the next chunk's start depends on the topics the
   roles found in the previous one.
2. A chunk is the *carry-over* (sentences already sent whose topic is not final yet) followed by
   up to `k` *new* sentences (never sent before). It is emitted once `k` new sentences are
   buffered, or, after end of stream, with whatever is buffered. With a deadline (the feed's
   `chunk_max_wait_s`) it is also emitted once the oldest new sentence has waited that long and
   at least `min_new(k)` new ones are buffered: a live speaker fills a 40-sentence chunk in
   16 s, and a document cannot trail its speaker by less than the chunk's fill time.
3. After a chunk is done, every sentence before `next_start_id` (the start of the unfinished last
   topic) is final and is dropped; the rest is the next chunk's carry-over, so that topic is seen
   again whole. `next_start_id = None` drops the whole chunk.
4. Bounds: a chunk holds at most `2*k` sentences and, unless only the end of the stream is left,
   at least `max(1, k // 2)` new ones. When the carry-over is longer than `carry_limit(k)` (so a
   chunk could not hold it plus that many new sentences), **the carry-over is cut whole**: its
   topic is closed at the end of the chunk that last showed it (the document version written for
   that chunk is its last one) and the next chunk starts at the first new sentence; if the topic
   goes on, it comes back as a new topic with a new topic_id. Cutting the whole carry-over rather
   than its head keeps every sentence in exactly one topic document. The Format Checker applies
   the same limit (`format_checker.check_document(carry_limit=...)`) so that document is marked
   final; the cut here holds even when it does not.
5. Every sentence is sent as *new* exactly once and none is dropped before it was sent.
6. A chunk in flight for longer than `Settings.chunk_timeout_s` is sent again as it was
   (`in_flight_chunk`): its record may have been lost, and a lost chunk would stall its stream
   forever. Same chunk_id, same sentences: downstream, the re-send is idempotent.
7. A stream that takes no sentence for `Settings.stream_idle_evict_s` is ended as if its sender
   had said so (`end_if_idle`): its buffered sentences go out in last chunks, after which it is
   finished and its state is deleted like any finished stream's. A sender that never ends its
   streams would otherwise hold their state forever.

Memory per stream: the carry-over (at most 2*k sentences) plus the new sentences that arrived
while a chunk was in flight (the stream's backlog; `backlog()` lets the shell watch it).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from olp.errors import ConfigError, ValidationError
from processors.domain import Sentence


@dataclass(frozen=True, slots=True)
class SplitterState:
    """Everything the splitter remembers about one stream (stored in a Faust table)."""

    stream_id: str
    feed: str = "default"
    domain: str = "ecommerce"
    lang: str = "en"
    buffer: tuple[Sentence, ...] = ()
    """Sentences not final yet, in id order: the carry-over, then the new ones."""
    max_id: int | None = None
    """Highest sentence id taken: re-sent segments with a lower or equal id are ignored."""
    sent_upto: int | None = None
    """Highest sentence id that was in a chunk: buffered sentences above it are new."""
    next_seq: int = 0
    in_flight: int | None = None
    """Seq of the chunk being processed, None when idle."""
    in_flight_last: bool = False
    """The chunk in flight was the stream's last: its done record drops all of it."""
    end_of_stream: bool = False
    waiting_since_ms: int | None = None
    """When the oldest new sentence was taken (wall clock, ms); None while no new one waits."""

    def to_dict(self) -> dict[str, Any]:
        """Every field but the buffer, as JSON values (the buffer is stored in pages)."""
        return {
            "stream_id": self.stream_id,
            "feed": self.feed,
            "domain": self.domain,
            "lang": self.lang,
            "max_id": self.max_id,
            "sent_upto": self.sent_upto,
            "next_seq": self.next_seq,
            "in_flight": self.in_flight,
            "in_flight_last": self.in_flight_last,
            "end_of_stream": self.end_of_stream,
            "waiting_since_ms": self.waiting_since_ms,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], buffer: Sequence[Sentence] = ()) -> SplitterState:
        """The state `to_dict` described, holding `buffer`; ValidationError when it is not one."""
        try:
            return cls(
                stream_id=str(data["stream_id"]),
                feed=str(data["feed"]),
                domain=str(data["domain"]),
                lang=str(data["lang"]),
                buffer=tuple(buffer),
                max_id=_opt_int(data["max_id"]),
                sent_upto=_opt_int(data["sent_upto"]),
                next_seq=int(data["next_seq"]),
                in_flight=_opt_int(data["in_flight"]),
                in_flight_last=bool(data["in_flight_last"]),
                end_of_stream=bool(data["end_of_stream"]),
                waiting_since_ms=_opt_int(data.get("waiting_since_ms")),  # absent in older states
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ValidationError(f"corrupt splitter state: {exc!r}") from exc


@dataclass(frozen=True, slots=True)
class ChunkSpec:
    """A chunk to send: its sentences and how many of them (at the end) are new."""

    stream_id: str
    seq: int
    feed: str
    domain: str
    lang: str
    sentences: tuple[Sentence, ...]
    new_count: int
    is_last: bool

    @property
    def chunk_id(self) -> str:
        return f"{self.stream_id}:{self.seq}"

    @property
    def new_sentences(self) -> tuple[Sentence, ...]:
        return self.sentences[len(self.sentences) - self.new_count :]

    def to_avro(self, created_ms: int) -> dict[str, Any]:
        """The Avro `Chunk` record (schemas/chunk.avsc)."""
        return {
            "stream_id": self.stream_id,
            "chunk_id": self.chunk_id,
            "seq": self.seq,
            "feed": self.feed,
            "domain": self.domain,
            "lang": self.lang,
            "sentences": [s.to_avro() for s in self.sentences],
            "is_last": self.is_last,
            "created_ms": created_ms,
        }


def min_new(k: int) -> int:
    """New sentences every chunk carries (unless only the end of the stream is left)."""
    return max(1, k // 2)


def carry_limit(k: int) -> int:
    """Longest carry-over that still leaves room for `min_new(k)` new sentences in 2*k."""
    return 2 * k - min_new(k)


def add_segment(
    state: SplitterState, sentence: Sentence, end_of_stream: bool, now_ms: int | None = None
) -> SplitterState:
    """Take one sentence (at `now_ms`, for the chunk deadline); ids at or below the highest id
    taken are re-sends and are ignored.

    Ids increase but need not be contiguous. End of stream is sticky (also when it arrives on a
    re-sent sentence). Sentences arriving after the end of stream are still taken and go out in
    further last chunks. Callers skip segments whose text is None or empty.
    """
    eos = state.end_of_stream or end_of_stream
    if state.max_id is not None and sentence.id <= state.max_id:
        return state if eos == state.end_of_stream else replace(state, end_of_stream=eos)
    waiting = state.waiting_since_ms if _has_new(state) else now_ms
    buffer = (*state.buffer, sentence)
    return replace(state, buffer=buffer, max_id=sentence.id, end_of_stream=eos, waiting_since_ms=waiting)


def _has_new(state: SplitterState) -> bool:
    """Does a sentence never sent wait in the buffer (the buffer is in id order)?"""
    return bool(state.buffer) and (state.sent_upto is None or state.buffer[-1].id > state.sent_upto)


def mark_end_of_stream(state: SplitterState) -> SplitterState:
    """The stream ended on a segment with no text: every buffered sentence can go out."""
    return state if state.end_of_stream else replace(state, end_of_stream=True)


def next_chunk(
    state: SplitterState, k: int, now_ms: int | None = None, max_wait_s: float | None = None
) -> tuple[SplitterState, ChunkSpec | None]:
    """Emit the next chunk when one is due (module docstring, rules 1-4), else None. `now_ms`
    and `max_wait_s`: the chunk deadline of rule 2 (none when either is None)."""
    if k < 1:
        raise ConfigError(f"chunk size k must be at least 1, got {k}")
    if state.in_flight is not None or not state.buffer:
        return state, None
    carried, new = _carried_and_new(state)
    if len(new) < k and not state.end_of_stream and not _waited(state, len(new), k, now_ms, max_wait_s):
        return state, None
    if carried and (len(carried) > 2 * k or (new and len(carried) > carry_limit(k))):
        # Rule 4: the topic of the carry-over is closed; this chunk starts at the new sentences.
        carried = ()
    take = min(len(new), k, 2 * k - len(carried))
    sentences = (*carried, *new[:take])
    is_last = state.end_of_stream and take == len(new)
    spec = ChunkSpec(
        stream_id=state.stream_id,
        seq=state.next_seq,
        feed=state.feed,
        domain=state.domain,
        lang=state.lang,
        sentences=sentences,
        new_count=take,
        is_last=is_last,
    )
    new_state = replace(
        state,
        buffer=(*carried, *new),
        sent_upto=sentences[-1].id,
        next_seq=state.next_seq + 1,
        in_flight=spec.seq,
        in_flight_last=is_last,
        # The new sentences left out arrived no later than now: their wait is counted from now.
        waiting_since_ms=now_ms if take < len(new) else None,
    )
    return new_state, spec


def _waited(state: SplitterState, new: int, k: int, now_ms: int | None, max_wait_s: float | None) -> bool:
    """Rule 2's deadline: `min_new(k)` new sentences buffered, the oldest waiting `max_wait_s`."""
    if max_wait_s is None or now_ms is None or state.waiting_since_ms is None or new < min_new(k):
        return False
    return now_ms - state.waiting_since_ms >= max_wait_s * 1000


def apply_done(state: SplitterState, seq: int, next_start_id: int | None) -> SplitterState:
    """The chunk `seq` is organised: drop its final sentences and become idle.

    Drops every sentence before `next_start_id`, or all of the chunk when it is None, lies past
    the chunk, or the chunk was the stream's last. Done records for any other seq are stale or
    duplicated (at-least-once delivery) and change nothing.
    """
    if state.in_flight is None or seq != state.in_flight or state.sent_upto is None:
        return state
    sent_upto = state.sent_upto
    if next_start_id is None or state.in_flight_last or next_start_id > sent_upto:
        keep = tuple(s for s in state.buffer if s.id > sent_upto)
    else:
        keep = tuple(s for s in state.buffer if s.id >= next_start_id)
    return replace(state, buffer=keep, in_flight=None, in_flight_last=False)


def next_start_id(topics: Sequence[Mapping[str, Any]], is_last: bool) -> int | None:
    """Where the next chunk starts: the first id of the last non-final topic, else None.

    `topics` are Avro TopicDraft or TopicDocument dicts (both have `first_id` and `final`).
    After the stream's last chunk nothing is carried over.
    """
    if is_last:
        return None
    starts = [int(t["first_id"]) for t in topics if not t.get("final") and t.get("first_id") is not None]
    return max(starts) if starts else None


def chunk_done(chunk: Mapping[str, Any], topics: Sequence[Mapping[str, Any]] = ()) -> dict[str, Any]:
    """The Avro ChunkDone (schemas/chunk_done.avsc) that tells the splitter `chunk` is organised:
    the next chunk starts at its unfinished last topic, if any. No `topics` (a chunk that died
    at some role) makes all of it final, so its stream moves on."""
    return {
        "stream_id": chunk["stream_id"],
        "chunk_id": chunk["chunk_id"],
        "seq": chunk["seq"],
        "next_start_id": next_start_id(topics, bool(chunk.get("is_last"))),
    }


def backlog(state: SplitterState) -> int:
    """New sentences waiting to be sent (grows while the roles are slower than the stream)."""
    return len(_carried_and_new(state)[1])


def is_finished(state: SplitterState) -> bool:
    """The stream ended and every sentence is final: nothing is left to send or to wait for."""
    return state.end_of_stream and not state.buffer and state.in_flight is None


Activity = tuple[int | None, float]
"""(the stream's highest sentence id, when a worker first saw it there): when it last spoke."""


def note_activity(seen: Activity | None, state: SplitterState, now: float) -> Activity:
    """`seen` while the stream's highest id stays put, else (that id, `now`). Done records do not
    count: only the sender speaking keeps a stream alive."""
    if seen is None or seen[0] != state.max_id:
        return (state.max_id, now)
    return seen


def end_if_idle(state: SplitterState, silent_s: float, limit_s: float) -> SplitterState:
    """Rule 7: the stream ended once it has been silent for `limit_s`; else unchanged."""
    if state.end_of_stream or silent_s < limit_s:
        return state
    return mark_end_of_stream(state)


def in_flight_chunk(state: SplitterState) -> ChunkSpec | None:
    """The chunk in flight, rebuilt from the state (None when idle), so that the shell can send
    it again when its record was lost (a worker killed between writing the state and sending
    the chunk): the same seq, hence the same chunk_id, and the same sentences, so downstream
    stages and the documents it produces are the same again.

    After `next_chunk` the buffer starts with the chunk's first sentence and every later sentence
    has an id above `sent_upto`, so the chunk is the buffer up to `sent_upto`. `new_count` is
    not kept in the state and is 0 here (the Chunk record does not carry it).
    """
    if state.in_flight is None or state.sent_upto is None:
        return None
    sentences = tuple(s for s in state.buffer if s.id <= state.sent_upto)
    if not sentences:
        return None
    return ChunkSpec(
        stream_id=state.stream_id,
        seq=state.in_flight,
        feed=state.feed,
        domain=state.domain,
        lang=state.lang,
        sentences=sentences,
        new_count=0,
        is_last=state.in_flight_last,
    )


def _carried_and_new(state: SplitterState) -> tuple[tuple[Sentence, ...], tuple[Sentence, ...]]:
    if state.sent_upto is None:
        return (), state.buffer
    cut = next((i for i, s in enumerate(state.buffer) if s.id > state.sent_upto), len(state.buffer))
    return state.buffer[:cut], state.buffer[cut:]


def _opt_int(value: Any) -> int | None:
    return None if value is None else int(value)
