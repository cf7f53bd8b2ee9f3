"""Prompt tokens of the LLM role calls for the sample stream, and how many a llama.cpp server
really evaluates (issue: prompt evaluation is the cost of small local models on 2 cores).

    python bench/prompt_tokens.py [--file sample_livestream.gold.json] [--chunk-size 40]
    python bench/prompt_tokens.py --live [--cache-mb 0|N] [--interleave]

The stream is cut into chunks by the Chunk Splitter's own rules (processors/chunk_splitter.py),
each chunk carrying over its unfinished last gold topic as the pipeline does. For every chunk the
calls are built in pipeline order with the gold topics standing in for the models' answers: the
Topic Finder, the Topic Locator (one call per topic, or one batched call when the feed sets
`locator_batch`), the Relationship Checker (one call per adjacent pair) and the Content Organizer
(one call per topic part). Each prompt is rendered with the model's own chat template and counted
with the SmolLM2 tokenizer (`vocab_only`, no weights loaded). `shared` is the token prefix a call
has in common with the call before it: what llama.cpp reuses from its KV cache without evaluating.

`--live` starts a SmolLM2 server (launcher/embedded.py, verbose so that it logs what it
evaluates), sends the calls in that order with `max_tokens` 1 and prints, per role, the prompt
tokens the server reports (`usage.prompt_tokens`), the tokens it actually evaluated (from its
`prompt eval time = ... / N tokens` log line) and the seconds per call. `--cache-mb N` turns on
the server's prompt cache (`cache: true`, RAM); `--interleave` puts a foreign call (the Topic
Finder prompt of the next canary chunk) between the role stages of each chunk, as canaries and other streams
do in the running pipeline, which is when only that cache can find the chunk's prefix again.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
import time
import urllib.request
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from launcher.demo_report import memory_mb
from launcher.embedded import smollm2_weights, start_model_server, stopping
from olp.settings import FeedSettings
from processors import chunk_splitter, content_organizer, relationship_checker, topic_finder, topic_locator
from processors.domain import Prompt, TopicSpan
from processors.gold import LabelledStream, canary_chunks, load_labelled, window

ROLES = ("topic_finder", "topic_locator", "relationship_checker", "content_organizer")
MODEL_ALIAS = "smollm2-135m"


@dataclass(frozen=True, slots=True)
class Call:
    chunk: int
    role: str
    prompt: Prompt


def chunks(stream: LabelledStream, k: int) -> Iterator[LabelledStream]:
    """The stream's chunks as the Chunk Splitter cuts them when the roles find the gold topics:
    the next chunk starts at the chunk's last topic unless the chunk is the stream's last."""
    state = chunk_splitter.SplitterState(stream_id="bench", domain=stream.domain, lang=stream.lang)
    for n, sentence in enumerate(stream.sentences):
        state = chunk_splitter.add_segment(state, sentence, n == len(stream.sentences) - 1)
    while True:
        state, spec = chunk_splitter.next_chunk(state, k)
        if spec is None:
            return
        labelled = window(stream, spec.sentences)
        yield labelled
        topics = [
            {"first_id": t.first_id, "final": i < len(labelled.topics) - 1}
            for i, t in enumerate(labelled.topics)
        ]
        state = chunk_splitter.apply_done(state, spec.seq, chunk_splitter.next_start_id(topics, spec.is_last))


def role_calls(number: int, chunk: LabelledStream, feed: FeedSettings) -> list[Call]:
    """The LLM calls of one chunk in pipeline order, the gold topics standing in for answers."""
    sentences, domain, lang = list(chunk.sentences), chunk.domain, chunk.lang
    names = [t.name for t in chunk.topics][: feed.max_topics]
    spans = [TopicSpan(t.name, t.first_id, t.last_id) for t in chunk.topics][: feed.max_topics]
    calls = [Call(number, "topic_finder", topic_finder.build_prompt(sentences, domain, lang))]
    if feed.locator_batch and len(names) > 1:
        calls.append(
            Call(number, "topic_locator", topic_locator.build_batch_prompt(sentences, names, domain, lang))
        )
    else:
        calls += [
            Call(number, "topic_locator", topic_locator.build_prompt(sentences, name, names, domain, lang))
            for name in names
        ]
    calls += [
        Call(number, "relationship_checker", relationship_checker.build_prompt(sentences, a, b, domain, lang))
        for a, b in relationship_checker.adjacent_pairs(spans)
    ]
    aspects = list(chunk.aspects)
    for span in spans:
        own = [s for s in sentences if span.first_id <= s.id <= span.last_id]
        calls += [
            Call(
                number,
                "content_organizer",
                content_organizer.build_prompt(sentences, part, span.name, aspects, domain, lang),
            )
            for part in content_organizer.parts(own)
        ]
    return calls


class Tokenizer:
    """SmolLM2's tokenizer and chat template, as its llama.cpp server applies them."""

    def __init__(self, model_path: Path) -> None:
        import llama_cpp
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        self._llama = llama_cpp.Llama(str(model_path), vocab_only=True, verbose=False)
        eos = self._llama.detokenize([self._llama.token_eos()]).decode()
        bos = self._llama.detokenize([self._llama.token_bos()]).decode()
        self._format = Jinja2ChatFormatter(self._llama.metadata["tokenizer.chat_template"], eos, bos)
        self._add_bos = not self._format(messages=[{"role": "user", "content": ""}]).added_special

    def text(self, prompt: Prompt) -> str:
        """The prompt as the server renders it: the chat template applied."""
        messages: Any = prompt  # llama_cpp types messages as its TypedDicts
        return str(self._format(messages=messages).prompt)

    def tokenize(self, text: str) -> list[int]:
        return self._llama.tokenize(text.encode("utf-8"), add_bos=self._add_bos, special=True)

    def tokens(self, prompt: Prompt) -> list[int]:
        return self.tokenize(self.text(prompt))


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def count(calls: Sequence[Call], tokenizer: Tokenizer) -> list[dict[str, Any]]:
    """Per call: its role, chunk, prompt tokens and the prefix shared with the call before it."""
    rows: list[dict[str, Any]] = []
    previous: list[int] = []
    for call in calls:
        tokens = tokenizer.tokens(call.prompt)
        rows.append(
            {
                "chunk": call.chunk,
                "role": call.role,
                "tokens": len(tokens),
                "shared": common_prefix(previous, tokens),
            }
        )
        previous = tokens
    return rows


