"""Quality evidence beside the judge (processors/evidence.py): agreement of models that answered
the same input, gold canaries scored exactly in the role-call shell, downstream consistency of the
Content Organizer, and no quality on a parsed processor outcome."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest

from olp.errors import ParseError
from processors.content_organizer import assigned_share
from processors.evidence import call_outcome, evidence_outcome, model_of
from processors.gold import finder_score
from processors.judge import JudgedCall
from processors.model_gateway import Completion
from processors.policy_view import PolicyView
from processors.role_call import CallContext, RoleCaller

CTX = CallContext("s1", "s1:0", "ecommerce", "en", "default", 30, "0")
CANARY_CTX = CallContext("canary:default:0:7", "canary:default:0:7:0", "ecommerce", "en", "default", 30)


class Gateway:
    def __init__(self, answers: dict[str, list[str]]) -> None:
        self.answers = answers

    async def complete(self, model: str, messages: Any, json_schema: Any = None) -> Completion:
        return Completion(model, json.dumps({"topics": self.answers[model]}), 10, 5, 1.0, 0.001, "stop")


def parse(text: str) -> list[str]:
    try:
        return list(json.loads(text)["topics"])
    except (ValueError, KeyError) as exc:
        raise ParseError("junk") from exc


async def ask(
    answers: dict[str, list[str]], ctx: CallContext, grade: Any = None, **plan: Any
) -> tuple[Any, list[dict[str, Any]], list[JudgedCall]]:
    policy = PolicyView({"topic_finder": list(answers)})
    policy.apply(
        {
            "role": "topic_finder",
            "model": "a",
            "q_values": {},
            "epsilon": 0.0,
            "candidates": list(answers),
            "version": 2,
            "reason": "t",
            "ts_ms": 0,
            "mode": "role_rl",
            **plan,
        }
    )
    outcomes: list[dict[str, Any]] = []
    judged: list[JudgedCall] = []

    async def emit(outcome: dict[str, Any]) -> None:
        outcomes.append(outcome)

    async def judge(call: JudgedCall) -> Any:
        judged.append(call)
        return call.value

    caller = RoleCaller("topic_finder", Gateway(answers), policy, emit, random.Random(1), judge=judge)  # type: ignore[arg-type]
    answer = await caller.ask([{"role": "user", "content": "go"}], parse, ctx, grade=grade)
    await caller.settle()  # extras record their outcomes after the answer
    return answer, outcomes, judged


async def test_a_parsed_answer_alone_carries_no_quality() -> None:
    answer, outcomes, judged = await ask({"a": ["Wig"]}, CTX)
    [outcome] = outcomes
    assert (outcome["source"], outcome["quality"], outcome["success"]) == ("processor", None, True)
    assert answer.outcome is outcome and len(judged) == 1


async def test_two_models_on_the_same_input_give_agreement_evidence_to_both() -> None:
    answer, outcomes, _ = await ask({"a": ["Wig", "Shoes"], "b": ["wig", "Cup"]}, CTX, warmup=["b"])
    assert answer.model == "a"
    agreement = {o["model"]: o for o in outcomes if o["source"] == "agreement"}
    # names {wig, shoes} vs {wig, cup}: Jaccard 1/3 -> 2/3 - 1
    assert agreement["a"]["quality"] == pytest.approx(-1 / 3)
    assert agreement["b"]["quality"] == pytest.approx(-1 / 3)
    assert agreement["a"]["event_id"] == "s1:0:topic_finder:0:a:0:agree:b"
    assert agreement["b"]["event_id"] == "s1:0:topic_finder:0:b:0:agree:a"
    assert agreement["b"]["cost_usd"] == 0.001 and agreement["b"]["judge_cost_usd"] == 0.0
    assert sum(o["source"] == "processor" for o in outcomes) == 2


async def test_a_canary_answer_is_scored_exactly_for_every_model_and_never_judged() -> None:
    from processors.gold import GoldTopic, LabelledStream

    gold = LabelledStream(
        "ecommerce",
        "en",
        ("Opening", "Order Urging", "Price", "Product Description"),
        (),
        (GoldTopic("Human hair wig", ("wig",), 1, 5, {}), GoldTopic("Running shoes", ("shoe",), 6, 9, {})),
    )
    answer, outcomes, judged = await ask(
        {"a": ["Lace wig", "Shoes"], "b": ["Lace wig", "Mint julep"]},
        CANARY_CTX,
        grade=lambda names: finder_score(names, gold),
        warmup=["b"],
    )
    canary = {o["model"]: o for o in outcomes if o["source"] == "canary"}
    assert canary["a"]["quality"] == 1.0  # both products named
    assert canary["b"]["quality"] == pytest.approx(2 * 0.5 - 1)  # precision 1/2, recall 1/2
    assert canary["a"]["event_id"] == "canary:default:0:7:0:topic_finder:0:a:0:canary"
    assert judged == [] and not any(o["source"] == "agreement" for o in outcomes)
    assert answer.model == "a"


def test_evidence_outcomes_keep_the_calls_context_and_clip_quality() -> None:
    call = call_outcome(
        {
            "chunk_id": "s:3",
            "stream_id": "s",
            "domain": "news",
            "lang": "de",
            "feed": "f",
            "sentences": [{}] * 4,
        },
        "topic_finder",
        "m",
        7,
    )
    outcome = evidence_outcome(call, "downstream", -3.0, "downstream", now_ms=5)
    assert outcome["event_id"] == "s:3:topic_finder:0:m:downstream"
    assert (outcome["quality"], outcome["policy_version"], outcome["feed"], outcome["chunk_size"]) == (
        -1.0,
        7,
        "f",
        4,
    )
    with pytest.raises(ValueError):
        evidence_outcome(call, "processor", 0.0, "x")
    assert model_of(["topic_finder=m1", "topic_locator=a+b"], "topic_finder") == "m1"
    assert model_of(["topic_locator=a+b"], "topic_locator") is None


def test_the_share_of_sentences_an_organiser_answer_leaves_for_the_format_checker() -> None:
    answer = {"Opening": [1], "Price": [2, 3], "Order Urging": [], "Product Description": []}
    assert assigned_share(answer, [1, 2, 3, 4]) == 0.75
    assert assigned_share(answer, [1, 2, 3]) == 1.0


# --- the shells: the organiser's downstream evidence, the Format Checker's canary drop ----------


class FakeWorker:
    def __init__(self, answer: dict[str, list[int]]) -> None:
        from olp.settings import Settings
        from olp.topics import TopicNames
        from processors.canaries import CanaryBook

        self.settings = Settings()
        self.topics = TopicNames.with_prefix()
        self.canaries = CanaryBook()
        self.answer = answer
        self.sent: list[tuple[str, str, str, dict[str, Any]]] = []
        self.feedback: list[dict[str, Any]] = []
        self.counted: list[str] = []

    def caller(self, role: str) -> Any:
        worker = self

        class Caller:
            async def ask(self, *args: Any, **kwargs: Any) -> Any:
                from processors.role_call import Answer

                outcome = {"event_id": "s1:0:content_organizer:0:m:0", "model": "m", "cost_usd": 0.002}
                return Answer(worker.answer, "m", outcome)

        return Caller()

    async def emit_feedback(self, outcome: dict[str, Any]) -> None:
        self.feedback.append(outcome)

    async def send(self, topic: str, key: str, record_type: str, record: dict[str, Any]) -> None:
        self.sent.append((topic, key, record_type, record))

    def count(self, name: str) -> None:
        self.counted.append(name)


def _checked(stream_id: str = "s1") -> dict[str, Any]:
    chunk = {
        "stream_id": stream_id,
        "chunk_id": f"{stream_id}:0",
        "seq": 0,
        "feed": "default",
        "domain": "ecommerce",
        "lang": "en",
        "sentences": [{"id": i, "text": f"sentence {i}"} for i in range(1, 5)],
        "is_last": True,
        "created_ms": 0,
    }
    topic = {"name": "Wig", "first_id": 1, "last_id": 4, "final": True, "aspects": {}}
    return {"chunk": chunk, "stage": "relationship_checker", "topics": [topic], "trail": []}


async def test_an_organiser_answer_the_format_checker_must_repair_counts_against_its_call() -> None:
    from processors.content_organizer import organize_topics

    worker = FakeWorker({"Opening": [1], "Price": [2, 3], "Order Urging": [], "Product Description": []})
    await organize_topics(worker, _checked())  # type: ignore[arg-type]
    [outcome] = worker.feedback
    assert (outcome["source"], outcome["quality"], outcome["model"]) == ("downstream", 0.5, "m")
    assert outcome["event_id"] == "s1:0:content_organizer:0:m:0:downstream" and outcome["cost_usd"] == 0.002
    complete = FakeWorker({"Opening": [1, 4], "Price": [2, 3], "Order Urging": [], "Product Description": []})
    await organize_topics(complete, _checked())  # type: ignore[arg-type]
    assert complete.feedback == []  # nothing to repair: no label (parsing is not quality)


async def test_the_format_checker_never_publishes_a_canary() -> None:
    from processors.format_checker import write_documents

    worker = FakeWorker({})
    organized = _checked("canary:default:0:9")
    organized["topics"][0]["aspects"] = {"Opening": [1, 2, 3, 4]}
    await write_documents(worker, organized)  # type: ignore[arg-type]
    assert worker.sent == [] and worker.counted == ["canary.done"]
    organized["chunk"] = {**organized["chunk"], "stream_id": "s1", "chunk_id": "s1:0"}
    await write_documents(worker, organized)  # type: ignore[arg-type]
    assert [t for t, _, _, _ in worker.sent] == [worker.topics.documents, worker.topics.progress]
