"""The LLM-call shell every role uses: policy choice, re-ask on junk, failover, and one
RoleOutcome per attempt (spec sections 3-4)."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest

from olp.catalog import Catalog, ModelSpec
from olp.errors import ParseError
from processors.model_gateway import ModelGateway
from processors.policy_view import PolicyView
from processors.role_call import CallContext, RoleCaller, RoleFailed
from tests.support.fake_llm import Reply, ScriptedLLM

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