def print_table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> None:
    """Sums per role and in all of the numeric `columns` of the rows, and the first per call."""
    sums: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for row in rows:
        for key in ("all", row["role"]):
            sums[key]["calls"] += 1
            for column in columns:
                sums[key][column] += row.get(column) or 0
    print(f"{'role':22} {'calls':>5} " + " ".join(f"{c:>10}" for c in columns) + f" {'per call':>9}")
    for role in (*ROLES, "all"):
        if role in sums:
            s = sums[role]
            cells = " ".join(f"{s[c]:10.1f}" if c == "seconds" else f"{s[c]:10.0f}" for c in columns)
            print(f"{role:22} {s['calls']:5.0f} {cells} {s[columns[0]] / s['calls']:9.1f}")


# --- live: a llama.cpp server ----------------------------------------------------------------

_EVALUATED = re.compile(r"prompt eval time =\s*[\d.]+ ms /\s*(\d+) tokens")


def ask(url: str, prompt: Prompt) -> tuple[int, float]:
    """One call with a one-token answer: (prompt tokens the server reports, seconds)."""
    body = json.dumps(
        {"model": MODEL_ALIAS, "messages": prompt, "max_tokens": 1, "temperature": 0.0}
    ).encode()
    request = urllib.request.Request(url + "/chat/completions", body, {"Content-Type": "application/json"})
    started = time.perf_counter()
    with urllib.request.urlopen(request, timeout=600) as resp:
        usage = json.load(resp)["usage"]
    return int(usage["prompt_tokens"]), time.perf_counter() - started


