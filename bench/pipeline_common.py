"""Shared plumbing of the pipeline benchmarks (spec section 9): the embedded broker and the
instant model as child processes, the services (policy store + workers, started by the stack
launcher `launcher/stack.py`), synthetic streams, a paced producer, a follower that timestamps
every pipeline record, per-hop latency from Kafka record timestamps, process CPU/RSS from /proc,
tables and JSON output.

Latency per hop comes from Kafka timestamps (CreateTime, set by each producer when it sends):
hop(stage) = timestamp of the stage's output record - timestamp of the record that triggered it,
so hops add up to the end-to-end time. The Chunk Splitter's trigger is the later of the segment
that completed the chunk (its newest sentence) and the previous chunk's ChunkDone.

Writes `bench/out/<name>.json` (gitignored) through `save_json`.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline_model import synthetic_text

from launcher.demo_report import memory_mb
from launcher.embedded import ChildProcess, start_broker
from launcher.stack import ServiceStack
from olp.catalog import Catalog, ModelSpec
from olp.topics import TopicNames, ensure_topics
from schemas.codec import make_codec

ROOT = Path(__file__).resolve().parents[1]

OUT_DIR = ROOT / "bench" / "out"
MODEL_BACKEND = (
    "instant model = scripted OpenAI-compatible HTTP server (launcher/scripted_llm.py + "
    "bench/pipeline_model.py) in its own process, answering at once as a perfect model"
)
PIPELINE_TOPICS = ("chunks", "found", "located", "checked", "organized", "progress", "dlq")
HOPS = (
    ("chunk_splitter", "trigger", "chunks"),
    ("topic_finder", "chunks", "found"),
    ("topic_locator", "found", "located"),
    ("relationship_checker", "located", "checked"),
    ("content_organizer", "checked", "organized"),
    ("format_checker", "organized", "progress"),
)


# --- output ---------------------------------------------------------------------------------


def save_json(name: str, payload: Mapping[str, Any]) -> Path:
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    path = OUT_DIR / f"{name}.json"
    path.write_text(json.dumps(payload, indent=2, default=str))
    return path


def load_json(name: str) -> dict[str, Any] | None:
    path = OUT_DIR / f"{name}.json"
    try:
        return dict(json.loads(path.read_text()))
    except (OSError, ValueError):
        return None


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty sequence."""
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return float(ordered[rank - 1])


def summary(values: Sequence[float]) -> dict[str, float]:
    if not values:
        return {"n": 0}
    return {
        "n": len(values),
        "p50": percentile(values, 50),
        "p99": percentile(values, 99),
        "max": float(max(values)),
        "mean": float(statistics.fmean(values)),
    }


