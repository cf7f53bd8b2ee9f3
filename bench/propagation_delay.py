"""Policy propagation delay (spec section 9): from a feedback event that changes
a role's best model to the first processor call that uses the new model.

    python bench/propagation_delay.py [--quick] [--trials 24] [--rate 200]

On the embedded broker, with the policy store and one worker and the instant model (in a thread of
this process, so every request's arrival time and model are seen), a catalog of `--models` equally
good models keeps the pipeline busy with live-paced synthetic streams (`--rate` segments/s over
`--streams` streams, chunk size 10, topics of 5 sentences, so every role is called many times a
second). Each trial picks
a role, makes its assigned model fail from then on (HTTP 400 from the instant model for that role,
so it stays failed and the processors fail over) and injects feedback into `olp.feedback` saying
so (5 consecutive failed processor outcomes, the way a model that starts to error looks; the
learner's circuit breaker opens after 3), then measures:

- publish: feedback produced -> the policy store's new Assignment for the role (Kafka timestamp);
- total:   feedback produced -> the first request for that role that reaches the new model as the
           call's first choice (what the spec measures: the processors switched and used it). Fail-over
           requests (a prompt the old model was just asked) do not count;
- so total - publish = the worker's apply + the wait for the role's next call.

Roles rotate; each trial retires one model of its role (its circuit breaker opens), hence
`--models` must exceed trials per role. Prints p50/p99 and the target (p99 < 1 s, spec section 9;
`--check` exits 3 when it is missed); writes bench/out/propagation_delay.json.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import pipeline_model
from pipeline_common import (
    Services,
    broker,
    encode,
    instant_catalog,
    interleave,
    machine,
    print_table,
    produce,
    save_json,
    summary,
    synthetic_segments,
)
from targets import Target, add_check_argument, report_targets

from launcher.scripted_llm import Reply, ScriptedLLM
from olp.contexts import ROLE_LEVEL
from olp.settings import ROLES
from schemas.codec import make_codec

CHUNK_SIZE = 10
INJECTED_FAILURES = 5
"""Consecutive failed outcomes per trial (the learner's breaker opens after 3 by default)."""


def _role_level(assignment: dict[str, Any]) -> bool:
    """The role's own assignment, not one of a context (olp/contexts.py)."""
    return str(assignment.get("context") or ROLE_LEVEL) == ROLE_LEVEL


class PolicyWatch:
    """Follows `olp.policy` in a thread: every Assignment with its Kafka timestamp."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.bootstrap, self.topic = bootstrap, topic
        self.assignments: list[tuple[float, dict[str, Any]]] = []
        self.lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> PolicyWatch:
        self._thread.start()
        return self

    def _run(self) -> None:
        from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

        codec = make_codec(None)
        consumer = Consumer(
            {
                "bootstrap.servers": self.bootstrap,
                "group.id": f"bench-policy-{uuid.uuid4().hex[:6]}",
                "enable.auto.commit": False,
                "fetch.wait.max.ms": 10,
            }
        )
        meta = consumer.list_topics(self.topic, timeout=30).topics[self.topic]
        consumer.assign([TopicPartition(self.topic, p, OFFSET_BEGINNING) for p in meta.partitions])
        try:
            while not self._stop.is_set():
                msg = consumer.poll(0.05)
                if msg is None or msg.error():
                    continue
                record = codec.decode(msg.value(), "Assignment")
                with self.lock:
                    self.assignments.append((msg.timestamp()[1] / 1000.0, record))
        finally:
            consumer.close()

    def latest(self, role: str) -> dict[str, Any] | None:
        with self.lock:
            found = [a for _, a in self.assignments if a["role"] == role and _role_level(a)]
        return max(found, key=lambda a: a["version"]) if found else None

    def first_change(self, role: str, old_model: str, after: float) -> tuple[float, dict[str, Any]] | None:
        with self.lock:
            for ts, a in self.assignments:
                if a["role"] == role and _role_level(a) and a["model"] != old_model and ts >= after - 0.005:
                    return ts, a
        return None

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)


class Traffic:
    """Live-paced synthetic streams in a thread, until stopped. Streams are out of phase (stream i
    starts i*K/streams sentences ahead), as independent live streams are, so chunks (and calls)
    come evenly rather than in bursts."""

    def __init__(self, bootstrap: str, topic: str, streams: int, rate: float, chunk_size: int) -> None:
        self.bootstrap, self.topic, self.streams, self.rate = bootstrap, topic, streams, rate
        self.chunk_size = chunk_size
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.error: BaseException | None = None

    def start(self) -> Traffic:
        self._thread.start()
        return self

    def _run(self) -> None:
        names = [f"p{i:03d}" for i in range(self.streams)]
        # Ids differ across streams, so two streams never send the same prompt (fail-over
        # requests are told apart from first asks by their prompt).
        next_id = {n: 1 + 1_000_000 * i for i, n in enumerate(names)}
        ahead = {n: i * self.chunk_size // self.streams for i, n in enumerate(names)}
        per_stream = max(1, int(self.rate) // self.streams)  # one second of traffic per block
        try:
            while not self._stop.is_set():
                blocks = []
                for name in names:
                    count = per_stream + ahead.pop(name, 0)
                    blocks.append(synthetic_segments(name, count, next_id[name], end_of_stream=False))
                    next_id[name] += count
                produce(self.bootstrap, self.topic, encode(interleave(blocks)), rate=self.rate)
        except BaseException as exc:
            self.error = exc

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(15)


def _failures(role: str, model: str, version: int) -> list[dict[str, Any]]:
    now = int(time.time() * 1000)
    return [
        {
            "event_id": f"bench-inject-{uuid.uuid4().hex}",
            "role": role,
            "model": model,
            "policy_version": version,
            "propensity": 1.0,
            "prev_model": model,
            "prev_success": False,
            "domain": "ecommerce",
            "lang": "en",
            "feed": "default",
            "chunk_size": 10,
            "latency_ms": 5.0,
            "tokens_in": 100,
            "tokens_out": 10,
            "cost_usd": 0.0,
            "success": False,
            "error": "bench: injected model failure",
            "quality": None,
            "source": "processor",
            "stream_id": "bench-inject",
            "chunk_id": f"bench-inject:{i}",
            "ts_ms": now,
        }
        for i in range(INJECTED_FAILURES)
    ]


def run(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    requests: list[tuple[float, str, str, bool]] = []
    """(arrival time, model, role, first ask of this prompt)"""
    asked: set[tuple[str, str]] = set()
    broken: set[tuple[str, str]] = set()
    lock = threading.Lock()

    def respond(model: str, body: dict[str, Any]) -> Reply:
        role = pipeline_model.role_of(body)
        prompt = hashlib.sha1(json.dumps(body["messages"]).encode()).hexdigest()
        with lock:
            first = (role, prompt) not in asked
            asked.add((role, prompt))
            requests.append((time.time(), model, role, first))
            if (role, model) in broken:
                return Reply("", status=400)
        return Reply(pipeline_model.answer(body))

    pipeline_model.TOPIC_LENGTH = 5
    names = [f"m{i}" for i in range(args.models)]
    llm = ScriptedLLM(respond).start()
    trials: list[dict[str, Any]] = []
    try:
        with broker(work) as (bootstrap, _pid):
            services = Services(
                bootstrap,
                work,
                instant_catalog(llm.base_url, names),
                env={"OLP_FEEDS": json.dumps({"default": {"chunk_size": CHUNK_SIZE}}), **dict(args.env)},
            )
            try:
                services.start(1)
                topics = services.topics
                watch = PolicyWatch(bootstrap, topics.policy).start()
                traffic = Traffic(bootstrap, topics.transcripts, args.streams, args.rate, CHUNK_SIZE).start()
                codec = make_codec(None)
                from confluent_kafka import Producer

                producer = Producer(
                    {"bootstrap.servers": bootstrap, "linger.ms": 0, "partitioner": "murmur2_random"}
                )
                time.sleep(args.settle)  # the first chunks flow and every role has been called
                for index in range(args.trials):
                    role = ROLES[index % len(ROLES)]
                    held = watch.latest(role)
                    if held is None:
                        continue
                    old = str(held["model"])
                    with lock:
                        broken.add((role, old))
                    records = [
                        codec.encode("RoleOutcome", r) for r in _failures(role, old, int(held["version"]))
                    ]
                    t0 = time.time()
                    for value in records:
                        producer.produce(topics.feedback, key=role.encode(), value=value)
                    producer.flush(10)
                    changed, used = None, None
                    deadline = time.time() + args.timeout
                    while time.time() < deadline and used is None:
                        changed = changed or watch.first_change(role, old, t0)
                        if changed is not None:
                            new = changed[1]["model"]
                            with lock:
                                used = next(
                                    (
                                        t
                                        for t, m, r, first in requests
                                        if first and r == role and m == new and t >= t0
                                    ),
                                    None,
                                )
                        time.sleep(0.005)
                        services.check_alive()
                    trial = {"role": role, "old": old, "new": changed[1]["model"] if changed else None}
                    with lock:
                        trial["requests_after"] = [
                            (round(t - t0, 3), m, first)
                            for t, m, r, first in requests
                            if r == role and t >= t0
                        ][:12]
                    if changed is not None:
                        trial["publish_s"] = changed[0] - t0
                    if used is not None:
                        trial["total_s"] = used - t0
                    trials.append(trial)
                    print(
                        f"  trial {index + 1:2}: {role:21} {old} -> {trial['new']}: "
                        + (
                            f"published {1000 * trial['publish_s']:.0f} ms, "
                            if "publish_s" in trial
                            else "no switch, "
                        )
                        + (
                            f"first call {1000 * trial['total_s']:.0f} ms"
                            if "total_s" in trial
                            else "no call seen"
                        ),
                        flush=True,
                    )
                    time.sleep(args.gap)
                traffic.stop()
                watch.stop()
            finally:
                services.stop()
    finally:
        llm.stop()
    with lock:
        stats = {
            role: {
                "requests": sum(1 for _, _, r, _ in requests if r == role),
                "first_asks": sum(1 for _, _, r, f in requests if r == role and f),
            }
            for role in ROLES
        }
    return {"trials": trials, "requests": stats}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="fewer trials (smoke test)")
    parser.add_argument("--trials", type=int, default=None, help="switches to measure (default 24, quick 8)")
    parser.add_argument(
        "--models", type=int, default=None, help="models in the catalog (default trials/4 + 2)"
    )
    parser.add_argument("--streams", type=int, default=20)
    parser.add_argument("--rate", type=float, default=100.0, help="background segments/s")
    parser.add_argument("--settle", type=float, default=8.0, help="seconds of traffic before the first trial")
    parser.add_argument("--gap", type=float, default=0.5, help="seconds between trials")
    parser.add_argument("--timeout", type=float, default=15.0, help="give up on a trial after this")
    parser.add_argument("--keep", action="store_true", help="keep the services' logs (printed path)")
    parser.add_argument(
        "--env",
        nargs="*",
        default=[],
        type=lambda kv: tuple(kv.split("=", 1)),
        help="OLP_* settings, KEY=VALUE",
    )
    add_check_argument(parser)
    args = parser.parse_args(argv)
    args.trials = args.trials or (8 if args.quick else 24)
    args.models = args.models or (args.trials // len(ROLES) + 2)
    info = machine()
    with tempfile.TemporaryDirectory(prefix="olp-bench-") as tmp:
        work = Path(tempfile.mkdtemp(prefix="olp-bench-keep-")) if args.keep else Path(tmp)
        if args.keep:
            print(f"  logs in {work}")
        result = run(args, work)
    trials = result["trials"]
    total = [t["total_s"] * 1000 for t in trials if "total_s" in t]
    publish = [t["publish_s"] * 1000 for t in trials if "publish_s" in t]
    worker = [(t["total_s"] - t["publish_s"]) * 1000 for t in trials if "total_s" in t and "publish_s" in t]
    rows = [
        [label, s.get("n", 0), s.get("p50", 0.0), s.get("p99", 0.0), s.get("max", 0.0)]
        for label, s in (
            ("feedback -> first call on the new model", summary(total)),
            ("feedback -> new Assignment published", summary(publish)),
            ("published -> first call (worker applies, next call)", summary(worker)),
        )
    ]
    print_table(
        f"Policy propagation delay (ms), {len(trials)} trials, background {args.rate:.0f} segments/s over "
        f"{args.streams} streams (chunk size 10)",
        ["span", "n", "p50", "p99", "max"],
        rows,
    )
    missed = len(trials) - len(total)
    if missed:
        print(f"  {missed} trial(s) saw no switch or no call within {args.timeout:.0f} s")
    # A trial with no switch took longer than the timeout: the p99 of the others would hide it.
    p99 = summary(total).get("p99", float("inf"))
    code = report_targets(
        [
            Target(
                "policy propagation p99 < 1 s (feedback -> first call on the new model, every trial)",
                f"{p99:.0f} ms, {missed} of {len(trials)} trials without a switch",
                p99 < 1000.0 and missed == 0,
            )
        ],
        args.check,
    )
    payload = {
        "machine": info,
        "settings": {k: v for k, v in vars(args).items()},
        "total_ms": summary(total),
        "publish_ms": summary(publish),
        "worker_ms": summary(worker),
        "trials": trials,
        "requests": result["requests"],
    }
    print(f"\nwrote {save_json('propagation_delay', payload)}")
    return code


if __name__ == "__main__":
    raise SystemExit(main())
