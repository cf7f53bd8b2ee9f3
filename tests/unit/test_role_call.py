"""The LLM-call shell every role uses: policy choice, re-ask on junk, failover, and one
RoleOutcome per attempt (spec sections 3-4)."""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest

from launcher.scripted_llm import Reply, ScriptedLLM
from olp.catalog import Catalog, ModelSpec
from olp.errors import ModelCallError, ParseError
from processors.model_gateway import Completion, InputRejected, ModelGateway
from processors.policy_view import PolicyView
from processors.role_call import CallContext, RoleCaller, RoleFailed

CTX = CallContext("s1", "s1:0", "ecommerce", "en", "default", 30, "0")


def parse(text: str) -> list[str]:
    try:
        return list(json.loads(text)["topics"])
    except (ValueError, KeyError, TypeError) as exc:
        raise ParseError(f"junk: {text[:20]}") from exc


@pytest.fixture
def answers() -> dict[str, list[Reply]]:
    return {"a": [], "b": []}


@pytest.fixture
def server(answers: dict[str, list[Reply]]) -> Iterator[ScriptedLLM]:
    llm = ScriptedLLM(
        lambda model, body: answers[model].pop(0) if answers[model] else Reply('{"topics": ["x"]}')
    ).start()
    yield llm
    llm.stop()


async def call(server: ScriptedLLM, policy: PolicyView) -> tuple[Any, list[dict[str, Any]]]:
    catalog = Catalog(
        models=tuple(ModelSpec(name=n, base_url=server.base_url, price_in_per_mtok=1.0) for n in ("a", "b"))
    )
    outcomes: list[dict[str, Any]] = []

    async def emit(outcome: dict[str, Any]) -> None:
        outcomes.append(outcome)

    async with aiohttp.ClientSession() as session:
        caller = RoleCaller(
            "topic_finder", ModelGateway(catalog, session, {}, attempts=1), policy, emit, random.Random(1)
        )
        try:
            answer = await caller.ask([{"role": "user", "content": "go"}], parse, CTX)
            await caller.settle()  # extras record their outcomes after the answer
        except RoleFailed as exc:
            return exc, outcomes
    return answer, outcomes


def assignment(model: str, version: int = 3) -> dict[str, Any]:
    return {
        "role": "topic_finder",
        "model": model,
        "q_values": {"a": 1.0, "b": 2.0},
        "epsilon": 0.0,
        "candidates": ["a", "b"],
        "version": version,
        "reason": "test",
        "ts_ms": 0,
    }


async def test_uses_the_assigned_model_and_reports_the_call(server: ScriptedLLM) -> None:
    policy = PolicyView({"topic_finder": ["a", "b"]})
    policy.apply(assignment("b"))
    answer, outcomes = await call(server, policy)
    assert answer.value == ["x"] and answer.model == "b"
    [outcome] = outcomes
    assert outcome["event_id"] == "s1:0:topic_finder:0:b:0"
    assert (outcome["model"], outcome["policy_version"], outcome["propensity"], outcome["success"]) == (
        "b",
        3,
        1.0,
        True,
    )
    assert outcome["tokens_in"] > 0 and outcome["cost_usd"] > 0 and outcome["prev_model"] is None


async def test_reasks_once_on_junk_then_fails_over(
    server: ScriptedLLM, answers: dict[str, list[Reply]]
) -> None:
    answers["a"] += [Reply("no idea"), Reply("still no idea")]
    policy = PolicyView({"topic_finder": ["a", "b"]})
    policy.apply(assignment("a"))
    answer, outcomes = await call(server, policy)
    assert answer.model == "b"
    assert [(o["model"], o["success"]) for o in outcomes] == [("a", False), ("a", False), ("b", True)]
    assert "junk" in outcomes[0]["error"]
    # The re-ask shows the model its own answer and the complaint.
    reask = server.requests[1][1]["messages"]
    assert reask[-2] == {"role": "assistant", "content": "no idea"} and "invalid" in reask[-1]["content"]
    assert outcomes[2]["prev_model"] == "a" and outcomes[2]["prev_success"] is False