def print_table(title: str, headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    cells = [[str(h) for h in headers]] + [[_cell(v) for v in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    print(f"\n{title}")
    line = "  ".join("-" * w for w in widths)
    for index, row in enumerate(cells):
        print(
            "  ".join(
                c.rjust(w) if index and _numeric(c) else c.ljust(w) for c, w in zip(row, widths, strict=True)
            )
        )
        if index == 0:
            print(line)


def _cell(value: Any) -> str:
    if isinstance(value, float):
        if value == 0:
            return "0"
        if abs(value) >= 100:
            return f"{value:,.0f}"
        return f"{value:.3g}" if abs(value) < 1 else f"{value:.1f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _numeric(text: str) -> bool:
    return bool(text) and (text[0].isdigit() or text[0] == "-") and not text.startswith("--")


def machine() -> dict[str, Any]:
    """What the numbers depend on; a shared machine shows up in the load average."""
    return {
        "cpus": os.cpu_count(),
        "loadavg_1m_at_start": os.getloadavg()[0],
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


# --- processes ------------------------------------------------------------------------------

_TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process (children not included)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _TICK


def rss_mb(pid: int) -> float:
    return memory_mb(pid)


@contextlib.contextmanager
def broker(work_dir: Path) -> Iterator[tuple[str, int]]:
    """The embedded Tansu broker; yields (bootstrap, pid)."""
    child, bootstrap = start_broker(work_dir / "broker")
    try:
        assert child.proc is not None
        yield bootstrap, child.proc.pid
    finally:
        child.stop()


@contextlib.contextmanager
def instant_model(work_dir: Path) -> Iterator[tuple[str, int]]:
    """The instant model in its own process; yields (base URL, pid)."""
    port_file = work_dir / f"model-{uuid.uuid4().hex[:6]}.url"
    child = ChildProcess(
        "instant-model",
        [sys.executable, str(ROOT / "bench" / "pipeline_model.py"), "--port-file", str(port_file)],
        {**os.environ, "PYTHONPATH": str(ROOT)},
        work_dir / "instant-model.log",
    ).start()
    try:
        child.wait_until(port_file.exists, 30, "instant model")
        time.sleep(0.05)
        assert child.proc is not None
        yield port_file.read_text().strip(), child.proc.pid
    finally:
        child.stop()


def instant_catalog(base_url: str, names: Sequence[str] = ("instant",)) -> Catalog:
    """Models of the instant backend; prices rise with the position in `names`."""
    return Catalog(
        models=tuple(
            ModelSpec(
                name=name,
                base_url=base_url,
                price_in_per_mtok=0.1 * (i + 1),
                price_out_per_mtok=0.4 * (i + 1),
                timeout_s=10,
                max_concurrency=64,
            )
            for i, name in enumerate(names)
        )
    )


@dataclass
class Services:
    """Topics with a fresh prefix, the policy store and N workers on a running broker."""

    bootstrap: str
    work_dir: Path
    catalog: Catalog
    env: Mapping[str, str] = field(default_factory=dict)
    partitions: int = 4
    prefix: str = field(default_factory=lambda: f"b{uuid.uuid4().hex[:8]}.")
    stack: ServiceStack | None = None

    def start(self, workers: int = 1) -> Services:
        ensure_topics({"bootstrap.servers": self.bootstrap}, self.topics.all(), self.partitions)
        run_dir = self.work_dir / self.prefix.rstrip(".")
        run_dir.mkdir(parents=True, exist_ok=True)
        env = {
            "OTEL_SDK_DISABLED": "true",
            "OLP_LOG_LEVEL": "WARNING",
            "OLP_LEARNER__EPSILON": "0",
            **self.env,
        }
        self.stack = ServiceStack(
            self.bootstrap, self.prefix, run_dir, self.catalog, env, partitions=self.partitions
        )
        self.stack.start_policy_store()
        for _ in range(workers):
            self.stack.start_worker()
        return self

    @property
    def topics(self) -> TopicNames:
        return TopicNames.with_prefix(self.prefix)

    def pids(self) -> dict[str, int]:
        assert self.stack is not None
        return self.stack.pids()

    def worker_pids(self) -> list[int]:
        return [pid for name, pid in self.pids().items() if name.startswith("worker")]

    def check_alive(self) -> None:
        assert self.stack is not None
        self.stack.check_alive()

    def stop(self) -> None:
        if self.stack is not None:
            self.stack.stop()


# --- input ----------------------------------------------------------------------------------


def synthetic_segments(
    stream_id: str, count: int, first_id: int = 1, end_of_stream: bool = True
) -> list[dict[str, Any]]:
    """`count` sentences of an endless synthetic live-commerce stream (bench/pipeline_model.py)."""
    base = 1_700_000_000_000
    segments = [
        {
            "stream_id": stream_id,
            "segment_id": i,
            "text": synthetic_text(i),
            "ts_ms": base + 400 * i,
            "speaker": None,
            "domain": "ecommerce",
            "lang": "en",
            "feed": "default",
            "end_of_stream": False,
        }
        for i in range(first_id, first_id + count)
    ]
    if end_of_stream and segments:
        segments[-1]["end_of_stream"] = True
    return segments


def interleave(streams: Sequence[Sequence[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Round-robin over streams, as concurrent live streams arrive."""
    out: list[dict[str, Any]] = []
    longest = max((len(s) for s in streams), default=0)
    for i in range(longest):
        out.extend(s[i] for s in streams if i < len(s))
    return out


Encoded = tuple[bytes, bytes, str, int]
"""(key, value, stream_id, segment_id)"""


def encode(segments: Iterable[Mapping[str, Any]]) -> list[Encoded]:
    codec = make_codec(None)
    return [
        (
            str(s["stream_id"]).encode(),
            codec.encode("TranscriptSegment", s),
            str(s["stream_id"]),
            int(s["segment_id"]),
        )
        for s in segments
    ]


def produce(
    bootstrap: str,
    topic: str,
    records: Sequence[Encoded],
    rate: float | None = None,
    sent_at: dict[tuple[str, int], float] | None = None,
) -> tuple[float, float]:
    """Produce pre-encoded segments, at most `rate` per second (None: as fast as possible).
    Records each segment's produce time in `sent_at`; returns (first, last) produce time."""
    from confluent_kafka import Producer

    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "linger.ms": 5 if rate is None else 1,
            "partitioner": "murmur2_random",  # the partitioner of aiokafka/Faust (launcher/clients.py)
            "queue.buffering.max.messages": 1_000_000,
        }
    )
    first = time.time()
    for index, (key, value, stream_id, segment_id) in enumerate(records):
        if rate:
            due = first + index / rate
            delay = due - time.time()
            if delay > 0.002:
                producer.poll(0)
                time.sleep(delay)
        now = time.time()
        if sent_at is not None:
            sent_at[(stream_id, segment_id)] = now
        while True:
            try:
                producer.produce(topic, key=key, value=value)
                break
            except BufferError:
                producer.poll(0.01)
        if index % 1000 == 0:
            producer.poll(0)
    last = time.time()
    if producer.flush(60):
        raise RuntimeError("segments not delivered within 60 s")
    return first, last


# --- following the pipeline -----------------------------------------------------------------


@dataclass
class Seen:
    """First Kafka timestamp (s) of each chunk on each pipeline topic, and what completion needs."""

    ts: dict[str, dict[str, float]] = field(default_factory=lambda: defaultdict(dict))
    chunks: dict[str, dict[str, Any]] = field(default_factory=dict)
    last_chunk_done: set[str] = field(default_factory=set)
    """Streams whose last chunk (is_last) is done."""
    done_count: int = 0
    dead_letters: int = 0
    records: int = 0


class Follower:
    """Reads the pipeline topics of a prefix from the beginning in a thread, timestamping chunks.

    Only Chunk and ChunkDone records are decoded while the pipeline runs (cheap); RoleResults are
    kept as raw bytes and decoded by `finish()` when the run is over.
    """

    def __init__(self, bootstrap: str, prefix: str) -> None:
        self.bootstrap, self.prefix = bootstrap, prefix
        self.seen = Seen()
        self._raw: list[tuple[str, float, bytes]] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="follower", daemon=True)
        self._codec = make_codec(None)
        self.error: BaseException | None = None

    def start(self) -> Follower:
        self._thread.start()
        return self

    def _run(self) -> None:
        try:
            self._follow()
        except BaseException as exc:  # reported by wait()
            self.error = exc

    def _follow(self) -> None:
        from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

        consumer = Consumer(
            {
                "bootstrap.servers": self.bootstrap,
                "group.id": f"bench-follow-{uuid.uuid4().hex[:8]}",
                "enable.auto.commit": False,
                "fetch.wait.max.ms": 10,
            }
        )
        names = [self.prefix + t for t in PIPELINE_TOPICS]
        try:
            assignment = []
            for name in names:
                meta = consumer.list_topics(name, timeout=30).topics[name]
                assignment += [TopicPartition(name, p, OFFSET_BEGINNING) for p in meta.partitions]
            consumer.assign(assignment)
            while not self._stop.is_set():
                for msg in consumer.consume(1000, 0.05):
                    if msg.error():
                        continue
                    self._take(msg.topic()[len(self.prefix) :], msg.timestamp()[1] / 1000.0, msg.value())
        finally:
            consumer.close()

    def _take(self, topic: str, ts: float, value: bytes) -> None:
        seen = self.seen
        with self._lock:
            seen.records += 1
            if topic == "chunks":
                chunk = self._codec.decode(value, "Chunk")
                cid = chunk["chunk_id"]
                if cid not in seen.ts["chunks"]:
                    seen.ts["chunks"][cid] = ts
                    seen.chunks[cid] = {
                        "stream_id": chunk["stream_id"],
                        "seq": chunk["seq"],
                        "ids": [s["id"] for s in chunk["sentences"]],
                        "is_last": chunk["is_last"],
                    }
            elif topic == "progress":
                done = self._codec.decode(value, "ChunkDone")
                cid = done["chunk_id"]
                if cid not in seen.ts["progress"]:
                    seen.ts["progress"][cid] = ts
                    seen.done_count += 1
                    info = seen.chunks.get(cid)
                    if info is not None and info["is_last"]:
                        seen.last_chunk_done.add(info["stream_id"])
                    elif info is None:
                        seen.ts["early_done"][cid] = ts
            elif topic == "dlq":
                seen.dead_letters += 1
            else:
                self._raw.append((topic, ts, value))

    def wait(self, done: Callable[[Seen], bool], timeout_s: float, check: Callable[[], None]) -> float:
        """Wait until `done(seen)`; returns the time it became true. Calls `check` to fail fast."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.error is not None:
                raise RuntimeError(f"follower failed: {self.error!r}")
            with self._lock:
                # a done record read before its chunk: settle it now
                for cid in list(self.seen.ts.get("early_done", {})):
                    info = self.seen.chunks.get(cid)
                    if info is not None:
                        del self.seen.ts["early_done"][cid]
                        if info["is_last"]:
                            self.seen.last_chunk_done.add(info["stream_id"])
                if done(self.seen):
                    return time.time()
            check()
            time.sleep(0.05)
        raise TimeoutError(f"pipeline not done after {timeout_s:.0f} s: {self.progress()}")

    def progress(self) -> str:
        s = self.seen
        return (
            f"{len(s.chunks)} chunks, {s.done_count} done, {len(s.last_chunk_done)} streams finished, "
            f"{s.dead_letters} dead letters"
        )

    def finish(self) -> Seen:
        """Stop following and decode the RoleResults read so far."""
        self._stop.set()
        self._thread.join(10)
        for topic, ts, value in self._raw:
            record = self._codec.decode(value, "RoleResult")
            cid = record["chunk"]["chunk_id"]
            self.seen.ts[topic].setdefault(cid, ts)
        self._raw.clear()
        return self.seen


def hop_latencies(seen: Seen, sent_at: Mapping[tuple[str, int], float]) -> dict[str, Any]:
    """Per-hop and end-to-end latency (ms) of every chunk that went all the way through."""
    ts = seen.ts
    by_stream_seq = {(c["stream_id"], c["seq"]): cid for cid, c in seen.chunks.items()}
    hops: dict[str, list[float]] = {name: [] for name, _, _ in HOPS}
    chunk_e2e: list[float] = []
    segment_e2e: list[float] = []
    sent_upto: dict[str, int] = {}
    for cid, info in sorted(seen.chunks.items(), key=lambda kv: (kv[1]["stream_id"], kv[1]["seq"])):
        stream, seq, ids = info["stream_id"], info["seq"], info["ids"]
        newest = sent_at.get((stream, ids[-1]))
        previous = by_stream_seq.get((stream, seq - 1))
        released = ts["progress"].get(previous) if previous else None
        triggers = [t for t in (newest, released) if t is not None]
        if not triggers or cid not in ts["progress"]:
            continue
        stamps = {"trigger": max(triggers), **{t: ts[t].get(cid) for t in PIPELINE_TOPICS[:-1]}}
        if any(v is None for v in stamps.values()):
            continue
        for name, start, end in HOPS:
            hops[name].append(1000 * (stamps[end] - stamps[start]))
        chunk_e2e.append(1000 * (stamps["progress"] - stamps["trigger"]))
        upto = sent_upto.get(stream, -1)
        for i in ids:
            if i > upto and (stream, i) in sent_at:
                segment_e2e.append(1000 * (stamps["progress"] - sent_at[(stream, i)]))
        sent_upto[stream] = max(upto, ids[-1])
    return {
        "hops_ms": {name: summary(values) for name, values in hops.items()},
        "chunk_end_to_end_ms": summary(chunk_e2e),
        "segment_end_to_end_ms": summary(segment_e2e),
    }


def streams_finished(streams: Iterable[str]) -> Callable[[Seen], bool]:
    wanted = set(streams)
    return lambda seen: wanted <= seen.last_chunk_done


def quiescent(min_done: int, idle_s: float = 1.0) -> Callable[[Seen], bool]:
    """Every chunk cut so far is done, at least `min_done` of them, and nothing new for `idle_s`."""
    state = {"count": -1, "since": time.monotonic()}

    def check(seen: Seen) -> bool:
        count = seen.records
        if count != state["count"]:
            state["count"], state["since"] = count, time.monotonic()
            return False
        settled = seen.done_count >= len(seen.chunks) and seen.done_count >= min_done
        return settled and time.monotonic() - state["since"] >= idle_s

    return check


def run_quiet(argv: Sequence[str], timeout_s: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout_s, check=False)
