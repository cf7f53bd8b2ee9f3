"""The budget on LLM time per feed (processors/llm_budget.py) and the switch in the role-call shell:
a cheap encoder answers first with a confidence, the LLM is asked only below the cascade's
threshold and only while the feed's LLM budget covers it; the primary call always runs."""

from __future__ import annotations

import asyncio
import json
import random
from types import SimpleNamespace
from typing import Any

import pytest

from olp.errors import ParseError
from olp.settings import FeedSettings
from processors.llm_budget import LlmTimeBudget, TokenBucket, admitted
from processors.model_gateway import Completion
from processors.policy_view import PolicyView
from processors.role_call import CallContext, RoleCaller

CTX = CallContext("s1", "s1:0", "ecommerce", "en", "shop", 30, "0")


# --- the pure parts -------------------------------------------------------------------------------


def test_a_bucket_refills_at_its_rate_up_to_a_quarter_minute_and_goes_into_debt() -> None:
    bucket = TokenBucket.per_minute(12.0, now_s=0.0)  # 0.2 units a second, at most 3 saved up
    assert (bucket.rate_per_s, bucket.capacity, bucket.available(0.0)) == (0.2, 3.0, 3.0)
    bucket.spend(0.0, 4.0)  # the calls a role must make spend into debt
    assert bucket.available(0.0) == -1.0
    assert bucket.available(10.0) == pytest.approx(1.0)
    assert bucket.available(1000.0) == 3.0
    assert bucket.available(5.0) == 3.0  # a clock that steps back refills nothing


def test_admitted_makes_free_calls_always_and_others_while_covered() -> None:
    costs = {"enc": 0.0, "a": 4.0, "b": 1.0, "c": 4.0}
    assert admitted(["a", "enc", "b", "c"], costs.__getitem__, 5.5) == (["a", "enc", "b"], ["c"])
    assert admitted(["a", "enc"], costs.__getitem__, -3.0) == (["enc"], ["a"])
    assert admitted(["a", "c"], costs.__getitem__, float("inf")) == (["a", "c"], [])
    # a full bucket admits one call dearer than it holds (a slow model can still be tried), not two
    assert admitted(["a", "c"], costs.__getitem__, 3.0, capacity=3.0) == (["a"], ["c"])
    assert admitted(["a"], costs.__getitem__, 2.9, capacity=3.0) == ([], ["a"])


def test_the_budget_is_per_feed_learns_latencies_and_counts_what_it_skips() -> None:
    now = [0.0]
    kinds: list[str] = []
    limits = {"shop": 40.0, "lab": None}
    budget = LlmTimeBudget(limits.get, clock=lambda: now[0], on_skip=kinds.append)
    assert budget.available("shop") == 10.0 and budget.available("lab") == float("inf")
    assert budget.expected("llm") == 4.0  # unmeasured: a local model's call, not free
    budget.spend("shop", "llm", 4.0)
    budget.spend("lab", "llm", 2.0)
    assert budget.available("shop") == 6.0
    assert budget.expected("llm") == pytest.approx(4.0 + 0.3 * (2.0 - 4.0))
    now[0] = 3.0
    assert budget.available("shop") == pytest.approx(8.0)
    budget.skip("escalation")
    assert budget.skipped == {"escalation": 1, "extra": 0, "judge": 0} and kinds == ["escalation"]


def test_calls_in_flight_hold_their_expected_seconds_until_they_answer() -> None:
    budget = LlmTimeBudget(lambda feed: 40.0, clock=lambda: 0.0)  # 10 s saved up
    first = budget.begin("shop", "llm")  # unmeasured: 4 s held
    second = budget.begin("shop", "llm")
    assert (first, second) == (4.0, 4.0) and budget.available("shop") == 2.0  # a third would not fit
    budget.spend("shop", "llm", 3.0, first)  # answered in 3 s: the 4 s held are released
    assert budget.available("shop") == pytest.approx(10.0 - 3.0 - 4.0)
    budget.release("shop", second)  # cancelled: nothing booked
    assert budget.available("shop") == pytest.approx(7.0)


def test_the_default_feed_budget_keeps_two_cores_up_with_speech() -> None:
    seconds = FeedSettings().llm_seconds_per_minute
    assert seconds is not None
    llm_call_s, chunk_s = 4.0, 40 / 2.5
    assert seconds / 60.0 <= 0.7  # the local LLM is busy at most 70% of the time
    assert seconds / 60.0 * chunk_s >= 2 * llm_call_s  # a chunk's Topic Finder call and one more


# --- the switch in the role-call shell ------------------------------------------------------------


class Gateway:
    """An encoder `enc` whose answer carries a set confidence, and an LLM `llm`."""

    def __init__(self, confidence: float) -> None:
        self.confidence = confidence
        self.asked: list[str] = []
        kinds = {"enc": "encoder", "llm": "chat"}
        self.catalog = SimpleNamespace(
            model=lambda name: SimpleNamespace(kind=kinds[name], base_url=None, provider_name="openai")
        )

    async def complete(self, model: str, messages: Any, json_schema: Any = None) -> Completion:
        self.asked.append(model)
        return Completion(model, json.dumps({"topics": ["From the LLM"]}), 500, 20, 4000.0, 5e-6, "stop")

    async def encode(self, model: str, task: Any) -> tuple[Any, Completion]:
        self.asked.append(model)
        # As ModelGateway.encode: the task's Confident answer unwrapped, its confidence on the Completion.
        completion = Completion(model, "", 200, 0, 5.0, 2e-8, "stop", confidence=self.confidence)
        return ["From the encoder"], completion


def parse(text: str) -> list[str]:
    try:
        return list(json.loads(text)["topics"])
    except (ValueError, KeyError) as exc:
        raise ParseError("junk") from exc


