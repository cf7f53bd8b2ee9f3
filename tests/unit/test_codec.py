"""The Avro codec (schemas/codec.py): exact bytes, round-trips, schema evolution, errors, both
wire formats (spec section 2, `schemas/`)."""

from __future__ import annotations

import json
from importlib.resources import files
from io import BytesIO
from typing import Any

import pytest
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext
from fastavro import parse_schema, schemaless_writer
from fastavro.schema import to_parsing_canonical_form
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from olp.errors import CodecError
from schemas import RECORD_TYPES, AvroCodec, RegistryAvroCodec, contract, make_codec

LONG = st.integers(-(2**63), 2**63 - 1)
SENTENCES = [
    {"id": 7, "text": "This blender has a 1200 W motor."},
    {"id": 9, "text": "Glass jar, 1.5 l — ünïcödé 🙂"},
]
CHUNK = {
    "stream_id": "live-42",
    "chunk_id": "live-42:3",
    "seq": 3,
    "feed": "shop",
    "domain": "ecommerce",
    "lang": "en",
    "sentences": SENTENCES,
    "is_last": False,
    "created_ms": 1_732_280_000_123,
}
RECORDS: dict[str, dict[str, Any]] = {
    "TranscriptSegment": {
        "stream_id": "live-42",
        "segment_id": 9,
        "text": "Glass jar, 1.5 l.",
        "ts_ms": 1_732_280_000_000,
        "speaker": "host",
        "domain": "news",
        "lang": "de",
        "feed": "shop",
        "end_of_stream": True,
    },
    "Chunk": CHUNK,
    "RoleResult": {
        "chunk": CHUNK,
        "stage": "content_organizer",
        "topics": [
            {
                "name": "Blender",
                "first_id": 7,
                "last_id": 9,
                "final": True,
                "aspects": {"price": [7], "motor": [7, 9]},
            },
            {"name": "Next", "first_id": None, "last_id": None, "final": False, "aspects": {}},
        ],
        "trail": ["topic_finder=qwen2.5-0.5b", "topic_locator=llama-3.2-1b"],
    },
    "TopicDocument": {
        "stream_id": "live-42",
        "topic_id": "7",
        "version": 3,
        "name": "Blender",
        "first_id": 7,
        "last_id": 9,
        "final": True,
        "domain": "ecommerce",
        "lang": "en",
        "aspects": [{"name": "motor", "sentences": SENTENCES}, {"name": "price", "sentences": []}],
        "repairs": ["dropped unknown id 12"],
        "updated_ms": 1_732_280_000_456,
    },
    "ChunkDone": {"stream_id": "live-42", "chunk_id": "live-42:3", "seq": 3, "next_start_id": None},
    "RoleOutcome": {
        "event_id": "live-42:3:topic_finder:0",
        "role": "topic_finder",
        "model": "qwen2.5-0.5b",
        "policy_version": 17,
        "propensity": 0.85,
        "prev_model": "llama-3.2-1b",
        "prev_success": False,
        "domain": "ecommerce",
        "lang": "en",
        "feed": "shop",
        "chunk_size": 12,
        "latency_ms": 812.5,
        "tokens_in": 640,
        "tokens_out": 48,
        "cost_usd": 0.000125,
        "success": True,
        "error": None,
        "quality": -0.25,
        "source": "judge",
        "stream_id": "live-42",
        "chunk_id": "live-42:3",
        "ts_ms": 1_732_280_001_000,
        "confidence": 0.93,
        "judge_cost_usd": 0.0002,
    },
    "Assignment": {
        "role": "topic_finder",
        "model": "qwen2.5-0.5b",
        "q_values": {"qwen2.5-0.5b": 0.61, "llama-3.2-1b": -0.1},
        "epsilon": 0.05,
        "candidates": ["qwen2.5-0.5b", "llama-3.2-1b"],
        "version": 18,
        "reason": "q-update",
        "ts_ms": 1_732_280_002_000,
        "mode": "role_rl",
        "explore": {"llama-3.2-1b": 1.0},
        "warmup": [],
        "incumbent": None,
        "fallbacks": ["llama-3.2-1b"],
        "cascade_to": "llama-3.2-1b",
        "cascade_below": 0.7,
        "pinned": False,
        "context": "domain=ecommerce|lang=zh|chunk=<40",
    },
    "DeadLetter": {
        "source_topic": "olp.found",
        "partition": 2,
        "offset": 1234,
        "key": b"live-42",
        "value": b"\xc3\x01\x00",
        "stage": "topic_locator",
        "error_type": "ParseError",
        "error": "unknown sentence id 99",
        "ts_ms": 1_732_280_003_000,
    },
    "JudgeVerdict": {
        "event_id": "live-42:3:topic_locator:0:qwen2.5-0.5b:0:judge:qwen2.5-1.5b",
        "judged_event_id": "live-42:3:topic_locator:0:qwen2.5-0.5b:0",
        "role": "topic_locator",
        "model": "qwen2.5-0.5b",
        "judge": "qwen2.5-1.5b",
        "correct": False,
        "score": 0.2,
        "answer": "[7, 9]",
        "correction": "[7, 8]",
        "stream_id": "live-42",
        "chunk_id": "live-42:3",
        "latency_ms": 812.5,
        "tokens_in": 950,
        "tokens_out": 14,
        "cost_usd": 0.0000016,
        "error": None,
        "ts_ms": 1_732_280_004_000,
    },
}
CHUNK_DONE = {"stream_id": "s1", "chunk_id": "s1:0", "seq": 0, "next_start_id": 7}
V1_SEGMENT = {
    "stream_id": "old",
    "segment_id": 1,
    "text": "hi",
    "ts_ms": 5,
    "speaker": None,
    "domain": "news",
    "lang": "fr",
}


