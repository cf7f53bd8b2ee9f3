"""`olp dlq`: see what the pipeline gave up on, and send it back once the cause is fixed.

    olp dlq list     [--stage S] [--stream S] [--reason TEXT] [--since 2h] [--json]
    olp dlq replay   (--all | --stage S | --stream S | --reason TEXT | --since 2h | --id DLQ_ID...)
                     [--dry-run]

A dead letter (schemas/dead_letter.avsc) keeps the original key and bytes with the source topic,
partition and offset, the stage that gave up and why. Its identity is where it sits in the DLQ,
`<partition>:<offset>` (shown as `id`). `replay` produces the original key and bytes to the
source topic and partition again, each with a header `olp-replay-of: <dlq topic>/<id>`; before
producing it reads those headers back from the target partitions and skips every dead letter
already re-driven, so replaying twice changes nothing (as long as the re-driven record is still
within the source topic's retention; the stages' own de-duplication covers the rest). A dead
letter whose bytes were cut to fit the DLQ is never replayed: it would be a different record.

The DLQ holds raw transcript text (the original segments, chunks and role results): whoever may
read it must be allowed to read the documents too. Grant read on the DLQ topic (Kafka ACLs) to
the principals that may read `olp.documents`, no one else.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import click

from launcher.console import cli_settings, console, friendly_errors, safe
from olp.errors import CodecError, OlpError
from olp.settings import Settings
from olp.topics import TopicNames
from schemas.codec import Codec, make_codec

REPLAY_HEADER = "olp-replay-of"
TRUNCATED = "[dead letter keeps the first"


@dataclass(frozen=True)
class DeadLetter:
    """One DLQ record with its identity (`partition:offset` in the DLQ) and the stream it is of."""

    id: str
    stream_id: str
    record: Mapping[str, Any]

    @property
    def reason(self) -> str:
        return f"{self.record['error_type']}: {self.record['error']}"

    @property
    def replayable(self) -> bool:
        return self.record.get("value") is not None and TRUNCATED not in str(self.record["error"])

    def age_s(self, now_ms: int) -> float:
        return max(0.0, (now_ms - int(self.record["ts_ms"])) / 1000)

    def view(self, now_ms: int) -> dict[str, Any]:
        """What `list` shows: never the original bytes (they are transcript text)."""
        return {
            "id": self.id,
            "age_s": round(self.age_s(now_ms), 1),
            "stage": self.record["stage"],
            "stream_id": self.stream_id,
            "source": f"{self.record['source_topic']}/{self.record['partition']}:{self.record['offset']}",
            "reason": self.reason,
            "replayable": self.replayable,
        }


def stream_of(record: Mapping[str, Any], codec: Codec) -> str:
    """The stream a dead letter belongs to: the original key, else the decoded record's."""
    key = record.get("key")
    if isinstance(key, bytes) and key:
        return key.decode(errors="replace")
    try:
        value = record.get("value")
        original = codec.decode(value, topic=str(record["source_topic"])) if value else {}
    except CodecError:
        return ""
    return str(original.get("chunk", original).get("stream_id", ""))


@dataclass(frozen=True)
class Selection:
    """Which dead letters a command acts on; every given filter must match."""

    stage: str | None = None
    stream: str | None = None
    reason: str | None = None
    since_s: float | None = None
    ids: frozenset[str] = frozenset()

    def matches(self, letter: DeadLetter, now_ms: int) -> bool:
        return (
            (self.stage is None or letter.record["stage"] == self.stage)
            and (self.stream is None or letter.stream_id == self.stream)
            and (self.reason is None or self.reason.lower() in letter.reason.lower())
            and (self.since_s is None or letter.age_s(now_ms) <= self.since_s)
            and (not self.ids or letter.id in self.ids)
        )

    @property
    def empty(self) -> bool:
        return self == Selection()


