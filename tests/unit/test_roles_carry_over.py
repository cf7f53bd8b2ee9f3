"""Carry-over across chunk boundaries on a recorded real run (spec section 3).

tests/fixtures/recorded_run_carry_over.json holds every answer Qwen2.5-Coder-0.5B gave, in call
order, when the six roles processed the first 60 sentences of the bundled sample stream with
chunk size 25, and the documents that came out. Replaying those answers through the same steps
(`bench/olp_offline.py`: Chunk Splitter rules, the four LLM roles' prompts and parsers, the
Relationship Checker's rules, the Format Checker) must give the same chunks and documents:

- chunk 0 (ids 1-27) ends inside the wig's topic, so that topic is not final and chunk 1 starts
  again at its first sentence (id 1) with 25 new sentences after it;
- the wig's document (topic id 1) is replaced by the newer version from chunk 1;
- the carried topic then outgrows the carry-over limit, so it is closed, and chunk 2 starts at
  the first new sentence.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bench.olp_offline import OfflineOLP
from launcher.scripted_llm import Reply, ScriptedLLM
from launcher.scripted_roles import role_of
from launcher.stack import local_catalog
from olp.settings import DEFAULT_ASPECTS
from processors import topic_finder
from processors.chunk_splitter import carry_limit
from processors.domain import Sentence

FIXTURE = Path(__file__).parents[1] / "fixtures" / "recorded_run_carry_over.json"
SAMPLE = Path(__file__).parents[2] / "olp" / "data" / "sample_livestream.jsonl"
RUN = json.loads(FIXTURE.read_text(encoding="utf-8"))


@pytest.fixture
def replaying() -> Iterator[tuple[ScriptedLLM, list[dict[str, Any]]]]:
    answers = list(RUN["answers"])
    asked: list[dict[str, Any]] = []

    def responder(model: str, body: dict[str, Any]) -> Reply:
        recorded = answers.pop(0)
        asked.append({"recorded": recorded, "role": role_of(body), "model": model})
        return Reply(recorded["text"])

    server = ScriptedLLM(responder).start()
    yield server, asked
    server.stop()
    assert not answers, f"{len(answers)} recorded answers were never asked for"


async def test_replayed_run_carries_the_unfinished_topic_over(
    replaying: tuple[ScriptedLLM, list[dict[str, Any]]],
) -> None:
    server, asked = replaying
    rows = [json.loads(line) for line in SAMPLE.read_text(encoding="utf-8").splitlines() if line.strip()]
    sentences = [Sentence(r["segment_id"], r["text"]) for r in rows][: RUN["sentences"]]
    model, k = RUN["model"], RUN["chunk_size"]
    async with OfflineOLP(
        local_catalog({model: server.base_url}),
        model,
        domain="ecommerce",
        lang="en",
        chunk_size=k,
        aspects=DEFAULT_ASPECTS["ecommerce"],
        organize=True,
        max_topics=topic_finder.MAX_TOPICS,  # recorded before feeds limited topics per chunk
    ) as olp:
        run = await olp.run(sentences, "replay")

    # Every call asked for the role it was recorded for, in the same order.
    assert [a["role"] for a in asked] == [a["recorded"]["role"] for a in asked]
    assert [(c.first_id, c.last_id) for c in run.chunks] == [(1, 27), (1, 56), (59, 72)]
    first, second, third = run.chunks
    assert first.size == k and second.size == 2 * k  # the carried 25, then 25 new ones
    # Chunk 0 ends inside the wig's topic: it is the chunk's last topic, so not final, and
    # chunk 1 starts at its first sentence.
    assert [(t.name, t.first_id) for t in first.checked] == [("human hair wig", 1)]
    assert second.first_id == first.checked[-1].first_id
    # In chunk 1 the topic grew to the end of the chunk, beyond the carry-over limit: closed.
    carried = sum(1 for s in sentences if second.checked[-1].first_id <= s.id <= second.last_id)
    assert carried > carry_limit(k) and third.first_id > second.last_id
    # Documents: newest version per topic id, exactly as recorded.
    got = [
        {
            "topic_id": d["topic_id"],
            "version": d["version"],
            "name": d["name"],
            "first_id": d["first_id"],
            "last_id": d["last_id"],
            "final": d["final"],
            "aspects": {a["name"]: [s["id"] for s in a["sentences"]] for a in d["aspects"]},
        }
        for d in run.documents
    ]
    assert got == RUN["documents"]
    assert [d["version"] for d in got] == [1, 2]  # the wig's chunk-0 version 0 was replaced
    placed = sorted(i for d in got for ids in d["aspects"].values() for i in ids)
    assert placed == [s.id for s in sentences]  # every sentence in exactly one document
    assert not run.failures