def _v1_schema() -> dict[str, Any]:
    raw: dict[str, Any] = json.loads(
        files("schemas").joinpath("history/transcript_segment.v1.avsc").read_text()
    )
    return raw


def _crc64_avro(data: bytes) -> int:
    """The Avro spec's reference fingerprint64, written out independently of fastavro."""
    empty = 0xC15D213AA4D7A795
    table = []
    for i in range(256):
        fp = i
        for _ in range(8):
            fp = (fp >> 1) ^ (empty & -(fp & 1))
        table.append(fp)
    fp = empty
    for b in data:
        fp = (fp >> 8) ^ table[(fp ^ b) & 0xFF]
    return fp


@pytest.fixture
def codec() -> AvroCodec:
    return AvroCodec()


@pytest.fixture
def registry_codec() -> RegistryAvroCodec:
    return RegistryAvroCodec(SchemaRegistryClient.new_client({"url": "mock://test"}))


# --- single-object encoding -------------------------------------------------------------------


def test_crc64_matches_the_spec_test_vector() -> None:
    # Avro's share/test/data/schema-tests.txt: "null" has fingerprint 7195948357588979594 (Java long).
    assert _crc64_avro(b'"null"') == 7195948357588979594


def test_fingerprints_are_crc64_of_parsing_canonical_form_little_endian() -> None:
    avro_schema = pytest.importorskip("avro.schema")  # Apache Avro's own implementation
    for record_type in RECORD_TYPES:
        c = contract(record_type)
        reference = avro_schema.parse(c.schema_str)
        assert c.fingerprint == _crc64_avro(reference.canonical_form.encode()).to_bytes(8, "little")
        assert c.fingerprint == reference.fingerprint("CRC-64-AVRO")


def test_chunk_done_exact_bytes(codec: AvroCodec) -> None:
    data = codec.encode("ChunkDone", CHUNK_DONE)
    assert data[:10] == b"\xc3\x01" + contract("ChunkDone").fingerprint
    # magic | fingerprint | "s1" | "s1:0" | seq 0 | union branch 1 (long) | 7
    assert data.hex() == "c30180656c1c3448319b0473310873313a3000020e"


@pytest.mark.parametrize("record_type", RECORD_TYPES)
def test_round_trip_every_type(codec: AvroCodec, record_type: str) -> None:
    data = codec.encode(record_type, RECORDS[record_type])
    assert codec.decode(data, record_type) == RECORDS[record_type]
    assert codec.decode(data) == RECORDS[record_type]


def test_defaults_are_filled_on_encode(codec: AvroCodec) -> None:
    record = {"stream_id": "s", "segment_id": 1, "text": "", "ts_ms": 0}
    assert codec.decode(codec.encode("TranscriptSegment", record), "TranscriptSegment") == {
        **record,
        "speaker": None,
        "domain": "ecommerce",
        "lang": "en",
        "feed": "default",
        "end_of_stream": False,
    }


