"""The board of judges (processors/judge.py): the judge prompt keeps the role's cached prefix,
verdicts are parsed defensively with the role's own parser, per-role partial credit as in the
paper, the board's weighted score, sampling, and what the board publishes."""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from typing import Any

import pytest

from olp.errors import ModelCallError, ParseError
from processors import content_organizer, relationship_checker, topic_finder, topic_locator
from processors.domain import Sentence, TopicSpan, span_iou
from processors.judge import (
    JudgeBoard,
    JudgedCall,
    Verdict,
    answer_schema,
    aspect_similarity,
    board_score,
    build_prompt,
    chosen_correction,
    parse_verdict,
    score,
)
from processors.llm_budget import LlmTimeBudget
from processors.relationship_checker import RelationVerdict

CHUNK = [
    Sentence(10, "Welcome back everyone!"),
    Sentence(11, "This wool scarf is 99 today."),
    Sentence(13, "Only five left, grab it now."),
    Sentence(14, "Next, a thermos cup that keeps tea hot for 12 hours."),
    Sentence(16, "It is 39 with the coupon."),
]
IDS = [s.id for s in CHUNK]
ASPECTS = ["Opening", "Order Urging", "Price", "Product Description"]


def locator_parse(text: str) -> tuple[int, int]:
    return topic_locator.parse_answer(text, IDS)


# --- prompt ----------------------------------------------------------------------------------


def test_judge_prompt_extends_the_role_prompt_so_the_prefix_stays_cached() -> None:
    role_prompt = topic_locator.build_prompt(
        CHUNK, "Wool scarf", ["Wool scarf", "Thermos cup"], "ecommerce", "en"
    )
    prompt = build_prompt(role_prompt, '{"first_id": 10, "last_id": 13}')
    assert prompt[0] == role_prompt[0]
    assert prompt[1]["content"].startswith(role_prompt[1]["content"])
    tail = prompt[1]["content"][len(role_prompt[1]["content"]) :]
    assert 'An assistant answered:\n{"first_id": 10, "last_id": 13}' in tail
    assert '{"correct": true}' in tail and '"correction"' in tail
    assert role_prompt[1]["content"].count("</transcript>") == 1  # the role prompt is not changed


def test_judge_prompt_flattens_a_long_answer() -> None:
    prompt = build_prompt(topic_finder.build_prompt(CHUNK, "ecommerce", "en"), "x\n" * 5000)
    assert "x x x" in prompt[1]["content"] and prompt[1]["content"].count("x") < 2100


def test_judge_prompt_needs_a_role_prompt() -> None:
    with pytest.raises(ValueError):
        build_prompt([{"role": "system", "content": "s"}], "{}")


def test_verdict_schema_wraps_the_role_schema() -> None:
    role_schema = topic_locator.answer_schema(IDS)
    schema = answer_schema(role_schema)
    assert schema["required"] == ["correct"]
    assert schema["properties"]["correct"] == {"type": "boolean"}
    assert schema["properties"]["correction"] == role_schema
    assert answer_schema(None)["properties"]["correction"] == {"type": "object"}


# --- verdicts --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ('{"correct": true}', Verdict(True)),
        ('{"correct": "yes"}', Verdict(True)),
        ('```json\n{"is_correct": true, "correction": {"first_id": 1, "last_id": 2}}\n```', Verdict(True)),
        ('{"correct": false, "correction": {"first_id": 10, "last_id": 11}}', Verdict(False, (10, 11))),
        # the correction as a JSON string, ids reversed: the role's parser repairs it
        (
            '{"correct": false, "correction": "{\\"first_id\\": 13, \\"last_id\\": 11}"}',
            Verdict(False, (11, 13)),
        ),
        # a correction with ids outside the chunk is dropped, the verdict stays "wrong"
        ('{"correct": false, "correction": {"first_id": 1, "last_id": 99}}', Verdict(False, None)),
        ('{"correct": false}', Verdict(False, None)),
        # no verdict but a correction: not correct
        ('{"correction": [10, 11]}', Verdict(False, (10, 11))),
        (
            'Sure! {"verdict": "incorrect", "correction": {"start": 14, "end": 16}} Hope that helps.',
            Verdict(False, (14, 16)),
        ),
    ],
)
def test_parse_verdict(answer: str, expected: Verdict) -> None:
    assert parse_verdict(answer, locator_parse) == expected


