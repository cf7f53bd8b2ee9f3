"""Relationship Checker: merge adjacent topics that are one product / one story, then tile.

Spec section 3, "Relationship Checker". Reads `olp.located` (RoleResult with spans), writes
`olp.checked` (RoleResult with the final topic list of the chunk). The shell asks the LLM about
each pair of `adjacent_pairs(spans)` (an encoder model compares the two names,
processors/similarity.py `same_topic`), then applies the rules, in this order:

1. `merge_adjacent`: two adjacent topics stay apart only when the LLM says "not related" AND
   their spans' IoU is below the domain's threshold (`IOU_THRESHOLD`; IoU == threshold merges).
   A merged topic takes the LLM's merged name, else the first topic's name, and the union span.
2. `tile`: spans are stretched so they cover the chunk with no gap and no overlap.
3. `merge_same_names`: neighbouring topics with identical names merge.

IoU is measured over positions in the chunk's id list, because sentence ids are not contiguous.
"""

from __future__ import annotations

import asyncio
import bisect
import itertools
from collections.abc import Sequence
from dataclasses import dataclass

from olp.errors import ParseError
from processors.canaries import grade_with
from processors.domain import (
    NO,
    YES,
    JsonSchema,
    Prompt,
    Sentence,
    TopicSpan,
    as_bool,
    chat,
    extract_json,
    language_line,
    name_key,
    normalize_name,
    render_transcript,
    sentences_from_avro,
    span_from_draft,
    span_iou,
    topic_draft,
)
from processors.encoder import Confident, Embedder, relation_task
from processors.gold import checker_score
from processors.role_agent import register_role
from processors.role_call import CallContext, RoleFailed
from processors.worker import Record, WorkerContext

IOU_THRESHOLD: dict[str, float] = {"ecommerce": 0.5, "news": 0.3}
DEFAULT_IOU_THRESHOLD = 0.5
"""For custom domains: like e-commerce, merge only on a clear overlap."""

MAX_NAME_CHARS = 120

_QUESTIONS = {
    "ecommerce": "Are {a} and {b} the same product?",
    "news": "Are {a} and {b} the same news story, or parts of one bigger story?",
    "meeting": "Are {a} and {b} the same agenda item of the meeting?",
}
_DEFAULT_QUESTION = "Are {a} and {b} the same topic?"
_DIFFERENT = {
    # Small models lean to "true" for anything that shares a theme; say what "false" covers.
    "ecommerce": "Answer false when they are two different products, even of the same kind.",
    "news": "Answer false when they are separate stories, even in the same section.",
    "meeting": "Answer false when the speakers moved on to another subject.",
}
_DEFAULT_DIFFERENT = "Answer false when they are different subjects."


@dataclass(frozen=True, slots=True)
class RelationVerdict:
    """The LLM's answer for one adjacent pair; `merged_name` only when related."""

    related: bool
    merged_name: str | None = None


def iou_threshold(domain: str) -> float:
    return IOU_THRESHOLD.get(domain, DEFAULT_IOU_THRESHOLD)


def build_prompt(sentences: Sequence[Sentence], a: TopicSpan, b: TopicSpan, domain: str, lang: str) -> Prompt:
    """Ask whether two adjacent topics are one. The whole chunk is shown (the shared prefix that
    the model server caches across this chunk's calls), then the instructions, the same for every
    pair of the chunk, and last the question that names both spans."""
    question = _QUESTIONS.get(domain, _DEFAULT_QUESTION).format(a=_named_span(a), b=_named_span(b))
    task = "\n".join(
        [
            _DIFFERENT.get(domain, _DEFAULT_DIFFERENT),
            "If they are the same, name is one short name that fits both; if not, name is empty.",
            language_line(lang),
            'JSON: {"related": true or false, "name": ...}',
            question,
        ]
    )
    return chat(render_transcript(sentences), task)


def _named_span(span: TopicSpan) -> str:
    return f'"{span.name}" (sentences {span.first_id} to {span.last_id})'


def answer_schema() -> JsonSchema:
    """{"related": bool, "name": str} (name empty when not related)."""
    return {
        "type": "object",
        "properties": {
            "related": {"type": "boolean"},
            "name": {"type": "string", "maxLength": MAX_NAME_CHARS},
        },
        "required": ["related", "name"],
        "additionalProperties": False,
    }


