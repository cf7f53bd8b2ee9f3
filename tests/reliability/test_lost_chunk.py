"""A chunk lost in flight: the splitter's table says a chunk is in flight but its record never
reached `olp.chunks` (a worker killed between writing the state and sending the chunk). Without a
re-send the stream would wait for that chunk forever.

The loss is staged exactly: before the worker starts, the splitter's changelog gets the state
"80 sentences taken, chunk 0 (the first 30) in flight", in pages as the worker stores it, and no
chunk record is written. The worker restores the table from the changelog, the whole stream
arrives (those 80 again, ignored as re-sends), and the chunk must be sent again after
`chunk_timeout_s`, giving exactly the documents of a clean run.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiokafka.partitioner import DefaultPartitioner
from confluent_kafka import Producer

from launcher.clients import replay
from launcher.scripted_llm import ScriptedLLM, scripted_catalog
from launcher.scripted_roles import perfect
from olp.topics import ensure_topics
from processors.chunk_splitter import SplitterState, add_segment, next_chunk
from processors.domain import Sentence
from processors.splitter_store import page_key, state_writes
from tests.reliability.conftest import Report
from tests.reliability.harness import (
    DocumentCollector,
    Stack,
    audit,
    comparable,
    describe_difference,
    expected_documents,
    sample_segments,
)

pytestmark = [pytest.mark.reliability, pytest.mark.integration]

STREAM = "lost-chunk-1"
TIMEOUT_S = 6
PARTITIONS = 4


@pytest.fixture
def scripted() -> Iterator[ScriptedLLM]:
    server = ScriptedLLM(perfect).start()
    yield server
    server.stop()


def stage_lost_chunk(broker: str, prefix: str, segments: list[dict]) -> int:
    """Write the splitter's changelog as if `segments` had arrived, chunk 0 (their first 30) had
    been cut and its record lost: the stored form the worker writes (its pages, then its head),
    Faust's JSON key and value, on the partition of the stream's key. Returns the pages written."""
    changelog = f"{prefix}app-chunk-splitter-state-changelog"
    ensure_topics({"bootstrap.servers": broker}, [changelog], partitions=PARTITIONS)
    partition = DefaultPartitioner()(STREAM.encode(), list(range(PARTITIONS)), list(range(PARTITIONS)))
    state = SplitterState(STREAM)
    for segment in segments:
        state = add_segment(state, Sentence(segment["segment_id"], segment["text"].strip()), False)
    state, chunk = next_chunk(state, 30)
    assert chunk is not None and chunk.seq == 0
    assert [s.id for s in chunk.sentences] == [int(s["segment_id"]) for s in segments[:30]]
    writes = state_writes(state, None)
    records = [(page_key(STREAM, page), sentences) for page, sentences in writes.pages.items()]
    records.append((STREAM, {**writes.head, "partition": partition}))
    producer = Producer({"bootstrap.servers": broker})
    for key, value in records:  # one record per batch, as the worker writes (Tansu's end offsets)
        producer.produce(
            changelog, key=json.dumps(key).encode(), value=json.dumps(value).encode(), partition=partition
        )
        assert producer.flush(10) == 0
    return len(writes.pages)


def test_a_chunk_lost_in_flight_is_sent_again(
    broker: str, topic_prefix: str, run_dir: Path, scripted: ScriptedLLM, report: Report
) -> None:
    segments = sample_segments(STREAM)
    # 80 sentences arrived before the loss: the stored buffer spans a page and the head's tail.
    assert stage_lost_chunk(broker, topic_prefix, segments[:80]) >= 1
    stack = Stack(
        broker,
        topic_prefix,
        run_dir,
        scripted_catalog(scripted.base_url),
        {"OLP_FEEDS": json.dumps({"default": {"chunk_size": 30}}), "OLP_CHUNK_TIMEOUT_S": str(TIMEOUT_S)},
    )
    collector = DocumentCollector(stack.settings())
    try:
        stack.start_policy_store()
        worker = stack.start_worker()
        collector.start()
        replay(stack.settings(), segments)
        replayed = time.monotonic()
        ids = [s["segment_id"] for s in segments]
        waited = collector.wait(lambda: collector.covers(STREAM, ids), 90, stack.dead_children, stack.logs)
        time.sleep(1.0)
        result = audit(collector.stream(STREAM), ids)
        first_doc = (collector.first_arrival_after(replayed) or time.monotonic()) - replayed
        resent = "sending it again" in worker.log_path.read_text(errors="replace")
        report.add(
            "chunk lost in flight",
            f"{len(ids)} segments, chunk 0 lost",
            result.lost,
            result.duplicated,
            len(stack.crash_lines()),
            first_doc,
            f"re-sent after chunk_timeout_s={TIMEOUT_S}s; done in {waited:.0f}s",
        )
        assert resent, "the splitter did not report the re-send"
        assert not stack.crash_lines(), stack.crash_lines()
        assert result.clean, result
        assert comparable(collector.stream(STREAM)) == expected_documents(segments), describe_difference(
            comparable(collector.stream(STREAM)), expected_documents(segments)
        )
    finally:
        collector.stop()
        stack.stop()
