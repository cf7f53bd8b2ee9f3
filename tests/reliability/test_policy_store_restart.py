"""Policy store restart: the store is killed with SIGKILL while feedback flows in and is
restarted. Its learner must then be exactly what a learner that saw every outcome once would be
(feedback that was not committed yet is replayed; the learner drops replays by event id), and the
assignment versions on `olp.policy` must only grow (known weak spot 2), also when the snapshot
file is gone, so that processors never ignore what the store publishes next.

The reference is the pure learner (`policy_store.learner.RoleRL`) fed the same outcomes in the
same order: they all go to one partition of the feedback topic, so the order is total. Their
policy_version is 0 ("unknown"), which the service hands to the learner unchanged (it maps
published versions to the learner's own), so the reference sees exactly what the service's
learner sees.
"""

from __future__ import annotations

import itertools
import json
import random
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer

from launcher.scripted_llm import scripted_catalog
from olp.contexts import record_policy_key
from olp.settings import ROLES, load_settings
from policy_store.learner import RoleRL, RoleRLParams
from processors.policy_view import PolicyView
from schemas.codec import make_codec
from tests.reliability.conftest import Report
from tests.reliability.harness import Stack, read_all

pytestmark = [pytest.mark.reliability, pytest.mark.integration]

MODELS = ("model-a", "model-b")
BEST = {
    "topic_finder": "model-b",
    "topic_locator": "model-a",
    "relationship_checker": "model-b",
    "content_organizer": "model-a",
}
BATCHES, PER_BATCH, KILL_AFTER = 6, 60, 3


def outcomes(reference: RoleRL, rng: random.Random, start: int, n: int) -> list[dict[str, Any]]:
    """`n` on-policy outcomes (the reference learns from each as it is made)."""
    made = []
    for i in range(start, start + n):
        role = ROLES[i % len(ROLES)]
        model = MODELS[rng.random() < 0.5]
        ok = rng.random() < (0.9 if model == BEST[role] else 0.35)
        outcome = {
            "event_id": f"restart:{i}",
            "role": role,
            "model": model,
            "policy_version": 0,  # unknown: the service passes it to the learner as it is
            "propensity": 1.0,
            "prev_model": None,
            "prev_success": True,
            "domain": "ecommerce",
            "lang": "en",
            "feed": "default",
            "chunk_size": 30,
            "latency_ms": 200.0 + 50.0 * rng.random(),
            "tokens_in": 900,
            "tokens_out": 60,
            "cost_usd": 0.001 if model == "model-a" else 0.002,
            "success": ok,
            "error": None if ok else "scripted failure",
            "quality": None,
            "source": "processor",
            "stream_id": "restart",
            "chunk_id": f"restart:{i}",
            "ts_ms": 1_700_000_000_000 + 100 * i,
        }
        reference.observe(outcome)
        made.append(outcome)
    return made


def get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return json.load(resp)


def views(api_url: str) -> dict[str, tuple[str, dict[str, float]]]:
    return {r["role"]: (r["model"], r["q_values"]) for r in get(f"{api_url}/v1/policy")["roles"]}


def reference_views(reference: RoleRL) -> dict[str, tuple[str, dict[str, float]]]:
    out = {}
    for role in ROLES:
        view = reference.assignment(role)
        out[role] = (view.model, {k: float(v) for k, v in view.q_values.items()})
    return out


def wait_equal(api_url: str, reference: RoleRL, timeout_s: float = 30) -> float:
    started = time.monotonic()
    want = reference_views(reference)
    while True:
        try:
            got = views(api_url)
        except OSError:
            got = None
        if got == want:
            return time.monotonic() - started
        if time.monotonic() - started > timeout_s:
            raise AssertionError(f"policy store state differs from the reference:\n got {got}\nwant {want}")
        time.sleep(0.2)


CORE = ("q", "est", "pooled", "calls", "versions", "last_state", "board", "breakers", "calib", "corun")
"""The learner's state proper (the rest is caches and counters that replays may move)."""