def test_history_v1_transcript_segment_decodes_with_current_reader(codec: AvroCodec) -> None:
    v1 = _v1_schema()
    body = BytesIO()
    schemaless_writer(body, parse_schema(v1), V1_SEGMENT)
    fp = _crc64_avro(to_parsing_canonical_form(v1).encode()).to_bytes(8, "little")
    data = b"\xc3\x01" + fp + body.getvalue()
    assert codec.decode(data, "TranscriptSegment") == {
        **V1_SEGMENT,
        "feed": "default",
        "end_of_stream": False,
    }


#: Fields added after each history schema, with the defaults old records decode with.
HISTORY_ADDED: dict[str, tuple[str, dict[str, Any]]] = {
    "history/role_outcome.v1.avsc": ("RoleOutcome", {"confidence": None, "judge_cost_usd": 0.0}),
    "history/role_outcome.v2.avsc": ("RoleOutcome", {"judge_cost_usd": 0.0}),
    "history/assignment.v1.avsc": (
        "Assignment",
        {
            "mode": "epsilon_greedy",
            "explore": {},
            "warmup": [],
            "incumbent": None,
            "fallbacks": [],
            "cascade_to": None,
            "cascade_below": None,
            "pinned": False,
            "context": "*",
        },
    ),
    "history/assignment.v2.avsc": ("Assignment", {"context": "*"}),
}


@pytest.mark.parametrize("name", sorted(HISTORY_ADDED))
def test_history_records_decode_with_current_reader(codec: AvroCodec, name: str) -> None:
    from schemas.codec import HISTORY_FILES

    assert name in HISTORY_FILES
    record_type, added = HISTORY_ADDED[name]
    old_schema = json.loads(files("schemas").joinpath(name).read_text())
    old = {k: v for k, v in RECORDS[record_type].items() if k not in added}
    body = BytesIO()
    schemaless_writer(body, parse_schema(old_schema), old)
    fp = _crc64_avro(to_parsing_canonical_form(old_schema).encode()).to_bytes(8, "little")
    assert codec.decode(b"\xc3\x01" + fp + body.getvalue(), record_type) == {**old, **added}


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"", "single-object"),
        (b"\x00\x00\x00\x00\x01\x02", "single-object"),  # Confluent framing
        (b"\xc3\x02" + bytes(8) + b"\x00", "single-object"),
        (b"\xc3\x01" + bytes(8) + b"\x00", "unknown writer schema fingerprint"),
    ],
)
def test_bad_framing_raises(codec: AvroCodec, data: bytes, match: str) -> None:
    with pytest.raises(CodecError, match=match):
        codec.decode(data)


def test_truncated_and_trailing_bytes_raise(codec: AvroCodec) -> None:
    data = codec.encode("RoleResult", RECORDS["RoleResult"])
    for cut in range(10, len(data)):
        with pytest.raises(CodecError, match="RoleResult") as err:
            codec.decode(data[:cut])
        assert err.value.__cause__ is not None
    with pytest.raises(CodecError, match="trailing"):
        codec.decode(data + b"\x00")


def test_wrong_expected_type_and_unknown_type_raise(codec: AvroCodec) -> None:
    data = codec.encode("ChunkDone", CHUNK_DONE)
    with pytest.raises(CodecError, match="expected RoleOutcome, got a ChunkDone"):
        codec.decode(data, "RoleOutcome")
    with pytest.raises(CodecError, match="unknown record type"):
        codec.decode(data, "Nope")
    with pytest.raises(CodecError, match="unknown record type"):
        codec.encode("Nope", CHUNK_DONE)
    with pytest.raises(CodecError, match="expected bytes"):
        codec.decode(None, "ChunkDone")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "change",
    [
        {"partition": 2**40},  # int overflow: fastavro alone would write it
        {"offset": True},
        {"offset": 1.5},
        {"offset": "5"},
        {"offset": 2**70},
        {"value": "not bytes"},
        {"stage": None},
        {"extra": 1},
    ],
)
def test_invalid_dict_raises(
    codec: AvroCodec, registry_codec: RegistryAvroCodec, change: dict[str, Any]
) -> None:
    record = {**RECORDS["DeadLetter"], **change}
    with pytest.raises(CodecError, match="DeadLetter"):
        codec.encode("DeadLetter", record)
    with pytest.raises(CodecError, match="DeadLetter"):
        registry_codec.encode("DeadLetter", record, topic="olp.dlq")


def test_missing_required_field_raises(codec: AvroCodec) -> None:
    record = {k: v for k, v in RECORDS["DeadLetter"].items() if k != "stage"}
    with pytest.raises(CodecError, match="DeadLetter"):
        codec.encode("DeadLetter", record)


# --- Confluent wire format with the mock registry ----------------------------------------------


