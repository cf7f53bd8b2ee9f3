"""Kafka clients of the command line (spec section 7): replay transcript segments into
`olp.transcripts`, and follow `olp.documents` keeping the newest version of each topic.

confluent-kafka, with the same codec as the pipeline; trace context starts here, in the headers
of each segment, so one segment's trace spans every role.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Generator, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from opentelemetry import propagate, trace

from olp.errors import CodecError, OlpError
from olp.settings import Settings
from olp.topic_documents import NewestDocuments
from olp.topics import TopicNames
from schemas.codec import Codec, make_codec

_tracer = trace.get_tracer("olp.ingest")


def replay(
    settings: Settings,
    segments: Iterable[Mapping[str, Any]],
    on_sent: Callable[[Mapping[str, Any]], None] | None = None,
    pace_s: float = 0.0,
) -> int:
    """Produce segments (key stream_id) and wait until the broker has them all; returns the count."""
    from confluent_kafka import KafkaException, Producer

    topics = TopicNames.with_prefix(settings.topic_prefix)
    codec = make_codec(settings.schema_registry_url)
    producer = Producer(
        {
            **settings.kafka.confluent_config(),
            "linger.ms": 5,
            "enable.idempotence": True,
            # The partitioner of the Java client, aiokafka and Faust: a stream lands on the same
            # partition whichever client wrote it (librdkafka defaults to a CRC32 partitioner).
            "partitioner": "murmur2_random",
        }
    )
    failures: list[str] = []

    def delivered(err: Any, _msg: Any) -> None:
        if err is not None:
            failures.append(str(err))

    sent = 0
    try:
        for segment in segments:
            with _tracer.start_as_current_span("ingest segment", kind=trace.SpanKind.PRODUCER) as span:
                span.set_attribute("olp.stream_id", str(segment["stream_id"]))
                span.set_attribute("olp.segment_id", int(segment["segment_id"]))
                carrier: dict[str, str] = {}
                propagate.inject(carrier)
                value = codec.encode("TranscriptSegment", segment, topic=topics.transcripts)
                while True:
                    try:
                        producer.produce(
                            topics.transcripts,
                            key=str(segment["stream_id"]).encode(),
                            value=value,
                            headers=list(carrier.items()),
                            on_delivery=delivered,
                        )
                        break
                    except BufferError:
                        producer.poll(0.1)  # local queue full: let deliveries drain
            producer.poll(0)
            sent += 1
            if on_sent:
                on_sent(segment)
            if pace_s:
                time.sleep(pace_s)
    except KafkaException as exc:
        raise OlpError(f"replay failed: {exc}") from exc
    finally:
        remaining = producer.flush(30)
    if remaining or failures:
        raise OlpError(f"replay: {remaining} segments undelivered, errors: {failures[:3]}")
    return sent


@dataclass
class DocumentView(NewestDocuments):
    """The newest version of every topic document seen so far (`olp.topic_documents`), and the
    sentences the pipeline dead-lettered, so a reader knows when a stream is accounted for."""

    dead_lettered: dict[str, set[int]] = field(default_factory=dict)
    """Stream -> sentence ids of records a stage gave up on (olp.dlq): accounted for, not lost."""

    def apply_dead_letter(self, letter: DeadLetterSummary) -> None:
        self.dead_lettered.setdefault(letter.stream_id, set()).update(letter.segment_ids)

    def covers(self, stream_id: str, segment_ids: Iterable[int]) -> bool:
        """True once every given segment lies in a final document of the stream or in a dead
        letter. (Documents of one stream arrive from several partitions, so seeing the last one
        proves nothing.)"""
        spans = [(int(d["first_id"]), int(d["last_id"])) for d in self.stream(stream_id) if d["final"]]
        dead = self.dead_lettered.get(stream_id, set())
        return bool(spans or dead) and all(
            i in dead or any(a <= i <= b for a, b in spans) for i in segment_ids
        )


@dataclass(frozen=True)
class DeadLetterSummary:
    """What a DeadLetter record (schemas/dead_letter.avsc) says about the stream it came from."""

    stream_id: str
    segment_ids: tuple[int, ...]
    stage: str
    error: str

    @classmethod
    def from_record(cls, record: Mapping[str, Any], codec: Codec) -> DeadLetterSummary:
        """The original record's stream and sentence ids, when its bytes still decode (a segment,
        a chunk or a role result); just the key and the reason otherwise."""
        key = record.get("key")
        stream_id = key.decode(errors="replace") if isinstance(key, bytes) else ""
        ids: tuple[int, ...] = ()
        try:
            value = record.get("value")
            original = codec.decode(value, topic=str(record["source_topic"])) if value else {}
        except CodecError:
            original = {}
        chunk = original.get("chunk", original)
        if "sentences" in chunk:
            stream_id = str(chunk["stream_id"])
            ids = tuple(int(s["id"]) for s in chunk["sentences"])
        elif "segment_id" in original:
            stream_id = str(original["stream_id"])
            ids = (int(original["segment_id"]),)
        return cls(stream_id, ids, str(record["stage"]), f"{record['error_type']}: {record['error']}")


def follow_results(settings: Settings) -> Generator[dict[str, Any] | DeadLetterSummary | None, None, None]:
    """Like `follow_documents`, and the dead letters of `olp.dlq` too, so a reader waiting for a
    stream's documents learns which of its sentences a stage gave up on instead of waiting."""
    topics = TopicNames.with_prefix(settings.topic_prefix)
    codec = make_codec(settings.schema_registry_url)
    for msg in follow_topic(settings, [topics.documents, topics.dlq]):
        if msg is None:
            yield None
            continue
        try:
            if msg.topic() == topics.dlq:
                yield DeadLetterSummary.from_record(codec.decode(msg.value(), "DeadLetter"), codec)
            else:
                yield codec.decode(msg.value(), "TopicDocument", topic=msg.topic())
        except CodecError as exc:
            raise OlpError(f"undecodable record in {msg.topic()} at offset {msg.offset()}: {exc}") from exc


