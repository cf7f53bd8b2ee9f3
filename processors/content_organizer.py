"""Content Organizer: every sentence of a topic into exactly one of the feed's aspects.

Spec section 3, "Content Organizer". Reads `olp.checked` (RoleResult with final spans), writes
`olp.organized` (RoleResult whose TopicDrafts carry `aspects`: aspect name -> sentence ids).
Aspect sets are configuration (`olp.settings.DEFAULT_ASPECTS`, `FeedSettings.aspect_names`);
the default sets get a one-line hint each, custom aspects are shown by name only. An encoder
model labels each sentence by its nearest labelled example (olp/data/aspect_examples.json). The parser
keeps what it can; the Format Checker places what is left unassigned.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from olp.errors import ParseError
from processors.canaries import grade_with
from processors.domain import (
    JsonSchema,
    Prompt,
    Sentence,
    as_int,
    aspect_key,
    chat,
    extract_json,
    language_name,
    render_transcript,
    sentences_from_avro,
)
from processors.encoder import aspect_task, written_examples
from processors.evidence import evidence_outcome, is_canary
from processors.gold import LabelledStream, organizer_score
from processors.role_agent import register_role
from processors.role_call import CallContext, RoleFailed
from processors.similarity import aspect_examples
from processors.worker import Record, WorkerContext

_HINTS = {
    aspect_key(name): hint
    for name, hint in {
        "Opening": "greetings, welcome, starting to present the product",
        "Order Urging": "pushing viewers to buy now: hurry, limited stock, add to cart, the link",
        "Price": "prices, discounts, coupons, deals",
        "Product Description": "what the product is like: features, material, size, how to use it",
        "Future Plans": "what someone plans or promises to do",
        "Assumptions": "guesses and what might happen",
        "Opinions": "what someone thinks, judges or feels",
        "Facts": "what happened: events, numbers, who, where, when",
    }.items()
}

_NAME_KEYS = ("aspect", "name", "category", "group")
_IDS_KEYS = ("ids", "sentence_ids", "sentences", "sentence_id", "id")


MAX_LABELS_PER_CALL = 24
"""Sentences labelled in one call; a longer topic is labelled in parts (`parts`), so an answer
stays well inside the output budget (an id key and a label take about 10 tokens)."""


def parts(sentences: Sequence[Sentence], size: int = MAX_LABELS_PER_CALL) -> list[list[Sentence]]:
    """A topic's sentences in consecutive parts of at most `size` (as equal as possible)."""
    if not sentences:
        return []
    count = -(-len(sentences) // size)
    step = -(-len(sentences) // count)
    return [list(sentences[i : i + step]) for i in range(0, len(sentences), step)]


def build_prompt(
    chunk_sentences: Sequence[Sentence],
    topic_sentences: Sequence[Sentence],
    topic_name: str,
    aspects: Sequence[str],
    domain: str,
    lang: str,
) -> Prompt:
    """Ask for the aspect of each sentence of (a part of) one topic, keyed by sentence id.

    Labels keyed by id, not id lists and not a bare list of labels: the schema fixes the keys, so
    the answer's length is bounded (asked for id lists, SmolLM2 repeats ids until max_tokens)
    and each label is written right after its sentence's id (asked for a bare list, even
    Qwen2.5-1.5B lost track and cycled through the aspect names). The whole chunk is shown first
    (the prefix the model server caches); the task names the topic and the ids to label.
    """
    what = "product" if domain == "ecommerce" else "topic"
    groups = [f"- {a}: {_HINTS[aspect_key(a)]}" if aspect_key(a) in _HINTS else f"- {a}" for a in aspects]
    first, last = topic_sentences[0].id, topic_sentences[-1].id
    task = "\n".join(
        [
            f'Sentences {first} to {last} are about the {what} "{topic_name}".',
            "Label each of these sentences with the one aspect that fits it best:",
            *groups,
            f"The transcript is in {language_name(lang)}.",
            'Answer with JSON: {"labels": {...}}, where each key is the id of one sentence from '
            f"{first} to {last} and its value is that sentence's aspect name.",
        ]
    )
    return chat(render_transcript(chunk_sentences), task)


def answer_schema(aspects: Sequence[str], sentence_ids: Sequence[int]) -> JsonSchema:
    """{"labels": {"<id>": aspect, ...}}: every id of the part, in order, each exactly once, each
    with one of the aspect names (a short enum; the ids are fixed keys, not an enum)."""
    keys = [str(i) for i in sentence_ids]
    return {
        "type": "object",
        "properties": {
            "labels": {
                "type": "object",
                "properties": {key: {"type": "string", "enum": list(aspects)} for key in keys},
                "required": keys,
                "additionalProperties": False,
            }
        },
        "required": ["labels"],
        "additionalProperties": False,
    }


def parse_answer(text: str | None, valid_ids: Sequence[int], aspects: Sequence[str]) -> dict[str, list[int]]:
    """Aspect -> sorted ids, with every configured aspect present (possibly empty).

    `valid_ids` are the ids of the sentences asked about, in order. Accepts, from the most to the
    least expected: labels keyed by id ({"labels": {"101": "Price"}} or bare {"101": "Price"});
    positional labels ({"labels": [...]} or a bare list of aspect names, matched by position);
    and the grouped form {aspect: [ids]}, also wrapped once ({"aspects": {...}}) or as a list of
    {"aspect": ..., "ids": [...]}. Aspect names match ignoring case, spaces, '_' and '-'; unknown
    aspects or labels leave their sentence unassigned (the Format Checker places it); ids not
    asked about are dropped; an id given twice stays where it came first. Raises ParseError on
    junk or when no valid id was assigned at all.
    """
    by_key = {aspect_key(a): a for a in aspects}
    valid = set(valid_ids)
    result: dict[str, list[int]] = {a: [] for a in aspects}
    taken: set[int] = set()

    def place(sid: int | None, name: Any) -> None:
        aspect = by_key.get(aspect_key(name)) if isinstance(name, str) else None
        if aspect is not None and sid is not None and sid in valid and sid not in taken:
            taken.add(sid)
            result[aspect].append(sid)

    answer = extract_json(text)
    keyed = _keyed_labels(answer)
    labels = _labels(answer) if keyed is None else None
    if keyed is not None:
        for raw_id, name in keyed:
            place(as_int(raw_id), name)
    elif labels is not None:
        for sid, label in zip(valid_ids, labels, strict=False):
            place(sid, label)
    else:
        for name, raw in _groups(answer, by_key):
            for item in _id_items(raw):
                place(as_int(item), name)
    if not taken:
        raise ParseError("the answer assigns no sentence of the topic")
    return {a: sorted(ids) for a, ids in result.items()}


def assigned_share(answer: Mapping[str, Sequence[int]], asked_ids: Sequence[int]) -> float:
    """Share of the sentences asked about that the answer files under an aspect; the rest the
    Format Checker must place under the fallback aspect."""
    if not asked_ids:
        return 1.0
    given = {sid for ids in answer.values() for sid in ids}
    return sum(1 for sid in asked_ids if sid in given) / len(asked_ids)


def merge_parts(
    results: Sequence[Mapping[str, Sequence[int]]], aspects: Sequence[str]
) -> dict[str, list[int]]:
    """The parsed answers of a topic's parts as one: aspect -> sorted ids."""
    merged: dict[str, list[int]] = {a: [] for a in aspects}
    for result in results:
        for aspect, ids in result.items():
            if aspect in merged:
                merged[aspect].extend(ids)
    return {a: sorted(set(ids)) for a, ids in merged.items()}


def _keyed_labels(value: Any) -> list[tuple[str, Any]] | None:
    """(id as written, label) pairs when the answer keys labels by sentence id; None otherwise."""
    if isinstance(value, dict) and isinstance(value.get("labels"), dict):
        value = value["labels"]
    if isinstance(value, dict) and value and all(as_int(k) is not None for k in value):
        return [(str(k), v) for k, v in value.items()]
    return None


def _labels(value: Any) -> list[str] | None:
    """The positional labels, when the answer has that shape; None otherwise."""
    if isinstance(value, dict) and isinstance(value.get("labels"), list):
        value = value["labels"]
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return [str(v) for v in value]
    return None


def _groups(value: Any, by_key: Mapping[str, str]) -> list[tuple[str, Any]]:
    """(aspect name as written, ids value) pairs from the accepted answer shapes."""
    if isinstance(value, dict):
        if any(aspect_key(str(k)) in by_key for k in value):
            return [(str(k), v) for k, v in value.items()]
        inner = [v for v in value.values() if isinstance(v, dict | list)]
        if len(inner) == 1:  # one wrapper level, e.g. {"aspects": {...}}
            return _groups(inner[0], by_key) if isinstance(inner[0], dict) else _listed(inner[0])
        raise ParseError("the answer names none of the aspects")
    if isinstance(value, list):
        return _listed(value)
    raise ParseError("the answer is not a JSON object")


def _listed(items: Iterable[Any]) -> list[tuple[str, Any]]:
    pairs = []
    for item in items:
        if not isinstance(item, dict):
            continue
        name = next((item[k] for k in _NAME_KEYS if isinstance(item.get(k), str)), None)
        ids = next((item[k] for k in _IDS_KEYS if k in item), None)
        if name is not None and ids is not None:
            pairs.append((str(name), ids))
    return pairs


def _id_items(raw: Any) -> list[Any]:
    """A list of ids, or a single id given bare."""
    if isinstance(raw, list):
        return raw
    return [raw] if isinstance(raw, int | str) else []


# --- agent shell (olp.checked -> olp.organized) ----------------------------------------------

ROLE = "content_organizer"


async def organize_topics(worker: WorkerContext, checked: Record) -> None:
    chunk = checked["chunk"]
    sentences = sentences_from_avro(chunk["sentences"])
    feed = worker.settings.feed(chunk["feed"])
    aspects = feed.aspect_names()
    caller = worker.caller(ROLE)
    reference = worker.canaries.reference(chunk["stream_id"])
    used: set[str] = set()
    texts = [s.text for s in sentences]
    position = {s.id: i for i, s in enumerate(sentences)}
    examples = aspect_examples(written_examples(), chunk["domain"], chunk["lang"], aspects)

    async def organize(index: int, topic: dict[str, Any]) -> dict[str, Any]:
        own = [s for s in sentences if topic["first_id"] <= s.id <= topic["last_id"]]
        results = []
        for number, part in enumerate(parts(own)):  # a long topic is labelled in parts
            part_ids = [s.id for s in part]

            def parse(text: str, ids: list[int] = part_ids) -> dict[str, list[int]]:
                return parse_answer(text, ids, aspects)

            def score(gold: LabelledStream, value: Any, ids: list[int] = part_ids) -> float:
                return organizer_score(value, ids, gold)

            try:
                answer = await caller.ask(
                    build_prompt(sentences, part, topic["name"], aspects, chunk["domain"], chunk["lang"]),
                    parse,
                    CallContext.for_chunk(chunk, f"{index}" if number == 0 else f"{index}.{number}"),
                    answer_schema(aspects, part_ids),
                    feed.models,
                    grade=grade_with(reference, score),
                    encode=aspect_task(
                        str(chunk["chunk_id"]), texts, [position[i] for i in part_ids], part_ids, examples
                    ),
                )
            except RoleFailed:
                continue  # unorganised: the Format Checker files these sentences under the fallback aspect
            await _count_repairs(worker, chunk, answer.value, part_ids, answer.outcome)
            used.add(answer.model)
            results.append(answer.value)
        return {**topic, "aspects": merge_parts(results, aspects)} if results else topic

    topics = await asyncio.gather(*(organize(i, t) for i, t in enumerate(checked["topics"])))
    trail = [*checked["trail"], f"{ROLE}={'+'.join(sorted(used)) or 'none'}"]
    result = {"chunk": chunk, "stage": ROLE, "topics": list(topics), "trail": trail}
    await worker.send(worker.topics.organized, chunk["stream_id"], "RoleResult", result)


async def _count_repairs(
    worker: WorkerContext,
    chunk: Record,
    value: Mapping[str, Sequence[int]],
    asked_ids: Sequence[int],
    call: Mapping[str, Any] | None,
) -> None:
    """Downstream evidence (processors/evidence.py): an answer that leaves sentences for the
    Format Checker to file counts against its call, quality = 2 * assigned share - 1 (an upper
    bound of the judge's similarity score; sent only when a repair is needed)."""
    share = assigned_share(value, asked_ids)
    if share >= 1.0 or call is None or is_canary(chunk["stream_id"]):
        return
    await worker.emit_feedback(evidence_outcome(call, "downstream", 2.0 * share - 1.0, "downstream"))


def register(worker: WorkerContext) -> None:
    register_role(worker, ROLE, worker.topics.checked, "RoleResult", organize_topics)
