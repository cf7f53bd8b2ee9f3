"""Labelled streams: transcripts with their gold answers, and scores against them (spec section 4,
"Quality is measured, never assumed").

A labelled stream is a JSON file (olp/data/sample_livestream.gold.json, canaries_news_en.json,
canaries_ecommerce_zh.json):

    {"domain": "ecommerce", "lang": "en", "aspects": [...],          # aspects: default by domain
     "transcript": "sample_livestream.jsonl" | "sentences": [[id, text], ...],
     "topics": [{"name": ..., "keywords": [...], "first_id": ..., "last_id": ...,
                 "aspects": {aspect: [sentence ids]}}]}

The topics tile the stream and every sentence is under exactly one aspect of its topic. A topic
name given by a model names a gold topic when it contains one of the topic's keywords (or is its
name): topic names are free text, so equality of names would fail every good answer.

Pure: loading (`load_labelled`), cutting into canary chunks (`canary_chunks`), the role scores
the canaries use (`finder_score`, `locator_score`, `organizer_score`, `checker_score`; k in
[-1, 1] with the judge's IoU and similarity rules) and the whole-stream yardstick
`score_against_gold` the demo and the benchmarks report.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import olp
from olp.errors import ConfigError
from olp.settings import DEFAULT_ASPECTS
from processors.domain import Sentence, TopicSpan, name_key, span_iou
from processors.judge import aspect_similarity


@dataclass(frozen=True, slots=True)
class GoldTopic:
    name: str
    keywords: tuple[str, ...]
    first_id: int
    last_id: int
    aspects: Mapping[str, tuple[int, ...]]

    def named_by(self, name: str) -> bool:
        """Does a model's topic `name` name this topic?"""
        folded = name.casefold()
        return name_key(name) == name_key(self.name) or any(k.casefold() in folded for k in self.keywords)

    def aspect_of(self) -> dict[int, str]:
        return {sid: aspect for aspect, ids in self.aspects.items() for sid in ids}


@dataclass(frozen=True, slots=True)
class LabelledStream:
    domain: str
    lang: str
    aspects: tuple[str, ...]
    sentences: tuple[Sentence, ...]
    topics: tuple[GoldTopic, ...]

    def topic_named(self, name: str) -> GoldTopic | None:
        """The first gold topic `name` names."""
        return next((t for t in self.topics if t.named_by(name)), None)


BUNDLED = Path(olp.__file__).parent / "data"
"""Where the project's labelled streams live: a bare file name not found as given names one."""


def load_labelled(path: Path) -> LabelledStream:
    """Read a labelled stream (module docstring); ConfigError on a file that breaks its rules."""
    path = Path(path)
    if not path.exists() and path.parent == Path() and (BUNDLED / path).exists():
        path = BUNDLED / path
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        if "transcript" in raw:
            lines = (path.parent / raw["transcript"]).read_text(encoding="utf-8").splitlines()
            rows = [json.loads(line) for line in lines if line.strip()]
            sentences = tuple(Sentence(int(r["segment_id"]), str(r["text"])) for r in rows)
        else:
            sentences = tuple(Sentence(int(i), str(text)) for i, text in raw["sentences"])
        domain = str(raw.get("domain", "ecommerce"))
        aspects = tuple(raw.get("aspects") or DEFAULT_ASPECTS[domain])
        topics = tuple(
            GoldTopic(
                str(t["name"]),
                tuple(str(k) for k in t.get("keywords", ())),
                int(t["first_id"]),
                int(t["last_id"]),
                {str(a): tuple(int(i) for i in ids) for a, ids in t["aspects"].items()},
            )
            for t in raw["topics"]
        )
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"cannot read labelled stream {path}: {exc}") from exc
    stream = LabelledStream(domain, str(raw.get("lang", "en")), aspects, sentences, topics)
    problems = label_problems(stream)
    if problems:
        raise ConfigError(f"labelled stream {path}: {'; '.join(problems[:5])}")
    return stream


def label_problems(stream: LabelledStream) -> list[str]:
    """What breaks the rules: a sentence under no aspect or under two, an id outside its topic's
    span or not in the stream, an aspect not configured."""
    ids = [s.id for s in stream.sentences]
    seen: dict[int, str] = {}
    problems = []
    for topic in stream.topics:
        for aspect, labelled in topic.aspects.items():
            if aspect not in stream.aspects:
                problems.append(f"{topic.name}: unknown aspect {aspect!r}")
            for sid in labelled:
                if not topic.first_id <= sid <= topic.last_id:
                    problems.append(f"{topic.name}: id {sid} outside {topic.first_id}-{topic.last_id}")
                if sid in seen:
                    problems.append(f"id {sid} labelled twice ({seen[sid]}, {topic.name})")
                seen[sid] = topic.name
    missing = [i for i in ids if i not in seen]
    extra = sorted(set(seen) - set(ids))
    if missing:
        problems.append(f"ids without a label: {missing[:10]}")
    if extra:
        problems.append(f"labelled ids not in the stream: {extra[:10]}")
    return problems


