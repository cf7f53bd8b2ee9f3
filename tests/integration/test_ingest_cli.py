"""The feed commands on the real broker: `olp ingest` sends a subtitle file's cues to
olp.transcripts (straight to Kafka, paced, or through the ingest service), and `olp doc`
prints a stream's current documents."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiohttp import web
from click.testing import CliRunner

from ingest.service import create_app as ingest_app
from launcher.cli_feeds import doc_cmd, ingest_cmd
from launcher.embedded import free_port
from olp.service_settings import IngestSettings, SenderSettings
from olp.settings import load_settings
from tests.integration.test_documents_service import produce
from tests.support.stack import read_topic
from tests.unit.test_documents_view import doc

pytestmark = pytest.mark.integration

SRT = """1
00:00:00,000 --> 00:00:00,400
Hello and welcome!

2
00:00:00,400 --> 00:00:00,800
This <i>thermos</i> keeps tea hot for 12 hours.

3
00:00:00,800 --> 00:00:01,000
Only $19 today.
"""
FEEDS = {"default": {}, "shop": {"domain": "ecommerce", "lang": "de", "chunk_size": 20}}
CLI_TOKEN = "cli-sender-token-0123"


@pytest.fixture
def env(broker: str, topic_prefix: str) -> dict[str, str]:
    return {
        "OLP_KAFKA__BOOTSTRAP_SERVERS": broker,
        "OLP_TOPIC_PREFIX": topic_prefix,
        "OLP_FEEDS": json.dumps(FEEDS),
        "OLP_INGEST_TOKEN": CLI_TOKEN,
    }


def transcripts(broker: str, prefix: str, count: int) -> list[dict]:
    settings = load_settings(kafka={"bootstrap_servers": broker}, topic_prefix=prefix)
    return read_topic(settings, f"{prefix}transcripts", "TranscriptSegment", lambda r: len(r) >= count)


def test_ingest_a_subtitle_file_to_kafka_paced_and_again(
    broker: str, topic_prefix: str, env: dict[str, str], tmp_path: Path
) -> None:
    path = tmp_path / "show.srt"
    path.write_text(SRT)
    runner = CliRunner()
    started = time.monotonic()
    result = runner.invoke(
        ingest_cmd,
        [str(path), "--feed", "shop", "--stream-id", "cli-1", "--pace", "realtime", "--speed", "2"],
        env=env,
    )
    assert result.exit_code == 0, result.output
    assert time.monotonic() - started >= 0.4  # 0.8 s of cues at twice the speed
    assert "sent 3 segments of stream cli-1 (feed shop)" in result.output
    records = transcripts(broker, topic_prefix, 3)
    assert [(r["segment_id"], r["text"]) for r in records] == [
        (1, "Hello and welcome!"),
        (2, "This thermos keeps tea hot for 12 hours."),
        (3, "Only $19 today."),
    ]
    assert {(r["stream_id"], r["feed"], r["domain"], r["lang"]) for r in records} == {
        ("cli-1", "shop", "ecommerce", "de")
    }
    assert [r["end_of_stream"] for r in records] == [False, False, True]

    unknown = runner.invoke(ingest_cmd, [str(path), "--feed", "nope"], env=env)
    assert unknown.exit_code != 0 and "unknown feed 'nope'; declared feeds: default, shop" in unknown.output
    bad_id = runner.invoke(ingest_cmd, [str(path), "--stream-id", "a b"], env=env)
    assert bad_id.exit_code != 0 and "choose one with --stream-id" in bad_id.output
    broken = tmp_path / "broken.vtt"
    broken.write_text("not a subtitle file\n")
    failed = runner.invoke(ingest_cmd, [str(broken)], env=env)
    assert failed.exit_code != 0 and "a WebVTT file starts with the line WEBVTT" in failed.output


@pytest.fixture
def ingest_server(broker: str, topic_prefix: str) -> Iterator[str]:
    """The ingest service on its own event loop in a thread (the CLI runs its own loop)."""
    settings = load_settings(
        kafka={"bootstrap_servers": broker}, topic_prefix=topic_prefix, feeds=FEEDS, api_token="admin-token"
    )
    ingest = IngestSettings(senders={"cli": SenderSettings(token=CLI_TOKEN, feeds=("shop",))})
    port = free_port()
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(ingest_app(settings, ingest))
    ready = threading.Event()

    def run() -> None:
        loop.run_until_complete(runner.setup())
        loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", port).start())
        ready.set()
        loop.run_forever()
        loop.run_until_complete(runner.cleanup())
        loop.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert ready.wait(30)
    yield f"http://127.0.0.1:{port}"
    loop.call_soon_threadsafe(loop.stop)
    thread.join(30)


def test_ingest_through_the_ingest_service(
    broker: str, topic_prefix: str, env: dict[str, str], tmp_path: Path, ingest_server: str
) -> None:
    path = tmp_path / "show.srt"
    path.write_text(SRT)
    runner = CliRunner()
    args = [str(path), "--feed", "shop", "--stream-id", "cli-2", "--url", ingest_server, "--batch", "2"]
    result = runner.invoke(ingest_cmd, args, env=env)
    assert result.exit_code == 0, result.output
    assert [r["segment_id"] for r in transcripts(broker, topic_prefix, 3)] == [1, 2, 3]
    again = runner.invoke(ingest_cmd, args, env=env)
    assert again.exit_code == 0 and "3 segments had been sent before (ignored)" in again.output
    for token in ("wrong", "admin-token"):  # the admin token is no sender's
        refused = runner.invoke(
            ingest_cmd, args, env={**env, "OLP_INGEST_TOKEN": token, "OLP_API_TOKEN": token}
        )
        assert refused.exit_code != 0 and "HTTP 401" in refused.output


def test_doc_prints_the_current_document_from_kafka(
    broker: str, topic_prefix: str, env: dict[str, str]
) -> None:
    settings = load_settings(kafka={"bootstrap_servers": broker}, topic_prefix=topic_prefix)
    produce(
        settings,
        [doc("shop-9", "1", 0, name="Old name"), doc("shop-9", "1", 1, final=True, name="Thermos cup")],
    )
    runner = CliRunner()
    result = runner.invoke(doc_cmd, ["shop-9"], env=env)
    assert result.exit_code == 0, result.output
    assert "shop-9 topic 1 v1" in result.output and "Thermos cup (sentences 1-10)" in result.output
    assert "Old name" not in result.output
    as_json = runner.invoke(doc_cmd, ["shop-9", "--json"], env=env)
    assert json.loads(as_json.output) == [doc("shop-9", "1", 1, final=True, name="Thermos cup")]
    missing = runner.invoke(doc_cmd, ["nobody"], env=env)
    assert missing.exit_code != 0 and "no documents for stream nobody" in missing.output
