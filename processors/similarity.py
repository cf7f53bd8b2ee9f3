"""The encoder's roles as pure functions over L2-normalised sentence vectors (numpy): a dot
product is the cosine. processors/encoder.py supplies the vectors; the role shells wrap these.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

SWITCH_PENALTY = 0.3
"""What changing topic between two neighbouring sentences costs, scaled by how alike the two
sentences are: a switch between near-identical sentences costs the whole penalty, a switch where
the talk changes (cosine near 0) almost nothing."""
SAME_NAME_THRESHOLD = 0.6
"""Cosine of two topic names at or above which they name one topic. Measured with MiniLM-L6:
names of different products 0.10-0.30 (Chinese 0.54), one product named twice ("Human hair wig" /
"Wig", "Running shoes" / "Sneakers", 保温杯 / 不锈钢保温杯) 0.63-0.83. The spans' content is no
signal: the centroids of neighbouring products (0.43-0.62) and of the two halves of one product
(0.39-0.64) overlap (bench/encoder_roles.py)."""


def segment(
    sentences: np.ndarray, names: np.ndarray, penalty: float = SWITCH_PENALTY, ordered: bool = False
) -> list[int]:
    """The topic index of each sentence: the labelling that maximises the sentences' similarity
    to their topic's name minus a switch penalty at each topic change (Viterbi), where a change
    between alike neighbours costs more (a boundary lies where neighbours differ). `ordered`:
    topics come in index order, each as one block (a topic may get none)."""
    n, k = len(sentences), len(names)
    if n == 0 or k == 0:
        return []
    fit = sentences @ names.T
    neighbours = np.einsum("ij,ij->i", sentences[1:], sentences[:-1])
    score = fit[0].copy()
    back = np.zeros((n, k), dtype=np.int64)
    for t in range(1, n):
        cost = penalty * max(float(neighbours[t - 1]), 0.0)
        if ordered:  # the best earlier-or-same topic to come from
            best = np.maximum.accumulate(score)
            came = np.array([int(np.argmax(score[: j + 1])) for j in range(k)])
            switch = best - cost
            back[t] = np.where(score >= switch, np.arange(k), came)
            score = np.maximum(score, switch) + fit[t]
            continue
        top = int(np.argmax(score))
        switch = np.full(k, score[top] - cost)
        back[t] = np.where(score >= switch, np.arange(k), top)
        score = np.maximum(score, switch) + fit[t]
    labels = [int(np.argmax(score))]
    for t in range(n - 1, 0, -1):
        labels.append(int(back[t, labels[-1]]))
    return labels[::-1]


def locate_spans(
    sentences: np.ndarray, names: np.ndarray, ids: Sequence[int], penalty: float = SWITCH_PENALTY
) -> list[tuple[int, int]]:
    """(first id, last id) of each named topic. The topics are put in the order of the mean
    position of their sentences in a free `segment`, then segmented again as one block each in
    that order, so spans never overlap; a topic left without sentences gets its single most
    similar sentence."""
    if len(sentences) == 0:
        return []
    free = segment(sentences, names, penalty)
    fit = sentences @ names.T

    def position(topic: int) -> float:
        mine = [i for i, label in enumerate(free) if label == topic]
        return float(np.mean(mine)) if mine else float(np.argmax(fit[:, topic]))

    order = sorted(range(len(names)), key=position)
    labels = segment(sentences, names[order], penalty, ordered=True)
    spans = []
    for topic in range(len(names)):
        mine = [i for i, label in enumerate(labels) if order[label] == topic]
        first, last = (mine[0], mine[-1]) if mine else (int(np.argmax(fit[:, topic])),) * 2
        spans.append((ids[first], ids[last]))
    return spans


def centroid_cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine of the two sets' mean vectors."""
    ca, cb = a.mean(axis=0), b.mean(axis=0)
    norm = float(np.linalg.norm(ca) * np.linalg.norm(cb))
    return float(ca @ cb) / norm if norm > 0 else 0.0


def same_topic(name_a: np.ndarray, name_b: np.ndarray, threshold: float = SAME_NAME_THRESHOLD) -> bool:
    """Do two (normalised) topic-name vectors name one topic?"""
    return float(name_a @ name_b) >= threshold


def label_aspects(
    sentences: np.ndarray, ids: Sequence[int], examples: Mapping[str, np.ndarray]
) -> dict[str, list[int]]:
    """Aspect -> ids: each sentence goes to the aspect of its most similar labelled example
    (nearest neighbour); every aspect is present, possibly empty."""
    aspects = list(examples)
    labelled: dict[str, list[int]] = {a: [] for a in aspects}
    if not aspects or len(sentences) == 0:
        return labelled
    best = np.stack([(sentences @ examples[a].T).max(axis=1) for a in aspects], axis=1)
    for sid, index in zip(ids, best.argmax(axis=1), strict=True):
        labelled[aspects[int(index)]].append(int(sid))
    return labelled


def aspect_examples(
    catalogue: Mapping[str, Mapping[str, Mapping[str, Sequence[str]]]],
    domain: str,
    lang: str,
    aspects: Sequence[str],
) -> dict[str, list[str]]:
    """The example sentences of each aspect for this domain and language (English when the
    language has none); an aspect without examples is represented by its own name."""
    by_lang = catalogue.get(domain, {})
    written = by_lang.get(lang) or by_lang.get("en") or {}
    keyed = {name.casefold(): list(texts) for name, texts in written.items()}
    return {a: keyed.get(a.casefold()) or [a] for a in aspects}
