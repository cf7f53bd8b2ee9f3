"""`make bench`: every benchmark in bench/, one after the other, then a summary (spec section 9).

    python bench/run_all.py [--quick] [--llm] [--check] [--only NAME ...] [--skip NAME ...]

Runs each benchmark script of bench/ as its own process with a time limit (its output streams
through; librdkafka's log lines are dropped), in this order: the broker's own limit, pipeline
throughput and latency with 1 and 2 workers, policy propagation, memory per stream, then
tracing overhead, routing, budget and paper replication (they exit 0 with a message when their
data is absent). Benchmarks that need the local llama.cpp models (real-time factor, QMSum,
OLP-MINI) run only with `--llm`. A script of bench/ with a `__main__` block that is not in the
registry below is run too, with no arguments, and flagged, so a new benchmark is never silently
left out. `--quick` passes each benchmark its smoke-test arguments. `--check` passes `--check` to
every benchmark that prints targets (bench/targets.py) and exits non-zero when one missed a target:
without it the run is a report (`make bench`), with it a gate (`make bench-check`).

Prints the pipeline table (from bench/out/*.json of this run) and one line per benchmark; writes
bench/out/run_all.json. Numbers from a shared or busy machine are not comparable: the table shows
the load average when each benchmark started.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
OUT = BENCH / "out"
sys.path.insert(0, str(BENCH))

from targets import TARGET_MISSED  # noqa: E402


@dataclass(frozen=True)
class Benchmark:
    script: str
    what: str
    args: tuple[str, ...] = ()
    quick: tuple[str, ...] = ()
    timeout_s: float = 1800.0
    needs_llm: bool = False
    outputs: tuple[str, ...] = ()
    """bench/out/*.json files it writes (removed before it runs, so the summary never shows stale ones)."""
    targets: bool = False
    """It prints spec targets and takes `--check` (bench/targets.py)."""


REGISTRY: tuple[Benchmark, ...] = (
    Benchmark(
        "broker_limit.py",
        "1. broker limit (confluent-kafka on Tansu)",
        quick=("--quick",),
        timeout_s=900,
        outputs=("broker_limit",),
    ),
    Benchmark(
        "pipeline_throughput.py",
        "2-3. pipeline throughput and latency, 1 and 2 workers",
        quick=("--quick",),
        timeout_s=3600,
        outputs=("pipeline_throughput",),
    ),
    Benchmark(
        "propagation_delay.py",
        "4. policy propagation delay",
        quick=("--quick",),
        timeout_s=900,
        outputs=("propagation_delay",),
        targets=True,
    ),
    Benchmark(
        "memory_per_stream.py",
        "5. memory per active stream",
        quick=("--quick",),
        timeout_s=3600,
        outputs=("memory_per_stream",),
    ),
    Benchmark(
        "pipeline_rtf.py",
        "6. real-time factor, embedded local models (short)",
        timeout_s=1800,
        needs_llm=True,
        outputs=("pipeline_rtf",),
        targets=True,
    ),
    Benchmark(
        "tracing_overhead.py",
        "tracing overhead on throughput",
        quick=("--repeats", "1", "--warmup", "0"),
        timeout_s=1800,
    ),
    Benchmark(
        "routing_replay.py",
        "routing on replayed LLM results",
        args=("--plot", "bench/out/routing_replay.png"),
        quick=("--quick",),
        targets=True,
    ),
    Benchmark(
        "budget.py",
        "budget held per window",
        args=("--plot", "bench/out/budget.png"),
        quick=("--seeds", "1"),
        targets=True,
    ),
    Benchmark(
        "paper_replication.py",
        "Role-RL paper replication",
        args=("--plot", "bench/out/paper_replication.png"),
        quick=("--seeds", "1"),
        targets=True,
    ),
    Benchmark(
        "segmentation_eval.py",
        "QMSum segmentation, OLP vs non-OLP",
        quick=("--limit", "1"),
        timeout_s=7200,
        needs_llm=True,
    ),
    Benchmark(
        "switch_eval.py",
        "the cheap-first switch: LLM calls saved at equal quality on the gold sample",
        quick=("--train-passes", "2"),
        targets=True,
    ),
    Benchmark(
        "finder_names.py",
        "Topic Finder (encoder) product names on held-out labelled OLP-MINI transcripts",
        quick=("--split", "report"),
        timeout_s=900,
        targets=True,
    ),
    Benchmark(
        "olp_mini_rtf.py",
        "OLP-MINI real-time factor and canary quality per model choice",
        quick=("--files", "1", "--sentences", "40", "--choices", "free"),
        timeout_s=7200,
        needs_llm=True,
        targets=True,
    ),
    Benchmark(
        "qmsum_recall.py",
        "QMSum topic recall through the stack per model choice",
        quick=("--meetings", "1", "--choices", "free,llm"),
        timeout_s=7200,
        needs_llm=True,
        outputs=("qmsum_recall",),
        targets=True,
    ),
)
NOT_BENCHMARKS = {"run_all.py", "pipeline_model.py", "__main__.py"}
"""Scripts with a `__main__` block that are helpers, not benchmarks."""
_LIBRDKAFKA_LOG = re.compile(r"^%\d\|\d+\.\d+\|")


@dataclass
class Outcome:
    name: str
    what: str
    status: str = "not run"
    seconds: float = 0.0
    load_at_start: float = 0.0
    tail: list[str] = field(default_factory=list)


def discover() -> list[Benchmark]:
    """The registry, plus any other script of bench/ that runs as a program."""
    known = {b.script for b in REGISTRY} | NOT_BENCHMARKS
    extra = [
        Benchmark(path.name, "(not in bench/run_all.py's registry: run with no arguments)")
        for path in sorted(BENCH.glob("*.py"))
        if path.name not in known and "__main__" in path.read_text(encoding="utf-8")
    ]
    return [*REGISTRY, *extra]


def command(bench: Benchmark, quick: bool, check: bool) -> list[str]:
    """The benchmark's command line; `--check` only for one that prints targets."""
    return [
        sys.executable,
        str(BENCH / bench.script),
        *bench.args,
        *(bench.quick if quick else ()),
        *(("--check",) if check and bench.targets else ()),
    ]


def status_of(code: int) -> str:
    if code == 0:
        return "ok"
    if code == TARGET_MISSED:
        return "target NOT MET"
    return f"failed (exit {code})"


def run(bench: Benchmark, quick: bool, check: bool = False) -> Outcome:
    outcome = Outcome(bench.script.removesuffix(".py"), bench.what, load_at_start=os.getloadavg()[0])
    for name in bench.outputs:
        (OUT / f"{name}.json").unlink(missing_ok=True)
    argv = command(bench, quick, check)
    print(f"\n=== {bench.script} — {bench.what}\n$ {' '.join(argv[1:])}", flush=True)
    started = time.monotonic()
    proc = subprocess.Popen(
        argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )
    lines: list[str] = []

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            if _LIBRDKAFKA_LOG.match(line):
                continue
            lines.append(line.rstrip("\n"))
            print(line, end="", flush=True)

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    try:
        outcome.status = status_of(proc.wait(bench.timeout_s))
    except subprocess.TimeoutExpired:
        outcome.status = f"timed out after {bench.timeout_s:.0f} s"
        _stop(proc)
    except KeyboardInterrupt:
        _stop(proc)
        raise
    reader.join(10)
    outcome.seconds = time.monotonic() - started
    outcome.tail = [line for line in lines if line.strip()][-4:]
    return outcome


def _stop(proc: subprocess.Popen[str]) -> None:
    """SIGTERM the benchmark's process group (its children die with it), SIGKILL after 20 s."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(20)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)


# --- the pipeline table ---------------------------------------------------------------------


_FRESH: set[str] = set()
"""Outputs written by the benchmarks that ran ok in this run (older files are not shown)."""


def _load(name: str) -> dict[str, Any] | None:
    if name not in _FRESH:
        return None
    try:
        return dict(json.loads((OUT / f"{name}.json").read_text()))
    except (OSError, ValueError):
        return None


def pipeline_table() -> list[list[str]]:
    rows: list[list[str]] = []
    broker = _load("broker_limit")
    if broker:
        for label, r in broker["results"].items():
            rows.append(
                [
                    "1",
                    f"broker, {label} ({r['bytes']} B), records/s",
                    f"produce {r['confluent produce/s']:,.0f}; consume {r['confluent consume/s']:,.0f}; "
                    f"both at once {r['confluent produce+consume/s']:,.0f}",
                ]
            )
    pipe = _load("pipeline_throughput")
    if pipe:
        consume = pipe["broker_consume_per_s"]
        one = None
        for case in pipe["cases"]:
            label = f"{case['workers']} worker{'s' if case['workers'] > 1 else ''}, {case['mode']}"
            rate = case["segments_per_s"]
            item = "2" if case["workers"] == 1 else "3"
            if case["workers"] == 1 and case["mode"] == "drain":
                one = rate
            scaling = f"; x{rate / one:.2f} of 1 worker" if one and case["workers"] > 1 else ""
            rows.append(
                [
                    item,
                    f"pipeline {label}, segments/s (of broker consume)",
                    f"{rate:,.0f} ({100 * rate / consume:.2f}%){scaling}",
                ]
            )
            hops = case["hops_ms"]
            worst = max(hops, key=lambda h: hops[h].get("p99", 0.0))
            rows.append(
                [
                    item,
                    f"  latency, {label}, ms",
                    "per hop p50 "
                    + "/".join(f"{hops[h].get('p50', 0):.0f}" for h in hops)
                    + f"; worst p99 {hops[worst].get('p99', 0):.0f} ({worst}); chunk e2e p50/p99 "
                    f"{case['chunk_end_to_end_ms'].get('p50', 0):.0f}/"
                    f"{case['chunk_end_to_end_ms'].get('p99', 0):.0f}",
                ]
            )
    prop = _load("propagation_delay")
    if prop:
        t, p = prop["total_ms"], prop["publish_ms"]
        rows.append(
            [
                "4",
                "policy propagation, feedback -> first call on new model, ms",
                f"p50 {t.get('p50', 0):.0f}, p99 {t.get('p99', 0):.0f} (published p50 {p.get('p50', 0):.0f}, "
                f"p99 {p.get('p99', 0):.0f}); {t.get('n', 0)} of {len(prop['trials'])} trials",
            ]
        )
    mem = _load("memory_per_stream")
    if mem:
        per = "; ".join(f"{r['streams']}: {r['per_stream_kb']:.0f} KB" for r in mem["per_stream"])
        rows.append(["5", "worker memory per open stream (streams: KB/stream)", per])
        long = mem.get("long")
        if long:
            rows.append(
                [
                    "5",
                    "  growth with segments per stream, MB per 1,000",
                    f"worker {long['worker_mb_per_1000_segments_per_stream']:+.2f}, policy store "
                    f"{long['policy_store_mb_per_1000_segments_per_stream']:+.2f} "
                    f"({long['streams']} streams x {long['segments_per_stream']})",
                ]
            )
    rtf = _load("pipeline_rtf")
    rows.append(
        [
            "6",
            "real-time factor (transcript s / wall s), local models",
            f"{rtf['real_time_factor']:.2f} ({rtf['sentences']} sentences, "
            f"pool {', '.join(rtf['model_pool'])})"
            if rtf
            else "not run (make bench BENCH_ARGS=--llm)",
        ]
    )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="smoke-test sizes for every benchmark")
    parser.add_argument("--llm", action="store_true", help="also the benchmarks that need the local models")
    parser.add_argument(
        "--check", action="store_true", help="exit non-zero when a benchmark misses a target it prints"
    )
    parser.add_argument("--only", nargs="*", default=None, help="run only these (script names without .py)")
    parser.add_argument("--skip", nargs="*", default=[], help="skip these (script names without .py)")
    args = parser.parse_args(argv)
    OUT.mkdir(parents=True, exist_ok=True)
    outcomes: list[Outcome] = []
    started = time.monotonic()
    for bench in discover():
        name = bench.script.removesuffix(".py")
        if (args.only is not None and name not in args.only) or name in args.skip:
            continue
        if bench.needs_llm and not args.llm:
            outcomes.append(Outcome(name, bench.what, "skipped (needs --llm)"))
            continue
        outcome = run(bench, args.quick, args.check)
        outcomes.append(outcome)
        if outcome.status in ("ok", "target NOT MET"):
            _FRESH.update(bench.outputs)

    from pipeline_common import print_table

    print("\n" + "=" * 100)
    print(
        f"make bench: {len([o for o in outcomes if o.status == 'ok'])} of {len(outcomes)} benchmarks ok in "
        f"{(time.monotonic() - started) / 60:.1f} min on {os.cpu_count()} CPUs"
        + (" (--quick sizes)" if args.quick else "")
    )
    table = pipeline_table()
    print_table("The broker's limit and the pipeline against it", ["#", "measure", "value"], table)
    print_table(
        "Every benchmark",
        ["benchmark", "status", "min", "load at start", "last line"],
        [
            [
                o.name,
                o.status,
                f"{o.seconds / 60:.1f}",
                f"{o.load_at_start:.1f}",
                (o.tail[-1] if o.tail else "")[:90],
            ]
            for o in outcomes
        ],
    )
    busy = [o for o in outcomes if o.load_at_start > (os.cpu_count() or 1) * 0.5]
    if busy:
        print(
            f"\nnote: the machine was busy (load >= half the CPUs) when {len(busy)} benchmark(s) started: "
            "their timings are pessimistic; re-run on a quiet machine to compare"
        )
    missed = [o.name for o in outcomes if o.status == "target NOT MET"]
    if missed:
        print(f"\n--check: a target is NOT MET in {', '.join(missed)} (its output above says which)")
    summary = {
        "quick": args.quick,
        "check": args.check,
        "pipeline_table": table,
        "benchmarks": [o.__dict__ for o in outcomes],
    }
    (OUT / "run_all.json").write_text(json.dumps(summary, indent=2))
    print(f"\nwrote {OUT / 'run_all.json'}")
    return 0 if all(o.status == "ok" or o.status.startswith("skipped") for o in outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