def test_policy_store_restart_keeps_learner_state_and_versions_grow(
    broker: str, topic_prefix: str, run_dir: Path, report: Report
) -> None:
    stack = Stack(broker, topic_prefix, run_dir, scripted_catalog("http://127.0.0.1:9/v1", MODELS))
    settings = stack.settings()
    reference = RoleRL(
        {role: list(MODELS) for role in ROLES},
        RoleRLParams(**load_settings(learner={"epsilon": 0.0}).learner.knob_overrides()),
        random.Random(0),
    )
    rng = random.Random(11)
    codec = make_codec(None)
    producer = Producer({"bootstrap.servers": broker, "linger.ms": 5})
    feedback = f"{topic_prefix}feedback"

    def send(batch: list[dict[str, Any]]) -> None:
        for outcome in batch:
            value = codec.encode("RoleOutcome", outcome, topic=feedback)
            producer.produce(feedback, key=outcome["role"].encode(), value=value, partition=0)
        assert producer.flush(10) == 0

    try:
        store = stack.start_policy_store()
        sent = 0
        for _ in range(KILL_AFTER):
            send(outcomes(reference, rng, sent, PER_BATCH))
            sent += PER_BATCH
            time.sleep(0.3)
        wait_equal(stack.api_url, reference)
        versions_before = max(a["version"] for a in read_all(settings, f"{topic_prefix}policy", "Assignment"))
        # Mid-stream: one more batch, and the kill while the store works through it.
        send(outcomes(reference, rng, sent, PER_BATCH))
        sent += PER_BATCH
        time.sleep(0.05)
        stack.kill(store)
        killed = time.monotonic()
        store = stack.restart_policy_store(store)
        wait_equal(stack.api_url, reference)
        recovery = time.monotonic() - killed  # kill -> restarted and caught up with the reference
        for _ in range(BATCHES - KILL_AFTER - 1):
            send(outcomes(reference, rng, sent, PER_BATCH))
            sent += PER_BATCH
            time.sleep(0.3)
        wait_equal(stack.api_url, reference)
        store.stop()  # graceful: the snapshot is written on shutdown
        snapshot = json.loads((run_dir / "policy.json").read_text())["learner"]
        expected = json.loads(json.dumps(reference.snapshot()))
        differing = [k for k in CORE if snapshot.get(k) != expected.get(k)]

        # The snapshot is lost (a new volume): versions must still continue upwards.
        (run_dir / "policy.json").unlink()
        store = stack.restart_policy_store(store)
        policy = read_all(settings, f"{topic_prefix}policy", "Assignment")
        by_role: dict[str, list[int]] = {}  # per policy key (role, or role|context): its partition's order
        for record in policy:
            by_role.setdefault(record_policy_key(record), []).append(int(record["version"]))
        backwards = sum(1 for versions in by_role.values() for a, b in itertools.pairwise(versions) if b <= a)
        processors = PolicyView({role: list(MODELS) for role in ROLES})
        ignored = sum(1 for record in policy if not processors.apply(record))
        served = get(f"{stack.api_url}/v1/policy")
        crashes = stack.crash_lines()
        report.add(
            "policy store SIGKILL + restart",
            f"{sent} outcomes, kill mid-batch, then snapshot lost",
            None,
            None,
            len(crashes),
            recovery,
            f"learner == reference: {not differing}; versions backwards {backwards}, "
            f"ignored by processors {ignored}",
        )
        assert not crashes, "\n".join(crashes)
        assert not differing, {k: (snapshot.get(k), expected.get(k)) for k in differing}
        assert backwards == 0, by_role
        assert ignored == 0, by_role
        assert max(max(v) for v in by_role.values()) > versions_before
        # What processors now hold is what the restarted store serves.
        for role in served["roles"]:
            assert processors.assignments[role["role"]]["version"] == role["published_version"]
    finally:
        stack.stop()
