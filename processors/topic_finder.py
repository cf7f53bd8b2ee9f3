"""Topic Finder: which products (e-commerce) or news topics a chunk talks about, in order.

Spec section 3, "Topic Finder". Reads `olp.chunks` (Chunk), writes `olp.found` (RoleResult with
topic names only). Pure logic: the prompt, the JSON schema for grammar-constrained answers, and
a defensive parser of the answer.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Sequence
from typing import Any

from olp.errors import ParseError
from processors.canaries import grade_with, send_due
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
    topic_draft,
)
from processors.gold import finder_score
from processors.role_agent import register_role
from processors.role_call import CallContext
from processors.worker import Record, WorkerContext

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
    "meeting": (
        "List the agenda items this meeting discusses: the subjects the speakers spend several "
        "turns on, not single remarks. Name each subject in two to six words, not a sentence."
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


def answer_schema(domain: str, max_topics: int = MAX_TOPICS) -> JsonSchema:
    """{"topics": [str, ...]}: 1 to `max_topics` names (the same shape for every domain)."""
    del domain  # One shape for all domains keeps the grammar small; the prompt differs.
    return {
        "type": "object",
        "properties": {
            "topics": {
                "type": "array",
                "items": {"type": "string", "minLength": 1, "maxLength": MAX_NAME_CHARS},
                "minItems": 1,
                "maxItems": max_topics,
            }
        },
        "required": ["topics"],
        "additionalProperties": False,
    }


def parse_answer(
    text: str | None, sentences: Sequence[Sentence] | None = None, max_topics: int = MAX_TOPICS
) -> list[str]:
    """Topic names from the answer: stripped, non-empty, de-duplicated, in order of appearance.

    Accepts {"topics": [...]}, any object whose only list value holds the names, a bare list,
    fenced JSON, chatter around the JSON, and names given as {"name": ...} objects. Names are
    cut to MAX_NAME_CHARS and the list to `max_topics` (the first ones); names without a letter
    (ids, numbers) are dropped. With the chunk's `sentences`, names that are sentences copied
    from the transcript (small models list lines instead of topics: the whole line, or a long
    piece of one) and bare sentence ids are dropped. Raises ParseError when nothing usable is
    left, so the shell re-asks with the complaint.
    """
    value = extract_json(text)
    items = _name_list(value)
    lines = _comparable_lines(sentences or ())
    names: list[str] = []
    seen: set[str] = set()
    copied = 0
    for item in items:
        name = _item_name(item)
        if name is None:
            continue
        name = normalize_name(name)[:MAX_NAME_CHARS].strip()
        key = name_key(name)
        if not name or key in seen or not _LETTER.search(name):  # "12", "1. 50203": ids, not names
            continue
        if lines and _is_copied(name, lines):
            copied += 1
            continue
        seen.add(key)
        names.append(name)
        if len(names) == max_topics:
            break
    if not names:
        if copied:
            raise ParseError(
                "the answer lists sentences of the transcript; give short names of what they are about"
            )
        raise ParseError("the answer names no topic")
    return names


_SENTENCE_END = re.compile(r"[.!?。！？…]['\"”’)\]]*\s*$")
COPY_SHARE = 0.85
"""A name that is this share of a transcript line (or more) is that line copied, not a name."""
COPY_MIN_WORDS = 8
"""A name of this many words found inside a transcript line is a piece of a sentence."""
_NOT_WORD = re.compile(r"[\W_]+", re.UNICODE)
_LETTER = re.compile(r"[^\W\d_]", re.UNICODE)


def _comparable(text: str) -> str:
    return _NOT_WORD.sub(" ", text.casefold()).strip()


def _comparable_lines(sentences: Iterable[Sentence]) -> list[str]:
    """Lines a name must not copy: spoken sentences. A line without closing punctuation is
    kept out, because it may be a headline (a news adapter sends an article's title as its first
    segment), and a headline is exactly the name a topic should get."""
    return [_comparable(s.text) for s in sentences if _SENTENCE_END.search(s.text)]


def _is_copied(name: str, lines: Sequence[str]) -> bool:
    """A transcript line given as a name: most of one line, a long piece of one, or an id.

    A short phrase taken from a line ("lightweight running shoes" from "These are our
    lightweight running shoes.") is a fine name and stays."""
    if re.fullmatch(r"\[?\s*\d+\s*\]?", name):
        return True
    key = _comparable(name)
    if not key:
        return True
    long_name = len(key.split()) >= COPY_MIN_WORDS
    return any(key in line and (long_name or len(key) >= COPY_SHARE * len(line)) for line in lines)


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


async def find_topics(worker: WorkerContext, chunk: Record) -> None:
    """Name the chunk's topics; then send the gold canaries due after it (processors/canaries.py)
    to this role's own input."""
    sentences = sentences_from_avro(chunk["sentences"])
    feed = worker.settings.feed(chunk["feed"])
    reference = worker.canaries.reference(chunk["stream_id"])
    answer = await worker.caller(ROLE).ask(
        build_prompt(sentences, chunk["domain"], chunk["lang"]),
        lambda text: parse_answer(text, sentences, feed.max_topics),
        CallContext.for_chunk(chunk),
        answer_schema(chunk["domain"], feed.max_topics),
        feed.models,
        grade=grade_with(reference, lambda gold, names: finder_score(names, gold)),
    )
    topics = [topic_draft(name) for name in answer.value]
    result = {"chunk": chunk, "stage": ROLE, "topics": topics, "trail": [f"{ROLE}={answer.model}"]}
    await worker.send(worker.topics.found, chunk["stream_id"], "RoleResult", result)

    async def send_canary(record: dict[str, Any]) -> None:
        await worker.send(worker.topics.chunks, record["stream_id"], "Chunk", record)

    await send_due(worker.canaries, chunk, int(time.time() * 1000), send_canary)


def register(worker: WorkerContext) -> None:
    register_role(worker, ROLE, worker.topics.chunks, "Chunk", find_topics, chunk_of=lambda chunk: chunk)