def parse_age(text: str) -> float:
    """`90s`, `15m`, `2h`, `3d` (or plain seconds) -> seconds."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([smhd]?)", text.strip())
    if not match:
        raise click.BadParameter(f"{text!r}: use a number with s, m, h or d, e.g. 2h")
    return float(match[1]) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[match[2]]


def read_to_end(
    settings: Settings, topic: str, partitions: Iterable[int] | None = None, timeout_s: float = 30.0
) -> Iterator[Any]:
    """Every message of `topic` (or of some of its partitions) from the beginning up to the end
    of each partition as the broker reports it (partition EOF), then stop."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

    consumer = Consumer(
        {
            **settings.kafka.confluent_config(),
            "group.id": f"olp-dlq-{time.time_ns()}",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
        }
    )
    try:
        metadata = consumer.list_topics(topic, timeout=timeout_s).topics.get(topic)
        if metadata is None or metadata.error is not None or not metadata.partitions:
            raise OlpError(f"topic {topic} does not exist (run `olp topics ensure`)")
        remaining = set(metadata.partitions) if partitions is None else set(partitions)
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in sorted(remaining)])
        deadline = time.monotonic() + timeout_s
        while remaining:
            msg = consumer.poll(0.5)
            if msg is None:
                if time.monotonic() > deadline:
                    raise OlpError(f"reading {topic} timed out after {timeout_s:g}s")
                continue
            deadline = time.monotonic() + timeout_s
            if (error := msg.error()) is None:
                yield msg
            elif error.code() == KafkaError._PARTITION_EOF:
                remaining.discard(msg.partition())
            else:
                raise OlpError(f"reading {topic} failed: {error}")
    finally:
        consumer.close()


def dead_letters(settings: Settings) -> list[DeadLetter]:
    """Every dead letter the DLQ holds now, oldest first per partition."""
    codec = make_codec(settings.schema_registry_url)
    topic = TopicNames.with_prefix(settings.topic_prefix).dlq
    letters = []
    for msg in read_to_end(settings, topic):
        try:
            record = codec.decode(msg.value(), "DeadLetter", topic=topic)
        except CodecError as exc:
            raise OlpError(f"undecodable dead letter at {msg.partition()}:{msg.offset()}: {exc}") from exc
        letters.append(DeadLetter(f"{msg.partition()}:{msg.offset()}", stream_of(record, codec), record))
    return letters


def replayed_ids(settings: Settings, dlq_topic: str, letters: Sequence[DeadLetter]) -> set[str]:
    """Ids of the dead letters among `letters` already re-driven: read back from the
    `olp-replay-of` headers of the partitions they would be produced to."""
    targets: dict[str, set[int]] = {}
    for letter in letters:
        targets.setdefault(str(letter.record["source_topic"]), set()).add(int(letter.record["partition"]))
    prefix = f"{dlq_topic}/"
    done: set[str] = set()
    for topic, partitions in targets.items():
        for msg in read_to_end(settings, topic, partitions):
            for name, value in msg.headers() or ():
                if name == REPLAY_HEADER and value and value.decode().startswith(prefix):
                    done.add(value.decode().removeprefix(prefix))
    return done


def replay_letters(settings: Settings, letters: Sequence[DeadLetter]) -> tuple[int, int]:
    """Produce the replayable `letters` not re-driven before; (produced, skipped as done)."""
    from confluent_kafka import KafkaException, Producer

    dlq_topic = TopicNames.with_prefix(settings.topic_prefix).dlq
    done = replayed_ids(settings, dlq_topic, letters)
    todo = [letter for letter in letters if letter.id not in done]
    producer = Producer({**settings.kafka.confluent_config(), "enable.idempotence": True})
    failures: list[str] = []

    def delivered(err: Any, _msg: Any) -> None:
        if err is not None:
            failures.append(str(err))

    try:
        for letter in todo:
            record = letter.record
            producer.produce(
                str(record["source_topic"]),
                key=record.get("key"),
                value=record["value"],
                partition=int(record["partition"]),
                headers=[(REPLAY_HEADER, f"{dlq_topic}/{letter.id}".encode())],
                on_delivery=delivered,
            )
            producer.poll(0)
        producer.flush(30)
    except KafkaException as exc:
        raise OlpError(f"replaying dead letters failed: {exc}") from exc
    if failures:
        raise OlpError(f"{len(failures)} dead letters were not re-driven: {failures[0]}")
    return len(todo), len(letters) - len(todo)


