"""Resident memory per active stream (spec sections 3 and 9; issue 8, item 5).

    python bench/memory_per_stream.py [--quick] [--streams 1 100 1000] [--long-streams 10]
                                      [--long-segments 3000] [--rate 300]

On the embedded broker with the instant model (bench/pipeline_model.py), the policy store and one
worker, chunk size 40:

1. **per stream**: for each count N, fresh services; the worker's RSS when idle after a warm-up,
   then N concurrent streams that stay open (no end_of_stream), each sent 60 segments: one chunk
   is cut and organised, and each stream keeps its unfinished topic and 20 new sentences, as a live
   stream does between chunks. RSS once the pipeline is quiet; (RSS - idle RSS) / N.
2. **flat in segments**: `--long-streams` streams of `--long-segments` segments each, offered at
   `--rate` segments/s, the worker's and the policy store's RSS sampled as the streams grow; the
   slope over the second half of the run, in MB per 1,000 segments *processed* per stream (chunks
   done x chunk size / streams: on a loaded machine the pipeline lags the producer, and a slope
   over segments *sent* puts the catch-up's growth on a flat x), should be ~0 (the splitter keeps
   at most 2*K sentences of carry-over plus the backlog). The policy store's learner fills bounded
   windows first (4,096 cross-update groups; event ids for de-duplication, ~250 B each, for
   `dedupe_window_s` = 20 min of feedback and at most 100,000), so its RSS rises until those are
   full (minutes at this rate) and is flat after; a run shorter than that measures the filling.

Prints tables; writes bench/out/memory_per_stream.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from pipeline_common import (
    Follower,
    Services,
    broker,
    encode,
    instant_catalog,
    instant_model,
    interleave,
    machine,
    print_table,
    produce,
    quiescent,
    rss_mb,
    save_json,
    synthetic_segments,
)

CHUNK_SIZE = 40
OPEN_SEGMENTS = 60
"""Per stream in the per-stream run: one chunk (40 new) is cut, 20 wait for the next."""


def _services(bootstrap: str, work: Path, base_url: str) -> Services:
    feeds = {"default": {"chunk_size": CHUNK_SIZE}}
    return Services(bootstrap, work, instant_catalog(base_url), env={"OLP_FEEDS": json.dumps(feeds)})


def _settle_rss(pid: int, seconds: float = 2.0) -> float:
    time.sleep(seconds)
    return rss_mb(pid)


def per_stream(bootstrap: str, work: Path, base_url: str, count: int) -> dict[str, Any]:
    services = _services(bootstrap, work, base_url).start(1)
    try:
        worker = services.worker_pids()[0]
        follower = Follower(bootstrap, services.prefix).start()
        warm = [f"warm-{i}" for i in range(4)]
        produce(
            bootstrap,
            services.topics.transcripts,
            encode(interleave([synthetic_segments(w, 45) for w in warm])),
        )
        follower.wait(lambda seen: set(warm) <= seen.last_chunk_done, 120, services.check_alive)
        idle = _settle_rss(worker)
        names = [f"open-{i:05d}" for i in range(count)]
        segs = interleave([synthetic_segments(n, OPEN_SEGMENTS, end_of_stream=False) for n in names])
        started = time.monotonic()
        produce(bootstrap, services.topics.transcripts, encode(segs))
        follower.wait(quiescent(min_done=len(warm) * 2 + count, idle_s=2.0), 1800, services.check_alive)
        loaded = _settle_rss(worker)
        seen = follower.finish()
        return {
            "streams": count,
            "segments": len(segs),
            "chunks_done": seen.done_count,
            "seconds": time.monotonic() - started,
            "idle_rss_mb": idle,
            "rss_mb": loaded,
            "per_stream_kb": 1024 * (loaded - idle) / count,
            "policy_store_rss_mb": rss_mb(services.pids()["policy-store"]),
        }
    finally:
        services.stop()


def long_streams(
    bootstrap: str, work: Path, base_url: str, streams: int, segments: int, rate: float
) -> dict[str, Any]:
    services = _services(bootstrap, work, base_url).start(1)
    samples: list[dict[str, float]] = []
    incomplete: str | None = None
    try:
        pids = services.pids()
        names = [f"long-{i:03d}" for i in range(streams)]
        records = encode(interleave([synthetic_segments(n, segments, end_of_stream=True) for n in names]))
        follower = Follower(bootstrap, services.prefix).start()
        sent: dict[tuple[str, int], float] = {}
        stop = threading.Event()

        def sample() -> None:
            while not stop.wait(2.0):
                with follower._lock:
                    done = follower.seen.done_count
                samples.append(
                    {
                        "t": time.monotonic(),
                        "segments_per_stream": len(sent) / streams,
                        "segments_done_per_stream": done * CHUNK_SIZE / streams,
                        "chunks_done": done,
                        "worker_rss_mb": rss_mb(pids["worker-0"]),
                        "policy_store_rss_mb": rss_mb(pids["policy-store"]),
                    }
                )

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        produce(bootstrap, services.topics.transcripts, records, rate=rate, sent_at=sent)
        # A slow or busy machine drains the backlog long after the last send: wait in proportion,
        # and keep what was sampled if it still does not finish (the slope is per segment done).
        try:
            follower.wait(
                lambda seen: set(names) <= seen.last_chunk_done,
                max(600.0, 2 * streams * segments / rate),
                services.check_alive,
            )
        except TimeoutError as exc:
            incomplete = str(exc)
            print(f"  long run incomplete, keeping {len(samples)} samples: {exc}", flush=True)
        stop.set()
        sampler.join(5)
        follower.finish()
    finally:
        services.stop()
    half = [s for s in samples if s["segments_done_per_stream"] >= segments / 2] or samples
    xs = [s["segments_done_per_stream"] for s in half]
    slope = _slope(xs, [s["worker_rss_mb"] for s in half])
    return {
        "streams": streams,
        "segments_per_stream": segments,
        "rate": rate,
        "samples": samples,
        "incomplete": incomplete,
        "worker_mb_per_1000_segments_per_stream": 1000 * slope,
        "policy_store_mb_per_1000_segments_per_stream": 1000
        * _slope(xs, [s["policy_store_rss_mb"] for s in half]),
    }


def _slope(xs: list[float], ys: list[float]) -> float:
    """Least-squares slope dy/dx (0 with fewer than two distinct x)."""
    if len(set(xs)) < 2:
        return 0.0
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sum((x - mx) ** 2 for x in xs)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="smaller runs (smoke test)")
    parser.add_argument(
        "--streams", type=int, nargs="+", default=None, help="default 1 100 1000 (quick 1 100 300)"
    )
    parser.add_argument("--long-streams", type=int, default=10)
    parser.add_argument("--long-segments", type=int, default=None, help="default 3000 (quick 800)")
    parser.add_argument(
        "--rate", type=float, default=None, help="segments/s of the long run (default 300, quick 200)"
    )
    args = parser.parse_args(argv)
    counts = args.streams or ([1, 100, 300] if args.quick else [1, 100, 1000])
    long_segments = args.long_segments or (800 if args.quick else 3000)
    rate = args.rate or (200.0 if args.quick else 300.0)
    info = machine()
    results: dict[str, Any] = {"machine": info, "chunk_size": CHUNK_SIZE, "per_stream": []}
    with tempfile.TemporaryDirectory(prefix="olp-bench-") as tmp:
        work = Path(tmp)
        with broker(work) as (bootstrap, _), instant_model(work) as (base_url, _):
            for count in counts:
                print(f"  {count} open stream(s) ...", flush=True)
                results["per_stream"].append(per_stream(bootstrap, work, base_url, count))
            print(f"  {args.long_streams} streams x {long_segments} segments at {rate:.0f}/s ...", flush=True)
            results["long"] = long_streams(bootstrap, work, base_url, args.long_streams, long_segments, rate)
    print_table(
        f"Worker resident memory per open stream (chunk size {CHUNK_SIZE}; each stream holds its "
        f"unfinished topic + {OPEN_SEGMENTS - CHUNK_SIZE} new sentences)",
        ["open streams", "segments", "idle RSS MB", "RSS MB", "KB per stream", "policy store RSS MB"],
        [
            [
                r["streams"],
                r["segments"],
                r["idle_rss_mb"],
                r["rss_mb"],
                r["per_stream_kb"],
                r["policy_store_rss_mb"],
            ]
            for r in results["per_stream"]
        ],
    )
    long = results["long"]
    samples = long["samples"]
    shown = [samples[int(i * (len(samples) - 1) / 4)] for i in range(5)] if samples else []
    print_table(
        f"Memory as streams grow: {long['streams']} streams x {long['segments_per_stream']} segments "
        f"at {long['rate']:.0f}/s",
        ["segments per stream", "chunks done", "worker RSS MB", "policy store RSS MB"],
        [
            [s["segments_per_stream"], s["chunks_done"], s["worker_rss_mb"], s["policy_store_rss_mb"]]
            for s in shown
        ],
    )
    print(
        f"  slope over the second half: worker {long['worker_mb_per_1000_segments_per_stream']:+.2f} MB, "
        f"policy store {long['policy_store_mb_per_1000_segments_per_stream']:+.2f} MB "
        "per 1,000 segments per stream"
    )
    print(f"\nwrote {save_json('memory_per_stream', results)}")
    return results


if __name__ == "__main__":
    main()
