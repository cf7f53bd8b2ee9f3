"""Topic Finder: which products (e-commerce) or news topics a chunk talks about, in order.

Spec section 3, "Topic Finder". Reads `olp.chunks` (Chunk), writes `olp.found` (RoleResult with
topic names only). Pure logic: the prompt, the JSON schema for grammar-constrained answers, and
a defensive parser of the answer.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import faust

from olp.errors import ParseError
from processors.domain import (
    JsonSchema,
    Prompt,
    Sentence,
    chat,
    extract_json,
    language_line,
    name_key,
    normalize_name,
    render_transcript,
    sentences_from_avro,
)

if TYPE_CHECKING:
    from processors.app import Pipeline

MAX_TOPICS = 20
"""More names than this in one chunk is a looping model; the rest are dropped."""
MAX_NAME_CHARS = 120

_TASKS = {
    "ecommerce": (
        "List the products the host is selling in this live-stream transcript, for example an "
        "item that gets a price. Name each product in two to five words, not a whole sentence."
    ),
    "news": (
        "List the news topics in this transcript. When several topics belong to one bigger "
        "story, give only the bigger story. Give each topic a short name."
    ),
}
_DEFAULT_TASK = "List the main topics of this transcript. Give each topic a short name."


def build_prompt(sentences: Sequence[Sentence], domain: str, lang: str) -> Prompt:
    """Ask for the chunk's topic names, in order of first appearance, as JSON."""
    task = "\n".join(
        [
            _TASKS.get(domain, _DEFAULT_TASK),
            "Keep the order in which they first appear. Name each one only once.",
            language_line(lang),
            # No example names: a small model copies them into its answer.
            'Answer with JSON: {"topics": [...]}, a list of short names.',
        ]
    )
    return chat(render_transcript(sentences), task)


def answer_schema(domain: str) -> JsonSchema:
    """{"topics": [str, ...]}: 1 to MAX_TOPICS names (the same shape for every domain)."""
    del domain  # One shape for all domains keeps the grammar small; the prompt differs.
    return {
        "type": "object",
        "properties": {
            "topics": {
                "type": "array",
                "items": {"type": "string", "minLength": 1, "maxLength": MAX_NAME_CHARS},
                "minItems": 1,
                "maxItems": MAX_TOPICS,
            }
        },
        "required": ["topics"],
        "additionalProperties": False,
    }


def parse_answer(text: str | None) -> list[str]:
    """Topic names from the answer: stripped, non-empty, de-duplicated, in order of appearance.

    Accepts {"topics": [...]}, any object whose only list value holds the names, a bare list,
    fenced JSON, chatter around the JSON, and names given as {"name": ...} objects. Names are
    cut to MAX_NAME_CHARS and the list to MAX_TOPICS. Raises ParseError when nothing usable is
    left.
    """
    value = extract_json(text)
    items = _name_list(value)
    names: list[str] = []
    seen: set[str] = set()
    for item in items:
        name = _item_name(item)
        if name is None:
            continue
        name = normalize_name(name)[:MAX_NAME_CHARS].strip()
        key = name_key(name)
        if not name or key in seen:
            continue
        seen.add(key)
        names.append(name)
        if len(names) == MAX_TOPICS:
            break
    if not names:
        raise ParseError("the answer names no topic")
    return names


def _name_list(value: Any) -> Iterable[Any]:
    if isinstance(value, list):
        return value
    if isinstance(value, dict):
        for key, item in value.items():
            if isinstance(key, str) and key.strip().lower() in ("topics", "products", "names", "items"):
                if isinstance(item, list):
                    return item
                raise ParseError(f"{key!r} is not a list")
        lists = [item for item in value.values() if isinstance(item, list)]
        if len(lists) == 1:
            return lists[0]
        if "name" in value:  # a single topic given as an object
            return [value]
    raise ParseError("the answer holds no list of topic names")


def _item_name(item: Any) -> str | None:
    if isinstance(item, str):
        return item
    if isinstance(item, dict):
        for key in ("name", "topic", "product", "title"):
            if isinstance(item.get(key), str):
                return str(item[key])
    return None  # numbers, nulls, nested lists: not names


# --- agent shell (olp.chunks -> olp.found) ---------------------------------------------------

ROLE = "topic_finder"


async def find_topics(pipeline: Pipeline, chunk: dict[str, Any]) -> None:
    sentences = sentences_from_avro(chunk["sentences"])
    answer = await pipeline.caller(ROLE).ask(
        build_prompt(sentences, chunk["domain"], chunk["lang"]),
        parse_answer,
        pipeline.call_context(chunk),
        answer_schema(chunk["domain"]),
        pipeline.feed(chunk).models,
    )
    topics = [
        {"name": name, "first_id": None, "last_id": None, "final": False, "aspects": {}}
        for name in answer.value
    ]
    result = {"chunk": chunk, "stage": ROLE, "topics": topics, "trail": [f"{ROLE}={answer.model}"]}
    await pipeline.send(pipeline.topics.found, chunk["stream_id"], "RoleResult", result)


def register(app: faust.App, pipeline: Pipeline) -> None:
    @app.agent(
        pipeline.source(pipeline.topics.chunks), name=ROLE, concurrency=pipeline.settings.worker_concurrency
    )
    async def topic_finder(stream: faust.StreamT[bytes]) -> None:
        async for event in stream.events():
            await pipeline.handle(event, ROLE, "Chunk", lambda chunk: find_topics(pipeline, chunk))