@pytest.mark.parametrize("answer", ["", "correct", "[true]", '{"correct": "maybe"}', '{"answer": 3}', None])
def test_parse_verdict_rejects_junk(answer: str | None) -> None:
    with pytest.raises(ParseError):
        parse_verdict(answer, locator_parse)


# --- scores ----------------------------------------------------------------------------------


def test_span_iou_counts_ids() -> None:
    assert span_iou((10, 13), (10, 13)) == 1.0
    assert span_iou((10, 13), (12, 15)) == pytest.approx(2 / 6)
    assert span_iou((13, 10), (10, 13)) == 1.0
    assert span_iou((1, 2), (5, 9)) == 0.0


def test_correct_answers_score_one() -> None:
    for role in ("topic_finder", "topic_locator", "relationship_checker", "content_organizer"):
        assert score(role, object(), Verdict(True)) == 1.0


def test_wrong_without_correction_scores_minus_one() -> None:
    assert score("topic_locator", (10, 13), Verdict(False, None)) == -1.0


def test_locator_partial_credit_is_two_iou_minus_one() -> None:
    assert score("topic_locator", (10, 13), Verdict(False, (12, 15))) == pytest.approx(2 * (2 / 6) - 1)
    assert score("topic_locator", (10, 13), Verdict(False, (10, 13))) == 1.0
    assert score("topic_locator", (10, 11), Verdict(False, (14, 16))) == -1.0


def test_batched_locator_partial_credit_is_the_mean_iou() -> None:
    answer = [TopicSpan("Scarf", 10, 13), TopicSpan("Cup", 14, 16)]
    correction = [TopicSpan("scarf", 10, 11), TopicSpan("Cup", 14, 16), TopicSpan("Missing", 20, 21)]
    assert score("topic_locator", answer, Verdict(False, correction)) == pytest.approx(
        2 * (0.5 + 1 + 0) / 3 - 1
    )


def test_organizer_partial_credit_is_two_similarity_minus_one() -> None:
    answer = {"Opening": [10], "Price": [11, 13], "Order Urging": [], "Product Description": []}
    correction = {"Opening": [10], "Price": [11], "Order Urging": [13], "Product Description": []}
    assert aspect_similarity(answer, correction) == pytest.approx(2 / 3)
    assert score("content_organizer", answer, Verdict(False, correction)) == pytest.approx(2 * 2 / 3 - 1)
    assert aspect_similarity({}, {}) == 1.0


def test_finder_and_relationship_have_no_partial_credit() -> None:
    assert score("topic_finder", ["Scarf", "Cup"], Verdict(False, ["scarf", " Cup "])) == 1.0
    assert score("topic_finder", ["Scarf", "Cup"], Verdict(False, ["Scarf"])) == -1.0
    assert score("topic_finder", ["Scarf", "Cup"], Verdict(False, ["Cup", "Scarf"])) == -1.0
    assert (
        score("relationship_checker", RelationVerdict(False), Verdict(False, RelationVerdict(False))) == 1.0
    )
    assert (
        score("relationship_checker", RelationVerdict(False), Verdict(False, RelationVerdict(True, "x")))
        == -1.0
    )


def test_board_score_weights_the_judges() -> None:
    assert board_score({}) is None
    assert board_score({"a": 1.0, "b": -1.0}) == 0.0
    assert board_score({"a": 1.0, "b": -1.0}, {"a": 3.0, "b": 1.0}) == pytest.approx(0.5)
    assert board_score({"a": 1.0, "b": 0.0}, {"c": 2.0}) == 0.5  # no weight applies: equal
    assert board_score({"a": 1.0, "b": -1.0}, {"a": 1.0, "b": -5.0}) == 1.0  # negative weights count 0


def test_chosen_correction_needs_the_weight_of_the_board() -> None:
    wrong = Verdict(False, (10, 11))
    assert chosen_correction({"a": wrong, "b": Verdict(True)}) is None  # a tie keeps the answer
    assert chosen_correction({"a": wrong, "b": Verdict(True)}, {"a": 2.0}) == (10, 11)
    assert chosen_correction({"a": Verdict(False, None), "b": wrong}) == (10, 11)
    assert chosen_correction({"a": Verdict(False, (14, 16)), "b": wrong}, {"a": 0.5, "b": 2}) == (10, 11)
    assert chosen_correction({"a": Verdict(False, None)}) is None


