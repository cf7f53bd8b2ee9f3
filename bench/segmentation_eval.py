"""QMSum topic segmentation: OLP vs non-OLP with the same local model (spec section 9, "OLP quality").

    python bench/segmentation_eval.py [--data ../shared/data/qmsum/train.jsonl] [--limit 2] [--order short]
        [--models smollm2-135m,qwen2.5-coder-0.5b,qwen2.5-coder-1.5b] [--chunk-size 40] [--out FILE]

Reads QMSum meetings (JSON lines: `meeting_transcripts` = speaker turns, `topic_list` = topic name
+ `relevant_text_span` as inclusive turn-index ranges). Each turn becomes one sentence of the
stream: id = turn index, text = "speaker: content" with QMSum's {disfmarker}-style tags removed and
cut to `--turn-chars` characters (turns left empty are skipped). For every model of the local pool
that is installed, one llama.cpp server is started for that model alone, and:

- **OLP**: the stream goes through the Chunk Splitter's rules (K = `--chunk-size` new turns per
  chunk, the unfinished last topic carried over), Topic Finder, Topic Locator and Relationship
  Checker (`bench/olp_offline.py`), then identically named topics merge.
- **non-OLP**: the same roles see the whole transcript in one chunk, cut to what fits the model's
  context window (n_ctx minus the answer and the task), as a user pasting it would.

Metrics, over the turns that ground-truth topics cover (`segmentation_scores`):
- matching rule: ground-truth and predicted topics are matched one-to-one so that the total number
  of shared turns is maximal (exact, by dynamic programming over ground-truth subsets);
- **recall** = shared turns of matched pairs / ground-truth topic turns (the spec's recall: a
  turn counts when the predicted topic matched to its ground-truth topic covers it);
- **precision** = shared turns of matched pairs / predicted turns (within ground-truth turns);
- **Pk** and **WindowDiff** (lower is better) over the turn sequence, k = half the mean
  ground-truth segment length; turns outside every topic form their own segments.
Also `recall_any`: each ground-truth topic matched to the predicted topic that overlaps it most
(several may share one predicted topic), an upper bound on recall. Turns the model never saw
(non-OLP truncation) are predicted as nothing.

Prints a table per model (OLP vs non-OLP), and writes every meeting's result, the predicted
topics and the call statistics to `--out` (JSON). Exits 0 with a message when the data is absent.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import statistics
import sys
import time
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.olp_offline import OfflineOLP, OlpRun
from launcher.embedded import LOCAL_MODELS, installed_local_models, start_model_pool
from launcher.stack import local_catalog
from olp.settings import FeedSettings
from processors import topic_finder
from processors.domain import Sentence, chat, render_transcript

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "qmsum" / "train.jsonl"
_TAGS = re.compile(r"\{\w+\}")
ANSWER_TOKENS = 384
"""Tokens kept free for the answer when cutting the non-OLP transcript to the context window."""
TASK_TOKENS = 300
"""Tokens kept free for the system prompt and the longest role task."""


# --- data ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Meeting:
    meeting_id: str
    sentences: list[Sentence]
    topics: list[tuple[str, set[int]]]
    """Ground truth: topic name -> turn ids (restricted to the turns in `sentences`)."""


def clean_turn(speaker: str, content: str, max_chars: int) -> str:
    text = " ".join(_TAGS.sub(" ", content).split())
    text = re.sub(r"\s+([,.?!;:])", r"\1", text)
    if not text:
        return ""
    if len(text) > max_chars:
        text = text[:max_chars].rsplit(" ", 1)[0] + " ..."
    return f"{speaker}: {text}"


def to_meeting(row: Mapping[str, Any], max_chars: int) -> Meeting:
    sentences = []
    for index, turn in enumerate(row["meeting_transcripts"]):
        text = clean_turn(str(turn.get("speaker") or "?"), str(turn.get("content") or ""), max_chars)
        if text:
            sentences.append(Sentence(index, text))
    ids = {s.id for s in sentences}
    topics = []
    for topic in row["topic_list"]:
        turns = {
            i
            for first, last in topic["relevant_text_span"]
            for i in range(int(first), int(last) + 1)
            if i in ids
        }
        if turns:
            topics.append((str(topic["topic"]).strip(), turns))
    return Meeting(str(row.get("meeting_id") or ""), sentences, topics)


def load_meetings(path: Path, limit: int, order: str, max_chars: int, skip: int = 0) -> list[Meeting]:
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    for i, row in enumerate(rows):
        row.setdefault("meeting_id", f"train-{i}")
    if order == "short":
        rows.sort(key=lambda r: len(r["meeting_transcripts"]))
    return [to_meeting(row, max_chars) for row in rows[skip : skip + limit]]


# --- metrics (pure) --------------------------------------------------------------------------


def best_matching(truth: Sequence[set[int]], predicted: Sequence[set[int]]) -> dict[int, int]:
    """One-to-one matching ground truth -> predicted with the most shared turns in total.

    Exact: dynamic programming over the predicted topics in order and the subsets of ground-truth
    topics already matched (QMSum has at most a handful of topics per meeting). Pairs that share
    no turn are never matched.
    """
    n = len(truth)
    if n > 16:
        raise ValueError("too many ground-truth topics for the exact matching")
    overlap = [[len(g & p) for g in truth] for p in predicted]
    # best[mask] = (total shared turns, matching as ((truth, predicted), ...))
    best: dict[int, tuple[int, tuple[tuple[int, int], ...]]] = {0: (0, ())}
    for j in range(len(predicted)):
        nxt = dict(best)
        for mask, (score, pairs) in best.items():
            for i in range(n):
                if mask & (1 << i) or overlap[j][i] == 0:
                    continue
                key, value = mask | (1 << i), score + overlap[j][i]
                if value > nxt.get(key, (-1, ()))[0]:
                    nxt[key] = (value, (*pairs, (i, j)))
        best = nxt
    _, pairs = max(best.values(), key=lambda item: item[0])
    return dict(pairs)


def _labels(order: Sequence[int], topics: Sequence[set[int]]) -> list[int]:
    """Topic index per turn (first topic wins on overlap), -1 for turns in no topic."""
    out = []
    for turn in order:
        out.append(next((i for i, t in enumerate(topics) if turn in t), -1))
    return out


def _segments(labels: Sequence[int]) -> list[int]:
    """Segment number per position: a new segment wherever the label changes."""
    seg, out = 0, []
    for i, label in enumerate(labels):
        if i and label != labels[i - 1]:
            seg += 1
        out.append(seg)
    return out


def pk(reference: Sequence[int], hypothesis: Sequence[int], k: int) -> float:
    """Beeferman's Pk over segment numbers: the share of position pairs k apart on which the two
    segmentations disagree about "same segment"."""
    n = len(reference)
    if n <= k:
        return 0.0
    wrong = sum(
        (reference[i] == reference[i + k]) != (hypothesis[i] == hypothesis[i + k]) for i in range(n - k)
    )
    return wrong / (n - k)


def window_diff(reference: Sequence[int], hypothesis: Sequence[int], k: int) -> float:
    """Pevzner & Hearst's WindowDiff: the share of windows of k+1 positions whose boundary counts
    differ."""
    n = len(reference)
    if n <= k:
        return 0.0
    wrong = sum(
        (reference[i + k] - reference[i]) != (hypothesis[i + k] - hypothesis[i]) for i in range(n - k)
    )
    return wrong / (n - k)


def segmentation_scores(
    turns: Sequence[int], truth: Sequence[set[int]], predicted: Sequence[set[int]]
) -> dict[str, float]:
    """recall, precision, recall_any, pk, window_diff and counts (module docstring)."""
    truth_turns = set().union(*truth) if truth else set()
    predicted = [p & truth_turns for p in predicted]
    predicted = [p for p in predicted if p]
    matching = best_matching(truth, predicted)
    shared = sum(len(truth[i] & predicted[j]) for i, j in matching.items())
    total_truth = sum(len(g) for g in truth)
    total_pred = sum(len(p) for p in predicted)
    any_shared = sum(max((len(g & p) for p in predicted), default=0) for g in truth)
    ref = _segments(_labels(turns, truth))
    hyp = _segments(_labels(turns, predicted))
    seg_lengths = [len(g) for g in truth]
    k = max(2, round(statistics.mean(seg_lengths) / 2)) if seg_lengths else 2
    return {
        "recall": shared / total_truth if total_truth else 0.0,
        "precision": shared / total_pred if total_pred else 0.0,
        "recall_any": any_shared / total_truth if total_truth else 0.0,
        "pk": pk(ref, hyp, k),
        "window_diff": window_diff(ref, hyp, k),
        "truth_topics": float(len(truth)),
        "predicted_topics": float(len(predicted)),
    }


# --- context window --------------------------------------------------------------------------


def count_tokens(base_url: str, alias: str, text: str) -> int:
    """Tokens of `text` for the served model (llama-cpp-python's /extras/tokenize/count)."""
    root = base_url.rstrip("/").removesuffix("/v1")
    body = json.dumps({"model": alias, "input": text}).encode()
    request = urllib.request.Request(
        f"{root}/extras/tokenize/count", body, {"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=120) as resp:
        return int(json.load(resp)["count"])


def fit_to_context(sentences: Sequence[Sentence], budget: int, count: Any) -> list[Sentence]:
    """The longest prefix of `sentences` whose rendered transcript takes at most `budget` tokens
    (binary search with the model's own tokenizer)."""
    if count(render_transcript(sentences)) <= budget:
        return list(sentences)
    low, high = 1, len(sentences) - 1
    while low < high:
        mid = (low + high + 1) // 2
        if count(render_transcript(sentences[:mid])) <= budget:
            low = mid
        else:
            high = mid - 1
    return list(sentences[:low])


# --- running ---------------------------------------------------------------------------------


def _predicted(run: OlpRun) -> list[set[int]]:
    return list(run.topic_ids().values())


def _summary(run: OlpRun) -> dict[str, Any]:
    tokens_in = sum(int(o["tokens_in"]) for o in run.outcomes)
    tokens_out = sum(int(o["tokens_out"]) for o in run.outcomes)
    failed = sum(1 for o in run.outcomes if not o["success"])
    return {
        "wall_s": round(run.wall_s, 1),
        "calls": run.calls(),
        "failed_calls": failed,
        "tokens_in": tokens_in,
        "tokens_out": tokens_out,
        "cost_usd": run.cost_usd(),
        "sentences_seen": run.sentences_seen,
        "chunks": len(run.chunks),
        "role_failures": len(run.failures),
        "topics": [{"name": t.name, "first_id": t.first_id, "last_id": t.last_id} for t in run.topics],
    }


async def evaluate_model(
    alias: str, base_url: str, meetings: Sequence[Meeting], args: argparse.Namespace, n_ctx: int
) -> list[dict[str, Any]]:
    catalog = local_catalog({alias: base_url})
    results = []
    for meeting in meetings:
        turns = [s.id for s in meeting.sentences]
        truth = [t for _, t in meeting.topics]
        row: dict[str, Any] = {
            "model": alias,
            "meeting": meeting.meeting_id,
            "turns": len(turns),
            "truth": [{"name": n, "turns": len(t)} for n, t in meeting.topics],
        }
        for mode in args.modes:
            async with OfflineOLP(
                catalog,
                alias,
                domain="meeting",
                lang="en",
                chunk_size=args.chunk_size,
                relationship=not args.no_relationship,
                # The pipeline's per-chunk topic limit for OLP; the whole transcript may hold many.
                max_topics=FeedSettings().max_topics if mode == "olp" else topic_finder.MAX_TOPICS,
                on_chunk=lambda tr, m=mode: print(
                    f"    {alias} {m} chunk {tr.seq} [{tr.first_id}..{tr.last_id}] "
                    f"found {len(tr.found)} -> {len(tr.checked)} topics in {tr.seconds:.0f}s",
                    flush=True,
                ),
            ) as olp:
                if mode == "olp":
                    run = await olp.run(meeting.sentences, f"{meeting.meeting_id}-olp")
                else:
                    budget = (
                        n_ctx
                        - ANSWER_TOKENS
                        - TASK_TOKENS
                        - count_tokens(base_url, alias, json.dumps(chat("", "")))
                    )
                    seen = fit_to_context(
                        meeting.sentences, budget, lambda text: count_tokens(base_url, alias, text)
                    )
                    run = await olp.run_whole(seen, f"{meeting.meeting_id}-whole")
            scores = segmentation_scores(turns, truth, _predicted(run))
            row[mode] = {**scores, **_summary(run)}
            print(
                f"  {alias:20} {meeting.meeting_id:10} {mode:7} recall {scores['recall']:.3f} "
                f"precision {scores['precision']:.3f} Pk {scores['pk']:.3f} WD {scores['window_diff']:.3f} "
                f"topics {len(run.topics)} ({run.wall_s:.0f}s, {run.calls()} calls, "
                f"saw {run.sentences_seen}/{len(turns)} turns)",
                flush=True,
            )
        results.append(row)
    return results


def print_table(results: Sequence[Mapping[str, Any]], modes: Sequence[str]) -> None:
    models = list(dict.fromkeys(r["model"] for r in results))
    print("\nQMSum topic segmentation (mean over meetings; Pk/WD lower is better)")
    print(
        f"{'model':20} {'mode':8} {'recall':>7} {'prec.':>7} {'rec.any':>7} {'Pk':>6} {'WD':>6} "
        f"{'topics':>6} {'s/meeting':>9}"
    )
    for model in models:
        rows = [r for r in results if r["model"] == model]
        for mode in modes:
            got = [r[mode] for r in rows if mode in r]
            if not got:
                continue

            def mean(key: str, got: list[dict[str, Any]] = got) -> float:
                return statistics.mean(float(g[key]) for g in got)

            print(
                f"{model:20} {mode:8} {mean('recall'):7.3f} {mean('precision'):7.3f} "
                f"{mean('recall_any'):7.3f} {mean('pk'):6.3f} {mean('window_diff'):6.3f} "
                f"{mean('predicted_topics'):6.1f} {mean('wall_s'):9.0f}"
            )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--limit", type=int, default=2, help="meetings per model")
    parser.add_argument("--skip", type=int, default=0, help="meetings to skip first")
    parser.add_argument(
        "--order",
        choices=("file", "short"),
        default="short",
        help="take meetings in file order or shortest first (default)",
    )
    parser.add_argument("--models", default=None, help="comma-separated pool aliases (default: installed)")
    parser.add_argument("--modes", default="olp,whole", help="olp, whole or both")
    parser.add_argument("--chunk-size", type=int, default=40, help="K: new turns per OLP chunk")
    parser.add_argument("--turn-chars", type=int, default=200, help="characters kept per turn")
    parser.add_argument("--no-relationship", action="store_true", help="skip the Relationship Checker's LLM")
    parser.add_argument("--out", type=Path, default=Path(".olp/eval/qmsum.json"))
    args = parser.parse_args(argv)
    args.modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if not args.data.is_file():
        print(f"QMSum data not found at {args.data}: skipped (pass --data)")
        return 0
    aliases = args.models.split(",") if args.models else installed_local_models()
    meetings = load_meetings(args.data, args.limit, args.order, args.turn_chars, args.skip)
    listing = ", ".join(f"{m.meeting_id}: {len(m.sentences)} turns" for m in meetings)
    print(f"{len(meetings)} meetings ({listing})")
    results: list[dict[str, Any]] = []
    run_root = args.out.parent / "run"
    for alias in aliases:
        n_ctx = LOCAL_MODELS[alias].context_window
        started = time.monotonic()
        children, urls = start_model_pool(run_root / alias, [alias], n_ctx=n_ctx)
        try:
            print(f"{alias}: served with n_ctx {n_ctx} ({time.monotonic() - started:.0f}s)", flush=True)
            results += asyncio.run(evaluate_model(alias, urls[alias], meetings, args, n_ctx))
        finally:
            for child in children:
                child.stop()
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(
            json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "results": results}, indent=1)
        )
    print_table(results, args.modes)
    print(f"\nper-meeting results and predicted topics: {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
