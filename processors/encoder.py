"""Encoder models (spec section 5): a local sentence-embedding model that fills a role in
milliseconds per sentence, called by the role shells through `RoleCaller.ask(..., encode=...)`.

`SentenceEncoder` runs an ONNX export of a mean-pooled sentence-transformer (all-MiniLM-L6-v2)
on onnxruntime with its Hugging Face `tokenizer.json`; vectors are L2-normalised, so a dot
product is the cosine. `EncoderPool` loads each catalog encoder once per process and keeps the
vectors of the sentences of recent chunks (`ChunkVectors`, keyed by chunk id, bounded), so the
roles of one chunk embed its sentences once and share them. An `EncoderTask` is what a role asks
of an encoder: a function of an `Embedder` (the model with the caches) that returns the role's
parsed answer; the pure maths lives in processors/similarity.py.
"""

from __future__ import annotations

import functools
import hashlib
import json
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

import numpy as np

from olp.catalog import EncoderFiles, ModelSpec
from olp.errors import ConfigError, ModelCallError
from processors import keyphrases, similarity

T = TypeVar("T")
U = TypeVar("U")
Vectors = np.ndarray
"""Rows of L2-normalised float32 sentence embeddings."""

CHUNKS_KEPT = 32
"""Chunks whose sentence vectors are kept: the four roles of a chunk run within seconds of each
other, and a worker holds a few chunks in flight."""
TEXTS_KEPT = 4096
"""Short texts (topic names, aspect examples) whose vectors are kept."""


class SentenceEncoder:
    """One ONNX sentence-embedding model with its tokenizer (loaded on construction)."""

    def __init__(self, files: EncoderFiles) -> None:
        try:
            import onnxruntime as ort
            from tokenizers import Tokenizer
        except ImportError as exc:  # the `encoder` extra is not installed
            raise ConfigError(f"encoder models need onnxruntime and tokenizers: {exc}") from exc
        model = Path(files.model_file)
        if not model.is_file() or not Path(files.tokenizer_file).is_file():
            raise ConfigError(f"encoder files missing: {files.model_file}, {files.tokenizer_file}")
        if files.sha256 is not None and file_sha256(model) != files.sha256:
            raise ConfigError(f"{model}: sha256 differs from the catalog's {files.sha256}")
        options = ort.SessionOptions()
        options.intra_op_num_threads = files.threads
        options.inter_op_num_threads = 1
        self._session = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
        self._inputs = {i.name for i in self._session.get_inputs()}
        self._tokenizer = Tokenizer.from_file(files.tokenizer_file)
        self._tokenizer.enable_truncation(files.max_tokens)
        self._tokenizer.enable_padding()

    def embed(self, texts: Sequence[str]) -> tuple[Vectors, int]:
        """(one normalised vector per text, tokens embedded)."""
        if not texts:
            return np.zeros((0, 0), dtype=np.float32), 0
        encodings = self._tokenizer.encode_batch(list(texts))
        ids = np.array([e.ids for e in encodings], dtype=np.int64)
        mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
        feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
        hidden = np.asarray(self._session.run(None, {k: v for k, v in feeds.items() if k in self._inputs})[0])
        return mean_pool(hidden, mask), int(mask.sum())


def mean_pool(hidden: np.ndarray, mask: np.ndarray) -> Vectors:
    """The sentence-transformers pooling: mean of the token vectors under the mask, L2-normalised."""
    weights = mask[..., None].astype(np.float32)
    pooled = (hidden * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-9)
    norms = np.linalg.norm(pooled, axis=1, keepdims=True)
    vectors: Vectors = (pooled / np.maximum(norms, 1e-12)).astype(np.float32)
    return vectors


def file_sha256(path: Path) -> str:
    with path.open("rb") as file:
        return hashlib.file_digest(file, "sha256").hexdigest()


class _Lru(OrderedDict[Any, Any]):
    def __init__(self, size: int) -> None:
        super().__init__()
        self._size = size

    def put(self, key: Any, value: Any) -> None:
        self[key] = value
        self.move_to_end(key)
        while len(self) > self._size:
            self.popitem(last=False)


