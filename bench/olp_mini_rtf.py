"""Real-time factor and quality of OLP on OLP-MINI live-commerce transcripts (spec section 9,
"Real time").

    python bench/olp_mini_rtf.py [--data ../shared/data/olp-mini] [--files 1] [--lang en,zh]
        [--sentences 120] [--choices free,llm,encoder] [--canary-rate 0.5] [--check]
        [--offline [--models ...] [--measure]] [--chunk-size 40] [--out .olp/eval/olp-mini]

Reads OLP-MINI files (`EN/*.txt`, `CN/*.txt`: Python literal lists `[[sentence_id, text], ...]`;
texts that are None or empty are skipped), the first `--sentences` sentences of the first
`--files` transcripts per language (0: whole files).

Default (the default pool): the embedded stack (`olp demo`'s: Tansu, SmolLM2 behind llama.cpp, the
MiniLM encoder in the processors, the policy store, one worker) per model choice
(bench/stack_runner.py: `free` = Role-RL picks per role and context, `llm` = every role on the
LLM, `encoder` = every role an encoder can fill on the encoder). The English transcripts go to a
feed whose gold canaries are the bundled sample's, the Chinese ones to a feed with the bundled
Chinese canaries (`--canary-rate` canary chunks per real chunk, as the stack interleaves them).
Each transcript is replayed at once; its wall time runs from its first segment to the last
sentence in a final document. OLP-MINI has no labels, so quality is the canaries' exact score k
in [-1, 1] per role (source `canary` on olp.feedback), printed beside the speed; the table of the
learner's choices shows which model served each role per language on the real chunks.

`--offline`: per installed LLM, one llama.cpp server serves that model alone and all six roles
run in-process (`bench/olp_offline.py`, no Kafka, no learner, no canaries): the pipeline's speed
with one model. `--measure` also measures the model's prompt and generation speed and prints the
catalog price the cost rule derives from it.

Real-time factor = seconds of transcript / seconds of wall time, where the transcript's duration
is its sentence count / 2.5 (a live host speaks about 2.5 ASR sentences per second). RTF >= 1
keeps up with a live stream (the target, for the default pool per language; `--check` exits 3
below it). Bounded time: `--files 1 --sentences 40 --choices free` (run_all's quick mode) took
under 2 minutes on a quiet 2-core machine (stack start-up ~16 s, English 25 s, Chinese 55 s); the
default (3 choices, 120 sentences) takes three stacks and about 3 x 4 minutes; `--files 5
--sentences 0` is the full development set (hours). Few sentences mean few canaries: the canary
credit grows by `--canary-rate` per real chunk of `--chunk-size` sentences.

Writes the documents of every run to `<out>/<choice or model>.<lang>.<file>.json` and a summary
to `<out>/summary.json`. Exits 0 with a message when the data is absent.
"""

from __future__ import annotations

import argparse
import ast
import asyncio
import json
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.olp_offline import OfflineOLP
from bench.stack_runner import (
    CHOICES,
    ROLE_COLUMNS,
    ChoiceRun,
    StreamResult,
    canary_scores,
    model_shares,
    print_tables,
    role_canary_cells,
    rtf,
    shares_text,
)
from bench.targets import Target, add_check_argument, report_targets
from launcher.console import progress_bar
from launcher.embedded import (
    LOCAL_MODELS,
    REFERENCE_USD_PER_HOUR,
    installed_local_models,
    measure_throughput,
    start_model_pool,
)
from launcher.stack import LOCAL_CONTEXT, SAMPLE_GOLD, local_catalog
from olp.feeds import read_transcript, with_end_marker
from olp.settings import DEFAULT_ASPECTS, ROLES
from processors.domain import Sentence

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "olp-mini"
SENTENCES_PER_SECOND = 2.5
"""The live pace: ASR sentences a live-commerce host produces per second."""
LANGS = {"en": "EN", "zh": "CN"}
CANARIES = {"en": SAMPLE_GOLD, "zh": Path("canaries_ecommerce_zh.json")}
"""The gold canaries of each language's feed (processors/canaries.py; bundled with olp)."""


