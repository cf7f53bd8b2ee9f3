"""The Chunk Splitter's agent (olp.transcripts + olp.progress -> olp.chunks; spec section 3).

Runs the cursor rules of `chunk_splitter` over the states of `splitter_store`. Events come in
batches: each event changes its stream's state in `pending`, and after the batch each touched
stream's state is written once (one changelog record per stream per batch instead of one per
segment) and its due chunk, if any, is sent. Events are acked only after the batch, so a crash
replays them (`add_segment` ignores re-sent ids).

A timer looks at the streams this worker owns: a chunk whose deadline passed while no sentence
came (a speaker's pause) goes out (rule 2), a stream silent for `stream_idle_evict_s` is
ended (rule 7: its buffer goes out in last chunks), a chunk in flight for longer than
`chunk_timeout_s` is sent again (rule 6), and a finished stream (`is_finished`) is deleted once
it has stayed finished for `FINISHED_KEEP_S`; until then a late re-send of its segments is still
recognised as one. What the timer remembers per stream is dropped with the stream, or when the
stream's partition moves to another worker.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

import faust
from opentelemetry import trace

from olp.errors import ValidationError
from processors.chunk_splitter import (
    Activity,
    ChunkSpec,
    SplitterState,
    add_segment,
    apply_done,
    end_if_idle,
    in_flight_chunk,
    is_finished,
    mark_end_of_stream,
    next_chunk,
    note_activity,
)
from processors.domain import Sentence
from processors.splitter_store import FaustTable, PagedStore
from processors.worker import Record, WorkerContext

ROLE = "chunk_splitter"
log = logging.getLogger("olp.processors")
MAX_SENTENCE_CHARS = 4000
"""A longer 'sentence' is an ASR or feed fault; it would crowd every other sentence out of a prompt."""
FINISHED_KEEP_S = 600.0
"""How long a finished stream's state is kept: re-sent segments (a client's retry, a replay after
a crash) inside this time are ignored as re-sends instead of starting the stream again."""


@dataclass
class SplitterAgent:
    """The splitter's shell for one worker: the pending batch and what the timer watches."""

    worker: WorkerContext
    store: PagedStore
    pending: dict[str, tuple[SplitterState, int]] = field(default_factory=dict)
    """stream_id -> (its state changed by this batch, the partition of its events)."""
    in_flight_since: dict[str, tuple[int, float]] = field(default_factory=dict)
    """stream_id -> (seq in flight, when this worker first saw it in flight; time.monotonic)."""
    finished_since: dict[str, float] = field(default_factory=dict)
    """stream_id -> when this worker first saw it finished (time.monotonic)."""
    active_since: dict[str, Activity] = field(default_factory=dict)
    """stream_id -> (its highest sentence id, when this worker first saw it; time.monotonic)."""

    def load(self, stream_id: str, segment: Mapping[str, Any] | None = None) -> SplitterState:
        if stream_id in self.pending:
            return self.pending[stream_id][0]
        state = self.store.load(stream_id)
        if state is not None:
            return state
        if segment is None:
            raise ValidationError(f"progress for unknown stream {stream_id}")
        return SplitterState(stream_id, feed=segment["feed"], domain=segment["domain"], lang=segment["lang"])

    async def on_event(self, event: Any) -> None:
        topics = self.worker.topics
        partition = int(event.message.partition)

        async def on_segment(segment: Record) -> None:
            # Inside the segment's span: the chunk this sentence completes continues its trace.
            span = trace.get_current_span().get_span_context()
            self.worker.traces.remember(segment["stream_id"], segment["segment_id"], span)
            self.pending[segment["stream_id"]] = (self.take_segment(segment), partition)

        async def on_done(done: Record) -> None:
            state = apply_done(self.load(done["stream_id"]), int(done["seq"]), done["next_start_id"])
            self.pending[state.stream_id] = (state, partition)

        if event.message.topic == topics.progress:
            await self.worker.handle(event, ROLE, "ChunkDone", on_done)
        else:
            await self.worker.handle(event, ROLE, "TranscriptSegment", on_segment)

    def take_segment(self, segment: Record) -> SplitterState:
        text = segment["text"].strip()
        if len(text) > MAX_SENTENCE_CHARS:
            raise ValidationError(f"segment text of {len(text)} chars exceeds {MAX_SENTENCE_CHARS}")
        state = self.load(segment["stream_id"], segment)
        if text:
            sentence = Sentence(int(segment["segment_id"]), text)
            return add_segment(state, sentence, segment["end_of_stream"], now_ms())
        if segment["end_of_stream"]:
            return mark_end_of_stream(state)
        raise ValidationError("segment text is empty")

    async def flush(self) -> None:
        """Write each touched stream once and send its due chunk."""
        try:
            for state, partition in list(self.pending.values()):
                try:
                    feed = self.worker.settings.feed(state.feed)
                    state, spec = next_chunk(state, feed.chunk_size, now_ms(), feed.chunk_max_wait_s)
                    self.store.save(state, partition)
                    if spec is not None:
                        await self.send(spec)
                except Exception:  # not the batch's fault: log loudly, the resend timer recovers
                    log.exception("chunk splitter: cannot save or emit stream %s", state.stream_id)
                    self.worker.count(f"emit_failed.{ROLE}")
        finally:
            self.pending.clear()

    async def send(self, spec: ChunkSpec) -> None:
        chunk = spec.to_avro(now_ms())
        with self.worker.traces.chunk_span(chunk):  # continue the trace of the segment that completed it
            await self.worker.send(self.worker.topics.chunks, spec.stream_id, "Chunk", chunk)

    async def look_after_streams(self, mine: Collection[int], now: float) -> None:
        """End idle streams, re-send stale chunks and delete finished streams, for the streams of
        partitions `mine` (the table also holds standby copies of other workers' partitions)."""
        stored = set()
        for stream_id, head in list(self.store.heads()):
            stored.add(stream_id)
            if head.get("partition") not in mine:
                self.forget(stream_id)
                continue
            try:
                state = self.store.load(stream_id)  # now, not when the loop began: awaits came since
            except ValidationError:
                continue
            if state is None:
                continue
            state = await self.end_if_idle(state, int(head["partition"]), now)
            state = await self.send_if_waited(state, int(head["partition"]))
            await self.resend_if_stale(state, now)
            if not is_finished(state):
                self.finished_since.pop(stream_id, None)
            elif now - self.finished_since.setdefault(stream_id, now) >= FINISHED_KEEP_S:
                self.store.delete(stream_id)
                self.forget(stream_id)
                self.worker.count(f"finished.{ROLE}")
        for stream_id in {*self.in_flight_since, *self.finished_since, *self.active_since} - stored:
            self.forget(stream_id)  # deleted by the worker that owns it now

    def forget(self, stream_id: str) -> None:
        """Drop what this worker remembers of a stream besides its stored state."""
        self.in_flight_since.pop(stream_id, None)
        self.finished_since.pop(stream_id, None)
        self.active_since.pop(stream_id, None)
        self.store.forget(stream_id)

    async def end_if_idle(self, state: SplitterState, partition: int, now: float) -> SplitterState:
        """Rule 7: end a stream silent for `stream_idle_evict_s` and send what it buffered. A
        stream in the batch being processed is not silent (and its state there is newer)."""
        stream_id = state.stream_id
        seen = self.active_since[stream_id] = note_activity(self.active_since.get(stream_id), state, now)
        ended = end_if_idle(state, now - seen[1], self.worker.settings.stream_idle_evict_s)
        if ended is state or stream_id in self.pending:
            return state
        ended, spec = next_chunk(ended, self.worker.settings.feed(state.feed).chunk_size)
        self.store.save(ended, partition)  # before any await: the batch loop reads it from here
        self.worker.count(f"idle_ended.{ROLE}")
        log.info("stream %s silent for %.0fs: ended", stream_id, now - seen[1])
        if spec is not None:
            await self.send(spec)
        return ended

    async def send_if_waited(self, state: SplitterState, partition: int) -> SplitterState:
        """Rule 2's deadline for a stream whose speaker paused: no segment arrives to trigger it.
        A stream in the batch being processed is left to the batch (its state there is newer)."""
        feed = self.worker.settings.feed(state.feed)
        if feed.chunk_max_wait_s is None or state.stream_id in self.pending:
            return state
        sent, spec = next_chunk(state, feed.chunk_size, now_ms(), feed.chunk_max_wait_s)
        if spec is None:
            return state
        self.store.save(sent, partition)  # before any await: the batch loop reads it from here
        await self.send(spec)
        return sent

    async def resend_if_stale(self, state: SplitterState, now: float) -> None:
        """Send a chunk again once it has been in flight for `chunk_timeout_s` on this worker.

        A chunk whose record was lost after the table said "in flight" (a worker killed between
        writing the state and sending the chunk) would otherwise stall its stream forever. The
        re-send is idempotent: same chunk_id and sentences, documents keyed by stream/topic and
        versioned by seq, a second ChunkDone for the seq is ignored (`apply_done`).
        """
        stream_id = state.stream_id
        if state.in_flight is None:
            self.in_flight_since.pop(stream_id, None)
            return
        seen = self.in_flight_since.get(stream_id)
        if seen is None or seen[0] != state.in_flight:
            self.in_flight_since[stream_id] = (state.in_flight, now)
            return
        spec = in_flight_chunk(state)
        if spec is None or now - seen[1] < self.worker.settings.chunk_timeout_s:
            return
        self.in_flight_since[stream_id] = (state.in_flight, now)
        log.warning(
            "chunk %s in flight for over %.0fs: sending it again (its record may be lost)",
            spec.chunk_id,
            now - seen[1],
        )
        self.worker.count(f"resent.{ROLE}")
        await self.send(spec)


