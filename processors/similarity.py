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


FULL_MARGIN = 0.2
"""A cosine margin at which an encoder answer counts as sure (confidence 1): MiniLM-L6's cosines
of one topic's sentences to its name and to another's differ by 0.05-0.3."""


def margin_confidence(margin: float) -> float:
    """A cosine margin as a confidence in [0, 1]: 0 at no margin, 1 at FULL_MARGIN or more."""
    return float(np.clip(margin / FULL_MARGIN, 0.0, 1.0))


def span_margin(
    sentences: np.ndarray, names: np.ndarray, spans: Sequence[tuple[int, int]], ids: Sequence[int]
) -> float:
    """How much more each located span talks about its name than the rest of the chunk does:
    the mean over topics of the mean cosine to the name inside the span minus outside (the
    cosine inside when the span is the whole chunk)."""
    if len(sentences) == 0 or len(names) == 0:
        return 0.0
    fit = sentences @ names.T
    position = np.asarray(ids)
    gaps = []
    for topic, (first, last) in enumerate(spans):
        inside = (position >= first) & (position <= last)
        outside = float(fit[~inside, topic].mean()) if (~inside).any() else 0.0
        gaps.append(float(fit[inside, topic].mean()) - outside if inside.any() else 0.0)
    return float(np.mean(gaps))


def name_margin(name_a: np.ndarray, name_b: np.ndarray, threshold: float = SAME_NAME_THRESHOLD) -> float:
    """How far the two names' cosine lies from the same-topic threshold, either way."""
    return abs(float(name_a @ name_b) - threshold)


def aspect_margin(sentences: np.ndarray, examples: Mapping[str, np.ndarray]) -> float:
    """Mean over the sentences of the gap between their nearest and second-nearest aspect (each
    aspect's similarity being that of its nearest example); a single aspect is a sure answer."""
    if len(examples) < 2:
        return FULL_MARGIN
    if len(sentences) == 0:
        return 0.0
    best = np.stack([(sentences @ x.T).max(axis=1) for x in examples.values()], axis=1)
    top2 = np.sort(best, axis=1)[:, -2:]
    return float((top2[:, 1] - top2[:, 0]).mean())


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


# --- Topic Finder: cut a chunk into topics and name each with its own words ---------------------

TILING_WINDOW = 4
"""Sentences on each side of a gap whose mean vectors are compared (TextTiling's block size)."""
MIN_TOPIC_SENTENCES = 6
"""No topic is shorter: a reporter spends more than a few sentences on a story."""
DEPTH_THRESHOLD = 0.3
"""How far the similarity across a gap must dip below the peaks on both sides to cut there.
Measured with MiniLM-L6: the cut between two news stories 0.34; inside live-stream chatter
(OLP-MINI English) dips of 0.2-0.6 are common, so live streams ask for longer topics
(processors/encoder.py `TOPIC_CUTS`)."""
RECURRENCE_WEIGHT = 0.5
"""Weight of how much a phrase's words recur in its topic against its similarity to the topic."""
WORD_BONUS = 0.03
"""Score per word beyond the first: "human hair wig" over "wig" when they fit the topic alike
(a product's name is a few words)."""


def gap_similarity(sentences: np.ndarray, window: int = TILING_WINDOW) -> np.ndarray:
    """Cosine between the mean vectors of the `window` sentences before and after each gap
    (gap g lies before sentence g + 1)."""
    n = len(sentences)
    gaps = np.zeros(max(n - 1, 0), dtype=np.float32)
    for g in range(1, n):
        gaps[g - 1] = centroid_cosine(sentences[max(0, g - window) : g], sentences[g : g + window])
    return gaps


def depth_scores(gaps: np.ndarray) -> np.ndarray:
    """TextTiling's depth of each gap: how far its similarity lies below the highest point reached
    climbing to the left and to the right: a deep valley is a change of topic."""
    depths = np.zeros_like(gaps)
    for g, value in enumerate(gaps):
        left = right = value
        for v in gaps[g::-1]:
            if v < left:
                break
            left = v
        for v in gaps[g:]:
            if v < right:
                break
            right = v
        depths[g] = (left - value) + (right - value)
    return depths


def topic_starts(
    sentences: np.ndarray,
    threshold: float = DEPTH_THRESHOLD,
    min_len: int = MIN_TOPIC_SENTENCES,
    window: int = TILING_WINDOW,
) -> list[int]:
    """The position of each topic's first sentence: the deepest gaps first, each cut when it is
    at least `threshold` deep and leaves no topic shorter than `min_len` sentences."""
    depths = depth_scores(gap_similarity(sentences, window))
    cuts: list[int] = []
    for g in np.argsort(-depths, kind="stable"):
        if depths[g] < threshold:
            break
        start = int(g) + 1
        if all(abs(start - edge) >= min_len for edge in [0, *cuts, len(sentences)]):
            cuts.append(start)
    return [0, *sorted(cuts)]


def phrase_scores(
    segment: np.ndarray, phrases: np.ndarray, recurrence: Sequence[float], extra_words: Sequence[int]
) -> np.ndarray:
    """KeyBERT's score, the cosine of each phrase to the segment's mean vector, plus the weighted
    share of the segment that repeats the phrase's words and a bonus per word beyond the first."""
    centre = segment.mean(axis=0)
    centre = centre / max(float(np.linalg.norm(centre)), 1e-12)
    lexical = RECURRENCE_WEIGHT * np.asarray(recurrence, dtype=np.float32)
    scores: np.ndarray = phrases @ centre + lexical + WORD_BONUS * np.asarray(extra_words, dtype=np.float32)
    return scores


def naming_confidence(scores: Sequence[float]) -> float:
    """The names' mean score as a share of the best a one-word name can score (cosine 1 to its
    topic, said in every sentence), clipped to [0, 1]: a topic that repeats a phrase that sums it
    up is named surely, chatter named by its likeliest phrase is not."""
    if not scores:
        return 0.0
    return float(np.clip(np.mean(scores) / (1.0 + RECURRENCE_WEIGHT), 0.0, 1.0))


def distinct_names(
    vectors: np.ndarray, scores: Sequence[float], threshold: float = SAME_NAME_THRESHOLD
) -> list[int]:
    """Indices of the names to keep, in order: of names that name one topic (cosine at or above
    `threshold`, `same_topic`), the best scored one stands for all at the place the first of them
    came (a product talked about in two segments, or come back to, is named once)."""
    groups: list[list[int]] = []
    for i in range(len(vectors)):
        home = next(
            (g for g in groups if any(same_topic(vectors[i], vectors[j], threshold) for j in g)), None
        )
        if home is None:
            groups.append([i])
        else:
            home.append(i)
    return [max(g, key=lambda i: (scores[i], -i)) for g in groups]
