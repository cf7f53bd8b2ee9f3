"""Topic Locator: the first and last sentence id of each topic in a chunk.

Spec section 3, "Topic Locator". Reads `olp.found` (RoleResult with names), writes `olp.located`
(RoleResult with spans). An encoder model places every named topic at once from sentence
similarity (processors/similarity.py). Two ways to ask an LLM: one call per topic (`build_prompt`,
concurrently), or all topics in one call (`build_batch_prompt`), which is cheaper; the shell uses
the batch when the feed sets `locator_batch` (for models good enough at it) and asks the topics
the batched answer leaves out one by one. Answers are checked against the chunk's ids:
an id missing from the chunk but inside its id range snaps to the nearest id (ties to the lower
id); an id outside the range is a ParseError; a reversed span is swapped.
"""

from __future__ import annotations

import asyncio
import bisect
import logging
from collections.abc import Mapping, Sequence
from typing import Any

from olp.errors import ParseError
from processors.canaries import grade_with
from processors.domain import (
    JsonSchema,
    Prompt,
    Sentence,
    TopicSpan,
    as_int,
    chat,
    extract_json,
    id_schema,
    name_key,
    render_transcript,
    sentences_from_avro,
    topic_draft,
)
from processors.encoder import Confident, Embedder, locate_task
from processors.evidence import call_outcome, evidence_outcome, is_canary, model_of
from processors.gold import LabelledStream, locator_score
from processors.role_agent import register_role
from processors.role_call import CallContext, RoleCaller, RoleFailed
from processors.worker import Record, WorkerContext

_FIRST_KEYS = ("first_id", "first", "start_id", "start", "begin")
_LAST_KEYS = ("last_id", "last", "end_id", "end", "stop")
_NAME_KEYS = ("topic", "name", "product", "title")


def build_prompt(
    sentences: Sequence[Sentence], topic: str, all_topics: Sequence[str], domain: str, lang: str
) -> Prompt:
    """Ask where one topic starts and ends, naming the chunk's other topics as boundaries.

    Everything but the last line is the same for every topic of the chunk, so the model server
    evaluates it once per chunk (`processors.domain.chat`); the topic asked about comes last.
    The locator writes no names, so no language line.
    """
    what = "product" if domain == "ecommerce" else "topic"
    lines = []
    if any(name_key(t) != name_key(topic) for t in all_topics):
        lines.append(f"The {what}s: " + "; ".join(f'"{t}"' for t in all_topics) + ".")
    lines += [
        f"Give the ids (the numbers in [ ]) of the first and the last sentence about the {what} "
        f"below: the first introduces it, the last is the last one before the talk moves on.",
        'JSON: {"first_id": <id>, "last_id": <id>}',
        f'The {what}: "{topic}"',
    ]
    return chat(render_transcript(sentences), "\n".join(lines))


def answer_schema(valid_ids: Sequence[int] | None = None) -> JsonSchema:
    """{"first_id": int, "last_id": int}; with `valid_ids` the grammar only allows those ids."""
    return {
        "type": "object",
        "properties": {"first_id": id_schema(valid_ids), "last_id": id_schema(valid_ids)},
        "required": ["first_id", "last_id"],
        "additionalProperties": False,
    }


def parse_answer(text: str | None, valid_ids: Sequence[int]) -> tuple[int, int]:
    """(first_id, last_id), both ids of the chunk, first <= last.

    Accepts {"first_id": a, "last_id": b} (also first/start/last/end keys, ids as digit strings),
    a bare [a, b] list, fenced JSON and chatter around it.
    """
    return _span_of(extract_json(text), _sorted_ids(valid_ids))


def build_batch_prompt(
    sentences: Sequence[Sentence], topics: Sequence[str], domain: str, lang: str
) -> Prompt:
    """Ask for the first and last sentence id of every topic in one call."""
    what = "product" if domain == "ecommerce" else "topic"
    example = ", ".join(f'{{"topic": "{t}", "first_id": <id>, "last_id": <id>}}' for t in topics[:2])
    task = "\n".join(
        [
            f"For each {what} below, give the ids (the numbers in [ ]) of the first and the last "
            f"sentence about it.",
            *(f'- "{t}"' for t in topics),
            f'JSON: {{"spans": [{example}]}}, one entry per {what}, in this order.',
        ]
    )
    return chat(render_transcript(sentences), task)


def batch_answer_schema(
    topics: Sequence[str] | None = None, valid_ids: Sequence[int] | None = None
) -> JsonSchema:
    """{"spans": [{"topic", "first_id", "last_id"}]}; with `topics`, names and length are fixed."""
    topic: JsonSchema = {"type": "string"}
    spans: JsonSchema = {"type": "array"}
    if topics:
        topic = {"type": "string", "enum": list(dict.fromkeys(topics))}
        spans["minItems"] = spans["maxItems"] = len(topics)
    spans["items"] = {
        "type": "object",
        "properties": {"topic": topic, "first_id": id_schema(valid_ids), "last_id": id_schema(valid_ids)},
        "required": ["topic", "first_id", "last_id"],
        "additionalProperties": False,
    }
    return {
        "type": "object",
        "properties": {"spans": spans},
        "required": ["spans"],
        "additionalProperties": False,
    }


