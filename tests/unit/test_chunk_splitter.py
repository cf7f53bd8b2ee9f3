"""Chunk Splitter: the OLP cursor, its bounds, carry-over and at-least-once safety (spec section 3)."""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import pytest

from olp.errors import ConfigError, ValidationError
from olp.settings import FeedSettings
from olp.telemetry import SegmentTraces
from olp.topics import TopicNames
from processors import chunk_splitter as cs
from processors import format_checker
from processors import splitter_store as store
from processors.chunk_splitter import SplitterState, add_segment, apply_done, next_chunk
from processors.domain import Sentence
from processors.splitter_agent import FINISHED_KEEP_S, SplitterAgent
from tests.support.splitter_table import SplitterTable

PITCH = [
    "Hi everyone, welcome back to the live room!",
    "Today we start with this curly lace front wig, 22 inches.",
    "It is 100% human hair, so you can dye it and curl it.",
    "The original price is 199 dollars, today only 129.",
    "Only 50 pieces left, click the yellow cart now!",
    "Next up, these white running sneakers.",
    "The sole is super light and the upper is breathable mesh.",
    "They are 59.9 with the coupon, sizes 36 to 44.",
    "Hurry, the coupon ends in five minutes!",
    "Now a stainless steel thermos, keeps tea hot for 12 hours.",
]


def sentence(i: int) -> Sentence:
    """The i-th sentence of a long pitch; ids are increasing but not contiguous."""
    return Sentence(id=1000 + 3 * i + (i % 2), text=f"{PITCH[i % len(PITCH)]} (#{i})")


def feed(state: SplitterState, indices: range, eos_at: int | None = None) -> SplitterState:
    for i in indices:
        state = add_segment(state, sentence(i), end_of_stream=i == eos_at)
    return state


def ids(spec: cs.ChunkSpec | None) -> list[int]:
    assert spec is not None
    return [s.id for s in spec.sentences]


def roundtrip(state: SplitterState) -> SplitterState:
    """What the Faust table does to the state: stored, as JSON, and read back."""
    table = SplitterTable()
    table.write(state)
    return table.read(state.stream_id)


# --- the basic cycle ---------------------------------------------------------------------------


def test_no_chunk_before_k_new_sentences() -> None:
    state = feed(SplitterState("live-1"), range(3))
    state2, spec = next_chunk(state, k=4)
    assert spec is None and state2 is state


def test_first_chunk_has_k_new_sentences_and_deterministic_id() -> None:
    state = feed(SplitterState("live-1", feed="shop", domain="ecommerce", lang="en"), range(6))
    state, spec = next_chunk(state, k=4)
    assert spec is not None
    assert ids(spec) == [sentence(i).id for i in range(4)]
    assert (spec.chunk_id, spec.seq, spec.new_count, spec.is_last) == ("live-1:0", 0, 4, False)
    assert state.in_flight == 0 and state.next_seq == 1 and state.sent_upto == sentence(3).id
    avro = spec.to_avro(created_ms=1_700_000_000_000)
    assert avro == {
        "stream_id": "live-1",
        "chunk_id": "live-1:0",
        "seq": 0,
        "feed": "shop",
        "domain": "ecommerce",
        "lang": "en",
        "sentences": [{"id": s.id, "text": s.text} for s in spec.sentences],
        "is_last": False,
        "created_ms": 1_700_000_000_000,
    }


def test_one_chunk_in_flight_at_a_time() -> None:
    state, spec = next_chunk(feed(SplitterState("s"), range(4)), k=4)
    assert spec is not None
    state = feed(state, range(4, 20))
    again, none = next_chunk(state, k=4)
    assert none is None and again is state


def test_done_carries_the_unfinished_topic_into_the_next_chunk() -> None:
    state, _ = next_chunk(feed(SplitterState("s"), range(8)), k=4)
    state = apply_done(state, seq=0, next_start_id=sentence(2).id)
    assert state.in_flight is None
    assert [s.id for s in state.buffer] == [sentence(i).id for i in range(2, 8)]
    state, spec = next_chunk(state, k=4)
    assert ids(spec) == [sentence(i).id for i in range(2, 8)]
    assert spec is not None and spec.new_count == 4 and spec.seq == 1
    assert [s.id for s in spec.new_sentences] == [sentence(i).id for i in range(4, 8)]