# --- the board (shell) with a fake gateway ---------------------------------------------------


@dataclass
class _Completion:
    text: str
    latency_ms: float = 120.0
    tokens_in: int = 300
    tokens_out: int = 12
    cost_usd: float = 0.0004
    model: str = "served"
    finish_reason: str = "stop"
    response_id: str = "chatcmpl-1"


class FakeGateway:
    def __init__(self, answers: dict[str, str | Exception]) -> None:
        self.answers = answers
        self.calls: list[tuple[str, list[dict[str, str]], Any]] = []

    async def complete(self, model: str, messages: Any, json_schema: Any = None) -> _Completion:
        self.calls.append((model, messages, json_schema))
        answer = self.answers[model]
        if isinstance(answer, Exception):
            raise answer
        return _Completion(answer)


def _call(value: Any = (10, 13)) -> JudgedCall:
    prompt = topic_locator.build_prompt(CHUNK, "Wool scarf", ["Wool scarf"], "ecommerce", "en")
    outcome = {
        "event_id": "s:0:topic_locator:0:small:0",
        "role": "topic_locator",
        "model": "small",
        "policy_version": 3,
        "propensity": 0.97,
        "latency_ms": 800.0,
        "cost_usd": 0.0001,
        "success": True,
        "quality": None,
        "source": "processor",
        "stream_id": "s",
        "chunk_id": "s:0",
        "ts_ms": 1,
    }
    return JudgedCall(
        "topic_locator",
        "small",
        outcome["event_id"],
        prompt,
        json.dumps({"first_id": 10, "last_id": 13}),
        value,
        locator_parse,
        topic_locator.answer_schema(IDS),
        outcome,
    )


def _board(gateway: FakeGateway, sent: list[tuple[str, str, str, dict[str, Any]]], **kw: Any) -> JudgeBoard:
    async def emit(topic: str, key: str, record_type: str, record: dict[str, Any]) -> None:
        sent.append((topic, key, record_type, record))

    return JudgeBoard(
        gateway,
        tuple(gateway.answers),
        emit,
        "t.verdicts",
        "t.feedback",
        random.Random(1),
        **{"sample_rate": 1.0, **kw},
    )


async def test_board_publishes_each_verdict_and_the_board_score() -> None:
    gateway = FakeGateway(
        {
            "judge-a": '{"correct": true}',
            "judge-b": '{"correct": false, "correction": {"first_id": 10, "last_id": 11}}',
        }
    )
    sent: list[tuple[str, str, str, dict[str, Any]]] = []
    board = _board(gateway, sent)
    correction = await board.judge(_call())
    assert correction is None  # one judge each way, equal weights: the answer stands
    verdicts = [r for t, _, kind, r in sent if t == "t.verdicts"]
    assert [kind for _, _, kind, _ in sent] == ["JudgeVerdict", "JudgeVerdict", "RoleOutcome"]
    assert [(v["judge"], v["correct"], v["score"]) for v in verdicts] == [
        ("judge-a", True, 1.0),
        ("judge-b", False, pytest.approx(2 * (2 / 4) - 1)),
    ]
    assert verdicts[1]["correction"] == "[10, 11]" and verdicts[1]["answer"] == "[10, 13]"
    assert verdicts[1]["event_id"] == "s:0:topic_locator:0:small:0:judge:judge-b"
    assert (
        verdicts[1]["cost_usd"] == 0.0004 and verdicts[1]["judged_event_id"] == "s:0:topic_locator:0:small:0"
    )
    feedback = sent[-1][3]
    assert sent[-1][:2] == ("t.feedback", "topic_locator")
    assert feedback["source"] == "judge" and feedback["quality"] == pytest.approx((1.0 + 0.0) / 2)
    assert feedback["event_id"] == "s:0:topic_locator:0:small:0:board"
    assert feedback["judge_cost_usd"] == pytest.approx(2 * 0.0004)  # both judges' own calls
    # the judged call's own measurements travel with the score, so its reward is complete
    assert (feedback["model"], feedback["cost_usd"], feedback["latency_ms"]) == ("small", 0.0001, 800.0)
    # every judge saw the role's prompt as its prefix and the wrapped schema
    for _, messages, schema in gateway.calls:
        assert messages[1]["content"].startswith(_call().prompt[1]["content"])
        assert schema["properties"]["correction"] == topic_locator.answer_schema(IDS)