def parse_batch_answer(text: str | None, topics: Sequence[str], valid_ids: Sequence[int]) -> list[TopicSpan]:
    """One TopicSpan per topic the answer locates, in the order of `topics`.

    Entries are matched to topics by name (case-insensitive); an entry without a known name takes
    the topic at its position. Accepts {"spans": [...]}, a bare list, or an object keyed by topic
    name ({"Wig": {"first_id": 1, "last_id": 9}} or {"Wig": [1, 9]}). Entries with bad ids and
    topics the answer leaves out are skipped (the Relationship Checker's tiling covers their
    sentences); ParseError when no topic could be located.
    """
    ids = _sorted_ids(valid_ids)
    by_key = {name_key(t): i for i, t in reversed(list(enumerate(topics)))}
    found: dict[int, tuple[int, int]] = {}
    for position, (name, raw) in enumerate(_entries(extract_json(text), by_key)):
        index = by_key.get(name_key(name)) if name is not None else None
        if index is None:  # no name, or a misspelt one: the entry's position decides
            index = position if position < len(topics) else None
        if index is None or index in found:
            continue
        try:
            found[index] = _span_of(raw, ids)
        except ParseError:
            continue
    if not found:
        raise ParseError("the answer locates none of the topics")
    return [TopicSpan(topics[i], *found[i]) for i in sorted(found)]


def _entries(value: Any, topic_keys: Mapping[str, int]) -> list[tuple[str | None, Any]]:
    """(topic name or None, span value) pairs from the accepted answer shapes."""
    if isinstance(value, dict):
        if any(name_key(str(k)) in topic_keys for k in value):  # keyed by topic name
            return [(str(k), v) for k, v in value.items()]
        lists = [v for v in value.values() if isinstance(v, list)]
        if len(lists) != 1:
            raise ParseError("the answer holds no list of spans")
        value = lists[0]
    if not isinstance(value, list):
        raise ParseError("the answer holds no list of spans")
    entries: list[tuple[str | None, Any]] = []
    for item in value:
        name = None
        if isinstance(item, dict):
            name = next((str(item[k]) for k in _NAME_KEYS if isinstance(item.get(k), str)), None)
        entries.append((name, item))
    return entries


def _span_of(raw: Any, ids: list[int]) -> tuple[int, int]:
    if isinstance(raw, dict):
        first = next((raw[k] for k in _FIRST_KEYS if k in raw), None)
        last = next((raw[k] for k in _LAST_KEYS if k in raw), None)
    elif isinstance(raw, list) and len(raw) == 2:
        first, last = raw
    else:
        raise ParseError(f"not a span: {raw!r:.80}")
    a, b = snap_id(as_int(first), ids), snap_id(as_int(last), ids)
    return (a, b) if a <= b else (b, a)


def snap_id(value: int | None, ids: Sequence[int]) -> int:
    """`value` if it is one of the sorted chunk `ids`; else the nearest id (ties to the lower)
    when it lies inside the chunk's id range; else ParseError."""
    if value is None:
        raise ParseError("sentence id missing or not an integer")
    if not ids or value < ids[0] or value > ids[-1]:
        raise ParseError(f"sentence id {value} is outside the chunk")
    at = bisect.bisect_left(ids, value)
    if ids[at] == value:
        return value
    lower, upper = ids[at - 1], ids[at]
    return lower if value - lower <= upper - value else upper


def _sorted_ids(valid_ids: Sequence[int]) -> list[int]:
    if not valid_ids:
        raise ParseError("the chunk has no sentences")
    return sorted(set(valid_ids))


# --- agent shell (olp.found -> olp.located) --------------------------------------------------

ROLE = "topic_locator"
log = logging.getLogger("olp.processors")
Located = tuple[str, tuple[int, int] | None, str | None]
"""(topic name, its span or None when nobody could place it, the model that answered)"""