def test_done_without_start_drops_the_whole_chunk_but_not_newer_sentences() -> None:
    state, _ = next_chunk(feed(SplitterState("s"), range(4)), k=4)
    state = feed(state, range(4, 6))  # arrive while the chunk is in flight
    state = apply_done(state, seq=0, next_start_id=None)
    assert [s.id for s in state.buffer] == [sentence(4).id, sentence(5).id]


def test_done_start_past_the_chunk_never_drops_unsent_sentences() -> None:
    state, _ = next_chunk(feed(SplitterState("s"), range(6)), k=4)
    state = apply_done(state, seq=0, next_start_id=sentence(5).id)
    assert [s.id for s in state.buffer] == [sentence(4).id, sentence(5).id]


def test_stale_and_duplicate_done_records_are_ignored() -> None:
    state, _ = next_chunk(feed(SplitterState("s"), range(8)), k=4)
    assert apply_done(state, seq=7, next_start_id=None) is state  # not the chunk in flight
    state = apply_done(state, seq=0, next_start_id=sentence(3).id)
    state, spec = next_chunk(state, k=4)
    assert spec is not None and spec.seq == 1
    # The done record of chunk 0 is delivered again (at-least-once): nothing changes.
    assert apply_done(state, seq=0, next_start_id=None) is state
    idle = apply_done(state, seq=1, next_start_id=None)
    assert apply_done(idle, seq=1, next_start_id=None) is idle


def test_resent_and_out_of_order_segments_are_ignored() -> None:
    state = feed(SplitterState("s"), range(3))
    assert add_segment(state, sentence(1), end_of_stream=False) is state
    assert add_segment(state, sentence(2), end_of_stream=False) is state
    assert add_segment(state, Sentence(sentence(2).id, "another text"), end_of_stream=False) is state
    assert [s.id for s in state.buffer] == [sentence(i).id for i in range(3)]


def test_end_of_stream_flushes_a_short_last_chunk() -> None:
    state = feed(SplitterState("s"), range(3), eos_at=2)
    state, spec = next_chunk(state, k=10)
    assert spec is not None and ids(spec) == [sentence(i).id for i in range(3)] and spec.is_last
    state = apply_done(state, seq=spec.seq, next_start_id=None)
    assert cs.is_finished(state)
    assert next_chunk(state, k=10)[1] is None


def test_end_of_stream_on_a_resent_sentence_still_ends_the_stream() -> None:
    state, _ = next_chunk(feed(SplitterState("s"), range(4)), k=4)
    state = add_segment(state, sentence(3), end_of_stream=True)
    assert state.end_of_stream
    state = apply_done(state, seq=0, next_start_id=sentence(2).id)
    state, spec = next_chunk(state, k=4)
    # Only the carry-over is left: it goes out once more, as the last chunk, so its topic ends.
    assert ids(spec) == [sentence(2).id, sentence(3).id]
    assert spec is not None and spec.is_last and spec.new_count == 0
    # A done record for the last chunk drops all of it even if it (wrongly) names a start.
    state = apply_done(state, seq=spec.seq, next_start_id=sentence(2).id)
    assert cs.is_finished(state)


def test_end_of_stream_with_more_than_k_new_sentences_takes_several_chunks() -> None:
    state = feed(SplitterState("s"), range(7), eos_at=6)
    state, first = next_chunk(state, k=4)
    assert first is not None and first.new_count == 4 and not first.is_last
    state = apply_done(state, seq=0, next_start_id=None)
    state, second = next_chunk(state, k=4)
    assert ids(second) == [sentence(i).id for i in range(4, 7)]
    assert second is not None and second.is_last


# --- bounds ------------------------------------------------------------------------------------


