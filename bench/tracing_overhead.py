"""Tracing overhead on pipeline throughput (spec sections 7 and 9; issue 5).

    python bench/tracing_overhead.py [--streams 12] [--repeats 4] [--chunk-size 30]

Runs the whole pipeline (policy store + one worker as subprocesses, the embedded Tansu broker)
with the scripted instant model (launcher/scripted_llm.py: answers at once, as a perfect model
would) on `--streams` copies of the bundled sample transcript, twice per repetition: tracing off
(no `OTEL_*` export: the API stays a no-op) and tracing on (traces and metrics over OTLP/HTTP to a
local receiver, launcher/otlp_receiver.py, which decodes every span). Modes alternate so
drift on a shared machine hits both. Throughput is segments per second from the first replayed
segment to the last stream's final documents; service start-up is not timed. CPU time of the
worker and policy store processes per segment is measured too: on a shared machine it is steadier
than wall-clock throughput. Prints each run, the median segments/s and CPU per segment per mode,
the ratio on/off and the per-repetition ratios (read them together). Writes nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from launcher.clients import DocumentView, follow_documents, replay
from launcher.embedded import start_broker
from launcher.otlp_receiver import OtlpReceiver
from launcher.scripted_llm import ScriptedLLM, scripted_catalog
from launcher.scripted_roles import perfect
from launcher.stack import ServiceStack
from olp.feeds import read_transcript, with_end_marker
from olp.topics import TopicNames, ensure_topics

SAMPLE = Path(__file__).resolve().parents[1] / "olp" / "data" / "sample_livestream.jsonl"


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_once(
    broker: str,
    llm: ScriptedLLM,
    receiver: OtlpReceiver | None,
    streams: int,
    chunk_size: int,
    work_dir: Path,
) -> dict[str, Any]:
    prefix = f"b{uuid.uuid4().hex[:8]}."
    ensure_topics({"bootstrap.servers": broker}, TopicNames.with_prefix(prefix).all(), partitions=4)
    run_dir = work_dir / prefix.rstrip(".")
    run_dir.mkdir()
    otel = receiver.env() if receiver else {"OTEL_SDK_DISABLED": "true"}
    stack = ServiceStack(
        broker,
        prefix,
        run_dir,
        scripted_catalog(llm.base_url),
        {"OLP_FEEDS": json.dumps({"default": {"chunk_size": chunk_size}}), **otel},
    )
    spans_before = len(receiver.spans()) if receiver else 0
    try:
        stack.start_policy_store()
        stack.start_worker()
        segments: list[dict[str, Any]] = []
        per_stream = [list(with_end_marker(read_transcript(SAMPLE, f"bench-{i}"))) for i in range(streams)]
        expected = {  # every sentence must end up in a final document
            stream[0]["stream_id"]: [int(s["segment_id"]) for s in stream if s["text"].strip()]
            for stream in per_stream
        }
        for row in zip(*per_stream, strict=True):  # interleaved, as live streams arrive
            segments.extend(row)
        pids = [c.proc.pid for c in stack.children if c.proc is not None]
        cpu_before = sum(cpu_seconds(pid) for pid in pids)
        started = time.monotonic()
        replay(stack.settings(), segments)
        view = DocumentView()
        deadline = started + 600
        for doc in follow_documents(stack.settings()):
            if doc is not None:
                view.apply(doc)
            if all(view.covers(stream_id, ids) for stream_id, ids in expected.items()):
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"pipeline did not finish in 600 s\n{stack.logs()}")
        elapsed = time.monotonic() - started
        cpu = sum(cpu_seconds(pid) for pid in pids) - cpu_before
    finally:
        stack.stop()
    spans = (len(receiver.spans()) - spans_before) if receiver else 0
    return {
        "segments": len(segments),
        "seconds": elapsed,
        "rate": len(segments) / elapsed,
        "cpu_ms": 1000 * cpu / len(segments),
        "spans": spans,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--streams", type=int, default=12, help="copies of the sample transcript (145 segments)"
    )
    parser.add_argument("--repeats", type=int, default=4, help="runs per mode")
    parser.add_argument("--chunk-size", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=1, help="untimed runs first (tracing off)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="olp-bench-") as tmp:
        work = Path(tmp)
        broker_child, broker = start_broker(work / "broker")
        llm = ScriptedLLM(perfect).start()
        receiver = OtlpReceiver().start()
        results: dict[str, list[dict[str, Any]]] = {"off": [], "on": []}
        try:
            for _ in range(args.warmup):
                warm = run_once(broker, llm, None, args.streams, args.chunk_size, work)
                print(f"warm-up: {warm['rate']:.1f} segments/s (not counted)", flush=True)
            for repeat in range(args.repeats):
                for mode in ("off", "on") if repeat % 2 == 0 else ("on", "off"):
                    result = run_once(
                        broker, llm, receiver if mode == "on" else None, args.streams, args.chunk_size, work
                    )
                    results[mode].append(result)
                    print(
                        f"tracing {mode:3}  run {repeat + 1}: {result['segments']} segments in "
                        f"{result['seconds']:.1f} s = {result['rate']:.1f} segments/s, "
                        f"{result['cpu_ms']:.2f} CPU ms per segment in the services"
                        + (f", {result['spans']} spans exported" if mode == "on" else ""),
                        flush=True,
                    )
        finally:
            receiver.stop()
            llm.stop()
            broker_child.stop()
    off = statistics.median(r["rate"] for r in results["off"])
    on = statistics.median(r["rate"] for r in results["on"])
    spans_per_segment = statistics.mean(r["spans"] / r["segments"] for r in results["on"])
    pairs = [b["rate"] / a["rate"] for a, b in zip(results["off"], results["on"], strict=True)]
    print(f"\nmedian throughput: tracing off {off:.1f} segments/s, tracing on {on:.1f} segments/s")
    print(f"per-repetition ratios on/off: {', '.join(f'{r:.3f}' for r in pairs)}")
    cpu_off = statistics.median(r["cpu_ms"] for r in results["off"])
    cpu_on = statistics.median(r["cpu_ms"] for r in results["on"])
    print(
        f"median CPU per segment (worker + policy store): off {cpu_off:.2f} ms, on {cpu_on:.2f} ms "
        f"(+{100 * (cpu_on / cpu_off - 1):.1f}%)"
    )
    overhead = 100 * (1 - on / off)
    print(
        f"ratio on/off: {on / off:.3f} (overhead {overhead:.1f}%); {spans_per_segment:.1f} spans per segment"
    )


if __name__ == "__main__":
    main()
