"""A chunk lost in flight (issue 7, known weak spot 1): the splitter's table says a chunk is in
flight but its record never reached `olp.chunks` (a worker killed between writing the state and
sending the chunk). Without a re-send the stream would wait for that chunk forever.

The loss is staged exactly: before the worker starts, the splitter's changelog gets the state
"chunk 0 (sentences 1-30) in flight" and no chunk record is written. The worker restores the
table from the changelog, the whole stream arrives (1-30 again, ignored as re-sends), and the
chunk must be sent again after `chunk_timeout_s`, giving exactly the documents of a clean run.
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


def stage_lost_chunk(broker: str, prefix: str, segments: list[dict]) -> None:
    """Write the splitter's changelog as if chunk 0 (the first 30 sentences) had been cut and
    its record lost: Faust's JSON key and value, on the partition of the stream's key."""
    changelog = f"{prefix}app-chunk-splitter-state-changelog"
    ensure_topics({"bootstrap.servers": broker}, [changelog], partitions=PARTITIONS)
    partition = DefaultPartitioner()(STREAM.encode(), list(range(PARTITIONS)), list(range(PARTITIONS)))
    first = segments[:30]
    state = {
        "stream_id": STREAM,
        "feed": "default",
        "domain": "ecommerce",
        "lang": "en",
        "buffer": [{"id": s["segment_id"], "text": s["text"]} for s in first],
        "max_id": 30,
        "sent_upto": 30,
        "next_seq": 1,
        "in_flight": 0,
        "in_flight_last": False,
        "end_of_stream": False,
        "partition": partition,
    }
    producer = Producer({"bootstrap.servers": broker})
    producer.produce(
        changelog, key=json.dumps(STREAM).encode(), value=json.dumps(state).encode(), partition=partition
    )
    assert producer.flush(10) == 0


def test_a_chunk_lost_in_flight_is_sent_again(
    broker: str, topic_prefix: str, run_dir: Path, scripted: ScriptedLLM, report: Report
) -> None:
    segments = sample_segments(STREAM)
    stage_lost_chunk(broker, topic_prefix, segments)
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
            f"re-sent after chunk_timeout_s={TIMEOUT_S}s (was: stalled forever); done in {waited:.0f}s",
        )
        assert resent, "the splitter did not report the re-send"
        assert result.clean, result
        assert comparable(collector.stream(STREAM)) == expected_documents(segments), describe_difference(
            comparable(collector.stream(STREAM)), expected_documents(segments)
        )
    finally:
        collector.stop()
        stack.stop()
