"""Chunk Splitter: the per-stream OLP cursor (spec section 3, "Chunk Splitter"; no LLM).

Reads `olp.transcripts` (TranscriptSegment) and `olp.progress` (ChunkDone), writes `olp.chunks`
(Chunk, `schemas/chunk.avsc`). This module is the pure logic; the Faust agent keeps one
`SplitterState` per stream in a table (stored as a head and pages: `state_writes`, `restore_state`)
and calls:

    state = add_segment(state, sentence, end_of_stream)   # for every segment
    state, spec = next_chunk(state, k)                     # after segments and after done records
    state = apply_done(state, done["seq"], done["next_start_id"])

Chunking rule (the paper's OLP, made safe for an endless stream):

1. One chunk per stream is in flight at a time: the next chunk's start depends on the topics the
   roles found in the previous one.
2. A chunk is the *carry-over* (sentences already sent whose topic is not final yet) followed by
   up to `k` *new* sentences (never sent before). It is emitted once `k` new sentences are
   buffered, or, after end of stream, with whatever is buffered.
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

Memory per stream: the carry-over (at most 2*k sentences) plus the new sentences that arrived
while a chunk was in flight (the stream's backlog; `backlog()` lets the shell watch it).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from olp.errors import ConfigError, ValidationError
from processors.domain import Sentence

if TYPE_CHECKING:
    import faust

    from processors.app import Pipeline


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

    def to_dict(self, with_buffer: bool = True) -> dict[str, Any]:
        out: dict[str, Any] = {
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
        }
        if with_buffer:
            out["buffer"] = [s.to_avro() for s in self.buffer]
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SplitterState:
        try:
            return cls(
                stream_id=str(data["stream_id"]),
                feed=str(data["feed"]),
                domain=str(data["domain"]),
                lang=str(data["lang"]),
                buffer=tuple(Sentence.from_avro(s) for s in data["buffer"]),
                max_id=_opt_int(data["max_id"]),
                sent_upto=_opt_int(data["sent_upto"]),
                next_seq=int(data["next_seq"]),
                in_flight=_opt_int(data["in_flight"]),
                in_flight_last=bool(data["in_flight_last"]),
                end_of_stream=bool(data["end_of_stream"]),
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


def add_segment(state: SplitterState, sentence: Sentence, end_of_stream: bool) -> SplitterState:
    """Take one sentence; ids at or below the highest id taken are re-sends and are ignored.

    Ids increase but need not be contiguous. End of stream is sticky (also when it arrives on a
    re-sent sentence). Sentences arriving after the end of stream are still taken and go out in
    further last chunks. Callers skip segments whose text is None or empty.
    """
    eos = state.end_of_stream or end_of_stream
    if state.max_id is not None and sentence.id <= state.max_id:
        return state if eos == state.end_of_stream else replace(state, end_of_stream=eos)
    return replace(state, buffer=(*state.buffer, sentence), max_id=sentence.id, end_of_stream=eos)


def mark_end_of_stream(state: SplitterState) -> SplitterState:
    """The stream ended on a segment with no text: every buffered sentence can go out."""
    return state if state.end_of_stream else replace(state, end_of_stream=True)


def next_chunk(state: SplitterState, k: int) -> tuple[SplitterState, ChunkSpec | None]:
    """Emit the next chunk when one is due (module docstring, rules 1-4), else None."""
    if k < 1:
        raise ConfigError(f"chunk size k must be at least 1, got {k}")
    if state.in_flight is not None or not state.buffer:
        return state, None
    carried, new = _carried_and_new(state)
    if len(new) < k and not state.end_of_stream:
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
    )
    return new_state, spec


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


def backlog(state: SplitterState) -> int:
    """New sentences waiting to be sent (grows while the roles are slower than the stream)."""
    return len(_carried_and_new(state)[1])


def is_finished(state: SplitterState) -> bool:
    """The stream ended and everything was processed: the shell may delete the state."""
    return state.end_of_stream and not state.buffer and state.in_flight is None


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


# --- stored form: a head per stream with the buffer's last page, earlier pages apart -----------

PAGE_SIZE = 64
"""Sentence ids per stored page of a buffer (page = id // PAGE_SIZE)."""
PAGE_SEPARATOR = "\x1f"
"""Between the stream id and the page number in a page's table key (stream ids may not hold it)."""


@dataclass(frozen=True, slots=True)
class StateWrites:
    """What to write to the table for one stream: pages first, then the head.

    The head is `to_dict()` without the buffer, plus the buffer's `first_id` and `last_id`, its
    last page inline (`tail`) and the numbers of its earlier `pages`, each stored once under its
    `page_key` when the buffer moves past it (ids only grow, so a page is then complete). A write
    thus encodes at most a page plus the new sentences, and is one record unless a page filled
    up: a stream far behind used to re-encode its whole backlog on every write. Pages go out
    before the head, on the same changelog partition, so a head is only ever read with the pages
    written before it; after a crash between the two, a page may hold sentences past the head's
    `last_id`, which are not part of it (their segments are replayed: the head's `max_id` is older).
    """

    head: dict[str, Any]
    pages: dict[int, list[list[Any]]]
    """Page number -> its sentences as [id, text] pairs."""
    deleted: tuple[int, ...]
    """Stored pages holding only sentences that left the buffer."""


def page_key(stream_id: str, page: int) -> str:
    return f"{stream_id}{PAGE_SEPARATOR}{page}"


def is_page_key(key: str) -> bool:
    return PAGE_SEPARATOR in key


def state_writes(state: SplitterState, stored: Mapping[str, Any] | None) -> StateWrites:
    """The table writes that turn the `stored` head (None: nothing, or an older value with the
    whole buffer in it) into `state`."""
    buffer = state.buffer
    old_pages = set(stored.get("pages", ())) if stored is not None and "tail" in stored else set()
    tail_page = buffer[-1].id // PAGE_SIZE if buffer else None
    # The buffer from its last page backwards: the tail, then every page not stored yet (the
    # stored ones are complete and unchanged: a buffer only loses sentences at its start).
    split = len(buffer)
    while split > 0 and buffer[split - 1].id // PAGE_SIZE == tail_page:
        split -= 1
    pages: dict[int, list[list[Any]]] = {}
    i = split
    while i > 0 and buffer[i - 1].id // PAGE_SIZE not in old_pages:
        i -= 1
    for sentence in buffer[i:split]:
        pages.setdefault(sentence.id // PAGE_SIZE, []).append([sentence.id, sentence.text])
    first_page = buffer[0].id // PAGE_SIZE if buffer else None
    kept = {p for p in old_pages if first_page is not None and p >= first_page and p != tail_page}
    head = state.to_dict(with_buffer=False)
    head["first_id"] = buffer[0].id if buffer else None
    head["last_id"] = buffer[-1].id if buffer else None
    head["pages"] = sorted(kept | set(pages))
    head["tail"] = [[s.id, s.text] for s in buffer[split:]]
    deleted = tuple(sorted(old_pages - kept - set(pages)))
    return StateWrites(head=head, pages=pages, deleted=deleted)


def restore_state(head: Mapping[str, Any], read_page: Callable[[int], Any]) -> SplitterState:
    """The state a stored head and its pages (`read_page(page)`, None when absent) describe;
    an older value with the whole buffer in it is read as it is."""
    if "tail" not in head:
        return SplitterState.from_dict(head)
    try:
        first, last = _opt_int(head["first_id"]), _opt_int(head["last_id"])
        stored: list[Any] = []
        for page in head["pages"]:
            sentences = read_page(int(page))
            if sentences is None:
                raise ValidationError(f"splitter state of {head['stream_id']!r} misses page {page}")
            stored.extend(sentences)
        stored.extend(head["tail"])
        buffer = [
            Sentence(int(sentence_id), str(text))
            for sentence_id, text in stored
            if first is not None and last is not None and first <= int(sentence_id) <= last
        ]
    except (KeyError, TypeError, ValueError) as exc:
        raise ValidationError(f"corrupt splitter state: {exc!r}") from exc
    if (buffer[0].id, buffer[-1].id) != (first, last) if buffer else first is not None:
        raise ValidationError(
            f"splitter state of {head.get('stream_id')!r}: its pages hold "
            f"{len(buffer)} sentences, not {first}..{last}"
        )
    return replace(SplitterState.from_dict({**head, "buffer": ()}), buffer=tuple(buffer))


def _carried_and_new(state: SplitterState) -> tuple[tuple[Sentence, ...], tuple[Sentence, ...]]:
    if state.sent_upto is None:
        return (), state.buffer
    cut = next((i for i, s in enumerate(state.buffer) if s.id > state.sent_upto), len(state.buffer))
    return state.buffer[:cut], state.buffer[cut:]


def _opt_int(value: Any) -> int | None:
    return None if value is None else int(value)


# --- agent shell (olp.transcripts + olp.progress -> olp.chunks) ------------------------------

STAGE = "chunk_splitter"
log = logging.getLogger("olp.processors")
MAX_SENTENCE_CHARS = 4000
"""A longer 'sentence' is an ASR or feed fault; it would crowd every other sentence out of a prompt."""


def register(app: faust.App, pipeline: Pipeline) -> None:
    # One SplitterState per stream, kept in a changelogged table so a restarted worker resumes:
    # a head under the stream id and the buffer in pages under `page_key`s (see StateWrites).
    import weakref

    import faust
    from faust.streams import _current_event

    states = app.Table(
        "chunk-splitter-state",
        default=None,
        partitions=pipeline.settings.kafka.partitions,
        schema=faust.Schema(key_serializer="json", value_serializer="json"),
    )

    # The agent takes events in batches: each event changes its stream's state in `pending`,
    # and after the batch each touched stream's state is written once (one changelog record per
    # stream per batch instead of one per segment) and its due chunk, if any, is sent. Events are
    # acked only after the batch, so a crash replays them (add_segment ignores re-sent ids).
    pending: dict[str, tuple[SplitterState, Any]] = {}
    """stream_id -> (state changed by this batch, the stream's newest event in it)."""
    decoded: dict[str, tuple[Any, SplitterState]] = {}
    """stream_id -> (the head we wrote, its state): no restoring while the head stands."""
    current: list[Any] = [None]

    async def emit_due_chunk(state: SplitterState, event: Any) -> None:
        state, spec = next_chunk(state, pipeline.settings.feed(state.feed).chunk_size)
        # The source partition goes with the state, so that `resend_stale_chunks` looks only at
        # the streams this worker owns (the table also holds standby copies of other partitions).
        partition = event.message.partition
        # A table write goes to the changelog partition of `faust.current_event()`, which the
        # batch loop does not set: make it this stream's event (context variable only; setting
        # the stream's `current_event` attribute would race with take_events' buffering).
        token = _current_event.set(weakref.ref(event))
        try:
            writes = state_writes(state, states.get(state.stream_id))
            for page, sentences in writes.pages.items():
                states[page_key(state.stream_id, page)] = sentences
            for page in writes.deleted:
                states.pop(page_key(state.stream_id, page), None)
            value = {**writes.head, "partition": partition}
            states[state.stream_id] = value
        finally:
            _current_event.reset(token)
        decoded[state.stream_id] = (value, state)
        if spec is not None:
            chunk = spec.to_avro(int(time.time() * 1000))
            await pipeline.send(pipeline.topics.chunks, spec.stream_id, "Chunk", chunk)

    def restore(stream_id: str, head: Mapping[str, Any]) -> SplitterState:
        known = decoded.get(stream_id)
        if known is not None and known[0] is head:  # (a recovered table holds other objects)
            return known[1]
        return restore_state(head, lambda page: states.get(page_key(stream_id, page)))

    def load(stream_id: str, segment: Mapping[str, Any] | None = None) -> SplitterState:
        if is_page_key(stream_id):
            raise ValidationError(f"stream id {stream_id!r} holds the control character U+001F")
        if stream_id in pending:
            return pending[stream_id][0]
        held = states.get(stream_id)
        if held is not None:
            return restore(stream_id, held)
        if segment is None:
            raise ValidationError(f"progress for unknown stream {stream_id}")
        return SplitterState(stream_id, feed=segment["feed"], domain=segment["domain"], lang=segment["lang"])

    async def on_segment(segment: dict[str, Any]) -> None:
        text = segment["text"].strip()
        if len(text) > MAX_SENTENCE_CHARS:
            raise ValidationError(f"segment text of {len(text)} chars exceeds {MAX_SENTENCE_CHARS}")
        state = load(segment["stream_id"], segment)
        if text:
            state = add_segment(state, Sentence(int(segment["segment_id"]), text), segment["end_of_stream"])
        elif segment["end_of_stream"]:
            state = mark_end_of_stream(state)
        else:
            raise ValidationError("segment text is empty")
        pending[state.stream_id] = (state, current[0])

    async def on_done(done: dict[str, Any]) -> None:
        state = apply_done(load(done["stream_id"]), int(done["seq"]), done["next_start_id"])
        pending[state.stream_id] = (state, current[0])

    async def flush() -> None:
        try:
            for state, event in list(pending.values()):
                try:
                    await emit_due_chunk(state, event)
                except Exception:  # not the batch's fault: log loudly, the resend timer recovers
                    log.exception("chunk splitter: cannot save or emit stream %s", state.stream_id)
                    pipeline.count(f"emit_failed.{STAGE}")
        finally:
            pending.clear()

    batch, wait_s = pipeline.settings.splitter_batch, pipeline.settings.splitter_batch_wait_ms / 1000

    @app.agent(pipeline.source(pipeline.topics.transcripts, pipeline.topics.progress), name=STAGE)
    async def chunk_splitter(stream: faust.StreamT[bytes]) -> None:
        async for events in stream.take_events(batch, within=wait_s):  # type: ignore[attr-defined]
            for event in events:
                current[0] = event
                if event.message.topic == pipeline.topics.progress:
                    await pipeline.handle(event, STAGE, "ChunkDone", on_done)
                else:
                    await pipeline.handle(event, STAGE, "TranscriptSegment", on_segment)
            await flush()

    timeout_s = pipeline.settings.chunk_timeout_s
    watched: dict[str, tuple[int, float]] = {}
    """stream_id -> (seq in flight, when this worker first saw it in flight; time.monotonic)."""

    async def resend_stale_chunks() -> None:
        """Send a chunk again once it has been in flight for `chunk_timeout_s` on this worker.

        A chunk whose record was lost after the table said "in flight" (a worker killed between
        writing the state and sending the chunk) would otherwise stall its stream forever. The
        re-send is idempotent: same chunk_id and sentences, documents keyed by stream/topic and
        versioned by seq, a second ChunkDone for the seq is ignored (`apply_done`).
        """
        sources = (pipeline.topics.transcripts, pipeline.topics.progress)
        mine = {tp.partition for tp in app.assignor.assigned_actives() if tp.topic in sources}
        now = time.monotonic()
        for stream_id, held in list(states.items()):
            if is_page_key(stream_id):
                continue
            try:
                state = restore(stream_id, held)
            except ValidationError:
                continue
            partition = held.get("partition")
            if state.in_flight is None or (partition is not None and partition not in mine):
                watched.pop(stream_id, None)
                continue
            seen = watched.get(stream_id)
            if seen is None or seen[0] != state.in_flight:
                watched[stream_id] = (state.in_flight, now)
                continue
            spec = in_flight_chunk(state)
            if spec is None or now - seen[1] < timeout_s:
                continue
            watched[stream_id] = (state.in_flight, now)
            log.warning(
                "chunk %s in flight for over %.0fs: sending it again (its record may be lost)",
                spec.chunk_id,
                now - seen[1],
            )
            pipeline.count(f"resent.{STAGE}")
            chunk = spec.to_avro(int(time.time() * 1000))
            await pipeline.send(pipeline.topics.chunks, spec.stream_id, "Chunk", chunk)

    app.timer(min(30.0, max(1.0, timeout_s / 4)), name=f"{STAGE}-resend")(resend_stale_chunks)
