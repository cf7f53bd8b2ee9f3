"""What `olp demo` measures and prints at its end (spec section 7): the real-time factor, the lag
from a sentence's arrival to its final document, the quality against the sample's gold labels,
the memory of every process of the stack, and the LLM calls and prompt tokens per chunk.

The computations are pure functions over plain values; the readers (procfs, `olp.feedback`) and
the printers are thin shells around them.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import olp
from launcher.console import console, safe
from olp.settings import Settings

SAMPLE = Path(olp.__file__).parent / "data" / "sample_livestream.jsonl"
SPEECH_SENTENCES_PER_S = 2.5
"""The pace of a live host, the benchmarks' too: what a real-time factor of 1 must keep up with."""
MEMORY_BUDGET_MB = 4096
"""The whole default stack must fit in 4 GB (broker, model server, services, the CLI)."""
CLI = "olp (this CLI)"


# --- lag: a sentence's arrival -> the first final document holding it ------------------------


@dataclass
class SentenceLags:
    """When each sentence was sent and when a final document first held it (monotonic seconds)."""

    sent_at: dict[int, float] = field(default_factory=dict)
    final_at: dict[int, float] = field(default_factory=dict)

    def sent(self, segment_id: int, at: float) -> None:
        self.sent_at[segment_id] = at

    def document(self, document: Mapping[str, Any], at: float) -> None:
        """Note the sentences a final document holds that no earlier final document held."""
        if not document["final"]:
            return
        first, last = int(document["first_id"]), int(document["last_id"])
        for segment_id in self.sent_at:
            if first <= segment_id <= last:
                self.final_at.setdefault(segment_id, at)

    def lags(self) -> list[float]:
        """Seconds from sending to the final document, for every sentence that has both."""
        return [self.final_at[i] - t for i, t in self.sent_at.items() if i in self.final_at]


@dataclass(frozen=True)
class LagSummary:
    sentences: int
    p50_s: float
    p99_s: float
    max_s: float


def summarise_lags(lags: Sequence[float]) -> LagSummary | None:
    """Median, 99th percentile (linear interpolation between the order statistics) and maximum."""
    if not lags:
        return None
    if len(lags) == 1:
        return LagSummary(1, lags[0], lags[0], lags[0])
    cuts = statistics.quantiles(lags, n=100, method="inclusive")
    return LagSummary(len(lags), cuts[49], cuts[98], max(lags))


# --- memory: resident set of each process of the stack, its descendants included -------------


def process_groups(roots: Mapping[str, int], parents: Mapping[int, int]) -> dict[str, set[int]]:
    """Name -> the pids of the named process and of its descendants (a server that forks), a
    descendant that is itself named counting under its own name only."""
    children: dict[int, list[int]] = {}
    for pid, parent in parents.items():
        children.setdefault(parent, []).append(pid)
    named = set(roots.values())
    groups: dict[str, set[int]] = {}
    for name, root in roots.items():
        group, todo = set(), [root]
        while todo:
            pid = todo.pop()
            if pid in group or (pid != root and pid in named):
                continue
            group.add(pid)
            todo += children.get(pid, [])
        groups[name] = group
    return groups


def group_rss_mb(groups: Mapping[str, set[int]], rss_mb: Mapping[int, float]) -> dict[str, float]:
    """Name -> the summed resident memory of its processes (a process gone counts 0)."""
    return {name: sum(rss_mb.get(pid, 0.0) for pid in pids) for name, pids in groups.items()}


@dataclass
class PeakMemory:
    """The highest resident memory seen per name and in total over a series of samples."""

    per_name_mb: dict[str, float] = field(default_factory=dict)
    total_mb: float = 0.0

    def add(self, sample: Mapping[str, float]) -> None:
        for name, mb in sample.items():
            self.per_name_mb[name] = max(self.per_name_mb.get(name, 0.0), mb)
        self.total_mb = max(self.total_mb, sum(sample.values()))


def proc_status(pid_dir: Path) -> dict[str, str] | None:
    """The fields of a process's /proc status file (Linux); None when it is gone."""
    try:
        status = (pid_dir / "status").read_text()
    except OSError:
        return None
    return {k: v.strip() for k, v in (line.split(":", 1) for line in status.splitlines() if ":" in line)}


def memory_mb(pid: int, field: str = "VmRSS", proc: Path = Path("/proc")) -> float:
    """A process's resident memory (`VmRSS`) or its peak (`VmHWM`) in MB; 0 when gone or none
    (kernel threads have none)."""
    fields = proc_status(proc / str(pid)) or {}
    return int(fields.get(field, "0 kB").split()[0]) / 1024


def read_processes(proc: Path = Path("/proc")) -> tuple[dict[int, int], dict[int, float]]:
    """pid -> parent pid and pid -> VmRSS in MB of every process now (Linux procfs)."""
    parents: dict[int, int] = {}
    rss: dict[int, float] = {}
    for entry in proc.iterdir():
        fields = proc_status(entry) if entry.name.isdigit() else None
        if fields is None:
            continue  # not a process, or gone meanwhile
        pid = int(entry.name)
        parents[pid] = int(fields.get("PPid", "0") or 0)
        rss[pid] = int(fields.get("VmRSS", "0 kB").split()[0]) / 1024
    return parents, rss