async def test_judges_run_only_while_the_feeds_llm_time_budget_covers_them() -> None:
    now = [0.0]
    budget = LlmTimeBudget(lambda feed: 12.0, clock=lambda: now[0])  # 3 s saved up at most
    budget.spend("default", "judge-a", 1.0)  # known latencies: judge-a 1 s, judge-b 2.5 s
    budget.spend("default", "judge-b", 2.5)  # the bucket is now 3 - 3.5 = 0.5 s in debt
    gateway = FakeGateway({"judge-a": '{"correct": true}', "judge-b": '{"correct": true}'})
    sent: list[tuple[str, str, str, dict[str, Any]]] = []
    board = _board(gateway, sent, apply_corrections=True, budget=budget)
    await board.review(_call())
    assert gateway.calls == [] and budget.skipped["judge"] == 2  # in debt: nobody judges
    now[0] = 10.0  # refilled by 10 s x 12/60 s: 1.5 s covers judge-a (1 s), not judge-b too
    await board.review(_call())
    assert [model for model, _, _ in gateway.calls] == ["judge-a"] and budget.skipped["judge"] == 3
    assert budget.available("default") == pytest.approx(1.5 - 0.12)  # judge-a's measured 120 ms
    assert budget.latency_s["judge-a"] == pytest.approx(1.0 + 0.3 * (0.12 - 1.0))


async def test_a_failing_judge_is_recorded_and_left_out_of_the_score() -> None:
    gateway = FakeGateway({"judge-a": ModelCallError("HTTP 503"), "judge-b": "not json at all"})
    sent: list[tuple[str, str, str, dict[str, Any]]] = []
    await _board(gateway, sent).judge(_call())
    assert [kind for _, _, kind, _ in sent] == ["JudgeVerdict", "JudgeVerdict"]  # no board score
    assert sent[0][3]["error"].startswith("ModelCallError") and sent[0][3]["correct"] is None
    assert sent[1][3]["error"].startswith("ParseError") and sent[1][3]["tokens_in"] == 300


async def test_apply_corrections_replaces_the_answer_downstream() -> None:
    gateway = FakeGateway({"judge": '{"correct": false, "correction": {"first_id": 14, "last_id": 16}}'})
    sent: list[tuple[str, str, str, dict[str, Any]]] = []
    board = _board(gateway, sent, apply_corrections=True)
    assert await board.review(_call()) == (14, 16)
    assert sent[-1][3]["quality"] == -1.0


async def test_background_judging_never_changes_the_answer_and_is_bounded() -> None:
    gateway = FakeGateway({"judge": '{"correct": false, "correction": {"first_id": 14, "last_id": 16}}'})
    sent: list[tuple[str, str, str, dict[str, Any]]] = []
    board = _board(gateway, sent, max_pending=2)
    results = [await board.review(_call()) for _ in range(3)]
    assert results == [(10, 13)] * 3
    assert board.skipped == 1  # two judgings in flight, the third sampled call was skipped
    await board.close()
    assert sum(1 for _, _, kind, _ in sent if kind == "RoleOutcome") == 2


async def test_sampling_rate_and_roles() -> None:
    sent: list[tuple[str, str, str, dict[str, Any]]] = []
    board = _board(
        FakeGateway({"judge": '{"correct": true}'}), sent, sample_rate=0.25, roles=["topic_locator"]
    )
    draws = [board.wants("topic_locator") for _ in range(4000)]
    assert 0.22 < sum(draws) / len(draws) < 0.28
    assert not any(board.wants("topic_finder") for _ in range(100))
    assert not _board(FakeGateway({}), sent).wants("topic_locator")  # no judges: never


