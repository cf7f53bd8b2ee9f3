"""The document read service on the real broker: it materialises `olp.documents`
from the beginning, newest version wins whatever order versions arrive in, skips undecodable
records, serves the read API and pushes updates over SSE as they are produced."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from documents.service import create_app
from documents.sse import read_events
from olp.service_settings import DocumentsSettings
from olp.settings import Settings, load_settings
from schemas.codec import make_codec
from tests.unit.test_documents_view import doc

pytestmark = pytest.mark.integration

Client = Callable[..., Any]


def produce(settings: Settings, documents: list[dict[str, Any] | bytes]) -> None:
    from confluent_kafka import Producer

    codec = make_codec(None)
    topic = f"{settings.topic_prefix}documents"
    producer = Producer(
        {"bootstrap.servers": settings.kafka.bootstrap_servers, "partitioner": "murmur2_random"}
    )
    for document in documents:
        if isinstance(document, bytes):
            producer.produce(topic, key=b"junk", value=document)
            continue
        key = f"{document['stream_id']}/{document['topic_id']}".encode()
        producer.produce(topic, key=key, value=codec.encode("TopicDocument", document, topic=topic))
    assert producer.flush(10) == 0


async def wait_ready(client: Any, timeout_s: float = 20) -> dict[str, Any]:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        resp = await client.get("/readyz")
        if resp.status == 200:
            return dict(await resp.json())
        assert asyncio.get_running_loop().time() < deadline, await resp.text()
        await asyncio.sleep(0.1)


async def test_view_api_and_sse_over_the_documents_topic(
    broker: str, topic_prefix: str, aiohttp_client: Client
) -> None:
    settings = load_settings(kafka={"bootstrap_servers": broker}, topic_prefix=topic_prefix)
    produce(
        settings,
        [
            doc("shop-1", "1", 0),
            doc("shop-1", "1", 2, final=True),
            b"\x00 not a document",
            doc("shop-1", "1", 1),  # a late, older version
            doc("shop-1", "1", 2, final=True, updated_ms=5),  # a re-delivery
            doc("shop-1", "11", 2),
            doc("wire", "100", 0, domain="news"),
        ],
    )
    client = await aiohttp_client(create_app(settings, DocumentsSettings(sse_keepalive_s=0.5)))
    ready = await wait_ready(client)
    assert ready["records"] == 7 and ready["undecodable"] == 1 and ready["updates"] == 4

    stream = await (await client.get("/v1/streams/shop-1")).json()
    assert stream["documents"] == [doc("shop-1", "1", 2, final=True), doc("shop-1", "11", 2)]
    history = await (await client.get("/v1/streams/shop-1/topics/1/history")).json()
    assert [v["version"] for v in history["versions"]] == [0, 2]
    streams = await (await client.get("/v1/streams")).json()
    assert [(s["stream_id"], s["domain"]) for s in streams["streams"]] == [
        ("shop-1", "ecommerce"),
        ("wire", "news"),
    ]

    resp = await client.get("/v1/streams/shop-1/events")
    events = read_events(resp.content)
    snapshot = [(await asyncio.wait_for(anext(events), 10)).json() for _ in range(2)]
    assert {(d["topic_id"], d["version"]) for d in snapshot} == {("1", 2), ("11", 2)}
    produce(settings, [doc("shop-1", "11", 3, final=True), doc("wire", "100", 1)])
    pushed = await asyncio.wait_for(anext(events), 10)
    assert (pushed.json()["topic_id"], pushed.json()["version"], pushed.json()["final"]) == ("11", 3, True)
    resp.close()
