"""OLP on one transcript without Kafka, for the evaluations (spec sections 3 and 9).

`OfflineOLP` runs the pipeline's own pure logic in-process: the Chunk Splitter's rules
(`processors.chunk_splitter`: K new sentences per chunk, the unfinished last topic carried over
whole), then per chunk the Topic Finder, Topic Locator (one call per topic), Relationship Checker
(LLM verdicts + IoU rule, tiling, same-name merge) and, optionally, the Content Organizer and the
Format Checker, with the same prompts, JSON schemas, parsers and LLM-call shell
(`processors.role_call.RoleCaller`: re-ask once on junk, then a recorded failure) as the Faust
agents. The order of steps mirrors the agent shells at the bottom of each role module. Documents
are versioned by chunk seq and keyed by their first sentence id (newest version wins), and at the
end of the stream documents with identical topic names merge.

`run_whole` is the non-OLP baseline: the same roles on one chunk holding the whole transcript,
cut to what fits the model's context window.

Calls go to OpenAI-compatible endpoints through `processors.model_gateway` (one model per run);
nothing is written to Kafka. Reads and writes no files.
"""

from __future__ import annotations

import random
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from olp.catalog import Catalog
from olp.errors import ValidationError
from olp.settings import FeedSettings
from processors import (
    content_organizer,
    format_checker,
    relationship_checker,
    topic_finder,
    topic_locator,
)
from processors.chunk_splitter import (
    ChunkSpec,
    SplitterState,
    add_segment,
    apply_done,
    carry_limit,
    next_chunk,
    next_start_id,
)
from processors.domain import Sentence, TopicSpan, render_transcript
from processors.format_checker import merge_documents_by_name
from processors.model_gateway import ModelGateway
from processors.policy_view import PolicyView
from processors.role_call import CallContext, RoleCaller, RoleFailed

ROLES = ("topic_finder", "topic_locator", "relationship_checker", "content_organizer")


@dataclass
class ChunkTrace:
    """What happened to one chunk (for the report and for debugging prompts)."""

    seq: int
    first_id: int
    last_id: int
    size: int
    found: list[str]
    located: list[TopicSpan]
    checked: list[TopicSpan]
    seconds: float


@dataclass
class OlpRun:
    """The result of one transcript: final topics, documents, and every call made."""

    topics: list[TopicSpan]
    """Final topics in order of start, after the end-of-stream merge of identical names (a merged
    topic's span runs from its first to its last sentence; `members` has its pieces)."""
    members: dict[str, list[TopicSpan]]
    documents: list[dict[str, Any]]
    outcomes: list[dict[str, Any]]
    chunks: list[ChunkTrace]
    wall_s: float
    sentences_seen: int
    """Sentences the roles were shown (all of them for OLP; the part that fit for non-OLP)."""
    failures: list[str] = field(default_factory=list)

    def topic_ids(self) -> dict[str, set[int]]:
        """Predicted topic -> the sentence ids it holds (pieces of a merged topic together)."""
        return {
            name: {i for piece in pieces for i in range(piece.first_id, piece.last_id + 1)}
            for name, pieces in self.members.items()
        }

    def calls(self) -> int:
        return len(self.outcomes)

    def cost_usd(self) -> float:
        return sum(float(o["cost_usd"]) for o in self.outcomes)