async def locate_topics(worker: WorkerContext, found: Record) -> None:
    chunk = found["chunk"]
    ids = [s["id"] for s in chunk["sentences"]]
    names = [t["name"] for t in found["topics"]]
    feed = worker.settings.feed(chunk["feed"])
    reference = worker.canaries.reference(chunk["stream_id"])
    caller = worker.caller(ROLE)
    if feed.locator_batch and len(names) > 1:
        located = await _locate_together(caller, chunk, names, feed.models, reference)
    else:
        located = await _locate_each(caller, chunk, names, range(len(names)), feed.models, reference)
    await _count_against_finder(worker, found, located)
    topics = [topic_draft(name, *span) for name, span, _ in located if span is not None]
    models = sorted({m for _, _, m in located if m})
    if not topics and names and ids:
        # Dead-lettering the chunk would drop its sentences from the documents; one topic over the
        # whole chunk keeps them, and the failed calls already went to the learner as failures.
        log.warning(
            "%s: no topic of chunk %s could be located: %r spans the chunk", ROLE, chunk["chunk_id"], names[0]
        )
        topics = [topic_draft(names[0], ids[0], ids[-1])]
        models = ["fallback(whole chunk)"]
    if not topics:
        raise RoleFailed(f"{ROLE}: no topic of chunk {chunk['chunk_id']} could be located")
    trail = [*found["trail"], f"{ROLE}={'+'.join(models)}"]
    result = {"chunk": chunk, "stage": ROLE, "topics": topics, "trail": trail}
    await worker.send(worker.topics.located, chunk["stream_id"], "RoleResult", result)


def placed_share(located: Sequence[Located]) -> float | None:
    """Share of the named topics the locator could place; None when none was named."""
    if not located:
        return None
    return sum(1 for _, span, _ in located if span is not None) / len(located)


async def _count_against_finder(worker: WorkerContext, found: Record, located: Sequence[Located]) -> None:
    """Downstream evidence (processors/evidence.py): topics nobody could place count against the
    Topic Finder's call that named them, quality = 2 * placed share - 1 (sent only when some
    topic was left unplaced; canaries are scored exactly instead)."""
    chunk = found["chunk"]
    share = placed_share(located)
    finder = model_of(list(found["trail"]), "topic_finder")
    if share is None or share >= 1.0 or finder is None or is_canary(chunk["stream_id"]):
        return
    context = worker.policy.context_key(CallContext.for_chunk(chunk).learner_context())
    call = call_outcome(chunk, "topic_finder", finder, worker.policy.version("topic_finder", context))
    await worker.emit_feedback(evidence_outcome(call, "downstream", 2.0 * share - 1.0, "downstream"))


async def _locate_each(
    caller: RoleCaller,
    chunk: Record,
    names: Sequence[str],
    which: Sequence[int],
    models: Sequence[str] | None,
    reference: LabelledStream | None = None,
) -> list[Located]:
    """One call per topic `names[i]` for i in `which`; a topic nobody could place is left out
    (its sentences tile to the neighbouring topics)."""
    sentences = sentences_from_avro(chunk["sentences"])
    ids = [s.id for s in sentences]
    spans = locate_task(str(chunk["chunk_id"]), [s.text for s in sentences], ids, names)

    async def locate(index: int) -> Located:
        name = names[index]

        def encode(embedder: Embedder) -> Confident[tuple[int, int]]:
            return spans(embedder).map(lambda found: found[index])

        try:
            answer = await caller.ask(
                build_prompt(sentences, name, names, chunk["domain"], chunk["lang"]),
                lambda text: parse_answer(text, ids),
                CallContext.for_chunk(chunk, f"{index}"),
                answer_schema(ids),
                models,
                grade=grade_with(reference, lambda gold, span: locator_score([name], span, gold)),
                encode=encode,
            )
        except RoleFailed:
            return name, None, None
        return name, answer.value, answer.model

    return list(await asyncio.gather(*(locate(i) for i in which)))


async def _locate_together(
    caller: RoleCaller,
    chunk: Record,
    names: Sequence[str],
    models: Sequence[str] | None,
    reference: LabelledStream | None = None,
) -> list[Located]:
    """One call for every topic (feed setting `locator_batch`); the ones it misses, one by one."""
    sentences = sentences_from_avro(chunk["sentences"])
    ids = [s.id for s in sentences]
    spans_of = locate_task(str(chunk["chunk_id"]), [s.text for s in sentences], ids, names)

    def encode(embedder: Embedder) -> Confident[list[TopicSpan]]:
        return spans_of(embedder).map(
            lambda found: [TopicSpan(name, *span) for name, span in zip(names, found, strict=True)]
        )

    try:
        answer = await caller.ask(
            build_batch_prompt(sentences, names, chunk["domain"], chunk["lang"]),
            lambda text: parse_batch_answer(text, names, ids),
            CallContext.for_chunk(chunk, "batch"),
            batch_answer_schema(names, ids),
            models,
            grade=grade_with(reference, lambda gold, spans: locator_score(names, spans, gold)),
            encode=encode,
        )
        spans = {name_key(s.name): ((s.first_id, s.last_id), answer.model) for s in answer.value}
    except RoleFailed:
        spans = {}
    located: list[Located] = [(n, *spans.get(name_key(n), (None, None))) for n in names]
    missing = [i for i, (_, span, _) in enumerate(located) if span is None]
    again_located = await _locate_each(caller, chunk, names, missing, models, reference)
    for i, again in zip(missing, again_located, strict=True):
        located[i] = again
    return located


def register(worker: WorkerContext) -> None:
    register_role(worker, ROLE, worker.topics.found, "RoleResult", locate_topics)
