"""Ingest to documents, end to end on the real broker and the real processors.

A WebVTT file (posted as JSON lines over HTTP) and a JSONL file (streamed over a WebSocket) go
through the ingest service into the running pipeline (policy store + worker subprocesses, the
scripted perfect model); the documents are read back over the read API and the SSE stream and
arrive at a webhook. Re-sending the same segments, to the same ingest service and to a fresh one
that remembers nothing, changes no document.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from documents.service import create_app as documents_app
from documents.sse import read_events
from ingest.client import IngestClient, send_all
from ingest.service import create_app as ingest_app
from launcher.scripted_llm import ScriptedLLM, scripted_catalog
from launcher.scripted_roles import perfect
from olp.feeds import read_transcript, with_end_marker
from olp.service_settings import DocumentsSettings, IngestSettings, SenderSettings, WebhookSettings
from olp.settings import Settings, load_settings
from tests.integration.test_pipeline_e2e import SAMPLE, expected_documents
from tests.support.stack import ServiceStack

pytestmark = pytest.mark.integration

TOKEN = "shop-sender-token-0123"  # a sender's, allowed the shop feed
AUTH = {"Authorization": f"Bearer {TOKEN}"}
FEEDS = {"default": {"chunk_size": 30}, "shop": {"domain": "ecommerce", "chunk_size": 30}}
INGEST = IngestSettings(senders={"shop-studio": SenderSettings(token=TOKEN, feeds=("shop",))})
KEYS = ("topic_id", "name", "first_id", "last_id", "final", "aspects")
Client = Callable[..., Any]


@pytest.fixture
def stack(broker: str, topic_prefix: str, run_dir: Path) -> Iterator[ServiceStack]:
    model = ScriptedLLM(perfect).start()
    services = ServiceStack(
        broker, topic_prefix, run_dir, scripted_catalog(model.base_url), {"OLP_FEEDS": json.dumps(FEEDS)}
    )
    try:
        services.start_policy_store()
        services.start_worker()
        yield services
    finally:
        services.stop()
        model.stop()


def settings_for(stack: ServiceStack) -> Settings:
    return load_settings(kafka={"bootstrap_servers": stack.bootstrap}, topic_prefix=stack.prefix, feeds=FEEDS)


def write_vtt(path: Path) -> None:
    """The sample transcript as an ASR would caption it: numbered cues at the recorded times."""
    rows = [json.loads(line) for line in SAMPLE.read_text().splitlines()]
    start = rows[0]["ts_ms"]

    def stamp(ms: int) -> str:
        return f"{ms // 3_600_000:02d}:{ms // 60_000 % 60:02d}:{ms // 1000 % 60:02d}.{ms % 1000:03d}"

    lines = ["WEBVTT - live-commerce ASR", ""]
    for row, after in zip(rows, [*rows[1:], None], strict=True):
        begin = row["ts_ms"] - start
        end = after["ts_ms"] - start if after else begin + 2000
        lines += [str(row["segment_id"]), f"{stamp(begin)} --> {stamp(end)}", f"<v Host>{row['text']}", ""]
    path.write_text("\n".join(lines))


async def wait_for_stream(
    client: TestClient, stream_id: str, last_id: int, timeout_s: float = 90
) -> list[dict]:
    """The stream's documents once every topic is final up to `last_id`."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    documents: list[dict] = []
    while asyncio.get_running_loop().time() < deadline:
        resp = await client.get(f"/v1/streams/{stream_id}")
        if resp.status == 200:
            documents = (await resp.json())["documents"]
            if all(d["final"] for d in documents) and max(d["last_id"] for d in documents) >= last_id:
                return documents
        await asyncio.sleep(0.3)
    raise AssertionError(
        f"{stream_id}: incomplete after {timeout_s}s: {[(d['name'], d['final']) for d in documents]}"
    )


async def worker_stat(stack: ServiceStack, name: str) -> int:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{stack.worker_ports[0]}/readyz") as resp,
    ):
        return int((await resp.json())["stats"].get(name, 0))


