"""The feedback loop (spec section 4): every replica reads all of `olp.feedback` (RoleOutcome:
processors' calls, judge verdicts, human verdicts alike), lets its learner observe each outcome,
and keeps its state in the snapshot file; the leader publishes the roles whose plan changed.

Human verdicts come in over HTTP (`human_outcome` builds them) and are produced to the same
topic, so every replica learns them in the same order as everything else.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from opentelemetry.trace import SpanContext

from olp import telemetry
from olp.contexts import context_key, policy_key
from olp.errors import ValidationError
from olp.learner_params import LearnerParams
from olp.settings import ROLES, LearnerSettings
from policy_store.bus import FeedbackRecord, PolicyBus
from policy_store.leadership import publish, publish_contexts
from policy_store.learner import reward
from policy_store.state import PolicyState, save_snapshot

log = logging.getLogger("olp.policy_store")


def human_outcome(
    body: Mapping[str, Any],
    published: Mapping[str, Mapping[str, Any]],
    params: LearnerParams,
    now_ms: int,
) -> dict[str, Any]:
    """A person's verdict on one role's answer as a RoleOutcome: quality in [-1, 1] (the paper's
    k), in the answer's context (domain, language, chunk size), against the policy the answer was
    made under: the version the body names, else the one published for that context (the role's
    when the context has none of its own)."""
    role = str(body["role"])
    if role not in ROLES:
        raise ValidationError(f"unknown role {role}; roles are {', '.join(ROLES)}")
    quality = float(body["quality"])
    if not -1.0 <= quality <= 1.0:
        raise ValidationError("quality must lie in [-1, 1]")
    chunk_size, version = _count(body, "chunk_size"), _count(body, "policy_version")
    model, stream_id = str(body["model"]), str(body.get("stream_id", ""))
    context = {
        "domain": str(body.get("domain", "ecommerce")),
        "lang": str(body.get("lang", "en")),
        "chunk_size": chunk_size or 0,
    }
    if version is None:
        made_under = published.get(policy_key(role, context_key(context, params))) or published.get(role, {})
        version = int(made_under.get("version") or 0)
    return {
        "event_id": str(body.get("event_id") or f"human:{uuid.uuid4().hex}"),
        "role": role,
        "model": model,
        "policy_version": version,
        "propensity": 1.0,
        "prev_model": None,
        "prev_success": True,
        **context,
        "feed": str(body.get("feed", "default")),
        "latency_ms": 0.0,
        "tokens_in": 0,
        "tokens_out": 0,
        "cost_usd": 0.0,
        "success": quality > 0,
        "error": None,
        "quality": quality,
        "source": "human",
        "stream_id": stream_id,
        "chunk_id": str(body.get("chunk_id", "")),
        "ts_ms": now_ms,
    }


def _count(body: Mapping[str, Any], name: str) -> int | None:
    """An optional non-negative whole number of the verdict's body (None when absent)."""
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValidationError(f"{name} must be a whole number >= 0")
    return value


def learn(state: PolicyState, records: Sequence[FeedbackRecord]) -> dict[str, list[SpanContext]]:
    """Let the learner observe a batch (call under `state.lock`). Returns the roles it concerned,
    each with the spans of the outcomes that changed the role's choice."""
    changed: dict[str, list[SpanContext]] = {}
    for record in records:
        state.offsets[record.partition] = record.offset + 1
        with telemetry.feedback_span(record) as span:
            outcome = record.outcome
            if outcome is None:
                log.warning(
                    "feedback at %s/%s undecodable, skipped: %s",
                    record.partition,
                    record.offset,
                    record.error,
                )
                continue
            state.observed += 1
            role = str(outcome["role"])
            moved = role in ROLES and state.learner.observe(state.for_learner(outcome))
            telemetry.record_feedback(span, outcome, moved, _reward(state, outcome))
            if role in ROLES:
                spans = changed.setdefault(role, [])
                if moved:
                    spans.append(span.get_span_context())
    return changed


def _reward(state: PolicyState, outcome: Mapping[str, Any]) -> float | None:
    """The paper's reward of an outcome, for telemetry only (None when it cannot be had)."""
    try:
        return float(reward(outcome, state.learner.params))
    except (KeyError, TypeError, ValueError):
        return None


@dataclass
class SnapshotSaver:
    """Throttled snapshots: under a flood, writing the whole learner after every batch would be
    most of the process's CPU; what is left unsaved is written when the loop is idle."""

    path: Path | None
    interval_s: float
    saved_at: float = field(default_factory=time.monotonic)
    unsaved: bool = False

    def changed(self, state: PolicyState) -> None:
        self.unsaved = True
        if time.monotonic() - self.saved_at >= self.interval_s:
            self.save(state)

    def save(self, state: PolicyState) -> None:
        save_snapshot(state, self.path)
        self.saved_at, self.unsaved = time.monotonic(), False


async def run_feedback_loop(state: PolicyState, bus: PolicyBus, learner: LearnerSettings) -> None:
    """Learn from the feedback the snapshot lacks, then from everything that arrives; the leader
    publishes each role whose choice changed or whose published plan went stale, and each of its
    contexts whose published plan went stale (or that the learner now knows well enough)."""
    saver = SnapshotSaver(learner.snapshot_path, learner.snapshot_interval_s)
    try:
        async for records in bus.feedback(dict(state.offsets)):
            state.kafka_ready = True
            if not records:
                if saver.unsaved:
                    async with state.lock:  # not in the middle of an API call's change
                        saver.save(state)
                continue
            async with state.lock:
                changed = learn(state, records)
                if state.leader:
                    for role in sorted(changed):
                        if changed[role] or state.stale(role):
                            await publish(state, bus, role, causes=changed[role])
                        else:
                            await publish_contexts(state, bus, role)
                saver.changed(state)
    finally:
        state.kafka_ready = False