def test_limits_for_k() -> None:
    assert [(k, cs.min_new(k), cs.carry_limit(k)) for k in (1, 2, 4, 10, 45)] == [
        (1, 1, 1),
        (2, 1, 3),
        (4, 2, 6),
        (10, 5, 15),
        (45, 22, 68),
    ]


def test_carry_over_up_to_the_limit_is_kept_and_squeezes_the_new_part() -> None:
    # k=4: carry limit 6. Chunk 0 is 4 sentences, chunk 1 = 2 carried + 4 new = 6 sentences.
    state = feed(SplitterState("s"), range(20))
    state, _ = next_chunk(state, k=4)
    state = apply_done(state, seq=0, next_start_id=sentence(2).id)
    state, spec = next_chunk(state, k=4)
    assert ids(spec) == [sentence(i).id for i in range(2, 8)]
    # The whole chunk 1 (6 sentences) is unfinished: 6 <= limit, so 8 - 6 = 2 new sentences follow.
    state = apply_done(state, seq=1, next_start_id=sentence(2).id)
    state, spec = next_chunk(state, k=4)
    assert ids(spec) == [sentence(i).id for i in range(2, 10)]
    assert spec is not None and spec.new_count == 2 and len(spec.sentences) == 8


def test_carry_over_beyond_the_limit_is_cut_whole() -> None:
    state = feed(SplitterState("s"), range(20))
    state, _ = next_chunk(state, k=4)
    state = apply_done(state, seq=0, next_start_id=sentence(2).id)
    state, _ = next_chunk(state, k=4)  # sentences 2..7
    state = apply_done(state, seq=1, next_start_id=sentence(2).id)
    state, _ = next_chunk(state, k=4)  # sentences 2..9: 8 sentences
    state = apply_done(state, seq=2, next_start_id=sentence(1 + 1).id)
    # Carrying 8 sentences > limit 6: the topic is closed, the next chunk starts at the new ones.
    state, spec = next_chunk(state, k=4)
    assert ids(spec) == [sentence(i).id for i in range(10, 14)]
    assert spec is not None and spec.new_count == 4
    assert [s.id for s in state.buffer] == [sentence(i).id for i in range(10, 20)]


def test_shrinking_k_between_chunks_keeps_chunks_bounded() -> None:
    state, _ = next_chunk(feed(SplitterState("s"), range(30)), k=10)
    state = apply_done(state, seq=0, next_start_id=sentence(0).id)  # carry 10
    state, spec = next_chunk(state, k=4)  # 10 > 2*4: cut
    assert spec is not None and len(spec.sentences) == 4 and spec.new_count == 4


def test_k_must_be_positive() -> None:
    with pytest.raises(ConfigError):
        next_chunk(SplitterState("s"), k=0)


# --- next_start_id -----------------------------------------------------------------------------


# --- the chunk deadline (rule 2) ---------------------------------------------------------------


def live(indices: range, start_ms: int, every_ms: int, state: SplitterState | None = None) -> SplitterState:
    """Sentences taken one every `every_ms` from `start_ms`, as a live speaker says them."""
    state = state or SplitterState("live-1")
    for n, i in enumerate(indices):
        state = add_segment(state, sentence(i), False, now_ms=start_ms + n * every_ms)
    return state


def test_a_chunk_goes_out_at_its_deadline_with_at_least_half_of_k_new_sentences() -> None:
    state = live(range(5), start_ms=0, every_ms=400)  # k = 10: half of it is 5
    assert state.waiting_since_ms == 0
    assert next_chunk(state, 10, now_ms=7_999, max_wait_s=8.0)[1] is None  # not waited long enough
    assert next_chunk(state, 10, now_ms=8_000, max_wait_s=None)[1] is None  # no deadline
    assert next_chunk(live(range(4), 0, 400), 10, now_ms=60_000, max_wait_s=8.0)[1] is None  # < k/2
    sent, spec = next_chunk(state, 10, now_ms=8_000, max_wait_s=8.0)
    assert ids(spec) == [sentence(i).id for i in range(5)] and spec is not None and spec.new_count == 5
    assert sent.waiting_since_ms is None