async def test_verdicts_use_each_roles_own_parser() -> None:
    organizer = [
        Sentence(10, "Welcome back everyone!"),
        Sentence(11, "This wool scarf is 99 today."),
    ]
    verdict = parse_verdict(
        '{"correct": false, "correction": {"labels": ["Opening", "Price"]}}',
        lambda text: content_organizer.parse_answer(text, [s.id for s in organizer], ASPECTS),
    )
    assert verdict.correction == {
        "Opening": [10],
        "Order Urging": [],
        "Price": [11],
        "Product Description": [],
    }
    verdict = parse_verdict(
        '{"correct": false, "correction": {"related": true, "name": "Scarf"}}',
        relationship_checker.parse_answer,
    )
    assert verdict.correction == RelationVerdict(True, "Scarf")
    verdict = parse_verdict(
        '{"correct": false, "correction": {"topics": ["Scarf", "Cup"]}}', topic_finder.parse_answer
    )
    assert verdict.correction == ["Scarf", "Cup"]


async def test_role_caller_hands_parsed_answers_to_the_board() -> None:
    """The role-call shell's hook: the board sees the call's prompt, answer and outcome, and
    (with apply_corrections) its correction is what the role passes on."""
    from processors.policy_view import PolicyView
    from processors.role_call import CallContext, RoleCaller

    gateway = FakeGateway(
        {
            "small": '{"first_id": 10, "last_id": 16}',
            "judge": '{"correct": false, "correction": {"first_id": 10, "last_id": 13}}',
        }
    )
    sent: list[tuple[str, str, str, dict[str, Any]]] = []

    async def emit(topic: str, key: str, record_type: str, record: dict[str, Any]) -> None:
        sent.append((topic, key, record_type, record))

    board = JudgeBoard(
        gateway,
        ["judge"],
        emit,
        "t.verdicts",
        "t.feedback",
        random.Random(0),
        sample_rate=1.0,
        apply_corrections=True,
    )
    feedback: list[dict[str, Any]] = []

    async def collect(outcome: dict[str, Any]) -> None:
        feedback.append(outcome)

    caller = RoleCaller(
        "topic_locator",
        gateway,
        PolicyView({"topic_locator": ["small"]}),
        collect,
        random.Random(0),
        judge=board.review,
    )
    prompt = topic_locator.build_prompt(CHUNK, "Wool scarf", ["Wool scarf"], "ecommerce", "en")
    ctx = CallContext("s", "s:0", "ecommerce", "en", "default", len(CHUNK))
    answer = await caller.ask(prompt, locator_parse, ctx, topic_locator.answer_schema(IDS))
    assert (answer.value, answer.model) == ((10, 13), "small")
    verdict = next(r for _, _, kind, r in sent if kind == "JudgeVerdict")
    assert verdict["judged_event_id"] == feedback[0]["event_id"] == "s:0:topic_locator:0:small:0"
    assert verdict["answer"] == "[10, 16]" and verdict["score"] == pytest.approx(2 * (4 / 7) - 1)
    judge_messages = gateway.calls[1][1]
    assert judge_messages[1]["content"].startswith(prompt[1]["content"])


# --- who judges: never itself, only what the feed allows; how often ------------------------------


async def test_a_judge_never_judges_its_own_model() -> None:
    sent: list[tuple[str, str, str, dict[str, Any]]] = []
    gateway = FakeGateway({"small": '{"correct": true}', "judge-a": '{"correct": true}'})
    board = _board(gateway, sent)
    await board.review(_call())  # answered by "small"
    await board.close()
    assert [model for model, _, _ in gateway.calls] == ["judge-a"]
    alone = FakeGateway({"small": '{"correct": true}'})
    lone_sent: list[tuple[str, str, str, dict[str, Any]]] = []
    lone = _board(alone, lone_sent)
    assert lone.judges_for(_call()) == ()
    assert await lone.review(_call()) == (10, 13)
    assert alone.calls == [] and lone_sent == []  # nobody else may judge: canaries are the signal


