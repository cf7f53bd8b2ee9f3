"""The encoder model's roles against gold labels (spec section 5, "Encoder models").

    python bench/encoder_roles.py [--chunk-size 40] [--encoder minilm-l6-int8] [--files a.json,...]

On each labelled stream (default: the bundled sample and the news / Chinese canary sets,
processors/gold.py), cut into chunks of `--chunk-size` sentences as the Chunk Splitter does:
- Topic Locator, given the gold names of the topics in each chunk: span recall (share of the gold
  sentences inside the span located for their topic) and mean IoU;
- Relationship Checker: on adjacent gold topics (truth: different), the share the name rule judges
  right; beside it, how far apart the spans' centroids are from those of the two halves of one gold
  topic (the content rule the name rule replaced: `content gap` > 0 would separate them);
- Content Organizer, given the gold spans: aspect accuracy (share of sentences under their gold
  aspect), against 1/len(aspects) for a random guess;
- Topic Finder (no gold given): gold topics found by the names it picks, and the encoder chain
  finder -> locator scored as the demo scores documents (processors/gold.py `score_against_gold`:
  products found, span recall), with its mean confidence and milliseconds per chunk;
and the cost: milliseconds per sentence of embedding (cold cache, one thread) and tokens/s (the
cost rule of launcher/embedded.py `LocalEncoder`). Exits 0 with a message when the encoder is absent.
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from launcher.embedded import installed_encoders
from launcher.stack import local_encoder_spec
from processors import similarity
from processors.domain import span_iou
from processors.encoder import Embedder, EncoderPool, find_task, locate_task, written_examples
from processors.gold import LabelledStream, load_labelled, score_against_gold
from processors.topic_finder import MAX_TOPICS

DEFAULT_FILES = ("sample_livestream.gold.json", "canaries_news_en.json", "canaries_ecommerce_zh.json")


@dataclass
class Tally:
    recalled: int = 0
    sentences: int = 0
    iou: float = 0.0
    spans: int = 0
    related_right: int = 0
    pairs: int = 0
    aspects_right: int = 0
    labelled: int = 0
    embed_s: float = 0.0
    tokens: int = 0
    same: list[float] = field(default_factory=list)
    different: list[float] = field(default_factory=list)

    def content_gap(self) -> float:
        """Lowest centroid cosine of two halves of one topic minus the highest of two neighbours."""
        return min(self.same, default=1.0) - max(self.different, default=0.0)


def measure(stream: LabelledStream, embedder: Embedder, chunk_size: int, tally: Tally) -> None:
    sentences = list(stream.sentences)
    examples = similarity.aspect_examples(written_examples(), stream.domain, stream.lang, stream.aspects)
    for start in range(0, len(sentences), chunk_size):
        chunk = sentences[start : start + chunk_size]
        ids = [s.id for s in chunk]
        before, started = embedder.tokens, time.perf_counter()
        vectors = embedder.chunk(f"{id(stream)}:{start}", [s.text for s in chunk])
        tally.embed_s += time.perf_counter() - started
        tally.tokens += embedder.tokens - before
        topics = [t for t in stream.topics if t.first_id <= ids[-1] and t.last_id >= ids[0]]
        names = embedder.texts([t.name for t in topics])
        for topic, (first, last) in zip(topics, similarity.locate_spans(vectors, names, ids), strict=True):
            gold = [i for i in ids if topic.first_id <= i <= topic.last_id]
            tally.recalled += sum(first <= i <= last for i in gold)
            tally.sentences += len(gold)
            tally.iou += span_iou((first, last), (max(topic.first_id, ids[0]), min(topic.last_id, ids[-1])))
            tally.spans += 1
        positions = [[p for p, i in enumerate(ids) if t.first_id <= i <= t.last_id] for t in topics]
        for (a, b), (ta, tb) in zip(itertools.pairwise(positions), itertools.pairwise(topics), strict=True):
            name_a, name_b = embedder.texts([ta.name, tb.name])
            tally.related_right += not similarity.same_topic(name_a, name_b)
            tally.pairs += 1
            tally.different.append(similarity.centroid_cosine(vectors[a], vectors[b]))
        for own in positions:  # two halves of one topic
            if len(own) >= 4:
                half = len(own) // 2
                tally.same.append(similarity.centroid_cosine(vectors[own[:half]], vectors[own[half:]]))
        vectors_of = {a: embedder.texts(x) for a, x in examples.items()}
        for topic, own in zip(topics, positions, strict=True):
            labels = similarity.label_aspects(vectors[own], [ids[p] for p in own], vectors_of)
            truth = topic.aspect_of()
            for aspect, got in labels.items():
                tally.aspects_right += sum(truth.get(i) == aspect for i in got)
            tally.labelled += len(own)


def measure_finder(name: str, stream: LabelledStream, embedder: Embedder, chunk_size: int) -> dict[str, Any]:
    """The encoder finder on each chunk, its names located by the encoder locator: the documents'
    score against the gold labels, the names, the mean confidence and the finder's own seconds per
    chunk (the sentence vectors are embedded beforehand: the roles of a chunk share them)."""
    sentences = list(stream.sentences)
    documents: list[dict[str, Any]] = []
    names: list[str] = []
    confidences: list[float] = []
    finding_s = 0.0
    for start in range(0, len(sentences), chunk_size):
        chunk = sentences[start : start + chunk_size]
        texts, ids, key = [s.text for s in chunk], [s.id for s in chunk], f"finder:{name}:{start}"
        embedder.chunk(key, texts)
        started = time.perf_counter()
        found = find_task(key, texts, stream.domain, stream.lang, MAX_TOPICS)(embedder)
        finding_s += time.perf_counter() - started
        located = locate_task(key, texts, ids, found.value)(embedder).value
        documents += [
            {"name": n, "first_id": a, "last_id": b} for n, (a, b) in zip(found.value, located, strict=True)
        ]
        names += found.value
        confidences.append(found.confidence)
    chunks = max(len(confidences), 1)
    return {
        **score_against_gold(documents, stream),
        "names": names,
        "confidence": sum(confidences) / chunks,
        "s_per_chunk": finding_s / chunks,
    }


def print_finder(name: str, stream: LabelledStream, got: dict[str, Any]) -> None:
    print(
        f"{name:34} {stream.lang:4} {int(got['products_found']):3d}/{int(got['products']):<3d}"
        f" {got['span_recall']:11.2f} {got['confidence']:10.2f} {1000 * got['s_per_chunk']:8.0f}"
        f"  {' | '.join(got['names'])}"
    )


def load_embedder(name: str) -> Embedder | None:
    """The installed encoder `name`, loaded and sha256-checked; None (said) when not installed."""
    if name not in installed_encoders():
        print(f"encoder {name} is not installed (make install installs it): nothing measured")
        return None
    return EncoderPool().embedder(local_encoder_spec(name))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--chunk-size", type=int, default=40)
    parser.add_argument("--encoder", default="minilm-l6-int8")
    parser.add_argument("--files", default=",".join(DEFAULT_FILES))
    args = parser.parse_args(argv)
    started = time.perf_counter()
    embedder = load_embedder(args.encoder)
    if embedder is None:
        return 0
    print(f"encoder {args.encoder}: loaded and sha256-checked in {time.perf_counter() - started:.2f}s")
    print(
        f"{'stream':34} {'lang':4} {'sent':>5} {'span recall':>11} {'IoU':>5} {'names':>5}"
        f" {'content gap':>11} {'aspect acc':>10} {'random':>6} {'ms/sent':>7} {'tok/s':>6}"
    )
    for name in args.files.split(","):
        stream = load_labelled(name)
        tally = Tally()
        measure(stream, embedder, args.chunk_size, tally)
        n = len(stream.sentences)
        print(
            f"{name:34} {stream.lang:4} {n:5d} {tally.recalled / max(tally.sentences, 1):11.2f}"
            f" {tally.iou / max(tally.spans, 1):5.2f} {tally.related_right / max(tally.pairs, 1):5.2f}"
            f" {tally.content_gap():11.2f}"
            f" {tally.aspects_right / max(tally.labelled, 1):10.2f} {1 / len(stream.aspects):6.2f}"
            f" {1000 * tally.embed_s / n:7.1f} {tally.tokens / max(tally.embed_s, 1e-9):6.0f}"
        )
    print(
        "\nTopic Finder (encoder), chain finder -> locator\n"
        f"{'stream':34} {'lang':4} found {'span recall':>11}"
        f" {'confidence':>10} {'ms/chunk':>8}  names (ms: the finder's own, sentence vectors given)"
    )
    for name in args.files.split(","):
        stream = load_labelled(name)
        print_finder(name, stream, measure_finder(name, stream, embedder, args.chunk_size))
    return 0


if __name__ == "__main__":
    sys.exit(main())