def test_a_burst_fills_chunks_at_once_and_the_deadline_counts_the_rest_from_the_send() -> None:
    state = live(range(25), start_ms=0, every_ms=0)  # a replay: 25 sentences at once, k = 10
    sent, spec = next_chunk(state, 10, now_ms=0, max_wait_s=8.0)
    assert spec is not None and spec.new_count == 10 and sent.waiting_since_ms == 0
    done = apply_done(sent, 0, None)
    assert next_chunk(done, 10, now_ms=1, max_wait_s=8.0)[1] is not None  # 15 new: k are there
    later = live(range(25, 26), start_ms=500, every_ms=0, state=done)
    assert later.waiting_since_ms == 0  # older new sentences wait already: their wait counts


def test_the_deadline_survives_a_round_trip_and_older_states_load_without_it() -> None:
    state = live(range(3), start_ms=1_700_000_000_000, every_ms=400)
    assert roundtrip(state) == state and roundtrip(state).waiting_since_ms == 1_700_000_000_000
    older = {k: v for k, v in state.to_dict().items() if k != "waiting_since_ms"}
    assert SplitterState.from_dict(older, state.buffer).waiting_since_ms is None


async def test_the_agent_sends_a_chunk_at_its_deadline_while_the_speaker_pauses(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = {"ms": 0}
    monkeypatch.setattr("processors.splitter_agent.now_ms", lambda: clock["ms"])
    worker, table = FakeWorker(), SplitterTable()
    worker.settings.feed = lambda name: FeedSettings(chunk_size=4, chunk_max_wait_s=8.0)
    agent = SplitterAgent(worker, table.store)  # type: ignore[arg-type]
    for i in range(1, 3):  # two sentences, k = 4: half of k, the chunk waits for its deadline
        await agent.on_event(event(worker.topics.transcripts, segment(i)))
        await agent.flush()
    await agent.look_after_streams({1}, now=0.0)
    assert worker.sent == []
    clock["ms"] = 8_000  # the speaker paused for 8 s: no segment comes to trigger the chunk
    await agent.look_after_streams({1}, now=8.0)
    assert [[s["id"] for s in c["sentences"]] for c in worker.sent] == [[1, 2]]
    assert not worker.sent[0]["is_last"] and table.read("live-1").in_flight == 0


def test_next_start_id_is_the_start_of_the_last_non_final_topic() -> None:
    topics = [
        {"name": "Lace front wig", "first_id": 1000, "last_id": 1010, "final": True},
        {"name": "Running sneakers", "first_id": 1012, "last_id": 1030, "final": False},
    ]
    assert cs.next_start_id(topics, is_last=False) == 1012
    assert cs.next_start_id(topics, is_last=True) is None
    assert cs.next_start_id([{**t, "final": True} for t in topics], is_last=False) is None
    assert cs.next_start_id([], is_last=False) is None


# --- state storage -----------------------------------------------------------------------------


def test_state_round_trips_through_json() -> None:
    state, _ = next_chunk(feed(SplitterState("live-1", "shop", "news", "zh"), range(12), eos_at=11), k=5)
    assert roundtrip(state) == state
    assert json.loads(json.dumps(state.to_dict())) == state.to_dict()


def test_corrupt_state_is_a_validation_error() -> None:
    with pytest.raises(ValidationError):
        SplitterState.from_dict({"stream_id": "s", "next_seq": "oops"})


def test_a_write_costs_the_new_sentences_not_the_backlog() -> None:
    """A stream far behind (one chunk in flight while 2,000 sentences arrive) writes each new
    sentence about once, not its whole backlog on every write."""
    table, k = SplitterTable(), 40
    state, spec = next_chunk(feed(SplitterState("s"), range(k)), k)
    assert spec is not None
    table.write(state)
    for i in range(k, 2000 + k, 10):  # batches of 10 arrivals
        state = feed(state, range(i, i + 10))
        table.write(state)
        assert table.read("s") == state
    assert max(table.written) <= store.PAGE_SIZE + 10
    assert sum(table.written) < 3 * (2000 + k)  # the last page is rewritten until it is full
    spanned = state.buffer[-1].id // store.PAGE_SIZE - state.buffer[0].id // store.PAGE_SIZE + 1
    assert table.records <= len(table.written) + spanned  # a head per write, a record per page
    state = apply_done(state, spec.seq, None)  # the chunk is done: its pages go
    state, _ = next_chunk(state, k)
    table.write(state)
    assert table.read("s") == state
    first_page = state.buffer[0].id // store.PAGE_SIZE
    assert all(
        int(key.split(store.PAGE_SEPARATOR)[1]) >= first_page for key in table if store.is_page_key(key)
    )


def test_an_empty_buffer_drops_every_page_and_starts_again() -> None:
    table, k = SplitterTable(), 4
    state, spec = next_chunk(feed(SplitterState("s"), range(4), eos_at=3), k)
    assert spec is not None and spec.is_last
    table.write(state)
    state = apply_done(state, spec.seq, None)
    table.write(state)
    assert list(table) == ["s"] and table.read("s") == state and not state.buffer
    state = add_segment(state, sentence(9), False)  # taken after the end, as rule 5 says
    table.write(state)
    assert table.read("s") == state


def test_a_crash_between_pages_and_head_leaves_the_older_state() -> None:
    """Pages go out before the head: a head is never read without its pages, and sentences of
    a newer page beyond the head's last id are not part of it (their segments come again)."""
    table = SplitterTable()
    before, _ = next_chunk(feed(SplitterState("s"), range(100)), k=40)
    table.write(before)
    after = feed(before, range(100, 130))
    writes = store.state_writes(after, table["s"])
    for page, sentences in writes.pages.items():  # ... and the worker dies before the head
        table[store.page_key("s", page)] = sentences
    assert table.read("s") == before


def test_a_missing_page_is_a_validation_error() -> None:
    table = SplitterTable()
    state, _ = next_chunk(feed(SplitterState("s"), range(200)), k=40)
    table.write(state)
    table.pop(store.page_key("s", table["s"]["pages"][1]))
    with pytest.raises(ValidationError, match="misses page"):
        table.read("s")


# --- a whole stream ----------------------------------------------------------------------------

# Where the topics of the simulated stream start (sentence indices): the 35-sentence topic
# starting at 20 is longer than the carry limit for k=10 (15), so it must be cut.
TOPIC_STARTS = [0, 7, 12, 20, 55, 60, 70, 78, 90, 95]
N = 100
K = 10


def topic_starts_in(chunk_ids: list[int]) -> list[int]:
    """Ground truth: ids in the chunk where a topic starts; the chunk's first id always starts one."""
    starts = {sentence(i).id for i in TOPIC_STARTS}
    return [chunk_ids[0]] + [i for i in chunk_ids[1:] if i in starts]


def run_stream(use_format_checker: bool) -> tuple[list[cs.ChunkSpec], dict[str, dict[str, Any]]]:
    """Feed 100 sentences (3 at a time, done records arriving late and twice), return the chunks
    and the newest document per topic_id."""
    state = SplitterState("live-7")
    chunks: list[cs.ChunkSpec] = []
    documents: dict[str, dict[str, Any]] = {}
    pending: list[tuple[int, int | None]] = []  # done records not yet delivered
    fed = 0
    for _ in range(10_000):
        if fed < N:
            state = feed(state, range(fed, min(fed + 3, N)), eos_at=N - 1)
            fed = min(fed + 3, N)
            state = roundtrip(state)
        state, spec = next_chunk(state, K)
        if spec is not None:
            assert state.in_flight == spec.seq
            chunks.append(spec)
            chunk_ids = [s.id for s in spec.sentences]
            starts = topic_starts_in(chunk_ids)
            ends = [chunk_ids[chunk_ids.index(s) - 1] for s in starts[1:]] + [chunk_ids[-1]]
            drafts = [
                {
                    "name": f"topic@{a}",
                    "first_id": a,
                    "last_id": b,
                    "final": spec.is_last or j < len(starts) - 1,
                    "aspects": {"Price": [i for i in chunk_ids if a <= i <= b][:1]},
                }
                for j, (a, b) in enumerate(zip(starts, ends, strict=True))
            ]
            if use_format_checker:
                chunk = spec.to_avro(created_ms=0)
                docs = [
                    format_checker.check_document(
                        chunk,
                        d,
                        ("Opening", "Order Urging", "Price", "Product Description"),
                        version=spec.seq,
                        now_ms=0,
                        carry_limit=cs.carry_limit(K),
                    )
                    for d in drafts
                ]
                for doc in docs:
                    documents[str(doc["topic_id"])] = doc
                done = format_checker.chunk_done(chunk, docs)
                pending.append((spec.seq, done["next_start_id"]))
            else:
                pending.append((spec.seq, cs.next_start_id(drafts, spec.is_last)))
        elif pending:
            seq, start = pending.pop(0)
            state = apply_done(state, seq, start)
            state = apply_done(state, seq, start)  # duplicate delivery
            state = apply_done(state, seq - 1, None)  # a stale one
        elif fed >= N:
            break
    assert cs.is_finished(state)
    return chunks, documents


@pytest.mark.parametrize("use_format_checker", [False, True])
def test_a_whole_stream_sends_every_sentence_as_new_exactly_once(use_format_checker: bool) -> None:
    chunks, _ = run_stream(use_format_checker)
    new_ids = [s.id for c in chunks for s in c.new_sentences]
    assert new_ids == [sentence(i).id for i in range(N)]
    assert [c.seq for c in chunks] == list(range(len(chunks)))
    assert [c.chunk_id for c in chunks] == [f"live-7:{c.seq}" for c in chunks]
    for c in chunks:
        assert len(c.sentences) <= 2 * K
        assert [s.id for s in c.sentences] == sorted({s.id for s in c.sentences})
        assert c.new_count >= K // 2 or c.is_last
    assert [c.is_last for c in chunks] == [False] * (len(chunks) - 1) + [True]
    assert chunks[-1].sentences[-1].id == sentence(N - 1).id


def test_a_whole_stream_carries_unfinished_topics_and_cuts_the_long_one() -> None:
    chunks, _ = run_stream(use_format_checker=False)
    cuts = []
    for prev, chunk in itertools.pairwise(chunks):
        prev_ids = [s.id for s in prev.sentences]
        start = topic_starts_in(prev_ids)[-1]  # where the unfinished last topic starts
        carry = [i for i in prev_ids if i >= start]
        if len(carry) > cs.carry_limit(K):
            cuts.append(start)
            assert chunk.new_count == len(chunk.sentences)  # starts at the new sentences
        else:
            assert [s.id for s in chunk.sentences[: len(carry)]] == carry
            assert chunk.new_count == len(chunk.sentences) - len(carry)
    # Only the 35-sentence topic starting at sentence 20 outgrew the carry limit (20 > 15).
    assert cuts == [sentence(20).id]


def test_a_whole_stream_through_the_format_checker_documents_each_sentence_once() -> None:
    _, documents = run_stream(use_format_checker=True)
    covered = sorted(
        s["id"] for doc in documents.values() for aspect in doc["aspects"] for s in aspect["sentences"]
    )
    assert covered == [sentence(i).id for i in range(N)]
    assert all(doc["final"] for doc in documents.values())
    closed = [doc for doc in documents.values() if any("closed as final" in r for r in doc["repairs"])]
    assert [doc["topic_id"] for doc in closed] == [str(sentence(20).id)]


# --- the agent: batches, re-sends, finished streams ----------------------------------------------


@dataclass
class FakeWorker:
    """What the splitter's agent uses of the worker context; `handle` runs the record as given."""

    topics: TopicNames = field(default_factory=TopicNames.with_prefix)
    settings: Any = field(
        default_factory=lambda: SimpleNamespace(
            chunk_timeout_s=10.0,
            stream_idle_evict_s=3600.0,
            feed=lambda name: FeedSettings(chunk_size=4, chunk_max_wait_s=None),
        )
    )
    traces: SegmentTraces = field(default_factory=SegmentTraces)
    sent: list[dict[str, Any]] = field(default_factory=list)
    stats: dict[str, int] = field(default_factory=dict)

    async def handle(
        self, event: Any, role: str, expected: str, process: Any, on_failure: Any = None
    ) -> None:
        await process(event.record)

    async def send(self, topic: str, key: str, record_type: str, record: dict[str, Any]) -> None:
        assert (topic, key, record_type) == (self.topics.chunks, record["stream_id"], "Chunk")
        self.sent.append(record)

    def count(self, name: str) -> None:
        self.stats[name] = self.stats.get(name, 0) + 1


def event(topic: str, record: dict[str, Any], partition: int = 1) -> Any:
    return SimpleNamespace(message=SimpleNamespace(topic=topic, partition=partition), record=record)


def segment(i: int, end: bool = False) -> dict[str, Any]:
    return {
        "stream_id": "live-1",
        "segment_id": i,
        "text": f"sentence {i}",
        "end_of_stream": end,
        "feed": "default",
        "domain": "ecommerce",
        "lang": "en",
    }


async def test_the_agent_resends_a_stale_chunk_and_deletes_a_finished_stream() -> None:
    worker, table = FakeWorker(), SplitterTable()
    agent = SplitterAgent(worker, table.store)  # type: ignore[arg-type]
    for i in range(1, 5):
        await agent.on_event(event(worker.topics.transcripts, segment(i, end=i == 4)))
    await agent.flush()
    assert [[s["id"] for s in c["sentences"]] for c in worker.sent] == [[1, 2, 3, 4]]
    assert worker.sent[0]["is_last"] and table.partitions["live-1"] == 1

    await agent.look_after_streams({0}, now=0.0)  # not this worker's partition: nothing
    await agent.look_after_streams({1}, now=100.0)  # first seen in flight
    await agent.look_after_streams({1}, now=105.0)
    assert len(worker.sent) == 1
    await agent.look_after_streams({1}, now=110.0)  # in flight for chunk_timeout_s: sent again
    assert worker.sent[1] == {**worker.sent[0], "created_ms": worker.sent[1]["created_ms"]}

    done = {"stream_id": "live-1", "chunk_id": "live-1:0", "seq": 0, "next_start_id": None}
    await agent.on_event(event(worker.topics.progress, done))
    await agent.flush()
    assert cs.is_finished(table.read("live-1"))
    await agent.look_after_streams({1}, now=200.0)
    await agent.look_after_streams({1}, now=200.0 + FINISHED_KEEP_S - 1)
    assert "live-1" in table
    await agent.look_after_streams({1}, now=200.0 + FINISHED_KEEP_S)
    assert dict(table) == {} and worker.stats == {"resent.chunk_splitter": 1, "finished.chunk_splitter": 1}
    assert len(worker.sent) == 2


async def test_a_finished_stream_that_gets_a_late_sentence_is_kept() -> None:
    worker, table = FakeWorker(), SplitterTable()
    agent = SplitterAgent(worker, table.store)  # type: ignore[arg-type]
    await agent.on_event(event(worker.topics.transcripts, segment(1, end=True)))
    await agent.flush()
    done = {"stream_id": "live-1", "chunk_id": "live-1:0", "seq": 0, "next_start_id": None}
    await agent.on_event(event(worker.topics.progress, done))
    await agent.flush()
    await agent.look_after_streams({1}, now=0.0)
    await agent.on_event(event(worker.topics.transcripts, segment(2)))  # taken after the end (rule 5)
    await agent.flush()
    await agent.look_after_streams({1}, now=FINISHED_KEEP_S)
    assert table.read("live-1").in_flight == 1 and len(worker.sent) == 2


# --- idle streams --------------------------------------------------------------------------------


def test_activity_moves_only_when_the_stream_takes_a_sentence() -> None:
    state = feed(SplitterState("s"), range(3))
    seen = cs.note_activity(None, state, 10.0)
    assert seen == (state.max_id, 10.0)
    assert cs.note_activity(seen, state, 50.0) == seen  # same highest id: still silent since 10
    assert cs.note_activity(seen, add_segment(state, sentence(7), False), 50.0) == (sentence(7).id, 50.0)
    done = apply_done(next_chunk(state, 2)[0], 0, None)
    assert cs.note_activity(seen, done, 60.0) == seen  # progress is not the sender speaking


def test_an_idle_open_stream_is_ended_and_its_buffer_goes_out() -> None:
    state = feed(SplitterState("s"), range(3))  # 3 sentences, fewer than k: waiting for more
    assert cs.end_if_idle(state, silent_s=3599.0, limit_s=3600.0) is state
    ended = cs.end_if_idle(state, silent_s=3600.0, limit_s=3600.0)
    assert ended.end_of_stream and ended.buffer == state.buffer
    _, spec = next_chunk(ended, 40)
    assert spec is not None and spec.is_last and ids(spec) == [s.id for s in state.buffer]
    assert cs.end_if_idle(ended, silent_s=1e9, limit_s=3600.0) is ended  # already ended


async def test_the_agent_ends_an_idle_stream_then_deletes_it() -> None:
    worker, table = FakeWorker(), SplitterTable()
    agent = SplitterAgent(worker, table.store)  # type: ignore[arg-type]
    for i in range(1, 3):  # two sentences, k = 4: nothing due
        await agent.on_event(event(worker.topics.transcripts, segment(i)))
    await agent.flush()
    assert worker.sent == []
    await agent.look_after_streams({1}, now=0.0)
    await agent.look_after_streams({1}, now=3599.0)
    assert worker.sent == [] and not table.read("live-1").end_of_stream
    await agent.look_after_streams({1}, now=3600.0)  # silent for stream_idle_evict_s
    assert [[s["id"] for s in c["sentences"]] for c in worker.sent] == [[1, 2]] and worker.sent[0]["is_last"]
    done = {"stream_id": "live-1", "chunk_id": "live-1:0", "seq": 0, "next_start_id": None}
    await agent.on_event(event(worker.topics.progress, done))
    await agent.flush()
    await agent.look_after_streams({1}, now=3601.0)
    await agent.look_after_streams({1}, now=3601.0 + FINISHED_KEEP_S)
    assert dict(table) == {}
    assert worker.stats == {"idle_ended.chunk_splitter": 1, "finished.chunk_splitter": 1}
    assert not (agent.in_flight_since or agent.finished_since or agent.active_since or table.store._decoded)


async def test_a_stream_that_keeps_talking_is_never_idle() -> None:
    worker, table = FakeWorker(), SplitterTable()
    agent = SplitterAgent(worker, table.store)  # type: ignore[arg-type]
    for minute in range(0, 180, 30):
        await agent.on_event(event(worker.topics.transcripts, segment(minute + 1)))
        await agent.flush()
        await agent.look_after_streams({1}, now=minute * 60.0)
    assert not table.read("live-1").end_of_stream and "idle_ended.chunk_splitter" not in worker.stats


async def test_the_agent_forgets_streams_it_no_longer_owns() -> None:
    worker, table = FakeWorker(), SplitterTable()
    agent = SplitterAgent(worker, table.store)  # type: ignore[arg-type]
    await agent.on_event(event(worker.topics.transcripts, segment(1)))
    await agent.flush()
    await agent.look_after_streams({1}, now=0.0)
    assert agent.active_since and table.store._decoded
    await agent.look_after_streams({0}, now=1.0)  # partition 1 moved to another worker
    assert not (agent.active_since or table.store._decoded)
    table.store.delete("live-1")  # deleted by its new owner (the standby copy follows)
    await agent.look_after_streams({0}, now=2.0)
    assert not (agent.in_flight_since or agent.finished_since or agent.active_since)