_RELATED = (*YES, "same", "related", "相同")
_UNRELATED = (*NO, "different", "unrelated", "不同", "不是")


def parse_answer(text: str | None) -> RelationVerdict:
    """The verdict; `related` may also come as "yes"/"no"/"true"/"false" strings or as `same`.

    The name may be under `name`, `merged_name` or `merged`; empty or missing -> None.
    """
    value = extract_json(text)
    if not isinstance(value, dict):
        raise ParseError("the answer is not a JSON object")
    raw = next((value[k] for k in ("related", "same", "merge") if k in value), None)
    related = as_bool(raw, _RELATED, _UNRELATED)
    if related is None:
        raise ParseError(f"no yes/no verdict in the answer: {raw!r:.40}")
    if not related:
        return RelationVerdict(False)
    name = next((value[k] for k in ("name", "merged_name", "merged") if isinstance(value.get(k), str)), "")
    name = normalize_name(name)[:MAX_NAME_CHARS].strip()
    return RelationVerdict(True, name or None)


def adjacent_pairs(spans: Sequence[TopicSpan]) -> list[tuple[TopicSpan, TopicSpan]]:
    """Neighbouring topics in order of start (stable for equal starts): what to ask the LLM."""
    ordered = _by_start(spans)
    return list(itertools.pairwise(ordered))


def iou(a: TopicSpan, b: TopicSpan, chunk_ids: Sequence[int]) -> float:
    """Intersection over union of two spans, counted in sentences of the chunk (ids may skip)."""
    return span_iou(_positions(a, chunk_ids), _positions(b, chunk_ids))


def merge_adjacent(
    spans: Sequence[TopicSpan],
    verdicts: Sequence[RelationVerdict | None],
    threshold: float,
    chunk_ids: Sequence[int],
) -> list[TopicSpan]:
    """Apply rule 1 left to right; `verdicts[i]` is about `adjacent_pairs(spans)[i]`.

    A missing verdict (None: the LLM was not asked or failed) counts as "not related", so only
    the IoU rule decides. A chain A~B~C becomes one topic; each verdict and IoU is about the
    original pair, the name carries on from the left unless a verdict gives a merged name.
    """
    ordered = _by_start(spans)
    if len(verdicts) != max(0, len(ordered) - 1):
        raise ValueError(f"{len(verdicts)} verdicts for {len(ordered)} spans")
    if not ordered:
        return []
    merged = [ordered[0]]
    for (left, right), verdict in zip(adjacent_pairs(ordered), verdicts, strict=True):
        related = verdict is not None and verdict.related
        if not related and iou(left, right, chunk_ids) < threshold:
            merged.append(right)
            continue
        current = merged[-1]
        name = verdict.merged_name if verdict is not None and verdict.merged_name else current.name
        merged[-1] = TopicSpan(
            name, min(current.first_id, right.first_id), max(current.last_id, right.last_id)
        )
    return merged


def tile(spans: Sequence[TopicSpan], chunk_ids: Sequence[int]) -> list[TopicSpan]:
    """Stretch spans so that they cover the chunk exactly once, in order of start.

    Each topic runs from its start to the sentence before the next topic's start: a gap between
    two topics goes to the earlier one (talk after a product's last mention still belongs to it
    until the next one is introduced), and where two spans overlap the later topic's start wins.
    The first topic starts at the chunk's first id, the last ends at its last id. Spans outside
    the chunk are clamped to it. A span starting where an earlier one starts would be left
    empty; it is dropped and the earlier-listed name kept.
    """
    ids = sorted(set(chunk_ids))
    if not ids or not spans:
        return []
    starts: list[tuple[int, TopicSpan]] = []
    # Sorted by start position, then by input order, so a tie keeps the earlier-listed topic.
    for first, _, span in sorted((_positions(s, ids)[0], i, s) for i, s in enumerate(spans)):
        if starts and starts[-1][0] == first:
            continue
        starts.append((first, span))
    starts[0] = (0, starts[0][1])
    tiled = []
    for i, (first, span) in enumerate(starts):
        last = starts[i + 1][0] - 1 if i + 1 < len(starts) else len(ids) - 1
        tiled.append(TopicSpan(span.name, ids[first], ids[last]))
    return tiled