async def test_model_faults_fail_over_without_reask(
    server: ScriptedLLM, answers: dict[str, list[Reply]]
) -> None:
    answers["a"].append(Reply(status=500))
    policy = PolicyView({"topic_finder": ["a", "b"]})
    policy.apply(assignment("a"))
    answer, outcomes = await call(server, policy)
    assert answer.model == "b"
    assert [(o["model"], o["success"]) for o in outcomes] == [("a", False), ("b", True)]
    assert "HTTP 500" in outcomes[0]["error"]


async def test_every_model_failing_is_role_failed(
    server: ScriptedLLM, answers: dict[str, list[Reply]]
) -> None:
    answers["a"] += [Reply("x"), Reply("x")]
    answers["b"] += [Reply(status=404)]
    policy = PolicyView({"topic_finder": ["a", "b"]})
    policy.apply(assignment("a"))
    failed, outcomes = await call(server, policy)
    assert isinstance(failed, RoleFailed) and "no model gave a usable answer" in str(failed)
    assert len(outcomes) == 3 and not any(o["success"] for o in outcomes)


# --- executing the call plan (warm-up/duel extras, cascade) against a scripted gateway -----------


class ScriptedGateway:
    """Answers per model: text, or (text, confidence), or an exception; records every call."""

    def __init__(self, answers: dict[str, Any]) -> None:
        self.answers = answers
        self.calls: list[str] = []

    async def complete(self, model: str, messages: Any, json_schema: Any = None) -> Completion:
        self.calls.append(model)
        answer = self.answers[model]
        if isinstance(answer, Exception):
            raise answer
        text, confidence = answer if isinstance(answer, tuple) else (answer, None)
        return Completion(model, text, 10, 5, 1.0, 0.001, "stop", confidence)


def topics(name: str) -> str:
    return json.dumps({"topics": [name]})


async def run_plan(
    gateway: ScriptedGateway, sources: tuple[str, ...] = ("processor",), **plan: Any
) -> tuple[Any, list[dict[str, Any]]]:
    """The answer, and the feedback of `sources` the call emitted."""
    policy = PolicyView({"topic_finder": ["a", "b", "c"]})
    policy.apply(
        {
            **assignment("a"),
            "q_values": {"a": 1.0, "b": 2.0, "c": 0.5},
            "candidates": ["a", "b", "c"],
            "mode": "role_rl",
            **plan,
        }
    )
    outcomes: list[dict[str, Any]] = []

    async def emit(outcome: dict[str, Any]) -> None:
        outcomes.append(outcome)

    caller = RoleCaller("topic_finder", gateway, policy, emit, random.Random(1))  # type: ignore[arg-type]
    try:
        answer: Any = await caller.ask([{"role": "user", "content": "go"}], parse, CTX)
        await caller.settle()  # extras record their outcomes after the answer
    except RoleFailed as exc:
        answer = exc
    return answer, [o for o in outcomes if o["source"] in sources]


async def test_extras_run_on_the_same_input_and_are_recorded_but_the_primary_answers() -> None:
    gateway = ScriptedGateway({"a": topics("from a"), "b": topics("from b"), "c": topics("from c")})
    answer, outcomes = await run_plan(gateway, warmup=["c"], epsilon=1.0, explore={"b": 1.0})
    assert (answer.value, answer.model) == (["from a"], "a")
    assert sorted(gateway.calls) == ["a", "b", "c"]
    by_model = {o["model"]: o for o in outcomes}
    assert {m: o["propensity"] for m, o in by_model.items()} == {"a": 1.0, "b": 1.0, "c": 1.0}
    assert by_model["b"]["event_id"] == "s1:0:topic_finder:0:b:0"
    assert all(o["prev_model"] is None for o in outcomes), "the extras act from the state before the input"