async def test_vtt_over_http_and_jsonl_over_websocket_become_documents_once(
    stack: ServiceStack, tmp_path: Path, aiohttp_client: Client, aiohttp_server: Client
) -> None:
    settings = settings_for(stack)
    hooked: dict[tuple[str, str], dict[str, Any]] = {}
    hook_calls: list[int] = []

    async def hook(request: web.Request) -> web.Response:
        hook_calls.append(1)
        if len(hook_calls) == 1:
            return web.Response(status=503)  # the receiver hiccups once: retried
        document = await request.json()
        hooked[(document["stream_id"], document["topic_id"])] = document
        return web.Response(status=204)

    receiver = web.Application()
    receiver.router.add_post("/hook", hook)
    hook_url = str((await aiohttp_server(receiver)).make_url("/hook"))
    docs = await aiohttp_client(
        documents_app(
            settings,
            DocumentsSettings(webhook=WebhookSettings(url=hook_url, only_final=True, backoff_max_s=0.2)),
        )
    )
    ingest = await aiohttp_client(ingest_app(settings, INGEST))
    sse = await docs.get("/v1/streams/vtt-1/events")
    pushed: list[dict[str, Any]] = []

    async def collect() -> None:
        with contextlib.suppress(aiohttp.ClientConnectionError):
            async for event in read_events(sse.content):
                pushed.append(event.json())

    collector = asyncio.create_task(collect())

    # In: WebVTT cues as JSON lines over HTTP (through the Python client), JSONL over a WebSocket.
    vtt = tmp_path / "live.vtt"
    write_vtt(vtt)
    cues = list(with_end_marker(read_transcript(vtt, "vtt-1", feed="shop")))
    assert len(cues) == 145 and cues[0]["speaker"] == "Host"
    client = IngestClient(str(ingest.make_url("")), "shop", TOKEN)
    sent = await send_all(client, cues, batch_size=50)
    assert (sent.accepted, sent.duplicates) == (145, 0)

    jsonl = SAMPLE.read_text().splitlines()
    jsonl[-1] = json.dumps({**json.loads(jsonl[-1]), "end_of_stream": True})
    async with ingest.ws_connect("/v1/feeds/shop/ws?stream_id=ws-1", headers=AUTH) as ws:
        for start in range(0, len(jsonl), 25):
            await ws.send_str("\n".join(jsonl[start : start + 25]))
            ack = await ws.receive_json()
            assert ack["ok"], ack
            assert (
                ack["last_segment_id"]["ws-1"]
                == json.loads(jsonl[min(start + 24, len(jsonl) - 1)])["segment_id"]
            )

    # Out: the read API has the exact documents of a perfect model, for both streams.
    expected = expected_documents(list(read_transcript(SAMPLE, "x")))
    got = {s: await wait_for_stream(docs, s, 171) for s in ("vtt-1", "ws-1")}
    for stream_id, documents in got.items():
        assert [{k: d[k] for k in KEYS} for d in documents] == expected, stream_id
        assert {(d["domain"], d["lang"]) for d in documents} == {("ecommerce", "en")}
    listed = await (await docs.get("/v1/streams")).json()
    assert {(s["stream_id"], s["topics"], s["final_topics"]) for s in listed["streams"]} == {
        ("vtt-1", 5, 5),
        ("ws-1", 5, 5),
    }
    history = await (await docs.get(f"/v1/streams/vtt-1/topics/{got['vtt-1'][0]['topic_id']}/history")).json()
    assert history["versions"][-1] == got["vtt-1"][0]

    # ... the SSE stream pushed every update of vtt-1, ending with the current documents ...
    newest: dict[str, dict[str, Any]] = {}
    for document in pushed:
        newest[document["topic_id"]] = document
    assert {d["stream_id"] for d in pushed} == {"vtt-1"}
    assert sorted(newest.values(), key=lambda d: d["first_id"]) == got["vtt-1"]

    # ... and the webhook received every final document (after one retried 503).
    for _ in range(100):
        if len(hooked) == 10:
            break
        await asyncio.sleep(0.1)
    assert {key: hooked[key] for key in sorted(hooked)} == {
        (d["stream_id"], d["topic_id"]): d for s in ("vtt-1", "ws-1") for d in got[s]
    }

    # Re-sending changes nothing: the same ingest service answers "duplicates" ...
    again = await send_all(client, cues, batch_size=50)
    assert (again.accepted, again.duplicates) == (0, 145)
    # ... and a fresh one (no memory) sends them to Kafka, where the Chunk Splitter ignores them.
    fresh = await aiohttp_client(ingest_app(settings, INGEST))
    handled = await worker_stat(stack, "done.chunk_splitter")
    updates = (await (await docs.get("/readyz")).json())["updates"]
    seen_events = len(pushed)
    async with fresh.ws_connect("/v1/feeds/shop/ws?stream_id=ws-1", headers=AUTH) as ws:
        await ws.send_str("\n".join(jsonl))
        assert (await ws.receive_json())["accepted"] == 145
    for _ in range(200):
        if await worker_stat(stack, "done.chunk_splitter") >= handled + 145:
            break
        await asyncio.sleep(0.1)
    else:
        raise AssertionError("the worker did not take the re-sent segments")
    await asyncio.sleep(3)  # long enough for a chunk to pass all six roles, had one been cut
    assert (await (await docs.get("/readyz")).json())["updates"] == updates
    assert (await (await docs.get("/v1/streams/ws-1")).json())["documents"] == got["ws-1"]
    assert len(pushed) == seen_events
    collector.cancel()
    sse.close()