def read_olp_mini(path: Path) -> list[Sentence]:
    """An OLP-MINI file: `[[id, text], ...]` as a Python literal; None/empty texts skipped."""
    rows = ast.literal_eval(path.read_text(encoding="utf-8"))
    return [Sentence(int(i), " ".join(str(t).split())) for i, t in rows if t is not None and str(t).strip()]


async def run_model(
    alias: str, base_url: str, files: Sequence[tuple[str, Path]], args: argparse.Namespace
) -> list[dict[str, Any]]:
    catalog = local_catalog({alias: base_url})
    rows = []
    for lang, path in files:
        sentences = read_olp_mini(path)[: args.sentences]
        async with OfflineOLP(
            catalog,
            alias,
            domain="ecommerce",
            lang=lang,
            chunk_size=args.chunk_size,
            aspects=DEFAULT_ASPECTS["ecommerce"],
            organize=True,
            on_chunk=lambda tr: print(
                f"    chunk {tr.seq} [{tr.first_id}..{tr.last_id}] {tr.size} sentences: "
                f"{len(tr.found)} found -> {[t.name for t in tr.checked]} ({tr.seconds:.0f}s)",
                flush=True,
            ),
        ) as olp:
            run = await olp.run(sentences, f"{lang}-{path.stem}")
        factor = rtf(len(sentences), run.wall_s)
        out = args.out / f"{alias}.{lang}.{path.stem}.json"
        out.write_text(json.dumps(run.documents, ensure_ascii=False, indent=1), encoding="utf-8")
        failed = sum(1 for o in run.outcomes if not o["success"])
        row = {
            "model": alias,
            "lang": lang,
            "file": path.name,
            "sentences": len(sentences),
            "transcript_s": len(sentences) / SENTENCES_PER_SECOND,
            "wall_s": round(run.wall_s, 1),
            "rtf": round(factor, 3),
            "chunks": len(run.chunks),
            "documents": len(run.documents),
            "calls": run.calls(),
            "failed_calls": failed,
            "role_failures": len(run.failures),
            "tokens_in": sum(int(o["tokens_in"]) for o in run.outcomes),
            "tokens_out": sum(int(o["tokens_out"]) for o in run.outcomes),
            "cost_usd": run.cost_usd(),
            "documents_file": str(out),
        }
        rows.append(row)
        print(
            f"  {alias:20} {lang} {path.name}: {len(sentences)} sentences in {run.wall_s:.0f}s -> RTF "
            f"{factor:.2f}; {len(run.documents)} documents, {run.calls()} calls ({failed} failed) -> {out}",
            flush=True,
        )
    return rows


def offline(args: argparse.Namespace, files: Sequence[tuple[str, Path]]) -> int:
    """One model alone per run, all roles in-process (module docstring, `--offline`)."""
    aliases = args.models.split(",") if args.models else installed_local_models()
    rows: list[dict[str, Any]] = []
    speeds: dict[str, dict[str, float]] = {}
    for alias in aliases:
        children, urls = start_model_pool(args.out / "run" / alias, [alias], n_ctx=LOCAL_CONTEXT)
        try:
            if args.measure:
                t = measure_throughput(urls[alias], alias)
                per_hour = REFERENCE_USD_PER_HOUR / 3600.0 * 1e6
                speeds[alias] = {
                    "prompt_tps": t.prompt_tps,
                    "decode_tps": t.decode_tps,
                    "price_in_per_mtok": round(per_hour / t.prompt_tps, 4),
                    "price_out_per_mtok": round(per_hour / t.decode_tps, 4),
                }
                print(f"{alias}: measured {speeds[alias]} (catalog uses {LOCAL_MODELS[alias]})", flush=True)
            started = time.monotonic()
            rows += asyncio.run(run_model(alias, urls[alias], files, args))
            print(f"{alias}: done in {time.monotonic() - started:.0f}s", flush=True)
        finally:
            for child in children:
                child.stop()
        summary = {"args": {k: str(v) for k, v in vars(args).items()}, "runs": rows, "throughput": speeds}
        (args.out / "summary.json").write_text(json.dumps(summary, indent=1), encoding="utf-8")
    print("\nOLP-MINI real-time factor, one model alone (transcript seconds per wall second)")
    print(
        f"{'model':20} {'lang':4} {'sentences':>9} {'wall s':>7} {'RTF':>6} "
        f"{'docs':>5} {'calls':>5} {'USD':>9}"
    )
    for r in rows:
        print(
            f"{r['model']:20} {r['lang']:4} {r['sentences']:9d} {r['wall_s']:7.0f} {r['rtf']:6.2f} "
            f"{r['documents']:5d} {r['calls']:5d} {r['cost_usd']:9.6f}"
        )
    print(f"\ndocuments and summary in {args.out}")
    return 0