class SlowExtraGateway(ScriptedGateway):
    """Model "c" answers only when released: a local LLM running beside an encoder."""

    def __init__(self, answers: dict[str, Any]) -> None:
        super().__init__(answers)
        self.release = asyncio.Event()

    async def complete(self, model: str, messages: Any, json_schema: Any = None) -> Completion:
        if model == "c":
            await self.release.wait()
        return await super().complete(model, messages, json_schema)


async def test_the_answer_does_not_wait_for_an_extra_whose_outcome_follows() -> None:
    gateway = SlowExtraGateway({"a": topics("from a"), "c": topics("from c")})
    policy = PolicyView({"topic_finder": ["a", "c"]})
    policy.apply({**assignment("a"), "candidates": ["a", "c"], "mode": "role_rl", "warmup": ["c"]})
    outcomes: list[dict[str, Any]] = []

    async def emit(outcome: dict[str, Any]) -> None:
        outcomes.append(outcome)

    caller = RoleCaller("topic_finder", gateway, policy, emit, random.Random(1))  # type: ignore[arg-type]
    answer = await asyncio.wait_for(caller.ask([{"role": "user", "content": "go"}], parse, CTX), 5)
    assert answer.model == "a" and [o["model"] for o in outcomes] == ["a"]
    gateway.release.set()
    await caller.settle(timeout_s=5)
    assert sorted(o["model"] for o in outcomes if o["source"] == "processor") == ["a", "c"]
    assert {o["model"] for o in outcomes if o["source"] == "agreement"} == {"a", "c"}


async def test_an_extras_answer_is_used_only_when_every_other_model_failed() -> None:
    gateway = ScriptedGateway({"a": ModelCallError("down"), "b": ModelCallError("down"), "c": topics("c")})
    answer, _outcomes = await run_plan(gateway, warmup=["c"])
    assert answer.model == "c"
    assert gateway.calls.count("c") == 1, "a model running as an extra is not asked twice"


async def test_cascade_escalates_on_low_confidence() -> None:
    gateway = ScriptedGateway({"a": (topics("cheap"), 0.4), "b": (topics("strong"), 0.9), "c": topics("c")})
    answer, outcomes = await run_plan(gateway, cascade_to="b", cascade_below=0.6)
    assert (answer.value, answer.model) == (["strong"], "b")
    assert [(o["model"], o["confidence"]) for o in outcomes] == [("a", 0.4), ("b", 0.9)]


@pytest.mark.parametrize("confidence", [0.8, None])
async def test_cascade_keeps_a_confident_or_unrated_answer(confidence: float | None) -> None:
    gateway = ScriptedGateway({"a": (topics("cheap"), confidence), "b": topics("strong"), "c": topics("c")})
    answer, outcomes = await run_plan(gateway, cascade_to="b", cascade_below=0.6)
    assert answer.model == "a" and gateway.calls == ["a"]
    assert outcomes[0]["confidence"] == confidence


async def test_cascade_escalates_a_junk_answer_first() -> None:
    gateway = ScriptedGateway({"a": "junk", "b": topics("strong"), "c": topics("c")})
    answer, _outcomes = await run_plan(gateway, cascade_to="c", cascade_below=0.6)
    assert answer.model == "c" and gateway.calls == ["a", "a", "c"]


async def test_an_input_the_provider_rejects_is_not_charged_to_any_model(
    server: ScriptedLLM, answers: dict[str, list[Reply]]
) -> None:
    too_long = {
        "error": {
            "message": "This model's maximum context length is 8192 tokens.",
            "type": "invalid_request_error",
            "param": "messages",
            "code": "context_length_exceeded",
        }
    }
    answers["a"] = [Reply(status=400, error=too_long)]
    policy = PolicyView({"topic_finder": ["a", "b"]})
    policy.apply(assignment("a"))
    with pytest.raises(InputRejected) as rejected:
        await call(server, policy)
    assert rejected.value.reason == "context_length_exceeded"
    assert server.models_called() == ["a"]  # no failover: b would be refused the same input
