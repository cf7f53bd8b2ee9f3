"""Assignments per (role, context): an English-only encoder is good on English chunks and wrong on
Chinese ones; the learner's context key (language) finds that by itself, the policy store
publishes the context's assignment beside the role's, and a processor acts on it for a Chinese
chunk while English chunks keep the encoder (olp/contexts.py, policy_store/leadership.py,
processors/policy_view.py). Pure: an in-memory bus, no broker."""

from __future__ import annotations

import asyncio
import json
import random
from typing import Any

import pytest

from olp.contexts import ROLE_LEVEL, context_key, policy_key, record_policy_key
from olp.learner_params import LearnerParams
from policy_store import learner as learner_pkg
from policy_store.bus import MemoryBus
from policy_store.feedback import human_outcome
from policy_store.leadership import mirror, publish, publish_contexts
from policy_store.learner import RoleRL, RoleRLParams
from policy_store.state import PolicyState
from processors.policy_view import PolicyView
from processors.role_call import CallContext

ROLE = "topic_finder"
POOL = ("enc", "llm")
EN = "domain=ecommerce|lang=en|chunk=<40"
ZH = "domain=ecommerce|lang=zh|chunk=<40"


def outcome(event: int, model: str, lang: str, quality: float, version: int) -> dict[str, Any]:
    """A canary-scored call: the encoder in milliseconds and free, the LLM in seconds."""
    return {
        "event_id": f"e{event}",
        "role": ROLE,
        "model": model,
        "policy_version": version,
        "propensity": 1.0,
        "prev_model": None,
        "prev_success": True,
        "domain": "ecommerce",
        "lang": lang,
        "feed": "default",
        "chunk_size": 12,
        "latency_ms": 10.0 if model == "enc" else 2000.0,
        "tokens_in": 300,
        "tokens_out": 0 if model == "enc" else 40,
        "cost_usd": 0.0 if model == "enc" else 0.0001,
        "success": True,
        "error": None,
        "quality": quality,
        "source": "canary",
        "stream_id": f"canary:{lang}",
        "chunk_id": str(event),
        "ts_ms": 1_000 + event,
    }


def english_only_encoder() -> PolicyState:
    """30 English and 10 Chinese canary chunks, both models scored on each: the encoder +1 on
    English and -1 on Chinese (pooled +0.5), the LLM +0.3 on both."""
    learner = RoleRL({ROLE: list(POOL)}, RoleRLParams())
    event = 0
    for lang, chunks in (("en", 30), ("zh", 10)):
        for _ in range(chunks):
            for model in POOL:
                event += 1
                k = (1.0 if lang == "en" else -1.0) if model == "enc" else 0.3
                learner.observe(outcome(event, model, lang, k, learner.version(ROLE)))
    return PolicyState(learner=learner, leader=True)


def chunk(lang: str) -> dict[str, Any]:
    sentences = [{"id": i, "text": "..."} for i in range(12)]
    return {
        "stream_id": "s",
        "chunk_id": "s:0",
        "domain": "ecommerce",
        "lang": lang,
        "feed": "default",
        "sentences": sentences,
    }


def test_one_context_key_for_learner_and_processors() -> None:
    assert learner_pkg.context_key is context_key
    ctx = CallContext.for_chunk(chunk("zh"))
    assert PolicyView({}).context_key(ctx.learner_context()) == ZH
    assert context_key(ctx.learner_context(), LearnerParams(contextual=False)) == ROLE_LEVEL
    assert context_key(ctx.learner_context(), LearnerParams(chunk_buckets=(5, 10))) == (
        "domain=ecommerce|lang=zh|chunk=>=10"
    )
    assert policy_key(ROLE) == ROLE and policy_key(ROLE, ZH) == f"{ROLE}|{ZH}"
    assert record_policy_key({"role": ROLE}) == ROLE  # a record written before contexts
    assert record_policy_key({"role": ROLE, "context": ZH}) == f"{ROLE}|{ZH}"


def test_the_english_only_encoder_loses_chinese_chunks_by_itself() -> None:
    state = english_only_encoder()
    assert state.learner.contexts(ROLE) == [EN, ZH]
    bus = MemoryBus()
    asyncio.run(publish(state, bus, ROLE))
    records = bus.assignments
    by_context = {r["context"]: r for r in records}
    assert [r["context"] for r in records] == [ROLE_LEVEL, EN, ZH]
    assert [r["version"] for r in records] == [1, 2, 3]
    # Pooled over both languages the encoder looks good: the role level keeps it ...
    assert by_context[ROLE_LEVEL]["model"] == "enc"
    # ... but the Chinese context names the LLM, the English one the encoder.
    assert by_context[ZH]["model"] == "llm" and by_context[EN]["model"] == "enc"
    assert by_context[ZH]["q_values"]["enc"] < 0 < by_context[ZH]["q_values"]["llm"]
    assert set(state.published) == {ROLE, f"{ROLE}|{EN}", f"{ROLE}|{ZH}"}

    processors = PolicyView({ROLE: list(POOL)})
    assert all(processors.apply(r) for r in records)
    rng = random.Random(0)
    for lang, model, version in (("zh", "llm", 3), ("en", "enc", 2)):
        context = processors.context_key(CallContext.for_chunk(chunk(lang)).learner_context())
        assert processors.choose(ROLE, rng, context=context).primary == model
        assert processors.version(ROLE, context) == version
    # A context without an assignment of its own (a news chunk) acts on the role's.
    news = processors.context_key({"domain": "news", "lang": "zh", "chunk_size": 12})
    assert processors.choose(ROLE, rng, context=news).primary == "enc"
    assert processors.version(ROLE, news) == 1


