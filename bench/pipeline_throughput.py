"""End-to-end throughput and latency of the six agents (spec section 9; issue 8, items 2 and 3).

    python bench/pipeline_throughput.py [--quick] [--workers 1 2] [--streams 100] [--per-stream 300]
                                        [--chunk-size 40] [--pace 0.7 | --rate N] [--profile]
                                        [--env K=V ...] [--out NAME]

On the embedded Tansu broker, with the instant model backend (bench/pipeline_model.py: a scripted
OpenAI-compatible HTTP server in its own process, answering at once as a perfect model), the
policy store and N worker processes (each running all six agents):

1. **drain**: `--streams` concurrent synthetic live-commerce streams of `--per-stream` segments
   each (interleaved, as live streams arrive, each ending with end_of_stream) are produced as fast
   as confluent-kafka can; throughput = segments / (last chunk's ChunkDone - first segment).
2. **paced**: the same load offered at `--pace` x the drain throughput, so latency is measured at
   a rate the pipeline sustains: p50/p99 per hop (Kafka timestamps of each chunk's records, see
   bench/pipeline_common.py), per chunk end to end (trigger -> ChunkDone) and per segment end to
   end (segment produced -> ChunkDone of the chunk that carried it first; includes waiting for the
   chunk's other K-1 sentences). `--rate N` runs only this, at N segments/s.

Per run it also reports the CPU seconds each process spent (worker, policy store, broker, model),
which says where the time goes on a machine this small; `--profile` adds a py-spy profile of the
first worker during the drain (top functions by own and inclusive time).

The ratio to the broker's own consume rate uses bench/out/broker_limit.json from the same
`make bench` run (bench/broker_limit.py), or measures it first when absent.
Prints tables; writes bench/out/pipeline_throughput.json (or --out NAME).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from pipeline_common import (
    HOPS,
    MODEL_BACKEND,
    Follower,
    Services,
    broker,
    cpu_seconds,
    encode,
    hop_latencies,
    instant_catalog,
    instant_model,
    interleave,
    load_json,
    machine,
    print_table,
    produce,
    rss_mb,
    save_json,
    streams_finished,
    synthetic_segments,
)


def _env_pairs(pairs: list[str]) -> dict[str, str]:
    env = {}
    for pair in pairs:
        key, _, value = pair.partition("=")
        env[key] = value
    return env


def warm_up(services: Services, bootstrap: str, chunk_size: int, streams: int = 8) -> None:
    """A few short streams through every worker's partitions, untimed (group joins, first calls)."""
    follower = Follower(bootstrap, services.prefix).start()
    try:
        names = [f"warm-{i}" for i in range(streams)]
        segs = interleave([synthetic_segments(n, chunk_size + 5) for n in names])
        produce(bootstrap, services.topics.transcripts, encode(segs))
        follower.wait(streams_finished(names), 180, services.check_alive)
    finally:
        follower.finish()