def evaluated_since(log: Path, offset: int) -> tuple[int | None, int]:
    """Prompt tokens the server logged evaluating after byte `offset` of its log; the new offset."""
    time.sleep(0.05)  # the server logs its timings right after it answers
    data = log.read_bytes()
    found = _EVALUATED.findall(data[offset:].decode("utf-8", "replace"))
    return (sum(int(n) for n in found) if found else None), len(data)


def live(calls: Sequence[Call], foreign: Sequence[Prompt], cache_mb: int) -> list[dict[str, Any]]:
    run_dir = Path(tempfile.mkdtemp(prefix="olp-prompt-tokens-"))
    child, url = start_model_server(
        run_dir, {MODEL_ALIAS: smollm2_weights()}, n_ctx=8192, prompt_cache_mb=cache_mb, verbose=True
    )
    rows = []
    with stopping([child]):
        ask(url, [{"role": "user", "content": "Say hi."}])  # warm-up outside the measurement
        offset = child.log_path.stat().st_size
        for n, call in enumerate(calls):
            if foreign and n > 0 and call.role != calls[n - 1].role:
                ask(url, foreign[n % len(foreign)])
                _, offset = evaluated_since(child.log_path, offset)
            tokens, seconds = ask(url, call.prompt)
            evaluated, offset = evaluated_since(child.log_path, offset)
            rows.append(
                {
                    "chunk": call.chunk,
                    "role": call.role,
                    "tokens": tokens,
                    "evaluated": evaluated,
                    "seconds": seconds,
                }
            )
        if child.proc is not None:
            print(f"model server peak RSS: {memory_mb(child.proc.pid, 'VmHWM'):.0f} MB")
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--file", default="sample_livestream.gold.json")
    parser.add_argument("--chunk-size", type=int, default=FeedSettings().chunk_size)
    parser.add_argument("--live", action="store_true", help="send the calls to a SmolLM2 server")
    parser.add_argument(
        "--cache-mb",
        type=int,
        default=None,
        help="server prompt cache (MB; 0: off; default: as the embedded stack)",
    )
    parser.add_argument("--interleave", action="store_true", help="a foreign call between role stages")
    parser.add_argument("--chunks", type=int, default=None, help="only the first N chunks")
    parser.add_argument("--json", action="store_true", help="one JSON row per call")
    args = parser.parse_args(argv)
    stream = load_labelled(Path(args.file))
    feed = FeedSettings(domain=stream.domain, lang=stream.lang, chunk_size=args.chunk_size)
    cut = list(chunks(stream, args.chunk_size))[: args.chunks]
    calls = [call for n, chunk in enumerate(cut) for call in role_calls(n, chunk, feed)]
    sentences = len(stream.sentences)
    print(f"{args.file}: {sentences} sentences, {len(cut)} chunks of k={args.chunk_size}, {len(calls)} calls")
    rows = count(calls, Tokenizer(smollm2_weights()))
    print("prompt tokens (SmolLM2 tokenizer, chat template applied); shared = prefix of the call before")
    print_table(rows, ("tokens", "shared"))
    if args.live:
        from launcher.embedded import PROMPT_CACHE_MB

        cache_mb = PROMPT_CACHE_MB if args.cache_mb is None else args.cache_mb
        foreign = []
        if args.interleave:
            files = ("canaries_news_en.json", "canaries_ecommerce_zh.json")
            canaries = [c for f in files for c in canary_chunks(load_labelled(Path(f)), args.chunk_size)]
            foreign = [topic_finder.build_prompt(list(c.sentences), c.domain, c.lang) for c in canaries]
        rows = live(calls, foreign, cache_mb)
        print(f"live, SmolLM2 server, prompt cache {cache_mb} MB, interleaved: {args.interleave}")
        print_table(rows, ("tokens", "evaluated", "seconds"))
    if args.json:
        for row in rows:
            print(json.dumps(row))
    return 0


if __name__ == "__main__":
    sys.exit(main())
