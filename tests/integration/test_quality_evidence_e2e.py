"""Quality evidence through the real pipeline on the embedded broker, with answers from the
scripted model server: gold canaries interleaved with a user's stream are scored exactly and
published as `source = canary`, never as documents; a second model warming up beside the first
gives agreement evidence; the catalog's judge judges the other model's answers, never its own,
and reports what judging cost (spec section 4, "Quality is measured, never assumed")."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from launcher.clients import replay
from launcher.scripted_llm import Reply, ScriptedLLM, requested_schema, scripted_catalog
from launcher.scripted_roles import PRODUCTS, perfect_answer
from olp.feeds import read_transcript, with_end_marker
from processors.gold import canary_chunks, load_labelled, locator_score
from tests.support.stack import ServiceStack, read_topic

pytestmark = pytest.mark.integration

DATA = Path(__file__).parents[2] / "olp" / "data"
SAMPLE = DATA / "sample_livestream.jsonl"
GOLD = DATA / "sample_livestream.gold.json"
CHUNK_SIZE = 40


def answer(model: str, body: dict[str, Any]) -> Reply:
    if "correct" in (requested_schema(body).get("properties") or {}):
        return Reply('{"correct": true}')  # the judge's verdict
    return Reply(perfect_answer(body))


@pytest.fixture
def scripted() -> Iterator[ScriptedLLM]:
    server = ScriptedLLM(answer).start()
    yield server
    server.stop()


def expected_locator_scores() -> dict[tuple[int, str], float]:
    """(canary index, topic index) -> the exact score of the scripted locator's span."""
    scores = {}
    for index, chunk in enumerate(canary_chunks(load_labelled(GOLD), CHUNK_SIZE)):
        ids = [s.id for s in chunk.sentences]
        named = [(n, a, b) for n, a, b in PRODUCTS if any(a <= i <= b for i in ids)]
        for k, (name, first, last) in enumerate(named):
            inside = [i for i in ids if first <= i <= last]
            score = locator_score([name], (inside[0], inside[-1]), chunk)
            assert score is not None
            scores[(index, str(k))] = score
    return scores


def test_canaries_agreement_and_judges_through_the_pipeline(
    broker: str, topic_prefix: str, run_dir: Path, scripted: ScriptedLLM
) -> None:
    catalog = scripted_catalog(scripted.base_url, ("small", "big"))
    catalog = catalog.model_copy(
        update={"models": tuple(m.model_copy(update={"judge": m.name == "big"}) for m in catalog.models)}
    )
    feeds = {"default": {"chunk_size": CHUNK_SIZE, "canaries": str(GOLD), "canary_rate": 1.0}}
    stack = ServiceStack(
        broker,
        topic_prefix,
        run_dir,
        catalog,
        {"OLP_FEEDS": json.dumps(feeds), "OLP_JUDGES": json.dumps({"sample_rate": 1.0, "settled_rate": 1.0})},
    )
    try:
        stack.start_policy_store()
        stack.start_worker()
        segments = list(with_end_marker(read_transcript(SAMPLE, "user-1")))
        replay(stack.settings(), segments)
        stack.wait_for_documents("user-1", [s["segment_id"] for s in segments])
        settings = stack.settings()

        def canaries_done(records: list[dict[str, Any]]) -> bool:
            roles = {r["role"] for r in records if r["source"] == "canary"}
            return roles == {"topic_finder", "topic_locator", "relationship_checker", "content_organizer"}

        feedback = read_topic(settings, f"{topic_prefix}feedback", "RoleOutcome", canaries_done, 120)
        by_source: dict[str, list[dict[str, Any]]] = {}
        for outcome in feedback:
            by_source.setdefault(outcome["source"], []).append(outcome)

        # parsing is not quality
        assert all(o["quality"] is None for o in by_source["processor"])
        # canaries: scored exactly against the gold labels, under their own stream ids
        canary = by_source["canary"]
        assert all(o["stream_id"].startswith("canary:default:") for o in canary)
        assert {o["quality"] for o in canary if o["role"] == "topic_finder"} == {1.0}
        assert {o["quality"] for o in canary if o["role"] == "relationship_checker"} == {1.0}
        expected = expected_locator_scores()
        located = [o for o in canary if o["role"] == "topic_locator"]
        assert located
        for o in located:
            parts = o["event_id"].split(":")
            assert o["quality"] == pytest.approx(expected[(int(parts[2]), parts[6])]), o["event_id"]
        organised = [o["quality"] for o in canary if o["role"] == "content_organizer"]
        assert organised and all(-1.0 <= q < 1.0 for q in organised)  # keyword rule vs the gold
        # agreement: the untried model warmed up beside the assigned one on the same input
        agreement = by_source["agreement"]
        assert {o["model"] for o in agreement} == {"small", "big"}
        assert all(o["quality"] == 1.0 for o in agreement)  # both scripted models answer alike
        # judges: the catalog's judge ("big") judged "small"'s answers, never its own
        judged = by_source["judge"]
        assert judged and {o["model"] for o in judged} == {"small"}
        assert all(o["judge_cost_usd"] > 0 and o["quality"] == 1.0 for o in judged)
        assert not any(o["stream_id"].startswith("canary:") for o in judged)

        # canaries never reach olp.documents, and none was dead-lettered
        documents = read_topic(
            settings, f"{topic_prefix}documents", "TopicDocument", lambda r: len(r) >= 5, 30
        )
        assert documents and not any(d["stream_id"].startswith("canary:") for d in documents)
        url = f"http://127.0.0.1:{stack.worker_ports[0]}/readyz"
        with urllib.request.urlopen(url, timeout=5) as resp:
            stats = json.load(resp)["stats"]
        assert stats.get("canary.done", 0) >= 1
        assert not any(k.startswith("dlq.") or k.startswith("quiet_failure.") for k in stats), stats
    finally:
        stack.stop()
