"""Quality evidence beside the judge: RoleOutcomes with a `source` and a `quality` in [-1, 1]
about a role call already recorded (spec section 4, "Quality is measured, never assumed").

Sources (`source` of schemas/role_outcome.avsc), from the most to the least exact:
- `canary`: the answer to a gold canary chunk scored against its labels (processors/canaries.py);
- `judge`: the board's verdict (processors/judge.py);
- `agreement`: two models answered the same input (warm-up, duel, cascade) and their answers
  are compared with the judge's rules: quality = 2*agreement - 1 for both (noisy: two models
  can agree on a wrong answer, and a good one disagrees with a bad one);
- `downstream`: a later role had to make up for the call: a topic the Topic Locator cannot place
  counts against the Topic Finder's call, an answer whose sentences the Format Checker must file
  under the fallback aspect counts against the Content Organizer's call;
- `human`: a person's verdict over the policy store's HTTP API.
A `processor` outcome is the call itself: success or failure, cost and latency, no quality.

Evidence outcomes copy the call's context, cost and latency (they describe that call; the
learner books spend from `processor` outcomes only) and carry what measuring cost in
`judge_cost_usd` (the judges' calls; 0 for every other source).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

SOURCES = ("processor", "judge", "canary", "agreement", "downstream", "human")
CANARY_PREFIX = "canary:"
"""Stream ids of gold canary chunks start so; no user stream does (processors/canaries.py)."""


def is_canary(stream_id: str) -> bool:
    return str(stream_id).startswith(CANARY_PREFIX)


def evidence_outcome(
    call: Mapping[str, Any], source: str, quality: float, suffix: str, now_ms: int | None = None
) -> dict[str, Any]:
    """A RoleOutcome of `source` about the recorded `call` (its event id + `suffix`)."""
    if source not in SOURCES or source == "processor":
        raise ValueError(f"not an evidence source: {source!r}")
    return {
        **dict(call),
        "event_id": f"{call['event_id']}:{suffix}",
        "quality": max(-1.0, min(1.0, float(quality))),
        "source": source,
        "judge_cost_usd": 0.0,
        "ts_ms": int(time.time() * 1000) if now_ms is None else now_ms,
    }


def call_outcome(
    chunk: Mapping[str, Any],
    role: str,
    model: str,
    policy_version: int,
    call_key: str = "0",
) -> dict[str, Any]:
    """The context of an earlier call a later role knows only by its chunk, role and model (its
    event id without the attempt number); for `evidence_outcome`."""
    return {
        "event_id": f"{chunk['chunk_id']}:{role}:{call_key}:{model}",
        "role": role,
        "model": model,
        "policy_version": policy_version,
        "propensity": 1.0,
        "prev_model": None,
        "prev_success": True,
        "domain": str(chunk["domain"]),
        "lang": str(chunk["lang"]),
        "feed": str(chunk["feed"]),
        "chunk_size": len(chunk["sentences"]),
        "latency_ms": 0.0,
        "tokens_in": 0,
        "tokens_out": 0,
        "cost_usd": 0.0,
        "success": True,
        "error": None,
        "stream_id": str(chunk["stream_id"]),
        "chunk_id": str(chunk["chunk_id"]),
        "confidence": None,
    }


def model_of(trail: list[str], role: str) -> str | None:
    """The model a RoleResult's trail says served `role` (one model: `role=model`)."""
    for entry in trail:
        name, _, models = entry.partition("=")
        if name == role and models and "+" not in models and "(" not in models:
            return models
    return None
