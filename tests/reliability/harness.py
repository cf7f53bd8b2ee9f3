"""What the reliability scenarios share: the real services as subprocesses (with kill and restart),
a background reader of `olp.documents` that timestamps every document, and the audit that counts
lost and duplicated sentences in the final documents.

Built on the stack launcher (`launcher/stack.py` through `tests/support/stack.py`: the services,
configured by OLP_* variables only) and the scripted OpenAI-compatible server of
`launcher/scripted_llm.py`.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from launcher.clients import DocumentView, follow_documents, follow_topic
from launcher.embedded import ChildProcess
from launcher.scripted_roles import PRODUCTS, aspect_of
from olp.errors import OlpError
from olp.feeds import read_transcript, with_end_marker
from olp.settings import Settings
from schemas.codec import make_codec
from tests.support.stack import ServiceStack

SAMPLE = Path(__file__).parents[2] / "olp" / "data" / "sample_livestream.jsonl"
ASPECTS = ["Opening", "Order Urging", "Price", "Product Description"]
CRASH_MARKERS = ("bug in stage", "Traceback (most recent call last)")
"""Log lines that mean our code crashed on something (a bug), as opposed to a handled fault."""


# --- services ---------------------------------------------------------------------------------


@dataclass
class Stack(ServiceStack):
    """The tests' ServiceStack whose workers each have their own data dir (separate pods), with
    kills counted and a supervisor that restarts what exits."""

    kills: int = 0

    def start_worker(
        self, roles: str = "all", own_data_dir: bool = True, timeout_s: float = 90
    ) -> ChildProcess:
        return super().start_worker(roles, own_data_dir, timeout_s)

    def kill(self, child: ChildProcess) -> None:
        """SIGKILL the child's process group: no shutdown hook runs, nothing is flushed."""
        child.kill()
        self.kills += 1

    def restart_worker(self, child: ChildProcess) -> ChildProcess:
        return self.restart(child)

    def restart_policy_store(self, child: ChildProcess) -> ChildProcess:
        return self.restart(child, 60)

    def supervise(self) -> Callable[[], int]:
        """Restart any child that exits, as Kubernetes would, until the returned `stop()` is
        called; `stop()` returns how many restarts there were."""
        halt = threading.Event()
        restarts = [0]

        def run() -> None:
            while not halt.is_set():
                for child in list(self.children):
                    if halt.is_set() or child.alive():
                        continue
                    try:
                        if child.name == "policy-store":
                            self.restart_policy_store(child)
                        else:
                            self.restart_worker(child)
                        restarts[0] += 1
                    except Exception:  # not up yet (e.g. no broker): try again
                        time.sleep(1.0)
                halt.wait(0.5)

        thread = threading.Thread(target=run, name="supervisor", daemon=True)
        thread.start()

        def stop() -> int:
            halt.set()
            thread.join(120)
            return restarts[0]

        return stop

    def crash_lines(self) -> list[str]:
        """Log lines of every child (all its lives) that show a crash of our code."""
        found = []
        for path in sorted({c.log_path for c in self.children}):
            with contextlib.suppress(OSError):
                for line in path.read_text(errors="replace").splitlines():
                    if any(m in line for m in CRASH_MARKERS):
                        found.append(f"{path.name}: {line.strip()[:300]}")
        return found

    def logs(self) -> str:
        """The last meaningful lines of every child's log (health probes left out)."""
        parts = []
        for child in self.children:
            try:
                lines = child.log_path.read_text(errors="replace").splitlines()
            except OSError:
                lines = []
            lines = [line for line in lines if "/readyz" not in line and "/healthz" not in line]
            parts.append(f"--- {child.name} ---\n" + "\n".join(line[:400] for line in lines[-40:]))
        return "\n".join(parts)

    def worker_stats(self) -> dict[int, Any]:
        """Each live worker's counters (its /readyz: done.<stage>, dlq.<stage>, ...)."""
        stats = {}
        for port in self.worker_ports:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as resp:
                    stats[port] = json.load(resp).get("stats")
            except (OSError, ValueError):
                stats[port] = None
        return stats

    def dead_children(self) -> list[str]:
        return [c.name for c in self.children if not c.alive()]


# --- input ------------------------------------------------------------------------------------


def sample_segments(stream_id: str, limit: int | None = None) -> list[dict[str, Any]]:
    """The bundled 145-sentence live-commerce stream (optionally its first `limit` sentences),
    the last one marked as the end of the stream."""
    segments = list(read_transcript(SAMPLE, stream_id))[:limit]
    return list(with_end_marker(segments))