def now_ms() -> int:
    return int(time.time() * 1000)


def register(worker: WorkerContext) -> SplitterAgent:
    """Add the splitter's agent and timer to the worker's app."""
    app, settings, topics = worker.app, worker.settings, worker.topics
    table = app.Table(
        "chunk-splitter-state",
        default=None,
        partitions=settings.kafka.partitions,
        schema=faust.Schema(key_serializer="json", value_serializer="json"),
    )
    splitter = SplitterAgent(worker, PagedStore(FaustTable(table)))
    batch, wait_s = settings.splitter_batch, settings.splitter_batch_wait_ms / 1000

    @app.agent(worker.source(topics.transcripts, topics.progress), name=ROLE)
    async def chunk_splitter(stream: faust.StreamT[bytes]) -> None:
        async for events in stream.take_events(batch, within=wait_s):  # type: ignore[attr-defined]
            for event in events:
                await splitter.on_event(event)
            await splitter.flush()

    async def look_after_streams() -> None:
        sources = (topics.transcripts, topics.progress)
        mine = {tp.partition for tp in app.assignor.assigned_actives() if tp.topic in sources}
        await splitter.look_after_streams(mine, time.monotonic())

    deadlines = [f.chunk_max_wait_s for f in settings.feeds.values() if f.chunk_max_wait_s is not None]
    interval = min(30.0, max(1.0, settings.chunk_timeout_s / 4), *(max(1.0, d / 2) for d in deadlines))
    app.timer(interval, name=f"{ROLE}-resend")(look_after_streams)
    return splitter