def merge_same_names(spans: Sequence[TopicSpan]) -> list[TopicSpan]:
    """Merge neighbouring topics (in order of start) whose names are identical
    (case-insensitive, whitespace-normalized); the first one's spelling is kept.

    Deviation from the paper: same-named topics with another topic between them stay apart,
    because their union would swallow the topic in between and put its sentences into two
    documents. After `tile`, same-named topics that touch are neighbours, so this merges them.
    """
    merged: list[TopicSpan] = []
    for span in _by_start(spans):
        if merged and name_key(merged[-1].name) == name_key(span.name):
            last = merged[-1]
            merged[-1] = TopicSpan(
                last.name, min(last.first_id, span.first_id), max(last.last_id, span.last_id)
            )
        else:
            merged.append(span)
    return merged


def _by_start(spans: Sequence[TopicSpan]) -> list[TopicSpan]:
    return sorted(spans, key=lambda s: (min(s.first_id, s.last_id), max(s.first_id, s.last_id)))


def _positions(span: TopicSpan, chunk_ids: Sequence[int]) -> tuple[int, int]:
    """Positions in the sorted chunk ids of the span's first and last sentence, clamped to the
    chunk; ids between two chunk ids count from the next sentence (first) / previous (last)."""
    ids = chunk_ids if _is_sorted(chunk_ids) else sorted(chunk_ids)
    if not ids:
        raise ValueError("empty chunk")
    low, high = min(span.first_id, span.last_id), max(span.first_id, span.last_id)
    first = min(bisect.bisect_left(ids, low), len(ids) - 1)
    last = max(bisect.bisect_right(ids, high) - 1, 0)
    return first, max(first, last)


def _is_sorted(ids: Sequence[int]) -> bool:
    return all(a < b for a, b in itertools.pairwise(ids))


# --- agent shell (olp.located -> olp.checked) ------------------------------------------------

ROLE = "relationship_checker"


async def check_relationships(worker: WorkerContext, located: Record) -> None:
    chunk = located["chunk"]
    sentences = sentences_from_avro(chunk["sentences"])
    ids = [s.id for s in sentences]
    spans = sorted((span_from_draft(t) for t in located["topics"]), key=lambda s: (s.first_id, s.last_id))
    caller = worker.caller(ROLE)
    models = worker.settings.feed(chunk["feed"]).models
    reference = worker.canaries.reference(chunk["stream_id"])
    used: set[str] = set()

    async def ask(index: int, a: TopicSpan, b: TopicSpan) -> RelationVerdict | None:
        related = relation_task(a.name, b.name)

        def encode(embedder: Embedder) -> Confident[RelationVerdict]:
            return related(embedder).map(RelationVerdict)

        try:
            answer = await caller.ask(
                build_prompt(sentences, a, b, chunk["domain"], chunk["lang"]),
                parse_answer,
                CallContext.for_chunk(chunk, f"{index}"),
                answer_schema(),
                models,
                grade=grade_with(reference, lambda gold, v: checker_score(v.related, [a.name, b.name], gold)),
                encode=encode,
            )
        except RoleFailed:
            return None  # no verdict: the IoU rule alone decides this pair
        used.add(answer.model)
        return answer.value

    verdicts = await asyncio.gather(*(ask(i, a, b) for i, (a, b) in enumerate(adjacent_pairs(spans))))
    merged = merge_adjacent(spans, verdicts, iou_threshold(chunk["domain"]), ids)
    tiled = tile(merge_same_names(merged), ids)
    topics = [
        topic_draft(s.name, s.first_id, s.last_id, final=chunk["is_last"] or i < len(tiled) - 1)
        for i, s in enumerate(tiled)
    ]
    trail = [*located["trail"], f"{ROLE}={'+'.join(sorted(used)) or 'rules'}"]
    result = {"chunk": chunk, "stage": ROLE, "topics": topics, "trail": trail}
    await worker.send(worker.topics.checked, chunk["stream_id"], "RoleResult", result)


def register(worker: WorkerContext) -> None:
    register_role(worker, ROLE, worker.topics.located, "RoleResult", check_relationships)
