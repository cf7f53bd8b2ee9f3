"""The Topic Locator's agent shell: one batched call per chunk when the feed asks for it, per-topic
calls for what the batch misses."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest

from olp.settings import FeedSettings
from olp.topics import TopicNames
from processors import topic_locator
from processors.canaries import CanaryBook
from processors.policy_view import PolicyView
from processors.role_call import Answer, RoleFailed

CHUNK = {
    "stream_id": "s1",
    "chunk_id": "s1:0",
    "seq": 0,
    "feed": "default",
    "domain": "ecommerce",
    "lang": "en",
    "sentences": [{"id": i, "text": f"sentence {i}"} for i in range(1, 11)],
    "is_last": False,
    "created_ms": 0,
}
FOUND = {
    "chunk": CHUNK,
    "stage": "topic_finder",
    "topics": [
        {"name": n, "first_id": None, "last_id": None, "final": False, "aspects": {}}
        for n in ("Wig", "Shoes")
    ],
    "trail": ["topic_finder=m"],
}
SPANS = {"Wig": (1, 4), "Shoes": (5, 10)}


@dataclass
class FakeCaller:
    batch_answer: Callable[[Sequence[str]], str | None]
    calls: list[str] = field(default_factory=list)

    async def ask(
        self,
        messages: Sequence[Mapping[str, str]],
        parse: Callable[[str], Any],
        ctx: Any,
        json_schema: Mapping[str, Any] | None = None,
        allowed_models: Sequence[str] | None = None,
        grade: Any = None,
        encode: Any = None,
    ) -> Answer[Any]:
        task = messages[-1]["content"].split("</transcript>")[-1]
        if "spans" in (json_schema or {}).get("properties", {}):
            self.calls.append("batch")
            text = self.batch_answer(list(SPANS))
            if text is None:
                raise RoleFailed("scripted failure")
            return Answer(parse(text), "m")
        name = next(n for n in SPANS if f'"{n}"' in task.rsplit("\n", 1)[-1])  # asked about last
        self.calls.append(name)
        first, last = SPANS[name]
        return Answer(parse(json.dumps({"first_id": first, "last_id": last})), "m")


@dataclass
class FakeSettings:
    feed_settings: FeedSettings

    def feed(self, name: str) -> FeedSettings:
        assert name == CHUNK["feed"]
        return self.feed_settings


@dataclass
class FakeWorker:
    settings: FakeSettings
    caller_: FakeCaller
    topics: TopicNames = field(default_factory=TopicNames.with_prefix)
    sent: list[tuple[str, str, str, dict[str, Any]]] = field(default_factory=list)
    canaries: CanaryBook = field(default_factory=CanaryBook)
    policy: PolicyView = field(default_factory=lambda: PolicyView({}))
    feedback: list[dict[str, Any]] = field(default_factory=list)

    async def emit_feedback(self, outcome: dict[str, Any]) -> None:
        self.feedback.append(outcome)

    def caller(self, role: str) -> FakeCaller:
        assert role == topic_locator.ROLE
        return self.caller_

    async def send(self, topic: str, key: str, record_type: str, record: dict[str, Any]) -> None:
        self.sent.append((topic, key, record_type, record))


def _spans(worker: FakeWorker) -> dict[str, tuple[int, int]]:
    ((_, _, _, record),) = worker.sent
    return {t["name"]: (t["first_id"], t["last_id"]) for t in record["topics"]}


def _all(names: Sequence[str]) -> str:
    return json.dumps(
        {"spans": [{"topic": n, "first_id": SPANS[n][0], "last_id": SPANS[n][1]} for n in names]}
    )


@pytest.mark.parametrize(
    ("batch", "answer", "calls"),
    [
        (False, _all, ["Wig", "Shoes"]),  # per topic (default)
        (True, _all, ["batch"]),  # one call locates every topic
        (True, lambda names: _all(names[:1]), ["batch", "Shoes"]),  # the one the batch missed, alone
        (True, lambda names: None, ["batch", "Wig", "Shoes"]),  # the batch failed: every topic alone
    ],
)
async def test_locator_batches_when_the_feed_asks(
    batch: bool, answer: Callable[[Sequence[str]], str | None], calls: list[str]
) -> None:
    worker = FakeWorker(FakeSettings(FeedSettings(locator_batch=batch)), FakeCaller(answer))
    await topic_locator.locate_topics(worker, FOUND)  # type: ignore[arg-type]
    assert sorted(worker.caller_.calls) == sorted(calls)
    assert _spans(worker) == SPANS
    assert worker.sent[0][0] == worker.topics.located
    assert worker.feedback == []  # every topic placed: no downstream evidence


class NobodyLocates(FakeCaller):
    async def ask(self, *args: Any, **kwargs: Any) -> Answer[Any]:
        self.calls.append("call")
        raise RoleFailed("scripted failure")


async def test_a_chunk_nobody_can_locate_keeps_its_sentences_under_its_first_topic() -> None:
    worker = FakeWorker(FakeSettings(FeedSettings()), NobodyLocates(lambda names: None))
    await topic_locator.locate_topics(worker, FOUND)  # type: ignore[arg-type]
    assert _spans(worker) == {"Wig": (1, 10)}
    assert worker.sent[0][3]["trail"][-1] == "topic_locator=fallback(whole chunk)"
    # downstream evidence: the finder's call named two topics and neither could be placed
    ((outcome),) = worker.feedback
    assert (outcome["role"], outcome["model"], outcome["source"]) == ("topic_finder", "m", "downstream")
    assert outcome["quality"] == -1.0 and outcome["cost_usd"] == 0.0
    assert outcome["event_id"] == "s1:0:topic_finder:0:m:downstream"


class LocatesWigOnly(FakeCaller):
    async def ask(self, messages: Sequence[Mapping[str, str]], *args: Any, **kwargs: Any) -> Answer[Any]:
        if messages[-1]["content"].endswith('"Shoes"'):
            raise RoleFailed("scripted failure")
        return await super().ask(messages, *args, **kwargs)


async def test_a_topic_the_locator_cannot_place_counts_against_the_finder() -> None:
    worker = FakeWorker(FakeSettings(FeedSettings()), LocatesWigOnly(lambda names: None))
    await topic_locator.locate_topics(worker, FOUND)  # type: ignore[arg-type]
    assert _spans(worker) == {"Wig": (1, 4)}
    ((outcome),) = worker.feedback
    assert (outcome["role"], outcome["source"], outcome["quality"]) == ("topic_finder", "downstream", 0.0)
    assert outcome["feed"] == "default" and outcome["chunk_id"] == "s1:0"


async def test_a_canary_chunk_gives_the_finder_no_downstream_evidence() -> None:
    worker = FakeWorker(FakeSettings(FeedSettings()), NobodyLocates(lambda names: None))
    found = {**FOUND, "chunk": {**CHUNK, "stream_id": "canary:default:0:1"}}
    await topic_locator.locate_topics(worker, found)  # type: ignore[arg-type]
    assert worker.feedback == []
