"""`olp dlq` on the real broker: dead letters are listed with reason, stage, stream and age
(and filtered), and `replay` re-drives the selected ones to their source topic and partition,
once: replaying again changes nothing."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from click.testing import CliRunner

from launcher.cli_dlq import REPLAY_HEADER, dlq, read_to_end
from olp.settings import Settings, load_settings
from schemas.codec import make_codec

pytestmark = pytest.mark.integration


def segment(stream: str, i: int) -> dict[str, Any]:
    return {
        "stream_id": stream,
        "segment_id": i,
        "text": f"sentence {i} of {stream} [/bold]",
        "ts_ms": 1_700_000_000_000 + i,
        "speaker": None,
        "domain": "ecommerce",
        "lang": "en",
        "feed": "default",
        "end_of_stream": False,
    }


def dead_letter(
    settings: Settings, seg: dict[str, Any], stage: str, error: str, age_s: float
) -> dict[str, Any]:
    codec = make_codec(None)
    topic = f"{settings.topic_prefix}transcripts"
    return {
        "source_topic": topic,
        "partition": seg["segment_id"] % 4,
        "offset": seg["segment_id"],
        "key": seg["stream_id"].encode(),
        "value": codec.encode("TranscriptSegment", seg, topic=topic),
        "stage": stage,
        "error_type": "RoleError",
        "error": error,
        "ts_ms": int((time.time() - age_s) * 1000),
    }


def produce_dead_letters(settings: Settings, letters: list[dict[str, Any]]) -> None:
    from confluent_kafka import Producer

    codec = make_codec(None)
    topic = f"{settings.topic_prefix}dlq"
    producer = Producer({"bootstrap.servers": settings.kafka.bootstrap_servers})
    for letter in letters:
        producer.produce(
            topic, key=letter["key"], value=codec.encode("DeadLetter", letter, topic=topic), partition=0
        )
    assert producer.flush(10) == 0


def transcripts(settings: Settings) -> list[tuple[int, dict[str, Any], list[tuple[str, bytes]]]]:
    codec = make_codec(None)
    topic = f"{settings.topic_prefix}transcripts"
    return [
        (msg.partition(), codec.decode(msg.value(), "TranscriptSegment"), list(msg.headers() or ()))
        for msg in read_to_end(settings, topic)
    ]


def test_list_filters_and_replay_redrives_each_dead_letter_once(broker: str, topic_prefix: str) -> None:
    settings = load_settings(kafka={"bootstrap_servers": broker}, topic_prefix=topic_prefix)
    produce_dead_letters(
        settings,
        [
            dead_letter(settings, segment("shop-1", 5), "chunk_splitter", "model endpoint timed out", 7200),
            dead_letter(settings, segment("shop-1", 6), "topic_finder", "bad JSON from model", 60),
            dead_letter(settings, segment("news-1", 7), "topic_finder", "bad JSON from model", 30),
        ],
    )
    env = {"OLP_KAFKA__BOOTSTRAP_SERVERS": broker, "OLP_TOPIC_PREFIX": topic_prefix}
    runner = CliRunner()

    listed = runner.invoke(dlq, ["list", "--json"], env=env)
    assert listed.exit_code == 0, listed.output
    rows = [json.loads(line) for line in listed.output.splitlines()]
    assert [(r["id"], r["stage"], r["stream_id"], r["reason"]) for r in rows] == [
        ("0:0", "chunk_splitter", "shop-1", "RoleError: model endpoint timed out"),
        ("0:1", "topic_finder", "shop-1", "RoleError: bad JSON from model"),
        ("0:2", "topic_finder", "news-1", "RoleError: bad JSON from model"),
    ]
    assert 7000 < rows[0]["age_s"] < 7400 and rows[0]["source"] == f"{topic_prefix}transcripts/1:5"
    assert "sentence" not in listed.output  # the transcript text is not shown
    young = runner.invoke(dlq, ["list", "--json", "--stage", "topic_finder", "--since", "45s"], env=env)
    assert [json.loads(line)["id"] for line in young.output.splitlines()] == ["0:2"]
    table = runner.invoke(dlq, ["list", "--stream", "shop-1", "--reason", "JSON"], env=env)
    assert table.exit_code == 0 and "0:1" in table.output and "1 dead letters" in table.output

    assert runner.invoke(dlq, ["replay"], env=env).exit_code != 0  # no selection, no --all

    first = runner.invoke(dlq, ["replay", "--stage", "topic_finder"], env=env)
    assert first.exit_code == 0, first.output
    assert "re-drove 2 dead letters; 0 had been re-driven before" in first.output
    redriven = transcripts(settings)
    assert sorted((p, s["stream_id"], s["segment_id"]) for p, s, _ in redriven) == [
        (2, "shop-1", 6),
        (3, "news-1", 7),
    ]
    assert {h for _, _, headers in redriven for h in headers} == {
        (REPLAY_HEADER, f"{topic_prefix}dlq/0:1".encode()),
        (REPLAY_HEADER, f"{topic_prefix}dlq/0:2".encode()),
    }

    again = runner.invoke(dlq, ["replay", "--all"], env=env)
    assert again.exit_code == 0, again.output
    assert "re-drove 1 dead letters; 2 had been re-driven before (skipped)" in again.output
    third = runner.invoke(dlq, ["replay", "--all"], env=env)
    assert "re-drove 0 dead letters; 3 had been re-driven before (skipped)" in third.output
    assert sorted(s["segment_id"] for _, s, _ in transcripts(settings)) == [5, 6, 7]