class OfflineOLP:
    """Use as `async with OfflineOLP(catalog, model, ...) as olp: run = await olp.run(sentences)`."""

    def __init__(
        self,
        catalog: Catalog,
        model: str,
        *,
        domain: str,
        lang: str,
        chunk_size: int,
        aspects: Sequence[str] = (),
        relationship: bool = True,
        organize: bool = False,
        max_topics: int = FeedSettings().max_topics,
        seed: int = 0,
        on_chunk: Callable[[ChunkTrace], None] | None = None,
    ) -> None:
        self.catalog = catalog
        self.model = model
        self.domain, self.lang = domain, lang
        self.chunk_size = chunk_size
        self.aspects = tuple(aspects)
        self.relationship = relationship
        self.organize = organize
        self.max_topics = max_topics
        self.on_chunk = on_chunk
        self._rng = random.Random(seed)
        self._session: aiohttp.ClientSession | None = None
        self._callers: dict[str, RoleCaller] = {}
        self.outcomes: list[dict[str, Any]] = []
        self.failures: list[str] = []
        self.answers: list[dict[str, Any]] = []
        """Every raw model answer, in call order: role, chunk_id, chunk (first and last id),
        call_key, what the call was about (topic, span, pair) and the answer's text."""

    async def __aenter__(self) -> OfflineOLP:
        self._session = aiohttp.ClientSession()
        gateway = ModelGateway(self.catalog, self._session, {})
        policy = PolicyView(pools={role: [self.model] for role in ROLES})

        async def collect(outcome: dict[str, Any]) -> None:
            self.outcomes.append(outcome)

        self._callers = {role: RoleCaller(role, gateway, policy, collect, self._rng) for role in ROLES}
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.close()

    # --- whole transcripts -------------------------------------------------------------------

    async def run(self, sentences: Sequence[Sentence], stream_id: str = "eval") -> OlpRun:
        """OLP: chunk by chunk with carry-over, as the Chunk Splitter does for a live stream."""
        started = time.monotonic()
        self.outcomes, self.failures = [], []
        state = SplitterState(stream_id, domain=self.domain, lang=self.lang)
        for i, sentence in enumerate(sentences):
            state = add_segment(state, sentence, end_of_stream=i == len(sentences) - 1)
        documents: dict[str, dict[str, Any]] = {}
        traces: list[ChunkTrace] = []
        while True:
            state, spec = next_chunk(state, self.chunk_size)
            if spec is None:
                break
            docs, trace = await self.process_chunk(spec)
            traces.append(trace)
            for doc in docs:  # newest version wins, per topic id
                held = documents.get(doc["topic_id"])
                if held is None or held["version"] <= doc["version"]:
                    documents[doc["topic_id"]] = doc
            state = apply_done(state, spec.seq, next_start_id(docs, spec.is_last))
        return self._result(list(documents.values()), traces, started, len(sentences))

    async def run_whole(self, sentences: Sequence[Sentence], stream_id: str = "eval-whole") -> OlpRun:
        """Non-OLP: the same roles on one chunk holding the whole (already cut) transcript."""
        started = time.monotonic()
        self.outcomes, self.failures = [], []
        whole = tuple(sentences)
        spec = ChunkSpec(stream_id, 0, "default", self.domain, self.lang, whole, len(whole), True)
        docs, trace = await self.process_chunk(spec)
        return self._result(docs, [trace], started, len(sentences))

    def _result(
        self, documents: list[dict[str, Any]], traces: list[ChunkTrace], started: float, seen: int
    ) -> OlpRun:
        merged, members = merge_documents_by_name(documents)
        topics = [TopicSpan(d["name"], d["first_id"], d["last_id"]) for d in merged]
        pieces = {
            d["name"]: [TopicSpan(p["name"], p["first_id"], p["last_id"]) for p in members[d["topic_id"]]]
            for d in merged
        }
        return OlpRun(
            topics=topics,
            members=pieces,
            documents=merged,
            outcomes=list(self.outcomes),
            chunks=traces,
            wall_s=time.monotonic() - started,
            sentences_seen=seen,
            failures=list(self.failures),
        )

    # --- one chunk: the agent shells' steps --------------------------------------------------

    async def process_chunk(self, spec: ChunkSpec) -> tuple[list[dict[str, Any]], ChunkTrace]:
        started = time.monotonic()
        chunk = spec.to_avro(int(time.time() * 1000))
        sentences = list(spec.sentences)
        ids = [s.id for s in sentences]
        found: list[str] = []
        located: list[TopicSpan] = []
        checked: list[TopicSpan] = []
        try:
            found = await self._ask(
                "topic_finder",
                topic_finder.build_prompt(sentences, self.domain, self.lang),
                lambda text: topic_finder.parse_answer(text, sentences, self.max_topics),
                chunk,
                "0",
                topic_finder.answer_schema(self.domain, self.max_topics),
                {"topics": []},
            )
        except RoleFailed as exc:
            self.failures.append(str(exc))
        for index, name in enumerate(found):  # the Topic Locator: one call per topic
            try:
                first, last = await self._ask(
                    "topic_locator",
                    topic_locator.build_prompt(sentences, name, found, self.domain, self.lang),
                    lambda text: topic_locator.parse_answer(text, ids),
                    chunk,
                    str(index),
                    topic_locator.answer_schema(ids),
                    {"topic": name, "topics": found},
                )
            except RoleFailed as exc:
                self.failures.append(str(exc))
                continue
            located.append(TopicSpan(name, first, last))
        if not located:  # nothing found or placed: the whole chunk is one topic, as the DLQ's release
            located = [TopicSpan(found[0] if found else "(unknown)", ids[0], ids[-1])]
        spans = sorted(located, key=lambda s: (s.first_id, s.last_id))
        verdicts: list[relationship_checker.RelationVerdict | None] = []
        for index, (a, b) in enumerate(relationship_checker.adjacent_pairs(spans)):
            if not self.relationship:
                verdicts.append(None)
                continue
            try:
                verdicts.append(
                    await self._ask(
                        "relationship_checker",
                        relationship_checker.build_prompt(sentences, a, b, self.domain, self.lang),
                        relationship_checker.parse_answer,
                        chunk,
                        str(index),
                        relationship_checker.answer_schema(),
                        {"a": [a.name, a.first_id, a.last_id], "b": [b.name, b.first_id, b.last_id]},
                    )
                )
            except RoleFailed as exc:
                self.failures.append(str(exc))
                verdicts.append(None)
        threshold = relationship_checker.iou_threshold(self.domain)
        merged = relationship_checker.merge_adjacent(spans, verdicts, threshold, ids)
        checked = relationship_checker.tile(relationship_checker.merge_same_names(merged), ids)
        last = len(checked) - 1
        drafts = [
            {
                "name": s.name,
                "first_id": s.first_id,
                "last_id": s.last_id,
                "final": spec.is_last or i < last,
                "aspects": {},
            }
            for i, s in enumerate(checked)
        ]
        if self.organize and self.aspects:
            for index, draft in enumerate(drafts):
                own = [s for s in sentences if draft["first_id"] <= s.id <= draft["last_id"]]
                results = []
                for number, part in enumerate(content_organizer.parts(own)):
                    part_ids = [s.id for s in part]
                    try:
                        results.append(
                            await self._ask(
                                "content_organizer",
                                content_organizer.build_prompt(
                                    sentences, part, draft["name"], self.aspects, self.domain, self.lang
                                ),
                                lambda text, ids=part_ids: content_organizer.parse_answer(
                                    text, ids, self.aspects
                                ),
                                chunk,
                                f"{index}" if number == 0 else f"{index}.{number}",
                                content_organizer.answer_schema(self.aspects, part_ids),
                                {"topic": draft["name"], "span": [part_ids[0], part_ids[-1]]},
                            )
                        )
                    except RoleFailed as exc:
                        self.failures.append(str(exc))
                if results:
                    draft["aspects"] = content_organizer.merge_parts(results, self.aspects)
        aspects = self.aspects or ("Other",)
        documents = []
        for draft in drafts:
            try:
                documents.append(
                    format_checker.check_document(
                        chunk,
                        draft,
                        aspects,
                        spec.seq,
                        int(time.time() * 1000),
                        carry_limit=carry_limit(self.chunk_size),
                    )
                )
            except ValidationError as exc:
                self.failures.append(f"format_checker: {exc}")
        trace = ChunkTrace(
            spec.seq, ids[0], ids[-1], len(ids), found, located, checked, time.monotonic() - started
        )
        if self.on_chunk is not None:
            self.on_chunk(trace)
        return documents, trace

    async def _ask(
        self,
        role: str,
        prompt: Any,
        parse: Callable[[str], Any],
        chunk: Mapping[str, Any],
        call_key: str,
        schema: Mapping[str, Any],
        about: Mapping[str, Any] | None = None,
    ) -> Any:
        ctx = CallContext(
            stream_id=str(chunk["stream_id"]),
            chunk_id=str(chunk["chunk_id"]),
            domain=self.domain,
            lang=self.lang,
            feed="eval",
            chunk_size=len(chunk["sentences"]),
            call_key=call_key,
        )

        def recorded(text: str) -> Any:
            ids = [int(s["id"]) for s in chunk["sentences"]]
            self.answers.append(
                {
                    "role": role,
                    "chunk_id": ctx.chunk_id,
                    "chunk": [ids[0], ids[-1]],
                    "call_key": call_key,
                    **(about or {}),
                    "text": text,
                }
            )
            return parse(text)

        answer = await self._callers[role].ask(prompt, recorded, ctx, schema)
        return answer.value


def prompt_tokens_estimate(sentences: Sequence[Sentence]) -> int:
    """A rough token count of a rendered transcript (about 3.5 characters per token)."""
    return len(render_transcript(sentences)) * 2 // 7