async def test_a_feed_that_forbids_external_judges_is_judged_locally_only() -> None:
    from olp.catalog import Catalog, ModelSpec
    from olp.settings import FeedSettings, Settings
    from processors.judge import feed_judges

    catalog = Catalog(
        models=(
            ModelSpec(name="small", base_url="http://127.0.0.1:8088/v1"),
            ModelSpec(name="local-judge", base_url="http://localhost:8089/v1", judge=True),
            ModelSpec(name="gpt-4o", base_url="https://api.openai.com/v1", judge=True),
        )
    )
    settings = Settings(
        feeds={"default": FeedSettings(), "private": FeedSettings(external_judges=False)},
    )
    permitted = feed_judges(settings, catalog, ("local-judge", "gpt-4o"))
    assert permitted("private") == ("local-judge",) and permitted("default") == ("local-judge", "gpt-4o")
    gateway = FakeGateway({"local-judge": '{"correct": true}', "gpt-4o": '{"correct": true}'})
    sent: list[tuple[str, str, str, dict[str, Any]]] = []
    board = _board(gateway, sent, permitted=permitted)
    private = _call()
    private = JudgedCall(
        *[getattr(private, f) for f in private.__dataclass_fields__][:-1],
        {**private.outcome, "feed": "private"},
    )
    await board.judge(private)
    assert [model for model, _, _ in gateway.calls] == ["local-judge"]
    await board.judge(_call())
    assert [model for model, _, _ in gateway.calls] == ["local-judge", "local-judge", "gpt-4o"]


def test_the_board_is_the_catalogs_judges_unless_named() -> None:
    from olp.catalog import Catalog, ModelSpec
    from olp.settings import JudgeSettings
    from processors.judge import board_models

    catalog = Catalog(
        models=(
            ModelSpec(name="small", base_url="http://127.0.0.1:1/v1"),
            ModelSpec(name="big", base_url="http://127.0.0.1:2/v1", judge=True),
        )
    )
    assert board_models(JudgeSettings(), catalog) == ("big",)
    assert board_models(JudgeSettings(models=("small",)), catalog) == ("small",)
    assert board_models(JudgeSettings(models=()), catalog) == ()
    assert ModelSpec(name="x", base_url="http://[::1]:8/v1").is_local
    assert not ModelSpec(name="x", base_url="http://10.0.0.5:8/v1").is_local


def test_the_sample_rate_follows_the_roles_uncertainty() -> None:
    from processors.judge import role_uncertainty, sample_rate_for

    settled = {"candidates": ["a", "b"], "q_values": {"a": 0.9, "b": 0.3}}
    close = {"candidates": ["a", "b"], "q_values": {"a": 0.9, "b": 0.8}}
    assert role_uncertainty(None, 0.5) == 1.0  # no assignment yet
    assert role_uncertainty({**settled, "warmup": ["b"]}, 0.5) == 1.0  # warming up
    assert role_uncertainty({"candidates": ["a", "b"], "q_values": {"a": 1.0}}, 0.5) == 1.0  # b untried
    assert role_uncertainty({**close, "pinned": True}, 0.5) == 0.0
    assert role_uncertainty({"candidates": ["a"], "q_values": {"a": 1.0}}, 0.5) == 0.0
    assert role_uncertainty(settled, 0.5) == 0.0  # gap 0.6/0.9 beyond 0.5
    assert role_uncertainty(close, 0.5) == pytest.approx(1 - (0.1 / 0.9) / 0.5)
    assert sample_rate_for(1.0, 0.2, 0.01) == 0.2 and sample_rate_for(0.0, 0.2, 0.01) == 0.01
    assigned: dict[str, Any] = {"topic_locator": settled}
    sent: list[tuple[str, str, str, dict[str, Any]]] = []
    board = _board(
        FakeGateway({"judge": '{"correct": true}'}),
        sent,
        sample_rate=0.5,
        settled_rate=0.02,
        assignment_of=assigned.get,
    )
    assert board.rate("topic_locator") == 0.02 and board.rate("topic_finder") == 0.5
    draws = [board.wants("topic_locator") for _ in range(4000)]
    assert 0.01 < sum(draws) / len(draws) < 0.03


async def test_a_canary_call_is_never_judged() -> None:
    sent: list[tuple[str, str, str, dict[str, Any]]] = []
    gateway = FakeGateway({"judge": '{"correct": true}'})
    board = _board(gateway, sent)
    call = _call()
    canary = JudgedCall(
        *[getattr(call, f) for f in call.__dataclass_fields__][:-1],
        {**call.outcome, "stream_id": "canary:default:0:1"},
    )
    assert await board.review(canary) == (10, 13) and gateway.calls == []