class Embedder:
    """One encoder with the vectors it already computed; thread-safe (tasks run in threads).
    `tokens` counts what was actually embedded (cached vectors cost nothing again)."""

    def __init__(self, encoder: SentenceEncoder) -> None:
        self._encoder = encoder
        self._chunks = _Lru(CHUNKS_KEPT)
        self._texts = _Lru(TEXTS_KEPT)
        self._lock = threading.Lock()
        self.tokens = 0

    def chunk(self, chunk_id: str, sentences: Sequence[str]) -> Vectors:
        """The vectors of a chunk's sentences, embedded once per chunk and shared between roles."""
        key = (chunk_id, len(sentences))
        with self._lock:
            held = self._chunks.get(key)
            if held is None:
                held, tokens = self._encoder.embed(sentences)
                self.tokens += tokens
            self._chunks.put(key, held)
            return held

    def texts(self, texts: Sequence[str]) -> Vectors:
        """Vectors of short texts (names, examples), each embedded once per process."""
        with self._lock:
            missing = list(dict.fromkeys(t for t in texts if t not in self._texts))
            if missing:
                vectors, tokens = self._encoder.embed(missing)
                self.tokens += tokens
                for text, vector in zip(missing, vectors, strict=True):
                    self._texts.put(text, vector)
            return np.stack([self._texts[t] for t in texts]) if texts else np.zeros((0, 0), np.float32)


@dataclass(frozen=True, slots=True)
class Confident(Generic[T]):
    """An encoder answer with how sure the encoder is of it, in [0, 1] (higher is surer): the
    feature the cheap-first switch escalates on (olp/call_plan.py `cascade_below`), recorded as
    the RoleOutcome's `confidence` like an LLM's token log-probabilities."""

    value: T
    confidence: float

    def map(self, convert: Callable[[T], U]) -> Confident[U]:
        """The converted answer, as sure as this one (a role shell reshaping a task's answer)."""
        return Confident(convert(self.value), self.confidence)


EncoderTask = Callable[[Embedder], T | Confident[T]]
"""What a role asks of an encoder: its parsed answer, or that answer with the encoder's
confidence, computed from the embedder."""
ConfidentTask = Callable[[Embedder], Confident[T]]
"""An encoder task that says how sure it is (every task of this module)."""


@dataclass(frozen=True, slots=True)
class Encoded:
    """An encoder's answer with what it cost (the encoder counterpart of a Completion)."""

    value: Any
    tokens: int
    latency_ms: float
    confidence: float | None = None
    """How sure the task was (`Confident`), None when it did not say."""


class EncoderPool:
    """The catalog's encoders, each loaded on first use and kept for the process."""

    def __init__(self, loader: Callable[[EncoderFiles], SentenceEncoder] = SentenceEncoder) -> None:
        self._loader = loader
        self._embedders: dict[str, Embedder] = {}
        self._lock = threading.Lock()

    def embedder(self, spec: ModelSpec) -> Embedder:
        if spec.encoder is None:
            raise ModelCallError(f"model {spec.name} is not an encoder")
        with self._lock:
            if spec.name not in self._embedders:
                try:
                    self._embedders[spec.name] = Embedder(self._loader(spec.encoder))
                except ConfigError as exc:
                    raise ModelCallError(f"encoder {spec.name}: {exc}") from exc
            return self._embedders[spec.name]

    def run(self, spec: ModelSpec, task: EncoderTask[T]) -> Encoded:
        """Run `task` on the encoder (blocking: call it in a thread); tokens counted by the
        tokenizer, latency measured, including any embedding the caches did not hold."""
        started = time.perf_counter()
        embedder = self.embedder(spec)
        before = embedder.tokens
        value = task(embedder)
        latency_ms = (time.perf_counter() - started) * 1000.0
        if isinstance(value, Confident):
            return Encoded(value.value, embedder.tokens - before, latency_ms, value.confidence)
        return Encoded(value, embedder.tokens - before, latency_ms)


# --- the roles' encoder tasks (pure maths in processors/similarity.py) ------------------------

ASPECT_EXAMPLES = Path(__file__).resolve().parent.parent / "olp" / "data" / "aspect_examples.json"


@functools.cache
def written_examples() -> dict[str, Any]:
    """Labelled example sentences per domain, language and aspect (olp/data/aspect_examples.json)."""
    data: dict[str, Any] = json.loads(ASPECT_EXAMPLES.read_text(encoding="utf-8"))
    return {k: v for k, v in data.items() if not k.startswith("_")}


def locate_task(
    chunk_id: str, texts: Sequence[str], ids: Sequence[int], names: Sequence[str]
) -> ConfidentTask[list[tuple[int, int]]]:
    """The span of every named topic (Topic Locator); sure when the spans talk about their names
    more than the rest of the chunk does."""

    def locate(e: Embedder) -> Confident[list[tuple[int, int]]]:
        vectors, name_vectors = e.chunk(chunk_id, texts), e.texts(names)
        spans = similarity.locate_spans(vectors, name_vectors, ids)
        margin = similarity.span_margin(vectors, name_vectors, spans, ids)
        return Confident(spans, similarity.margin_confidence(margin))

    return locate