def test_make_codec_picks_the_wire_format() -> None:
    assert isinstance(make_codec(None), AvroCodec)
    assert isinstance(make_codec(""), AvroCodec)
    assert isinstance(make_codec("mock://test"), RegistryAvroCodec)


@pytest.mark.parametrize("record_type", RECORD_TYPES)
def test_registry_round_trip_every_type(registry_codec: RegistryAvroCodec, record_type: str) -> None:
    topic = f"olp.{record_type.lower()}"
    data = registry_codec.encode(record_type, RECORDS[record_type], topic=topic)
    assert data[0] == 0
    assert registry_codec.decode(data, record_type, topic=topic) == RECORDS[record_type]
    assert registry_codec.decode(data, topic=topic) == RECORDS[record_type]


def test_registry_subject_is_topic_value_and_schema_self_contained() -> None:
    client = SchemaRegistryClient.new_client({"url": "mock://test"})
    codec = RegistryAvroCodec(client)
    codec.encode("RoleResult", RECORDS["RoleResult"], topic="olp.found")
    assert client.get_subjects() == ["olp.found-value"]
    registered = client.get_latest_version("olp.found-value").schema
    assert not registered.references
    assert registered.schema_str is not None
    assert json.loads(registered.schema_str)["fields"][0]["type"]["name"] == "olp.Chunk"


def test_registry_errors(registry_codec: RegistryAvroCodec, codec: AvroCodec) -> None:
    data = registry_codec.encode("ChunkDone", CHUNK_DONE, topic="olp.progress")
    with pytest.raises(CodecError, match="topic name"):
        registry_codec.encode("ChunkDone", CHUNK_DONE)
    with pytest.raises(CodecError, match="topic name"):
        registry_codec.decode(data)
    with pytest.raises(CodecError, match="expected Assignment, got a ChunkDone"):
        registry_codec.decode(data, "Assignment", topic="olp.progress")
    with pytest.raises(CodecError, match="Confluent"):
        registry_codec.decode(codec.encode("ChunkDone", CHUNK_DONE), topic="olp.progress")
    with pytest.raises(CodecError, match="schema id 999"):
        registry_codec.decode(b"\x00\x00\x00\x03\xe7\x00", topic="olp.progress")
    with pytest.raises(CodecError, match="ChunkDone") as err:
        registry_codec.decode(data[:-1], topic="olp.progress")
    assert err.value.__cause__ is not None


def test_registry_history_v1_decodes_with_current_reader() -> None:
    client = SchemaRegistryClient.new_client({"url": "mock://test"})
    old_writer = AvroSerializer(client, json.dumps(_v1_schema()))
    data = old_writer(V1_SEGMENT, SerializationContext("olp.transcripts", MessageField.VALUE))
    assert data is not None
    codec = RegistryAvroCodec(client)
    new = codec.encode("TranscriptSegment", RECORDS["TranscriptSegment"], topic="olp.transcripts")
    assert new[1:5] != data[1:5]  # the current schema is a second, compatible version
    assert codec.decode(data, "TranscriptSegment", topic="olp.transcripts") == {
        **V1_SEGMENT,
        "feed": "default",
        "end_of_stream": False,
    }


# --- properties -------------------------------------------------------------------------------

SEGMENTS = st.fixed_dictionaries(
    {
        "stream_id": st.text(),
        "segment_id": LONG,
        "text": st.text(),
        "ts_ms": LONG,
        "speaker": st.none() | st.text(),
        "domain": st.text(max_size=20),
        "lang": st.text(max_size=5),
        "feed": st.text(max_size=20),
        "end_of_stream": st.booleans(),
    }
)
PREFIXES = [b"\xc3\x01" + contract(t).fingerprint for t in RECORD_TYPES] + [b"\xc3\x01", b""]


@settings(max_examples=500, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(record=SEGMENTS)
def test_property_transcript_segments_round_trip(codec: AvroCodec, record: dict[str, Any]) -> None:
    assert codec.decode(codec.encode("TranscriptSegment", record), "TranscriptSegment") == record


@settings(max_examples=3000, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    prefix=st.sampled_from(PREFIXES),
    body=st.binary(max_size=64),
    expected=st.sampled_from([None, *RECORD_TYPES]),
)
def test_property_random_bytes_decode_or_raise_codec_error(
    codec: AvroCodec, prefix: bytes, body: bytes, expected: str | None
) -> None:
    try:
        record = codec.decode(prefix + body, expected)
    except CodecError:
        return
    assert isinstance(record, dict)