def policy_of(primary: str, **plan: Any) -> PolicyView:
    """The Topic Finder's policy: `primary` answers, with the assignment fields in `plan`."""
    policy = PolicyView({"topic_finder": ["enc", "llm"]})
    policy.apply(
        {
            "role": "topic_finder",
            "model": primary,
            "q_values": {},
            "epsilon": 0.0,
            "candidates": ["enc", "llm"],
            "version": 2,
            "reason": "t",
            "ts_ms": 0,
            "mode": "role_rl",
            **plan,
        }
    )
    return policy


async def ask(
    confidence: float, budget: LlmTimeBudget | None, primary: str = "enc", **plan: Any
) -> tuple[list[str], Gateway, list[dict[str, Any]]]:
    policy = policy_of(primary, **plan)
    outcomes: list[dict[str, Any]] = []

    async def emit(outcome: dict[str, Any]) -> None:
        outcomes.append(outcome)

    gateway = Gateway(confidence)
    caller = RoleCaller("topic_finder", gateway, policy, emit, random.Random(1), budget=budget)  # type: ignore[arg-type]
    answer = await caller.ask([{"role": "user", "content": "go"}], parse, CTX, encode=lambda embedder: None)
    await caller.settle()  # extras record their outcomes after the answer
    return answer.value, gateway, outcomes


CASCADE = {"cascade_to": "llm", "cascade_below": 0.5}


def budget_of(seconds_per_minute: float | None) -> LlmTimeBudget:
    """A feed `shop` with this budget (10 s saved up at 40), whose LLM is known to take 4 s."""
    budget = LlmTimeBudget(lambda feed: seconds_per_minute if feed == "shop" else None, clock=lambda: 0.0)
    budget.latency_s["llm"] = 4.0
    return budget


async def test_warmups_started_together_before_any_answer_cannot_overdraw_the_budget() -> None:
    """A cold start: every role's call wants the untried LLM beside the encoder at once. Each LLM
    call in flight holds 4 s (unmeasured), so a 10 s bucket admits two, not all of them (a single
    local server would queue every one)."""
    budget = LlmTimeBudget(lambda feed: 40.0, clock=lambda: 0.0)
    gateway = Gateway(0.9)
    gate = asyncio.Event()
    answer_llm = gateway.complete

    async def slow_llm(model: str, messages: Any, json_schema: Any = None) -> Completion:
        await gate.wait()  # none answers before all have been asked
        return await answer_llm(model, messages, json_schema)

    gateway.complete = slow_llm  # type: ignore[method-assign]
    policy = policy_of("enc", warmup=["llm"])

    async def emit(outcome: dict[str, Any]) -> None:
        pass

    caller = RoleCaller("topic_finder", gateway, policy, emit, random.Random(1), budget=budget)  # type: ignore[arg-type]
    for _ in range(5):
        await caller.ask([{"role": "user", "content": "go"}], parse, CTX, encode=lambda embedder: None)
    await asyncio.sleep(0)  # the admitted extras reach the gateway
    assert budget.skipped["extra"] == 3
    gate.set()
    await caller.settle()
    assert gateway.asked.count("llm") == 2 and gateway.asked.count("enc") == 5
    assert budget.available("shop") == pytest.approx(10.0 - 2 * 4.0)  # both answered in 4 s


async def test_an_unsure_encoder_escalates_to_the_llm() -> None:
    budget = budget_of(40.0)
    value, gateway, outcomes = await ask(0.3, budget, **CASCADE)
    assert value == ["From the LLM"] and gateway.asked == ["enc", "llm"]
    assert [(o["model"], o["confidence"]) for o in outcomes if o["source"] == "processor"] == [
        ("enc", 0.3),
        ("llm", None),
    ]
    assert budget.available("shop") == 6.0 and budget.skipped["escalation"] == 0


async def test_a_sure_encoder_answers_alone() -> None:
    budget = budget_of(40.0)
    value, gateway, outcomes = await ask(0.7, budget, **CASCADE)
    assert value == ["From the encoder"] and gateway.asked == ["enc"]
    assert [o["confidence"] for o in outcomes] == [0.7]
    assert budget.available("shop") == 10.0


async def test_an_empty_budget_skips_the_escalation_and_counts_it() -> None:
    budget = budget_of(40.0)
    budget.spend("shop", "llm", 7.0)  # 3 s left: less than the LLM's 4 s (now 4.9 s on average)
    value, gateway, _ = await ask(0.3, budget, **CASCADE)
    assert value == ["From the encoder"] and gateway.asked == ["enc"]
    assert budget.skipped == {"escalation": 1, "extra": 0, "judge": 0}


async def test_an_llm_primary_always_runs_and_its_warmup_extra_waits_for_the_budget() -> None:
    budget = budget_of(24.0)  # 6 s: the primary's 4 s, not another LLM call
    value, gateway, _ = await ask(0.3, budget, primary="llm", warmup=["enc", "llm"])
    assert value == ["From the LLM"] and sorted(gateway.asked) == ["enc", "llm"]  # the encoder runs
    assert budget.skipped["extra"] == 0 and budget.available("shop") == 2.0
    value, gateway, _ = await ask(0.3, budget, primary="llm")  # in debt: the primary still runs
    assert gateway.asked == ["llm"] and budget.available("shop") == -2.0
    _, gateway, _ = await ask(0.3, budget, warmup=["llm"])  # the LLM extra does not
    assert gateway.asked == ["enc"] and budget.skipped == {"escalation": 0, "extra": 1, "judge": 0}
    _, gateway, _ = await ask(0.3, None, warmup=["llm"])  # no budget: the extra runs
    assert sorted(gateway.asked) == ["enc", "llm"]