def test_context_records_stay_in_step_and_survive_a_snapshot() -> None:
    state = english_only_encoder()
    bus = MemoryBus()
    asyncio.run(publish(state, bus, ROLE))
    assert not any(state.stale(ROLE, c) for c in (ROLE_LEVEL, EN, ZH))
    assert asyncio.run(publish_contexts(state, bus, ROLE)) == []  # nothing changed: nothing sent
    # An operator's pin is the role's: every context follows it.
    state.learner.pin(ROLE, "enc")
    assert state.stale(ROLE, ZH)
    asyncio.run(publish(state, bus, ROLE, "pinned"))
    pinned = bus.assignments[3:]
    assert [(r["context"], r["model"], r["pinned"], r["version"]) for r in pinned] == [
        (ROLE_LEVEL, "enc", True, 4),
        (EN, "enc", True, 5),
        (ZH, "enc", True, 6),
    ]
    # The snapshot keeps the published context records: a restarted store is in step.
    data = json.loads(json.dumps(state.snapshot()))
    restored = PolicyState(
        learner=RoleRL.restore(data["learner"]), version=data["version"], published=data["published"]
    )
    assert restored.contexts(ROLE) == [EN, ZH]
    assert not any(restored.stale(ROLE, c) for c in (ROLE_LEVEL, EN, ZH))
    view = restored.role_view(ROLE)
    assert [(c["context"], c["published_version"]) for c in view["contexts"]] == [(EN, 5), (ZH, 6)]


def test_a_follower_mirrors_context_records_and_only_the_roles_pin() -> None:
    leader, follower = english_only_encoder(), english_only_encoder()
    follower.leader = False
    bus = MemoryBus()
    asyncio.run(publish(leader, bus, ROLE))
    zh = next(r for r in bus.assignments if r["context"] == ZH)
    mirror(follower, ROLE, {**zh, "pinned": True, "model": "llm"})
    assert follower.published[f"{ROLE}|{ZH}"]["version"] == zh["version"]
    assert follower.learner.assignment(ROLE).pinned is False  # a context record pins nothing


@pytest.mark.parametrize("stale_first", [True, False])
def test_processors_keep_versions_per_role_and_context(stale_first: bool) -> None:
    view = PolicyView({ROLE: list(POOL)})
    role_level = {"role": ROLE, "model": "enc", "epsilon": 0.0, "candidates": list(POOL), "version": 5}
    in_zh = {**role_level, "model": "llm", "version": 4, "context": ZH}
    for record in (in_zh, role_level) if stale_first else (role_level, in_zh):
        assert view.apply(record)  # a lower version of another key is not older
    assert not view.apply({**in_zh, "model": "enc", "version": 3})
    assert view.assignment(ROLE, context=ZH).model == "llm"
    assert view.assignment(ROLE).model == "enc" and view.version(ROLE) == 5


def test_paper_mode_decides_no_context_on_its_own() -> None:
    learner = RoleRL({ROLE: list(POOL)}, RoleRLParams.paper(contextual=True))
    for event in range(20):
        learner.observe(outcome(event, "enc", "zh", -1.0, learner.version(ROLE)))
    assert learner.contexts(ROLE) == []
    view = learner.context_assignment(ROLE, ZH)  # a record published before keeps its key
    assert (view.context, view.model) == (ZH, learner.assignment(ROLE).model)


def test_a_human_verdict_is_filed_under_its_answers_context_and_version() -> None:
    """A verdict on a Chinese chunk's answer goes to the zh context with the version published
    for it (the answer was made under that assignment), not to the role's; a verdict naming its
    version keeps it; one without a chunk size falls back to the role's published version."""
    published = {ROLE: {"version": 3}, policy_key(ROLE, ZH): {"version": 9}}
    params = LearnerParams()
    verdict = {"role": ROLE, "model": "enc", "quality": -1.0, "lang": "zh", "chunk_size": 12}
    zh = human_outcome(verdict, published, params, now_ms=1)
    assert (zh["lang"], zh["chunk_size"], zh["policy_version"]) == ("zh", 12, 9)
    assert context_key(zh, params) == ZH
    assert human_outcome({**verdict, "policy_version": 7}, published, params, 1)["policy_version"] == 7
    unsized = human_outcome({k: v for k, v in verdict.items() if k != "chunk_size"}, published, params, 1)
    assert (unsized["chunk_size"], unsized["policy_version"]) == (0, 3)
