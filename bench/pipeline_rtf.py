"""Real-time factor through the whole Kafka pipeline with the embedded local model (spec section 9,
"Real time"). A short smoke: bench/olp_mini_rtf.py measures RTF per model in depth.

    python bench/pipeline_rtf.py [--sentences 30] [--chunk-size 30] [--locator-batch] [--timeout 900]

Starts the embedded stack as `olp demo` does (Tansu, the local model pool behind llama.cpp's
server, the policy store, one worker; Role-RL picks the model per role), replays the first
`--sentences` sentences of the bundled live-commerce sample at once and waits until every
sentence is in a final document. Real-time factor = seconds
of transcript / seconds of wall time, the transcript lasting sentences / 2.5 s (a live host speaks
about 2.5 ASR sentences per second; the definition of bench/olp_mini_rtf.py); RTF >= 1 keeps up
with a live stream (the target; `--check` exits 3 below it). Needs llama-cpp-python
(`make install`); exits 0 with a message without it. Writes bench/out/pipeline_rtf.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from pipeline_common import ROOT, machine, print_table, save_json
from targets import Target, add_check_argument, report_targets

from launcher.clients import DocumentView, follow_documents, replay
from olp.errors import OlpError
from olp.feeds import read_transcript, with_end_marker

SAMPLE = ROOT / "olp" / "data" / "sample_livestream.jsonl"
SENTENCES_PER_SECOND = 2.5


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sentences", type=int, default=30)
    parser.add_argument("--chunk-size", type=int, default=30)
    parser.add_argument("--locator-batch", action="store_true", help="one Topic Locator call per chunk")
    parser.add_argument("--timeout", type=float, default=900.0)
    add_check_argument(parser)
    args = parser.parse_args(argv)
    try:
        import llama_cpp  # noqa: F401
    except ImportError:
        print("pipeline_rtf: llama-cpp-python is not installed (make install); skipped")
        return 0
    from launcher.stack import EmbeddedStack
    from olp.catalog import load_catalog

    stream_id = "rtf-1"
    segments = list(read_transcript(SAMPLE, stream_id))[: args.sentences]
    segments = list(with_end_marker(segments))
    ids = [int(s["segment_id"]) for s in segments]
    # The stack's children take their settings from the environment, as in production.
    os.environ["OLP_FEEDS"] = json.dumps(
        {"default": {"chunk_size": args.chunk_size, "locator_batch": args.locator_batch}}
    )
    info = machine()
    with tempfile.TemporaryDirectory(prefix="olp-bench-rtf-") as tmp:
        stack = EmbeddedStack(run_dir=Path(tmp), log=lambda line: print(f"  {line}", flush=True))
        try:
            settings = stack.start()
            started = time.monotonic()
            replay(settings, segments)
            view = DocumentView()
            for doc in follow_documents(settings):
                if doc is not None and doc["stream_id"] == stream_id:
                    view.apply(doc)
                if view.covers(stream_id, ids):
                    break
                if time.monotonic() - started > args.timeout:
                    raise OlpError(f"documents incomplete after {args.timeout:.0f} s")
                stack.check_alive()
            wall = time.monotonic() - started
            documents = view.stream(stream_id)
            pool = [m.name for m in load_catalog(Path(tmp) / "catalog.yaml").models]
        finally:
            stack.stop()
    transcript_s = len(segments) / SENTENCES_PER_SECOND
    result = {
        "machine": info,
        "model_pool": pool,
        "sentences": len(segments),
        "chunk_size": args.chunk_size,
        "locator_batch": args.locator_batch,
        "transcript_seconds": transcript_s,
        "wall_seconds": wall,
        "real_time_factor": transcript_s / wall,
        "topics": [d["name"] for d in documents],
    }
    print_table(
        "Real-time factor through the Kafka pipeline, embedded local model",
        ["model pool (Role-RL picks)", "sentences", "transcript s", "wall s", "RTF", "topics"],
        [[", ".join(pool), len(segments), transcript_s, wall, transcript_s / wall, len(documents)]],
    )
    rtf = Target.at_least("real-time factor >= 1 (keeps up live)", result["real_time_factor"], 1.0, ".2f")
    code = report_targets([rtf], args.check)
    print(f"\nwrote {save_json('pipeline_rtf', result)}")
    return code


if __name__ == "__main__":
    raise SystemExit(main())