def relation_task(name_a: str, name_b: str) -> ConfidentTask[bool]:
    """Whether two neighbouring topics' names name one topic (Relationship Checker); sure when
    their cosine lies far from the threshold."""

    def related(e: Embedder) -> Confident[bool]:
        a, b = e.texts([name_a, name_b])
        return Confident(
            similarity.same_topic(a, b), similarity.margin_confidence(similarity.name_margin(a, b))
        )

    return related


def aspect_task(
    chunk_id: str,
    texts: Sequence[str],
    positions: Sequence[int],
    ids: Sequence[int],
    examples: Mapping[str, Sequence[str]],
) -> ConfidentTask[dict[str, list[int]]]:
    """Aspect -> ids of the sentences at `positions` of the chunk (Content Organizer); sure when
    the sentences are much nearer their aspect than the runner-up."""

    def label(e: Embedder) -> Confident[dict[str, list[int]]]:
        vectors = e.chunk(chunk_id, texts)[list(positions)]
        every = e.texts([t for x in examples.values() for t in x])  # one batch for all aspects
        bounds = np.cumsum([0, *(len(x) for x in examples.values())])
        by_aspect = {a: every[bounds[i] : bounds[i + 1]] for i, a in enumerate(examples)}
        margin = similarity.aspect_margin(vectors, by_aspect)
        return Confident(
            similarity.label_aspects(vectors, ids, by_aspect), similarity.margin_confidence(margin)
        )

    return label


CANDIDATES_PER_TOPIC = 30
"""Candidate names embedded per topic segment (the most recurring ones): bounds the cost."""
TOPIC_CUTS = {"ecommerce": (0.4, 7)}
"""Per domain, (depth threshold, shortest topic) of `similarity.topic_starts`: a host sells a
product for dozens of sentences of chatter that dips often, a news story is a few sentences
(chosen on OLP-MINI English live streams and the news canaries)."""


def find_task(
    chunk_id: str, texts: Sequence[str], domain: str, lang: str, max_topics: int
) -> ConfidentTask[list[str]]:
    """The chunk's topic names in order (Topic Finder): cut where the talk changes
    (`similarity.topic_starts`), name each segment with the phrase of its own that best matches
    it (processors/keyphrases.py) unless it still talks about the segment before it (a host
    moving from a product's description to its price dips too: `keyphrases.continues`), and
    name a topic met twice once (`similarity.naming_confidence`
    says how surely). A chunk without a candidate phrase is a failed call, so the role fails
    over to a model that can name things."""

    def find(e: Embedder) -> Confident[list[str]]:
        vectors = e.chunk(chunk_id, texts)
        threshold, shortest = TOPIC_CUTS.get(
            domain, (similarity.DEPTH_THRESHOLD, similarity.MIN_TOPIC_SENTENCES)
        )
        starts = similarity.topic_starts(vectors, threshold, shortest)
        names: list[str] = []
        scores: list[float] = []
        for start, end in zip(starts, [*starts[1:], len(texts)], strict=True):
            segment = texts[start:end]
            said = keyphrases.unit_sentences(segment, lang)  # counted once per segment
            if names and keyphrases.continues(names[-1], segment, lang, said):
                continue
            named = name_segment(e, vectors[start:end], segment, lang, said)
            if named is not None:
                names.append(named[0])
                scores.append(named[1])
        if not names:
            raise ModelCallError("no candidate name in the chunk")
        keep = similarity.distinct_names(e.texts(names), scores)[:max_topics]
        confidence = similarity.naming_confidence([scores[i] for i in keep])
        return Confident([names[i][:1].upper() + names[i][1:] for i in keep], confidence)

    return find


def name_segment(
    e: Embedder, vectors: Vectors, texts: Sequence[str], lang: str, said: Counter[str] | None = None
) -> tuple[str, float] | None:
    """The best-scored candidate phrase of one segment with its score; None without candidates.
    `said`: the segment's `keyphrases.unit_sentences`, when the caller has them already."""
    counts = keyphrases.candidate_phrases(texts, lang)
    said = keyphrases.unit_sentences(texts, lang) if said is None else said
    phrases = keyphrases.shortlist(counts, texts, lang, CANDIDATES_PER_TOPIC, said)
    if not phrases:
        return None
    recurrence = keyphrases.recurrence(phrases, texts, lang, said)
    extra = [max(len(keyphrases.phrase_units(p, lang)) - 1, 0) for p in phrases]
    scores = similarity.phrase_scores(vectors, e.texts(phrases), recurrence, extra)
    best = int(np.argmax(scores))
    return phrases[best], float(scores[best])
