"""Avro codec for every topic's values: record dict <-> bytes (spec section 2, `schemas/`).

Each `schemas/*.avsc` is parsed once, on first use, with named types resolved across files
(`chunk.avsc` defines `olp.Chunk` and `olp.Sentence`, which RoleResult and TopicDocument use).
Schemas in `schemas/history/` are older writer versions: records they wrote still decode,
resolved to the current reader schema of their type with defaults filled in.

Two wire formats, one per codec, behind one call signature (`Codec`):

- `AvroCodec`: Avro single-object encoding, C3 01 + the 8-byte little-endian CRC-64-AVRO
  fingerprint of the writer schema's Parsing Canonical Form + the Avro binary body.
- `RegistryAvroCodec`: the Confluent wire format (magic 0 + 4-byte schema id + body) through
  `confluent_kafka.schema_registry`, subjects `<topic>-value` (TopicNameStrategy).

Every failure is raised as `olp.errors.CodecError` with the library error chained.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from importlib.resources import files
from io import BytesIO
from typing import Any, Protocol

from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext
from fastavro import parse_schema, schemaless_reader, schemaless_writer
from fastavro.schema import fingerprint, to_parsing_canonical_form
from fastavro.validation import validate

from olp.errors import CodecError

Record = dict[str, Any]

#: Record type -> schema file. Order matters: a file may use named types of the files before it.
SCHEMA_FILES: Mapping[str, str] = {
    "Chunk": "chunk.avsc",
    "TranscriptSegment": "transcript_segment.avsc",
    "RoleResult": "role_result.avsc",
    "TopicDocument": "topic_document.avsc",
    "ChunkDone": "chunk_done.avsc",
    "RoleOutcome": "role_outcome.avsc",
    "Assignment": "assignment.avsc",
    "DeadLetter": "dead_letter.avsc",
    "JudgeVerdict": "judge_verdict.avsc",
}
#: Older writer schemas, still decodable.
HISTORY_FILES: tuple[str, ...] = (
    "history/transcript_segment.v1.avsc",
    "history/role_outcome.v1.avsc",
    "history/role_outcome.v2.avsc",
    "history/assignment.v1.avsc",
    "history/assignment.v2.avsc",
)
RECORD_TYPES: tuple[str, ...] = tuple(SCHEMA_FILES)
SINGLE_OBJECT_MAGIC = b"\xc3\x01"
_NAMESPACE = "olp."


@dataclass(frozen=True)
class Contract:
    """One parsed schema: what the codecs need, computed once."""

    record_type: str
    parsed: Any  # fastavro's parsed schema (named types resolvable)
    schema_str: str  # self-contained JSON (named types inlined, defaults kept), for a registry
    fingerprint: bytes  # CRC-64-AVRO of the Parsing Canonical Form, little-endian


def _contract(raw: dict[str, Any], named: dict[str, Any]) -> Contract:
    """Parse `raw`, adding its named types to `named`. (`_write_hint=False` keeps fastavro's private
    markers out of the expanded schema, so it serialises to plain Avro JSON.)"""
    expanded = parse_schema(raw, dict(named), expand=True, _write_hint=False)
    parsed = parse_schema(raw, named)
    fp = bytes.fromhex(fingerprint(to_parsing_canonical_form(expanded), "CRC-64-AVRO"))
    return Contract(raw["name"], parsed, json.dumps(expanded), fp)


@cache
def _load() -> tuple[Mapping[str, Contract], Mapping[bytes, Contract]]:
    """Current contracts by record type, and every writer contract (current + history) by fingerprint."""
    root = files(__package__)
    named: dict[str, Any] = {}  # named types of the current schemas, shared across files
    current: dict[str, Contract] = {}
    for record_type, name in SCHEMA_FILES.items():
        current[record_type] = _contract(json.loads(root.joinpath(name).read_text("utf-8")), named)
    writers = {c.fingerprint: c for c in current.values()}
    for name in HISTORY_FILES:
        raw = json.loads(root.joinpath(name).read_text("utf-8"))
        own = _NAMESPACE + raw["name"]
        writer = _contract(raw, {k: v for k, v in named.items() if k != own})
        writers.setdefault(writer.fingerprint, writer)
    return current, writers


def contract(record_type: str) -> Contract:
    """The current schema of `record_type`; CodecError for an unknown type."""
    try:
        return _load()[0][record_type]
    except KeyError:
        raise CodecError(f"unknown record type {record_type!r}; known: {', '.join(RECORD_TYPES)}") from None


def _check(c: Contract, record: Mapping[str, Any]) -> None:
    """Validate before writing: fastavro alone would silently truncate an int or skip a wrong key."""
    try:
        validate(record, c.parsed, raise_errors=True, strict=True)
    except Exception as exc:  # fastavro ValidationError and whatever the record's values throw
        raise CodecError(f"{c.record_type} record does not match its schema: {str(exc)[:500]}") from exc


def _check_input(data: object, expected: str | None) -> None:
    if expected is not None:
        contract(expected)
    if not isinstance(data, bytes):  # e.g. None from a Kafka tombstone
        raise CodecError(f"expected bytes to decode, got {type(data).__name__}")


class Codec(Protocol):
    """What every stage uses. `topic` is required by the registry codec, ignored otherwise."""

    def encode(self, record_type: str, record: Mapping[str, Any], *, topic: str | None = None) -> bytes: ...

    def decode(self, data: bytes, expected: str | None = None, *, topic: str | None = None) -> Record: ...


class AvroCodec:
    """Avro single-object encoding; a reader always knows which schema wrote a record."""

    def __init__(self) -> None:
        current, writers = _load()
        # fingerprint -> (writer, reader schema); reader None when the writer is the current schema
        self._pairs = {
            fp: (w, None if current[w.record_type] is w else current[w.record_type].parsed)
            for fp, w in writers.items()
        }

    def encode(self, record_type: str, record: Mapping[str, Any], *, topic: str | None = None) -> bytes:
        c = contract(record_type)
        _check(c, record)
        out = BytesIO()
        out.write(SINGLE_OBJECT_MAGIC)
        out.write(c.fingerprint)
        try:
            schemaless_writer(out, c.parsed, record, strict_allow_default=True)
        except Exception as exc:
            raise CodecError(f"cannot encode {record_type}: {exc!r}") from exc
        return out.getvalue()

    def decode(self, data: bytes, expected: str | None = None, *, topic: str | None = None) -> Record:
        _check_input(data, expected)
        if len(data) < 10 or data[:2] != SINGLE_OBJECT_MAGIC:
            raise CodecError(f"not Avro single-object encoding (starts {data[:10].hex()})")
        pair = self._pairs.get(data[2:10])
        if pair is None:
            raise CodecError(f"unknown writer schema fingerprint {data[2:10].hex()}")
        writer, reader_schema = pair
        if expected is not None and writer.record_type != expected:
            raise CodecError(f"expected {expected}, got a {writer.record_type} record")
        body = BytesIO(data)
        body.seek(10)
        try:
            record = schemaless_reader(body, writer.parsed, reader_schema)
        except Exception as exc:  # EOFError, UnicodeDecodeError, SchemaResolutionError, ...
            raise CodecError(f"cannot decode {writer.record_type}: {exc!r}") from exc
        if body.tell() != len(data):
            raise CodecError(f"{len(data) - body.tell()} trailing bytes after a {writer.record_type} record")
        if not isinstance(record, dict):
            raise CodecError(f"decoded {writer.record_type} is not a record")
        return record


class RegistryAvroCodec:
    """Confluent wire format; schemas registered under `<topic>-value`, so `topic` is required."""

    def __init__(self, client: SchemaRegistryClient, *, auto_register: bool = True) -> None:
        self._client = client
        current = _load()[0]
        conf = {"auto.register.schemas": auto_register, "validate.strict.allow.default": True}
        self._serializers = {t: AvroSerializer(client, c.schema_str, conf=conf) for t, c in current.items()}
        self._deserializers = {t: AvroDeserializer(client, c.schema_str) for t, c in current.items()}
        self._type_by_id: dict[int, str] = {}

    def encode(self, record_type: str, record: Mapping[str, Any], *, topic: str | None = None) -> bytes:
        c = contract(record_type)
        _check(c, record)
        try:
            data = self._serializers[record_type](record, _context(topic))
        except Exception as exc:  # SerializationError, SchemaRegistryError, ...
            raise CodecError(f"cannot encode {record_type} for topic {topic}: {exc!r}") from exc
        if not isinstance(data, bytes):
            raise CodecError(f"serializer returned {type(data).__name__} for a {record_type}")
        return data

    def decode(self, data: bytes, expected: str | None = None, *, topic: str | None = None) -> Record:
        _check_input(data, expected)
        ctx = _context(topic)
        if len(data) < 6 or data[0] != 0:
            raise CodecError(f"not Confluent Avro framing, magic 0 + schema id (starts {data[:6].hex()})")
        record_type = self._writer_type(struct.unpack_from(">I", data, 1)[0])
        if expected is not None and record_type != expected:
            raise CodecError(f"expected {expected}, got a {record_type} record on {topic}")
        try:
            record = self._deserializers[record_type](data, ctx)
        except Exception as exc:
            raise CodecError(f"cannot decode {record_type} from topic {topic}: {exc!r}") from exc
        if not isinstance(record, dict):
            raise CodecError(f"decoded {record_type} is not a record")
        return record

    def _writer_type(self, schema_id: int) -> str:
        record_type = self._type_by_id.get(schema_id)
        if record_type is None:
            try:
                name = str(json.loads(self._client.get_schema(schema_id).schema_str or "")["name"])
            except Exception as exc:
                raise CodecError(f"cannot look up writer schema id {schema_id}: {exc!r}") from exc
            record_type = name.removeprefix(_NAMESPACE)
            if record_type not in SCHEMA_FILES:
                raise CodecError(f"writer schema id {schema_id} is {name}, not one of ours")
            self._type_by_id[schema_id] = record_type
        return record_type


def _context(topic: str | None) -> SerializationContext:
    if not topic:
        raise CodecError("the Schema Registry wire format needs the topic name (subject <topic>-value)")
    return SerializationContext(topic, MessageField.VALUE)


def make_codec(
    schema_registry_url: str | None = None, registry_conf: Mapping[str, Any] | None = None
) -> Codec:
    """Registry codec when a URL is configured (`mock://...` gives the in-memory mock), else single-object.

    `registry_conf` adds client settings such as `basic.auth.user.info`. No network I/O here.
    """
    if not schema_registry_url:
        return AvroCodec()
    try:
        client = SchemaRegistryClient.new_client({**(registry_conf or {}), "url": schema_registry_url})
    except Exception as exc:
        raise CodecError(f"bad Schema Registry settings for {schema_registry_url}: {exc!r}") from exc
    return RegistryAvroCodec(client)
