"""Real-time factor of OLP per local model on OLP-MINI live-commerce transcripts (spec section 9,
"Real time").

    python bench/olp_mini_rtf.py [--data ../shared/data/olp-mini] [--limit 1] [--lang en,zh]
        [--sentences 120] [--models ...] [--chunk-size 40] [--measure] [--out .olp/eval/olp-mini]

Reads OLP-MINI files (`EN/*.txt`, `CN/*.txt`: Python literal lists `[[sentence_id, text], ...]`;
texts that are None or empty are skipped). For each installed pool model, one llama.cpp server
serves that model alone, and all six roles run on the first `--sentences` sentences of `--limit`
transcripts per language (`bench/olp_offline.py`: Chunk Splitter rules with carry-over, Topic
Finder, Topic Locator, Relationship Checker, Content Organizer, Format Checker; documents updated
per chunk, newest version wins, identical names merged at the end).

Real-time factor = seconds of transcript / seconds of wall time, where the transcript's duration
is its sentence count / 2.5 (a live host speaks about 2.5 ASR sentences per second). RTF >= 1
keeps up with a live stream; the sentences are all available at once, so this is the pipeline's
sustained speed with one model on this machine. `--measure` also measures the model's prompt and
generation speed (`launcher.embedded.measure_throughput`) and prints the catalog price the cost rule
derives from it.

Writes the documents of every run to `<out>/<model>.<lang>.<file>.json` for inspection and a
summary to `<out>/summary.json`. Exits 0 with a message when the data is absent.
"""

from __future__ import annotations

import argparse
import ast
import asyncio
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.olp_offline import OfflineOLP
from launcher.embedded import (
    LOCAL_MODELS,
    REFERENCE_USD_PER_HOUR,
    installed_local_models,
    measure_throughput,
    start_model_pool,
)
from launcher.stack import LOCAL_CONTEXT, local_catalog
from olp.settings import DEFAULT_ASPECTS
from processors.domain import Sentence

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "olp-mini"
SENTENCES_PER_SECOND = 2.5
"""The live pace: ASR sentences a live-commerce host produces per second."""
LANGS = {"en": "EN", "zh": "CN"}


def read_olp_mini(path: Path) -> list[Sentence]:
    """An OLP-MINI file: `[[id, text], ...]` as a Python literal; None/empty texts skipped."""
    rows = ast.literal_eval(path.read_text(encoding="utf-8"))
    return [Sentence(int(i), " ".join(str(t).split())) for i, t in rows if t is not None and str(t).strip()]


def rtf(sentences: int, wall_s: float) -> float:
    """Seconds of transcript (at the live pace) per second of wall time."""
    return (sentences / SENTENCES_PER_SECOND) / wall_s if wall_s > 0 else float("inf")


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


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--limit", type=int, default=1, help="transcripts per language")
    parser.add_argument("--lang", default="en,zh", help="en, zh or both")
    parser.add_argument("--sentences", type=int, default=120, help="sentences taken from each transcript")
    parser.add_argument("--models", default=None, help="comma-separated pool aliases (default: installed)")
    parser.add_argument("--chunk-size", type=int, default=40)
    parser.add_argument("--measure", action="store_true", help="also measure tokens/s and derive prices")
    parser.add_argument("--out", type=Path, default=Path(".olp/eval/olp-mini"))
    args = parser.parse_args(argv)
    if not args.data.is_dir():
        print(f"OLP-MINI data not found at {args.data}: skipped (pass --data)")
        return 0
    files = []
    for lang in (x.strip() for x in args.lang.split(",") if x.strip()):
        folder = args.data / LANGS[lang]
        files += [(lang, p) for p in sorted(folder.glob("*.txt"))[: args.limit]]
    args.out.mkdir(parents=True, exist_ok=True)
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
    print("\nOLP-MINI real-time factor (transcript seconds per wall second; >= 1 keeps up live)")
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


if __name__ == "__main__":
    raise SystemExit(main())
