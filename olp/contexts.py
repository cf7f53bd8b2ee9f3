"""The context a Role-RL decision depends on, as one key (spec section 4).

Pure, no I/O, written once and shared by both sides of the policy topic (`olp.policy`): the
learner files its estimates under a call's context key (`policy_store/learner/estimates.py`) and
publishes an assignment per (role, context) it knows well enough; a processor computes the same
key from the chunk it works on (`processors/policy_view.py`) and acts on that context's assignment
when it holds one, else on the role's. The key is 'domain=..|lang=..|chunk=..' (the chunk size as a
bucket of `LearnerParams.chunk_buckets`), `ROLE_LEVEL` for a role over every context.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from olp.learner_params import LearnerParams

ROLE_LEVEL = "*"
"""The context key of a role over every context (what a record without a context is for)."""

KEY_SEPARATOR = "|"
"""Between the role and the context in a policy key (and between the context's parts)."""


def chunk_bucket(chunk_size: int, edges: Sequence[int]) -> str | None:
    """Bucket label of a chunk size, e.g. '<40', '40-79', '>=80' for edges (40, 80); None if unknown."""
    if chunk_size <= 0:
        return None
    lower = 0
    for edge in edges:
        if chunk_size < edge:
            return f"<{edge}" if lower == 0 else f"{lower}-{edge - 1}"
        lower = edge
    return f">={lower}"


def context_key(context: Mapping[str, Any] | None, params: LearnerParams) -> str:
    """The context of a call ('domain', 'lang', 'chunk_size' fields, as in a RoleOutcome):
    'domain=..|lang=..|chunk=..', `ROLE_LEVEL` when the learner does not decide per context."""
    if not params.contextual or not context:
        return ROLE_LEVEL
    parts = []
    for name in ("domain", "lang"):
        value = context.get(name)
        if value:
            parts.append(f"{name}={value}")
    bucket = chunk_bucket(int(context.get("chunk_size") or 0), params.chunk_buckets)
    if bucket:
        parts.append(f"chunk={bucket}")
    return KEY_SEPARATOR.join(parts) or ROLE_LEVEL


def policy_key(role: str, context: str = ROLE_LEVEL) -> str:
    """The key of one assignment on the policy topic and in the stores that hold them: the role
    alone at the role level (what records without a context were keyed by), else 'role|context'."""
    return role if context == ROLE_LEVEL else f"{role}{KEY_SEPARATOR}{context}"


def record_policy_key(record: Mapping[str, Any]) -> str:
    """`policy_key` of an Assignment record (a record without `context` is for the role level)."""
    return policy_key(str(record["role"]), str(record.get("context") or ROLE_LEVEL))