def follow_documents(settings: Settings) -> Generator[dict[str, Any] | None, None, None]:
    """Yield decoded TopicDocuments from the start of `olp.documents` as they arrive, and None
    whenever a poll found nothing, so callers can check their own deadlines."""
    topics = TopicNames.with_prefix(settings.topic_prefix)
    codec = make_codec(settings.schema_registry_url)
    for msg in follow_topic(settings, topics.documents):
        if msg is None:
            yield None
            continue
        try:
            yield codec.decode(msg.value(), "TopicDocument", topic=msg.topic())
        except CodecError as exc:
            raise OlpError(f"undecodable document at offset {msg.offset()}: {exc}") from exc


def follow_topic(
    settings: Settings, topic: str | Sequence[str], timeout_s: float = 30.0
) -> Generator[Any, None, None]:
    """Raw messages of every partition of `topic` (or of several topics) from the beginning, then
    as they arrive; None on an empty poll. Reads by assignment, not in a consumer group: a reader
    that only follows needs no offsets, and skips the group join (seconds on some brokers)."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

    consumer = Consumer(
        {
            **settings.kafka.confluent_config(),
            "group.id": f"olp-follow-{time.time_ns()}",
            "enable.auto.commit": False,
            "fetch.wait.max.ms": settings.kafka.fetch_max_wait_ms,
        }
    )
    try:
        assignment = []
        for name in [topic] if isinstance(topic, str) else topic:
            metadata = consumer.list_topics(name, timeout=timeout_s).topics.get(name)
            if metadata is None or metadata.error is not None or not metadata.partitions:
                raise OlpError(f"topic {name} does not exist (run `olp topics ensure`)")
            assignment += [TopicPartition(name, p, OFFSET_BEGINNING) for p in sorted(metadata.partitions)]
        consumer.assign(assignment)
        while True:
            msg = consumer.poll(0.2)
            if msg is None:
                yield None
            elif (error := msg.error()) is not None:
                if error.code() != KafkaError._PARTITION_EOF:
                    raise OlpError(f"reading {msg.topic()} failed: {error}")
            else:
                yield msg
    finally:
        consumer.close()