class MemorySampler:
    """Samples the resident memory of the processes `roots()` names every `interval_s` seconds in
    a daemon thread, keeping the peaks (a model server's peak comes mid-run, not at the end)."""

    def __init__(self, roots: Callable[[], Mapping[str, int]], interval_s: float = 0.5) -> None:
        self.peak = PeakMemory()
        self._roots, self._interval_s = roots, interval_s
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="memory-sampler", daemon=True)

    def __enter__(self) -> MemorySampler:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stopped.set()
        self._thread.join()

    def sample(self) -> None:
        if not Path("/proc/self/status").exists():
            return  # not Linux: nothing to report
        parents, rss = read_processes()
        self.peak.add(group_rss_mb(process_groups(self._roots(), parents), rss))

    def _run(self) -> None:
        while not self._stopped.is_set():
            self.sample()
            self._stopped.wait(self._interval_s)


def stack_processes(stack_pids: Mapping[str, int]) -> dict[str, int]:
    """The stack's children and this CLI (whose own descendants are those children)."""
    return {**stack_pids, CLI: os.getpid()}


def print_memory(peak: PeakMemory) -> None:
    if not peak.per_name_mb:
        return
    parts = ", ".join(f"{safe(name)} {mb:.0f}" for name, mb in peak.per_name_mb.items())
    over = peak.total_mb > MEMORY_BUDGET_MB
    verdict = "[bold red]over[/]" if over else "within"
    console.print(
        f"memory (peak RSS in MB, each with its child processes): {parts}; total {peak.total_mb:.0f}"
        f" MB, {verdict} the {MEMORY_BUDGET_MB / 1024:.0f} GB budget"
    )


# --- LLM calls and prompt tokens per chunk ---------------------------------------------------


@dataclass
class RoleCalls:
    llm_calls: int = 0
    prompt_tokens: int = 0
    encoder_calls: int = 0


@dataclass(frozen=True)
class CallTable:
    """The model calls that processed one stream, per role (the processors' own outcomes only:
    evidence about a call repeats its context, not a second call)."""

    roles: dict[str, RoleCalls]
    chunks: int
    canary_chunks: int
    canary_llm_calls: int
    canary_prompt_tokens: int


def call_table(outcomes: Iterable[Mapping[str, Any]], stream_id: str, encoders: set[str]) -> CallTable:
    """Count the RoleOutcomes (schemas/role_outcome.avsc) of `stream_id` per role, LLM and encoder
    calls apart (`encoders`: the catalog's encoder models), and those of gold canary chunks."""
    from processors.evidence import is_canary

    roles: dict[str, RoleCalls] = {}
    chunks: set[str] = set()
    canary_chunks: set[str] = set()
    canary_calls = canary_tokens = 0
    for outcome in outcomes:
        if outcome.get("source", "processor") != "processor":
            continue
        is_encoder = outcome["model"] in encoders
        if is_canary(outcome["stream_id"]):
            canary_chunks.add(str(outcome["chunk_id"]))
            if not is_encoder:
                canary_calls += 1
                canary_tokens += int(outcome["tokens_in"])
            continue
        if outcome["stream_id"] != stream_id:
            continue
        chunks.add(str(outcome["chunk_id"]))
        calls = roles.setdefault(str(outcome["role"]), RoleCalls())
        if is_encoder:
            calls.encoder_calls += 1
        else:
            calls.llm_calls += 1
            calls.prompt_tokens += int(outcome["tokens_in"])
    by_role = dict(sorted(roles.items()))
    return CallTable(by_role, len(chunks), len(canary_chunks), canary_calls, canary_tokens)


def print_calls(table: CallTable) -> None:
    """One row per role: its LLM calls and prompt tokens (the server's count), in all and per
    chunk of the stream, and its encoder calls."""
    from rich import box
    from rich.table import Table

    grid = Table(box=box.SIMPLE_HEAD, title_justify="left", show_edge=False, pad_edge=False)
    grid.title = (
        f"model calls on the stream's {table.chunks} chunks (tokens: the LLM prompt tokens the"
        " server counted; encoder: encoder calls)"
    )
    grid.add_column("role", no_wrap=True)
    for header in ("LLM calls", "tokens", "calls/chunk", "tokens/chunk", "encoder"):
        grid.add_column(header, justify="right")
    total = RoleCalls()
    for role, calls in table.roles.items():
        grid.add_row(safe(role), *_call_cells(calls, table.chunks))
        total.llm_calls += calls.llm_calls
        total.prompt_tokens += calls.prompt_tokens
        total.encoder_calls += calls.encoder_calls
    grid.add_row("all roles", *_call_cells(total, table.chunks), style="bold")
    console.print(grid)
    if table.canary_chunks:
        console.print(
            f"gold canaries beside it: {table.canary_chunks} chunk{'s' if table.canary_chunks != 1 else ''},"
            f" {table.canary_llm_calls} LLM calls,"
            f" {table.canary_prompt_tokens} prompt tokens"
        )