def window(stream: LabelledStream, sentences: Sequence[Sentence]) -> LabelledStream:
    """The labels of a window of the stream: its topics clipped to the window's sentences."""
    ids = {s.id for s in sentences}
    topics = []
    for topic in stream.topics:
        inside = [i for i in sorted(ids) if topic.first_id <= i <= topic.last_id]
        if inside:
            aspects = {a: tuple(i for i in labelled if i in ids) for a, labelled in topic.aspects.items()}
            topics.append(replace(topic, first_id=inside[0], last_id=inside[-1], aspects=aspects))
    return replace(stream, sentences=tuple(sentences), topics=tuple(topics))


def canary_chunks(stream: LabelledStream, size: int) -> list[LabelledStream]:
    """One canary chunk per gold topic: `size` sentences from the topic's first, as the Chunk
    Splitter starts a chunk at the start of the topic it carries over."""
    position = {s.id: n for n, s in enumerate(stream.sentences)}
    chunks = []
    for topic in stream.topics:
        start = next(position[s.id] for s in stream.sentences if s.id >= topic.first_id)
        chunks.append(window(stream, stream.sentences[start : start + size]))
    return chunks


# --- role scores against a labelled chunk (k in [-1, 1]; None: the answer cannot be scored) ---


def finder_score(names: Sequence[str], gold: LabelledStream) -> float:
    """2*F1 - 1 between the topics named and the chunk's gold topics (a name counts for the gold
    topic it names; a name naming none, or one named already, lowers precision)."""
    named: set[str] = set()
    hits = 0
    for name in names:
        topic = gold.topic_named(name)
        if topic is not None and topic.name not in named:
            named.add(topic.name)
            hits += 1
    if not names or not gold.topics:
        return 1.0 if not names and not gold.topics else -1.0
    precision, recall = hits / len(names), hits / len(gold.topics)
    f1 = 0.0 if hits == 0 else 2 * precision * recall / (precision + recall)
    return 2.0 * f1 - 1.0


def locator_score(asked: Sequence[str], answer: Any, gold: LabelledStream) -> float | None:
    """2*IoU - 1 of the span(s) located for the topic name(s) asked (mean over the names that name
    a gold topic); None when no name asked names one (a made-up topic has no true span)."""
    spans = answer if isinstance(answer, list) else [TopicSpan(asked[0], *answer)] if asked else []
    scores = []
    for span in spans:
        topic = gold.topic_named(span.name) if isinstance(span, TopicSpan) else None
        if topic is not None:
            scores.append(span_iou((span.first_id, span.last_id), (topic.first_id, topic.last_id)))
    return None if not scores else 2.0 * sum(scores) / len(scores) - 1.0


def organizer_score(
    answer: Mapping[str, Sequence[int]], asked_ids: Sequence[int], gold: LabelledStream
) -> float:
    """2*similarity - 1 over the sentences asked (the judge's similarity; a sentence left out of
    the answer counts as filed wrongly)."""
    truth = {sid: aspect for topic in gold.topics for sid, aspect in topic.aspect_of().items()}
    asked = set(asked_ids)
    reference: dict[str, list[int]] = {}
    for sid in sorted(asked):
        if sid in truth:
            reference.setdefault(truth[sid], []).append(sid)
    given = {a: [i for i in ids if i in asked] for a, ids in answer.items()}
    return 2.0 * aspect_similarity(given, reference) - 1.0


def checker_score(related: bool, names: Sequence[str], gold: LabelledStream) -> float | None:
    """+1 when "related" matches whether the two names name the same gold topic, else -1; None
    when either names no gold topic."""
    topics = [gold.topic_named(n) for n in names]
    if len(topics) != 2 or topics[0] is None or topics[1] is None:
        return None
    return 1.0 if related == (topics[0].name == topics[1].name) else -1.0


# --- the yardstick: a stream's documents against its gold labels ------------------------------


def score_against_gold(documents: Sequence[Mapping[str, Any]], gold: LabelledStream) -> dict[str, float]:
    """How a stream's TopicDocuments (newest versions) match its gold labels.

    - products_found: gold topics named by at least one document (of `products` in all);
    - span_recall: share of the gold sentences that lie inside a document naming their topic;
    - aspect_accuracy: share of the gold sentences the documents file under their gold aspect
      (a sentence in no document, or in several that disagree, is wrong unless the first is right).
    """
    named: dict[str, list[tuple[int, int]]] = {}
    filed: dict[int, str] = {}
    for doc in sorted(documents, key=lambda d: (int(d["first_id"]), int(d["last_id"]))):
        topic = gold.topic_named(str(doc["name"]))
        if topic is not None:
            named.setdefault(topic.name, []).append((int(doc["first_id"]), int(doc["last_id"])))
        for aspect in doc.get("aspects") or ():
            for sentence in aspect.get("sentences") or ():
                filed.setdefault(int(sentence["id"]), str(aspect["name"]))
    total = recalled = right = 0
    for topic in gold.topics:
        for sid, aspect in topic.aspect_of().items():
            total += 1
            recalled += any(a <= sid <= b for a, b in named.get(topic.name, ()))
            right += filed.get(sid) == aspect
    return {
        "products": float(len(gold.topics)),
        "products_found": float(len(named)),
        "span_recall": recalled / total if total else 0.0,
        "aspect_accuracy": right / total if total else 0.0,
    }