def interleave(*streams: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Round-robin over several streams, as concurrent live streams arrive."""
    out: list[dict[str, Any]] = []
    for i in range(max(len(s) for s in streams)):
        out.extend(s[i] for s in streams if i < len(s))
    return out


def expected_documents(segments: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """What a perfect model makes of (a prefix of) the sample: one final document per product it
    reaches, each sentence under the scripted organiser's aspect (as in test_pipeline_e2e)."""
    texts = {int(s["segment_id"]): str(s["text"]) for s in segments}
    ids = sorted(texts)
    products = [p for p in PRODUCTS if p[1] <= ids[-1]]
    expected = []
    for index, (name, first, _) in enumerate(products):
        end = products[index + 1][1] - 1 if index + 1 < len(products) else ids[-1]
        span = [i for i in ids if first <= i <= end]
        aspects: dict[str, list[dict[str, Any]]] = {a: [] for a in ASPECTS}
        for i in span:
            aspects[aspect_of(texts[i])].append({"id": i, "text": texts[i]})
        expected.append(
            {
                "topic_id": str(span[0]),
                "name": name,
                "first_id": span[0],
                "last_id": span[-1],
                "final": True,
                "aspects": [{"name": a, "sentences": aspects[a]} for a in ASPECTS],
            }
        )
    return expected


def comparable(documents: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    keys = ("topic_id", "name", "first_id", "last_id", "final", "aspects")
    return [{k: d[k] for k in keys} for d in documents]


# --- output -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Audit:
    """Sentences of a stream in its final documents (newest version of each topic)."""

    sent: int
    lost: int
    duplicated: int
    unexpected: int
    """Sentence ids in the documents that were never sent (must be 0)."""

    @property
    def clean(self) -> bool:
        return self.lost == 0 and self.duplicated == 0 and self.unexpected == 0


def audit(documents: Iterable[Mapping[str, Any]], segment_ids: Iterable[int]) -> Audit:
    """Count each sent sentence id across every aspect of every document: 0 = lost, >1 = duplicated."""
    ids = set(segment_ids)
    seen = Counter(int(s["id"]) for d in documents for aspect in d["aspects"] for s in aspect["sentences"])
    return Audit(
        sent=len(ids),
        lost=sum(1 for i in ids if seen[i] == 0),
        duplicated=sum(n - 1 for i, n in seen.items() if n > 1),
        unexpected=sum(1 for i in seen if i not in ids),
    )


@dataclass
class DocumentCollector:
    """Reads `olp.documents` in a thread from the start; keeps the newest version of each topic and
    the arrival time (time.monotonic) of every record."""

    settings: Settings
    view: DocumentView = field(default_factory=DocumentView)
    arrivals: list[tuple[float, str, str, int]] = field(default_factory=list)
    """(arrival time, stream_id, topic_id, version) of every document record read."""
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    error: BaseException | None = None

    def start(self) -> DocumentCollector:
        self._thread = threading.Thread(target=self._run, name="documents", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            source = follow_documents(self.settings)
            try:
                for doc in source:
                    if self._stop.is_set():
                        return
                    if doc is None:
                        continue
                    with self._lock:
                        self.arrivals.append(
                            (
                                time.monotonic(),
                                str(doc["stream_id"]),
                                str(doc["topic_id"]),
                                int(doc["version"]),
                            )
                        )
                        self.view.apply(doc)
            except OlpError as exc:
                if "does not exist" not in str(exc):  # (a new broker: the services re-create it)
                    self.error = exc
                    return
                time.sleep(0.5)
            except BaseException as exc:  # reported by wait(); the thread must not die silently
                self.error = exc
                return
            finally:
                source.close()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)

    def stream(self, stream_id: str) -> list[dict[str, Any]]:
        with self._lock:
            return self.view.stream(stream_id)

    def covers(self, stream_id: str, segment_ids: Iterable[int]) -> bool:
        with self._lock:
            return self.view.covers(stream_id, segment_ids)

    def first_arrival_after(self, t: float) -> float | None:
        with self._lock:
            return next((a for a, *_ in self.arrivals if a > t), None)

    def wait(
        self,
        done: Callable[[], bool],
        timeout_s: float,
        alive: Callable[[], list[str]] = list,
        describe: Callable[[], str] = str,
    ) -> float:
        """Poll until `done()`; fail when the time is up, the reader failed or `alive()` names a dead
        child. Returns the seconds waited."""
        started = time.monotonic()
        while not done():
            if self.error is not None:
                raise AssertionError(f"document reader failed: {self.error!r}")
            dead = alive()
            if dead:
                raise AssertionError(f"died: {dead}\n{describe()}")
            if time.monotonic() - started > timeout_s:
                raise AssertionError(f"not done after {timeout_s:.0f}s\n{describe()}")
            time.sleep(0.2)
        return time.monotonic() - started


def read_all(settings: Settings, topic: str, expected: str, quiet_s: float = 1.5) -> list[dict[str, Any]]:
    """Every record of `topic` (decoded as `expected`): read from the start until `quiet_s` without one."""
    codec = make_codec(settings.schema_registry_url)
    records: list[dict[str, Any]] = []
    last = time.monotonic()
    for msg in follow_topic(settings, topic):
        if msg is not None:
            records.append(codec.decode(msg.value(), expected, topic=topic))
            last = time.monotonic()
        elif time.monotonic() - last > quiet_s:
            break
    return records


def read_raw(settings: Settings, topic: str, quiet_s: float = 1.5) -> list[Any]:
    """Every raw message of `topic` (confluent Message objects)."""
    messages: list[Any] = []
    last = time.monotonic()
    for msg in follow_topic(settings, topic):
        if msg is not None:
            messages.append(msg)
            last = time.monotonic()
        elif time.monotonic() - last > quiet_s:
            break
    return messages


def describe_difference(got: Sequence[Mapping[str, Any]], want: Sequence[Mapping[str, Any]]) -> str:
    """A short account of how two document lists differ (for assertion messages)."""

    def placed(docs: Sequence[Mapping[str, Any]]) -> dict[int, tuple[str, str]]:
        return {
            int(s["id"]): (str(d["topic_id"]), str(a["name"]))
            for d in docs
            for a in d["aspects"]
            for s in a["sentences"]
        }

    g, w = placed(got), placed(want)
    spans = [(d["topic_id"], d["name"], d["first_id"], d["last_id"], d["final"]) for d in got]
    wrong = {i: (g.get(i), w.get(i)) for i in sorted(set(g) | set(w)) if g.get(i) != w.get(i)}
    return f"got spans {spans}; sentences placed differently (got, want): {dict(list(wrong.items())[:12])}"
