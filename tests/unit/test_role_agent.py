"""The role agent shell and the worker context's error policy, without a broker: a role's record
goes to its `process`; a record the role cannot handle is dead-lettered and the chunk it carried
is released to the splitter; bytes that do not decode are dead-lettered and release nothing."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

from olp.errors import ValidationError
from olp.settings import Settings
from olp.topics import TopicNames
from processors.policy_view import PolicyView
from processors.role_agent import register_role
from processors.worker import Record, WorkerContext
from schemas.codec import make_codec

CHUNK = {
    "stream_id": "live-1",
    "chunk_id": "live-1:3",
    "seq": 3,
    "feed": "default",
    "domain": "ecommerce",
    "lang": "en",
    "sentences": [{"id": 7, "text": "Only 50 pieces left!"}],
    "is_last": False,
    "created_ms": 0,
}
FOUND = {"chunk": CHUNK, "stage": "topic_finder", "topics": [], "trail": []}


@dataclass
class FakeApp:
    """The parts of a Faust app the worker context and `register_role` use."""

    sent: list[tuple[str, bytes, bytes]] = field(default_factory=list)
    agents: dict[str, Any] = field(default_factory=dict)

    def topic(self, *names: str, **options: Any) -> Any:
        async def send(key: bytes, value: bytes, headers: Any = None) -> None:
            self.sent.append((names[0], key, value))

        return SimpleNamespace(names=names, send=send)

    def agent(self, source: Any, name: str, concurrency: int) -> Any:
        def add(fun: Any) -> Any:
            self.agents[name] = (source.names, fun)
            return fun

        return add


class Events:
    """A Faust stream of the given (topic, bytes) records."""

    def __init__(self, *records: tuple[str, bytes]) -> None:
        self.records = records

    async def events(self) -> AsyncIterator[Any]:
        for offset, (topic, value) in enumerate(self.records):
            yield SimpleNamespace(
                message=SimpleNamespace(
                    topic=topic, partition=0, offset=offset, key=b"live-1", value=value, headers=[]
                )
            )


def worker() -> WorkerContext:
    context = WorkerContext(
        settings=Settings(),
        topics=TopicNames.with_prefix(),
        codec=make_codec(None),
        catalog=None,  # type: ignore[arg-type]  # no model is called here
        policy=PolicyView({}),
        app=FakeApp(),  # type: ignore[arg-type]
    )
    context.ready.set()
    return context


async def test_a_record_goes_to_process_and_a_failed_one_releases_its_chunk() -> None:
    context = worker()
    seen: list[Record] = []

    async def process(_: WorkerContext, record: Record) -> None:
        seen.append(record)
        if len(seen) == 2:
            raise ValidationError("irreparable")

    register_role(context, "topic_locator", context.topics.found, "RoleResult", process)
    app: FakeApp = context.app  # type: ignore[assignment]
    source, agent = app.agents["topic_locator"]
    assert source == (context.topics.found,)
    good = context.codec.encode("RoleResult", FOUND, topic=context.topics.found)
    await agent(
        Events((context.topics.found, good), (context.topics.found, good), (context.topics.found, b"junk"))
    )

    assert [r["chunk"]["chunk_id"] for r in seen] == ["live-1:3", "live-1:3"]
    kinds = {context.topics.dlq: "DeadLetter", context.topics.progress: "ChunkDone"}
    sent = [(topic, context.codec.decode(value, kinds[topic], topic=topic)) for topic, _, value in app.sent]
    assert [topic for topic, _ in sent] == [context.topics.dlq, context.topics.progress, context.topics.dlq]
    assert sent[0][1]["error_type"] == "ValidationError" and sent[0][1]["offset"] == 1
    assert sent[1][1] == {"stream_id": "live-1", "chunk_id": "live-1:3", "seq": 3, "next_start_id": None}
    assert sent[2][1]["error_type"] == "CodecError" and sent[2][1]["value"] == b"junk"
    assert context.stats == {"done.topic_locator": 1, "dlq.topic_locator": 2}