class Profiler:
    """py-spy on one process for as long as the block runs; collapsed stacks, then a summary."""

    def __init__(self, pid: int, out: Path) -> None:
        self.pid, self.out = pid, out
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Profiler:
        py_spy = Path(sys.executable).with_name("py-spy")
        if not py_spy.exists():
            print("  --profile needs py-spy: pip install -e '.[bench]'", flush=True)
            return self
        self.proc = subprocess.Popen(
            [
                str(py_spy),
                "record",
                "--pid",
                str(self.pid),
                "--rate",
                "100",
                "--nonblocking",
                "--format",
                "raw",
                "--output",
                str(self.out),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(0.3)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def summary(self, top: int = 25) -> dict[str, Any]:
        own: Counter[str] = Counter()
        inclusive: Counter[str] = Counter()
        total = 0
        try:
            lines = self.out.read_text().splitlines()
        except OSError:
            return {"error": "py-spy wrote no profile (is ptrace allowed?)"}
        for line in lines:
            stack, _, count = line.rpartition(" ")
            if not stack or not count.isdigit():
                continue
            n = int(count)
            frames = [_short(f) for f in stack.split(";") if f]
            frames = [f for f in frames if f]
            if not frames:
                continue
            total += n
            own[frames[-1]] += n
            for frame in set(frames):
                inclusive[frame] += n
        return {
            "samples": total,
            "own": [(f, round(100 * n / total, 1)) for f, n in own.most_common(top)] if total else [],
            "inclusive": [(f, round(100 * n / total, 1)) for f, n in inclusive.most_common(top * 2)]
            if total
            else [],
        }


_PLUMBING = (
    "asyncio/",
    "click/",
    "runpy",
    "launcher/__main__.py",
    "mode/worker.py",
    "launcher/cli.py",
    "threading.py",
    "mode/threads.py",
    "aiohttp/web.py",
    "selectors.py",
)


def _plumbing(frame: str) -> bool:
    return frame.startswith(_PLUMBING) or frame.startswith("<frozen")


def _short(frame: str) -> str:
    """'func (path/to/site-packages/pkg/mod.py:123)' -> 'pkg/mod.py:func'."""
    name, _, where = frame.partition(" (")
    path = where.rstrip(")").rsplit(":", 1)[0]
    for marker in ("site-packages/", "/work/main/", "lib/python3.11/"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{path}:{name}" if path else name


def run_case(
    bootstrap: str,
    broker_pid: int,
    base_url: str,
    model_pid: int,
    work: Path,
    *,
    workers: int,
    streams: int,
    per_stream: int,
    chunk_size: int,
    rate: float | None,
    env: dict[str, str],
    locator_batch: bool = False,
    profile: list[str] | None = None,
    timeout_s: float = 900,
) -> dict[str, Any]:
    feeds = {"default": {"chunk_size": chunk_size, "locator_batch": locator_batch}}
    services = Services(
        bootstrap,
        work,
        instant_catalog(base_url),
        env={"OLP_FEEDS": json.dumps(feeds), **env},
    )
    mode = "drain" if rate is None else f"paced {rate:,.0f}/s"
    print(f"  [{workers} worker{'s' if workers > 1 else ''}, {mode}] starting services", flush=True)
    try:
        services.start(workers)
        warm_up(services, bootstrap, chunk_size, streams=8 * workers)
        names = [f"s{i:04d}" for i in range(streams)]
        segments = interleave([synthetic_segments(n, per_stream) for n in names])
        records = encode(segments)
        follower = Follower(bootstrap, services.prefix).start()
        pids = {
            **services.pids(),
            "broker": broker_pid,
            "instant-model": model_pid,
            "bench driver": os.getpid(),
        }
        cpu_before = {name: cpu_seconds(pid) for name, pid in pids.items()}
        sent_at: dict[tuple[str, int], float] = {}
        profilers = {
            name: Profiler(pids[name], work / f"{services.prefix}{name}.profile.txt")
            for name in (profile or [])
            if name in pids
        }
        for profiler in profilers.values():
            profiler.__enter__()
        try:
            wall0 = time.time()
            first, last_sent = produce(bootstrap, services.topics.transcripts, records, rate, sent_at)
            follower.wait(streams_finished(names), timeout_s, services.check_alive)
            wall = time.time() - wall0
        finally:
            for profiler in profilers.values():
                profiler.__exit__()
        cpu = {name: cpu_seconds(pid) - cpu_before[name] for name, pid in pids.items()}
        rss = {name: rss_mb(pid) for name, pid in services.pids().items()}
        seen = follower.finish()
        ours = {cid for cid, c in seen.chunks.items() if not c["stream_id"].startswith("warm-")}
        last_done = max(seen.ts["progress"][cid] for cid in ours)
        elapsed = last_done - first
        latency = hop_latencies(seen, sent_at)
        result: dict[str, Any] = {
            "workers": workers,
            "mode": mode,
            "offered_rate": rate,
            "streams": streams,
            "segments": len(records),
            "chunks": len(ours),
            "chunk_size": chunk_size,
            "seconds": elapsed,
            "segments_per_s": len(records) / elapsed,
            "produce_seconds": last_sent - first,
            "lag_at_end_s": last_done - last_sent,
            "dead_letters": seen.dead_letters,
            "cpu_seconds": cpu,
            "cpu_share_of_wall": {k: v / wall for k, v in cpu.items()},
            "rss_mb": rss,
            **latency,
        }
        if profilers:
            result["profiles"] = {name: p.summary() for name, p in profilers.items()}
        print(
            f"  [{workers} worker{'s' if workers > 1 else ''}, {mode}] {len(records):,} segments in "
            f"{elapsed:.1f} s = {result['segments_per_s']:,.0f} segments/s "
            f"(chunk e2e p50/p99 {latency['chunk_end_to_end_ms'].get('p50', 0):.0f}/"
            f"{latency['chunk_end_to_end_ms'].get('p99', 0):.0f} ms)",
            flush=True,
        )
        return result
    finally:
        services.stop()


def broker_consume_rate(quick: bool) -> tuple[float, float]:
    """(consume, produce+consume) records/s of transcript-sized records from this run's broker bench."""
    data = load_json("broker_limit")
    if data is None:
        import broker_limit

        data = broker_limit.main(["--quick"] if quick else [])
    row = data["results"]["transcript segment"]
    return float(row["confluent consume/s"]), float(row["confluent produce+consume/s"])


def print_results(cases: list[dict[str, Any]], consume_rate: float, pipe_rate: float) -> None:
    rows = []
    for c in cases:
        rows.append(
            [
                f"{c['workers']}",
                c["mode"],
                c["segments"],
                c["segments_per_s"],
                f"{100 * c['segments_per_s'] / consume_rate:.2f}%",
                c["chunk_end_to_end_ms"].get("p50", 0.0),
                c["chunk_end_to_end_ms"].get("p99", 0.0),
                c["segment_end_to_end_ms"].get("p50", 0.0),
                c["segment_end_to_end_ms"].get("p99", 0.0),
                c["dead_letters"],
            ]
        )
    print_table(
        f"Pipeline, all six agents ({MODEL_BACKEND})\n"
        f"broker limit (confluent consume, transcript-sized records): {consume_rate:,.0f}/s; "
        f"produce+consume: {pipe_rate:,.0f}/s",
        [
            "workers",
            "mode",
            "segments",
            "segments/s",
            "of broker",
            "chunk e2e p50 ms",
            "p99",
            "segment e2e p50 ms",
            "p99",
            "DLQ",
        ],
        rows,
    )
    hop_rows = []
    for c in cases:
        for name, _, _ in HOPS:
            h = c["hops_ms"][name]
            hop_rows.append(
                [
                    f"{c['workers']}w {c['mode']}",
                    name,
                    h.get("p50", 0.0),
                    h.get("p99", 0.0),
                    h.get("max", 0.0),
                ]
            )
    print_table(
        "Latency per hop (ms; output record time - triggering record time)",
        ["run", "hop", "p50", "p99", "max"],
        hop_rows,
    )
    cpu_rows = []
    for c in cases:
        per_k = {k: 1000 * v / c["segments"] for k, v in c["cpu_seconds"].items()}
        cpu_rows.append([f"{c['workers']}w {c['mode']}", *(f"{k}={v:.2f}" for k, v in sorted(per_k.items()))])
    print("\nCPU seconds per 1,000 segments, by process:")
    for row in cpu_rows:
        print("  " + "  ".join(row))
    for c in cases:
        for name, prof in c.get("profiles", {}).items():
            if not prof.get("own"):
                continue
            print(
                f"\npy-spy profile of {name} ({c['workers']}w {c['mode']}; "
                f"{prof['samples']} samples at 100/s)"
            )
            print("  own time:")
            for frame, share in prof["own"][:15]:
                print(f"    {share:5.1f}%  {frame}")
            print("  inclusive time (frames below the event loop):")
            shown = [(f, v) for f, v in prof["inclusive"] if not _plumbing(f)]
            for frame, share in shown[:25]:
                print(f"    {share:5.1f}%  {frame}")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="small runs (smoke test)")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="worker processes per run")
    parser.add_argument(
        "--streams", type=int, default=None, help="concurrent streams (default 100, quick 40)"
    )
    parser.add_argument(
        "--per-stream", type=int, default=None, help="segments per stream (default 300, quick 120)"
    )
    parser.add_argument("--chunk-size", type=int, default=40, help="K (feed chunk_size)")
    parser.add_argument(
        "--pace", type=float, default=0.7, help="paced run at this share of the drain rate (0: skip)"
    )
    parser.add_argument(
        "--rate",
        type=float,
        default=None,
        metavar="SEGMENTS_PER_S",
        help="paced run at this absolute rate instead of a share of the drain (skips the drain)",
    )
    parser.add_argument(
        "--profile",
        nargs="*",
        default=None,
        metavar="PROCESS",
        help="py-spy these processes during the first drain (default worker-0; also policy-store, broker)",
    )
    parser.add_argument(
        "--env", nargs="*", default=[], help="extra OLP_* settings for the services, KEY=VALUE"
    )
    parser.add_argument(
        "--out", default="pipeline_throughput", help="name of the JSON file in bench/out/ (.json optional)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the services' logs (printed path)")
    parser.add_argument(
        "--locator-batch",
        action="store_true",
        help="feed setting locator_batch: one Topic Locator call per chunk",
    )
    parser.add_argument(
        "--services-from",
        type=Path,
        default=None,
        metavar="DIR",
        help="run the services from another source tree (e.g. `git archive HEAD` unpacked): before/after",
    )
    args = parser.parse_args(argv)
    streams = args.streams or (40 if args.quick else 100)
    per_stream = args.per_stream or (120 if args.quick else 300)
    env = _env_pairs(args.env)
    if args.services_from:
        # `python -m launcher` puts the working directory first on sys.path: run from that tree.
        env["PYTHONPATH"] = str(args.services_from.resolve())
        os.chdir(args.services_from)
    info = machine()
    consume_rate, pipe_rate = broker_consume_rate(args.quick)
    cases: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="olp-bench-") as tmp:
        work = Path(tempfile.mkdtemp(prefix="olp-bench-keep-")) if args.keep else Path(tmp)
        if args.keep:
            print(f"  logs in {work}")
        with broker(work) as (bootstrap, broker_pid), instant_model(work) as (base_url, model_pid):
            for workers in args.workers:
                common = dict(
                    workers=workers,
                    streams=streams,
                    per_stream=per_stream,
                    chunk_size=args.chunk_size,
                    env=env,
                    locator_batch=args.locator_batch,
                )
                profile = (
                    (args.profile or ["worker-0"])
                    if args.profile is not None and workers == args.workers[0]
                    else None
                )
                if args.rate:
                    cases.append(
                        run_case(
                            bootstrap, broker_pid, base_url, model_pid, work,
                            rate=args.rate, profile=profile, **common,
                        )
                    )
                    continue
                drain = run_case(
                    bootstrap,
                    broker_pid,
                    base_url,
                    model_pid,
                    work,
                    rate=None,
                    profile=profile,
                    **common,
                )
                cases.append(drain)
                if args.pace > 0 and workers == args.workers[0]:
                    rate = args.pace * drain["segments_per_s"]
                    cases.append(
                        run_case(bootstrap, broker_pid, base_url, model_pid, work, rate=rate, **common)
                    )
    print_results(cases, consume_rate, pipe_rate)
    payload = {
        "machine": info,
        "model_backend": MODEL_BACKEND,
        "settings": {
            "env": env,
            "chunk_size": args.chunk_size,
            "streams": streams,
            "per_stream": per_stream,
            "locator_batch": args.locator_batch,
            "services_from": str(args.services_from) if args.services_from else "this tree",
        },
        "broker_consume_per_s": consume_rate,
        "broker_produce_consume_per_s": pipe_rate,
        "cases": cases,
    }
    path = save_json(args.out.removesuffix(".json"), payload)
    print(f"\nwrote {path}")
    return payload


if __name__ == "__main__":
    main()