def feeds(langs: Sequence[str], chunk_size: int, canary_rate: float) -> dict[str, dict[str, Any]]:
    """One feed per language, each with its own gold canaries (OLP_FEEDS of the stack)."""
    return {
        f"olp-mini-{lang}": {
            "domain": "ecommerce",
            "lang": lang,
            "chunk_size": chunk_size,
            "canaries": str(CANARIES[lang]),
            "canary_rate": canary_rate,
        }
        for lang in langs
    }


def segments_of(lang: str, path: Path, choice: str, sentences: int) -> list[dict[str, Any]]:
    """The transcript's first `sentences` segments (0: all) on its language's feed, the last
    one marked as the end of the stream."""
    stream = list(
        read_transcript(
            path, f"{choice}-{lang}-{path.stem}", feed=f"olp-mini-{lang}", domain="ecommerce", lang=lang
        )
    )
    return list(with_end_marker(stream[:sentences] if sentences else stream))


def run_choice(
    choice: str, files: Sequence[tuple[str, Path]], args: argparse.Namespace, bar: Any, task: Any
) -> dict[str, Any]:
    """Every file through a fresh stack under one model choice; the rows and the feedback."""
    langs = list(dict.fromkeys(lang for lang, _ in files))
    rows: list[dict[str, Any]] = []

    def log(line: str) -> None:
        bar.console.print(f"[dim]{choice:8} {line}[/]")

    with ChoiceRun(
        choice, args.out / "run" / choice, feeds(langs, args.chunk_size, args.canary_rate), log
    ) as run:
        for lang, path in files:
            segments = segments_of(lang, path, choice, args.sentences)
            done = [0]

            def advance(n: int, done: list[int] = done) -> None:
                bar.advance(task, n - done[0])
                done[0] = n

            bar.update(task, description=f"{choice} {lang} {path.name}")
            result: StreamResult = run.process(segments, args.timeout, advance)
            bar.advance(task, result.sentences - done[0])
            out = args.out / f"{choice}.{lang}.{path.stem}.json"
            out.write_text(json.dumps(result.documents, ensure_ascii=False, indent=1), encoding="utf-8")
            rows.append(
                {
                    "choice": choice,
                    "lang": lang,
                    "file": path.name,
                    "sentences": result.sentences,
                    "wall_s": round(result.wall_s, 1),
                    "rtf": round(result.rtf, 3),
                    "documents": len(result.documents),
                    "topics": [d["name"] for d in result.documents],
                    "dead_lettered": result.dead_lettered,
                    "complete": result.complete,
                }
            )
            log(
                f"{lang} {path.name}: {result.sentences} sentences in {result.wall_s:.0f}s,"
                f" RTF {result.rtf:.2f}" + ("" if result.complete else " (INCOMPLETE: --timeout reached)")
            )
        return run.summary(rows)