def _call_cells(calls: RoleCalls, chunks: int) -> tuple[str, ...]:
    per = max(chunks, 1)
    return (
        str(calls.llm_calls),
        str(calls.prompt_tokens),
        f"{calls.llm_calls / per:.1f}",
        f"{calls.prompt_tokens / per:.0f}",
        str(calls.encoder_calls),
    )


def read_outcomes(settings: Settings, timeout_s: float = 30.0) -> list[dict[str, Any]]:
    """Every RoleOutcome in `olp.feedback` so far, read from the start up to its end."""
    return asyncio.run(_read_outcomes(settings, timeout_s))


async def _read_outcomes(settings: Settings, timeout_s: float) -> list[dict[str, Any]]:
    from olp.kafka import caught_up, read_from_start
    from olp.topics import TopicNames
    from schemas.codec import make_codec

    topic = TopicNames.with_prefix(settings.topic_prefix).feedback
    codec = make_codec(settings.schema_registry_url)
    outcomes: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout_s
    wait_ms = settings.kafka.fetch_max_wait_ms
    async with read_from_start(settings.kafka, [topic], fetch_max_wait_ms=wait_ms) as (consumer, partitions):
        while not await caught_up(consumer, partitions) and time.monotonic() < deadline:
            for records in (await consumer.getmany(timeout_ms=200)).values():
                outcomes += [codec.decode(r.value, "RoleOutcome", topic=topic) for r in records]
    return outcomes


# --- speed and quality -----------------------------------------------------------------------


def print_speed(sentences: int, processing_s: float, lags: LagSummary | None, paced: bool) -> None:
    """The real-time factor (transcript seconds at the speaker's pace over processing seconds),
    and the lag a reader of the final documents sees behind the speaker."""
    speech_s = sentences / SPEECH_SENTENCES_PER_S
    console.print(
        f"real-time factor {speech_s / processing_s:.2f} ({speech_s:.0f} s of speech at"
        f" {SPEECH_SENTENCES_PER_S} sentences/s in {processing_s:.0f} s of processing"
        + (", replayed at that pace: at most 1 by construction, the lag tells)" if paced else ")")
    )
    if lags is not None:
        console.print(
            f"lag from a sentence's arrival to its final document: p50 {lags.p50_s:.1f} s,"
            f" p99 {lags.p99_s:.1f} s, max {lags.max_s:.1f} s ({lags.sentences} sentences)"
        )


def print_quality(documents: list[dict[str, Any]], transcript: Path) -> None:
    """For the bundled sample, how good against its hand-written gold labels (processors/gold.py)."""
    if transcript.resolve() != SAMPLE.resolve():
        return
    from launcher.stack import SAMPLE_GOLD
    from processors.gold import load_labelled, score_against_gold

    score = score_against_gold(documents, load_labelled(SAMPLE_GOLD))
    console.print(
        f"quality against the sample's gold labels: products found {score['products_found']:.0f}"
        f"/{score['products']:.0f}, topic span recall {score['span_recall']:.2f},"
        f" aspect accuracy {score['aspect_accuracy']:.2f}"
    )


CALIBRATION_TOLERANCE = 0.15
"""How far a learned quality estimate may sit from the canary-measured score (issue target)."""


@dataclass(frozen=True, slots=True)
class Calibration:
    """One role and model: the learner's quality estimate against the gold canaries' score."""

    role: str
    model: str
    estimate: float
    canary: float
    canary_n: float
    gap: float


def calibrations(policy: Mapping[str, Any]) -> list[Calibration]:
    """Every role and model of `/v1/policy` whose estimate the canaries measured."""
    rows = []
    for role in policy.get("roles") or ():
        for model, ev in sorted((role.get("evidence") or {}).items()):
            if ev.get("canary_mean") is not None:
                rows.append(
                    Calibration(
                        str(role["role"]),
                        str(model),
                        float(ev["quality"]),
                        float(ev["canary_mean"]),
                        float(ev.get("canary") or 0.0),
                        float(ev["canary_gap"]),
                    )
                )
    return rows


def print_calibration(rows: Sequence[Calibration]) -> None:
    """The learner's calibration after the run: estimate vs canary score per role and model."""
    from rich.table import Table

    if not rows:
        console.print("calibration: no canary scored a model (canaries off?)")
        return
    grid = Table("role", "model", "estimate k", "canary k", "canary n", "gap", box=None)
    for row in rows:
        flag = "[red]" if row.gap > CALIBRATION_TOLERANCE else ""
        grid.add_row(
            row.role,
            row.model,
            f"{row.estimate:+.2f}",
            f"{row.canary:+.2f}",
            f"{row.canary_n:g}",
            f"{flag}{row.gap:.2f}",
        )
    console.print(grid)
    within = sum(row.gap <= CALIBRATION_TOLERANCE for row in rows)
    console.print(
        f"calibration: {within} of {len(rows)} estimates within {CALIBRATION_TOLERANCE} of their canary score"
    )
