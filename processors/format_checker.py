"""Format Checker: validate and repair organised topics into TopicDocuments (no LLM).

Spec section 3, "Format Checker". Reads `olp.organized` (RoleResult), writes `olp.documents`
(TopicDocument, `schemas/topic_document.avsc`, key `<stream_id>/<topic_id>`) and `olp.progress`
(ChunkDone, `schemas/chunk_done.avsc`) back to the Chunk Splitter. Never passes malformed output
on: a topic is either repaired (each repair listed in the document's `repairs`) or rejected with
`olp.errors.ValidationError`.

Repairs, in the order they are checked:
- a reversed span is swapped; a span is clipped to the chunk and snapped to its sentence ids;
- aspect names match the configured ones ignoring case, spaces, '_' and '-'; unknown aspects
  are ignored (their ids count as unassigned);
- ids that are not sentences of the topic's span are dropped;
- an id assigned twice stays in the aspect where it came first (in the answer's order);
- sentences of the span that no aspect holds go to the **fallback aspect: the last configured
  aspect** ("Product Description" for e-commerce, "Facts" for news), the broadest of each set;
- a non-final topic whose carry-over would exceed the splitter's `carry_limit` is closed as
  final (see `chunk_splitter`, rule 4), so its document says so.
Rejected: no aspects configured, an empty topic name, a topic without a span, a span with no
sentence of the chunk. A gold canary chunk (processors/canaries.py) ends here: no document, no
progress.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

import faust

from olp.errors import ValidationError
from processors.chunk_splitter import carry_limit, chunk_done
from processors.domain import Sentence, aspect_key, name_key, normalize_name, sentences_from_avro
from processors.evidence import is_canary
from processors.role_agent import register_role
from processors.worker import Record, WorkerContext

_MAX_IDS_SHOWN = 10


def fallback_aspect(aspects: Sequence[str]) -> str:
    """Where unassigned sentences go: the last configured aspect."""
    if not aspects:
        raise ValidationError("no aspects configured")
    return aspects[-1]


def check_document(
    chunk: Mapping[str, Any],
    topic: Mapping[str, Any],
    aspects: Sequence[str],
    version: int,
    now_ms: int,
    *,
    carry_limit: int | None = None,
) -> dict[str, Any]:
    """One Avro TopicDocument from a chunk and one organised TopicDraft (module docstring)."""
    fallback = fallback_aspect(aspects)
    name = normalize_name(str(topic.get("name") or ""))
    if not name:
        raise ValidationError("topic has an empty name")
    sentences = sorted(sentences_from_avro(chunk["sentences"]), key=lambda s: s.id)
    span, repairs = _checked_span(name, topic, sentences)
    placed = _placed_by_aspect(topic.get("aspects") or {}, aspects, fallback, [s.id for s in span], repairs)
    final = bool(topic.get("final")) or bool(chunk.get("is_last"))
    if not final and carry_limit is not None:
        carried = sum(1 for s in sentences if s.id >= span[0].id)
        if carried > carry_limit:
            final = True
            repairs.append(f"closed as final: carry-over of {carried} sentences exceeds {carry_limit}")
    text = {s.id: s.text for s in span}
    return {
        "stream_id": chunk["stream_id"],
        "topic_id": str(span[0].id),
        "version": int(version),
        "name": name,
        "first_id": span[0].id,
        "last_id": span[-1].id,
        "final": final,
        "domain": chunk["domain"],
        "lang": chunk["lang"],
        "aspects": [
            {"name": a, "sentences": [{"id": sid, "text": text[sid]} for sid in sorted(placed[a])]}
            for a in aspects
        ],
        "repairs": repairs,
        "updated_ms": int(now_ms),
    }


def _checked_span(
    name: str, topic: Mapping[str, Any], sentences: Sequence[Sentence]
) -> tuple[list[Sentence], list[str]]:
    """The chunk's sentences in the topic's span (swapped, clipped, snapped), and the repairs."""
    if topic.get("first_id") is None or topic.get("last_id") is None:
        raise ValidationError(f"topic {name!r} has no span")
    repairs: list[str] = []
    first, last = int(topic["first_id"]), int(topic["last_id"])
    if first > last:
        first, last = last, first
        repairs.append(f"reversed span swapped to {first}-{last}")
    span = [s for s in sentences if first <= s.id <= last]
    if not span:
        raise ValidationError(f"topic {name!r}: span {first}-{last} holds no sentence of the chunk")
    if (span[0].id, span[-1].id) != (first, last):
        outside = first < sentences[0].id or last > sentences[-1].id
        how = "clipped to the chunk" if outside else "snapped to sentence ids"
        repairs.append(f"span {first}-{last} {how}: {span[0].id}-{span[-1].id}")
    return span, repairs


def _placed_by_aspect(
    given: Mapping[str, Sequence[int]],
    aspects: Sequence[str],
    fallback: str,
    span_ids: Sequence[int],
    repairs: list[str],
) -> dict[str, list[int]]:
    """Each span id under one configured aspect: the answer's where it is usable, else the
    fallback; what had to be repaired is appended to `repairs`."""
    by_key = {aspect_key(a): a for a in aspects}
    in_span = set(span_ids)
    placed: dict[str, list[int]] = {a: [] for a in aspects}
    where: dict[int, str] = {}
    unknown_aspects: list[str] = []
    dropped: list[int] = []
    duplicates: list[int] = []
    for raw_name, ids in given.items():
        aspect = by_key.get(aspect_key(str(raw_name)))
        if aspect is None:
            unknown_aspects.append(str(raw_name))
            continue
        for sid in ids:
            if sid not in in_span:
                dropped.append(sid)
            elif sid in where:
                duplicates.append(sid)
            else:
                where[sid] = aspect
                placed[aspect].append(sid)
    unassigned = [sid for sid in span_ids if sid not in where]
    placed[fallback].extend(unassigned)
    if unknown_aspects:
        repairs.append(f"ignored unknown aspects: {', '.join(repr(a) for a in unknown_aspects)}")
    if dropped:
        repairs.append(f"dropped ids not in the topic: {_ids_text(dropped)}")
    if duplicates:
        repairs.append(f"removed duplicate ids: {_ids_text(duplicates)}")
    if unassigned:
        repairs.append(f"placed unassigned ids into {fallback!r}: {_ids_text(unassigned)}")
    return placed


def merge_documents_by_name(
    documents: Sequence[Mapping[str, Any]],
) -> tuple[list[dict[str, Any]], dict[str, list[dict[str, Any]]]]:
    """The end-of-stream merge (spec section 3: "at the end, topics with identical names merge").

    `documents` are one stream's newest TopicDocument versions. Documents whose names are
    identical (case-insensitive, whitespace-normalized) become one, in order of first sentence:
    the first one's topic_id and spelling, the span from the first sentence to the last, each
    aspect's sentences united (sorted by id, each id once), final only when all were final, the
    highest version, and a repair line naming what was merged. Returns the merged documents in
    order of first sentence and, per merged topic_id, the documents that went into it.

    Runs on a whole stream's documents (the offline benchmark scores the paper's whole-stream
    output with it), not in the pipeline: the per-chunk rule of the same spec sentence is
    `relationship_checker.merge_same_names`, and a stream-wide merge cannot be published as
    TopicDocuments: nothing retracts the member documents, so readers would hold every member's
    sentences twice, and the merged span covers the topics between the members.
    """
    ordered = sorted(documents, key=lambda d: (int(d["first_id"]), int(d["last_id"])))
    groups: dict[str, list[dict[str, Any]]] = {}
    for doc in ordered:
        groups.setdefault(name_key(str(doc["name"])), []).append(dict(doc))
    merged: list[dict[str, Any]] = []
    members: dict[str, list[dict[str, Any]]] = {}
    for group in groups.values():
        head = group[0]
        members[str(head["topic_id"])] = group
        if len(group) == 1:
            merged.append(head)
            continue
        aspects: dict[str, dict[int, dict[str, Any]]] = {}
        for doc in group:
            for aspect in doc.get("aspects") or ():
                held = aspects.setdefault(str(aspect["name"]), {})
                for sentence in aspect["sentences"]:
                    held.setdefault(int(sentence["id"]), dict(sentence))
        repairs = [line for doc in group for line in doc.get("repairs") or ()]
        repairs.append(
            f"merged {len(group)} documents named {head['name']!r}: topic ids "
            + ", ".join(str(d["topic_id"]) for d in group)
        )
        merged.append(
            {
                **head,
                "first_id": min(int(d["first_id"]) for d in group),
                "last_id": max(int(d["last_id"]) for d in group),
                "final": all(bool(d.get("final")) for d in group),
                "version": max(int(d["version"]) for d in group),
                "aspects": [
                    {"name": name, "sentences": [held[i] for i in sorted(held)]}
                    for name, held in aspects.items()
                ],
                "repairs": repairs,
                "updated_ms": max(int(d.get("updated_ms") or 0) for d in group),
            }
        )
    merged.sort(key=lambda d: (int(d["first_id"]), int(d["last_id"])))
    return merged, members


def _ids_text(ids: Sequence[int]) -> str:
    unique = sorted(set(ids))
    shown = ", ".join(str(i) for i in unique[:_MAX_IDS_SHOWN])
    more = len(unique) - _MAX_IDS_SHOWN
    return f"[{shown}]" + (f" (+{more} more)" if more > 0 else "")


# --- agent shell (olp.organized -> olp.documents + olp.progress) -----------------------------

ROLE = "format_checker"


async def write_documents(worker: WorkerContext, organized: Record) -> None:
    chunk = organized["chunk"]
    if is_canary(chunk["stream_id"]):
        # A gold canary was scored role by role; its documents are no user's and no splitter
        # waits for its progress.
        worker.count("canary.done")
        return
    feed = worker.settings.feed(chunk["feed"])
    aspects, limit = feed.aspect_names(), carry_limit(feed.chunk_size)
    now_ms = int(time.time() * 1000)
    documents = []
    for topic in organized["topics"]:
        try:
            documents.append(
                check_document(chunk, topic, aspects, int(chunk["seq"]), now_ms, carry_limit=limit)
            )
        except ValidationError as exc:
            # One irreparable topic is dead-lettered; the chunk's other topics still go out.
            await worker.dead_letter(faust.current_event(), ROLE, exc)
    for document in documents:
        key = f"{document['stream_id']}/{document['topic_id']}"
        await worker.send(worker.topics.documents, key, "TopicDocument", document)
    # Documents first, then progress: the next chunk is cut only after these are written.
    await worker.send(worker.topics.progress, chunk["stream_id"], "ChunkDone", chunk_done(chunk, documents))


def register(worker: WorkerContext) -> None:
    register_role(worker, ROLE, worker.topics.organized, "RoleResult", write_documents)