# --- commands ---------------------------------------------------------------------------------


def _selection_options(command: Any) -> Any:
    for option in reversed(
        [
            click.option("--stage", default=None, help="Only dead letters of this stage (role or service)."),
            click.option("--stream", default=None, help="Only dead letters of this stream."),
            click.option("--reason", default=None, help="Only those whose reason contains this text."),
            click.option("--since", default=None, help="Only those younger than this (90s, 15m, 2h, 3d)."),
        ]
    ):
        command = option(command)
    return command


def _selection(
    stage: str | None, stream: str | None, reason: str | None, since: str | None, ids: Sequence[str] = ()
) -> Selection:
    return Selection(stage, stream, reason, parse_age(since) if since else None, frozenset(ids))


@click.group("dlq")
def dlq() -> None:
    """Dead letters: list them, re-drive them after a fix. The DLQ holds transcript text: its
    readers need the rights of the documents' readers."""


@dlq.command("list")
@_selection_options
@click.option("--json", "as_json", is_flag=True, help="One JSON object per dead letter.")
def list_cmd(
    stage: str | None, stream: str | None, reason: str | None, since: str | None, as_json: bool
) -> None:
    """Dead letters with their id, age, stage, stream, source record and reason (no text)."""
    settings = cli_settings()
    selection = _selection(stage, stream, reason, since)
    now_ms = int(time.time() * 1000)
    with friendly_errors():
        letters = [letter for letter in dead_letters(settings) if selection.matches(letter, now_ms)]
    for letter in letters:
        view = letter.view(now_ms)
        if as_json:
            click.echo(json.dumps(view, ensure_ascii=False))
            continue
        note = "" if letter.replayable else " [dim](not replayable: bytes cut)[/]"
        console.print(
            f"{view['id']:>8}  {_age(view['age_s']):>6}  {safe(view['stage'])}  "
            f"stream {safe(view['stream_id']) or '-'}  {safe(view['source'])}  "
            f"{safe(view['reason'][:200])}{note}",
            soft_wrap=True,
        )
    if not as_json:
        console.print(f"{len(letters)} dead letters")


def _age(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f}{unit}"
    return f"{seconds:.0f}s"


@dlq.command("replay")
@_selection_options
@click.option("--id", "ids", multiple=True, help="This dead letter (`partition:offset`, from `list`).")
@click.option("--all", "everything", is_flag=True, help="Every dead letter (no filter needed).")
@click.option("--dry-run", is_flag=True, help="Say what would be re-driven; produce nothing.")
def replay_cmd(
    stage: str | None,
    stream: str | None,
    reason: str | None,
    since: str | None,
    ids: tuple[str, ...],
    everything: bool,
    dry_run: bool,
) -> None:
    """Re-drive selected dead letters to their source topic and partition, once each."""
    settings = cli_settings()
    selection = _selection(stage, stream, reason, since, ids)
    if selection.empty and not everything:
        raise click.UsageError(
            "select dead letters (--stage, --stream, --reason, --since, --id) or pass --all"
        )
    now_ms = int(time.time() * 1000)
    with friendly_errors():
        chosen = [letter for letter in dead_letters(settings) if selection.matches(letter, now_ms)]
        replayable = [letter for letter in chosen if letter.replayable]
        if len(replayable) < len(chosen):
            console.print(
                f"[yellow]{len(chosen) - len(replayable)} dead letters have cut bytes: not replayed[/]"
            )
        if dry_run:
            for letter in replayable:
                console.print(f"would re-drive {letter.id} -> {safe(letter.view(now_ms)['source'])}")
            return
        produced, skipped = replay_letters(settings, replayable)
    console.print(f"re-drove {produced} dead letters; {skipped} had been re-driven before (skipped)")


COMMANDS: tuple[click.Command, ...] = (dlq,)
"""Register with `for command in COMMANDS: main.add_command(command)`."""