def print_summary(runs: Sequence[Mapping[str, Any]]) -> list[Target]:
    """The tables (speed beside canary quality per choice and language; canary k per model; the
    learner's choices) and the targets: RTF >= 1 per language for the default pool (`free`)."""
    from rich.table import Table

    speed = Table(
        "choice", "lang", "files", "sentences", "wall s", "RTF", "dead", "timed out",
        *(f"k {ROLE_COLUMNS[r]}" for r in ROLES),
        title="OLP-MINI: speed and canary quality k in [-1, 1] (calls) per model choice",
    )  # fmt: skip
    detail = Table("choice", "role", "lang", "model", "canary k", "n", title="canary score per model")
    chosen = Table(
        "choice", "role", "lang", "models on real chunks", "policy now", title="models per role and language"
    )
    targets = []
    for run in runs:
        scores = canary_scores(run["outcomes"])
        for lang in dict.fromkeys(r["lang"] for r in run["rows"]):
            rows = [r for r in run["rows"] if r["lang"] == lang]
            n, wall = sum(r["sentences"] for r in rows), sum(r["wall_s"] for r in rows)
            factor, dead = rtf(n, wall), sum(r["dead_lettered"] for r in rows)
            late = sum(not r.get("complete", True) for r in rows)
            cells = role_canary_cells(scores, lang)
            speed.add_row(
                run["choice"],
                lang,
                str(len(rows)),
                str(n),
                f"{wall:.0f}",
                f"{factor:.2f}",
                str(dead),
                str(late),
                *cells,
            )
            if run["choice"] == "free":
                targets.append(
                    Target.at_least(f"default pool RTF >= 1 on OLP-MINI {lang}", factor, 1.0, ".2f")
                )
        for (role, model, lang), (k, calls) in scores.items():
            detail.add_row(run["choice"], role, lang, model, f"{k:+.2f}", str(calls))
        for (role, lang), shares in model_shares(run["outcomes"]).items():
            chosen.add_row(run["choice"], role, lang, shares_text(shares), run["policy"].get(role, ""))
    print_tables(speed, detail, chosen)
    return targets


def stack(args: argparse.Namespace, files: Sequence[tuple[str, Path]]) -> int:
    """Every model choice through the embedded stack (module docstring)."""
    choices = [c.strip() for c in args.choices.split(",") if c.strip()]
    unknown = set(choices) - set(CHOICES)
    if unknown:
        raise SystemExit(f"unknown --choices {sorted(unknown)}; expected some of {', '.join(CHOICES)}")
    runs: list[dict[str, Any]] = []
    total = sum(len(segments_of(lang, p, "x", args.sentences)) for lang, p in files) * len(choices)
    with progress_bar() as bar:
        task = bar.add_task("starting", total=total)
        for choice in choices:
            runs.append(run_choice(choice, files, args, bar, task))
            summary = {"args": {k: str(v) for k, v in vars(args).items()}, "runs": runs}
            (args.out / "summary.json").write_text(
                json.dumps(summary, indent=1, default=str), encoding="utf-8"
            )
    targets = print_summary(runs)
    print(f"documents and summary in {args.out}")
    return report_targets(targets, args.check)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument(
        "--files", "--limit", dest="files", type=int, default=1, help="transcripts per language"
    )
    parser.add_argument("--lang", default="en,zh", help="en, zh or both")
    parser.add_argument("--sentences", type=int, default=120, help="sentences per transcript (0: all)")
    parser.add_argument("--choices", default=",".join(CHOICES), help="model choices (stack mode)")
    parser.add_argument("--canary-rate", type=float, default=0.5, help="canary chunks per real chunk")
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds per transcript (stack mode)")
    parser.add_argument("--offline", action="store_true", help="one model alone per run, no Kafka")
    parser.add_argument("--models", default=None, help="--offline: pool aliases (default: installed)")
    parser.add_argument("--chunk-size", type=int, default=40)
    parser.add_argument("--measure", action="store_true", help="--offline: also measure tokens/s and prices")
    parser.add_argument("--out", type=Path, default=Path(".olp/eval/olp-mini"))
    add_check_argument(parser)
    args = parser.parse_args(argv)
    if not args.data.is_dir():
        print(f"OLP-MINI data not found at {args.data}: skipped (pass --data)")
        return 0
    files = []
    for lang in (x.strip() for x in args.lang.split(",") if x.strip()):
        folder = args.data / LANGS[lang]
        files += [(lang, p) for p in sorted(folder.glob("*.txt"))[: args.files]]
    args.out.mkdir(parents=True, exist_ok=True)
    if args.offline:
        return offline(args, files)
    if not installed_local_models():
        print("no local model installed (make install): skipped")
        return 0
    return stack(args, files)


if __name__ == "__main__":
    raise SystemExit(main())
