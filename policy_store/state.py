"""The policy store's state (spec section 4): the Role-RL learner plus what a replica needs to
publish consistently, and its snapshot file. Pure apart from reading and writing that file.

The snapshot holds the learner, the published records (per role, and per role and context), the
version map and the feedback offsets it contains, so a restart replays exactly the feedback the
snapshot lacks. It is written atomically (a crash leaves the old or the new file, never half of
one).
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from olp.catalog import Catalog
from olp.contexts import ROLE_LEVEL, policy_key
from olp.errors import ConfigError, OlpError
from olp.settings import ROLES, Settings
from policy_store.learner import Budget, RoleRL
from policy_store.policies import make_learner

log = logging.getLogger("olp.policy_store")

VERSION_MAP_SIZE = 4096
"""Published versions remembered for stale-policy correction; older feedback counts as far
off-policy (version 0)."""


class NotLeader(OlpError):
    """This replica does not hold the publishing lease (another replica publishes)."""


@dataclass
class PolicyState:
    """The learner plus what the service needs to publish consistently."""

    learner: RoleRL
    version: int = 0
    """Highest version this replica published or continues above."""
    published: dict[str, dict[str, Any]] = field(default_factory=dict)
    """`olp.contexts.policy_key` (the role, or role|context) -> the Assignment record processors
    act on (this replica's or the leader's)."""
    version_map: dict[int, int] = field(default_factory=dict)
    """Published (global) version -> the learner's own version of that role at the time, so
    feedback that echoes a published version is judged against the learner's version history
    (stale-policy correction)."""
    offsets: dict[int, int] = field(default_factory=dict)
    """Feedback partition -> next offset to read; what the snapshot contains."""
    observed: int = 0
    kafka_ready: bool = False
    leader: bool = False
    """This replica holds the lease and may publish (always under `lock`)."""
    seen_version: int = 0
    """Highest Assignment version read back from the policy topic (any replica's)."""
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    @property
    def replica_role(self) -> str:
        return "leader" if self.leader else "follower"

    def assignment_record(
        self, role: str, reason: str | None = None, context: str = ROLE_LEVEL
    ) -> dict[str, Any]:
        """The learner's assignment of `role` in `context` as the next version's Assignment record."""
        view = self.learner.context_assignment(role, context)
        # Above everything published, by this replica or another (a lease handed over).
        self.version = max(self.version, self.seen_version) + 1
        self.remember(self.version, role)
        record = view.to_record(int(time.time() * 1000))
        record.update(version=self.version, reason=reason or view.reason)
        return record

    def remember(self, version: int, role: str) -> None:
        """Published `version` of `role` corresponds to the learner's current version of it."""
        self.version_map[version] = self.learner.version(role)
        for old in sorted(self.version_map)[: max(0, len(self.version_map) - VERSION_MAP_SIZE)]:
            del self.version_map[old]

    def stale(self, role: str, context: str = ROLE_LEVEL) -> bool:
        """What a call acts on differs between the learner and the published record of `role` in
        `context` (or none is published)."""
        published = self.published.get(policy_key(role, context))
        if published is None:
            return True
        return plan_key(self.learner.context_assignment(role, context).to_record(0)) != plan_key(published)

    def contexts(self, role: str) -> list[str]:
        """The contexts of `role` with an assignment of their own: those the learner knows well
        enough, and those published before (kept up to date: processors hold them)."""
        published = {
            str(r.get("context") or ROLE_LEVEL) for r in self.published.values() if r.get("role") == role
        }
        return sorted((set(self.learner.contexts(role)) | published) - {ROLE_LEVEL})

    def for_learner(self, outcome: Mapping[str, Any]) -> Mapping[str, Any]:
        """The outcome with its policy version in the learner's terms (0, far off-policy, when
        the published version is older than the map remembers)."""
        published = int(outcome.get("policy_version") or 0)
        if published == 0:
            return outcome
        return {**outcome, "policy_version": self.version_map.get(published, 0)}

    def role_view(self, role: str) -> dict[str, Any]:
        """What the API and the dashboard show of `role`: the learner's choice and why, and the
        version processors act on; the same, shorter, for each context decided on its own."""
        view = self.learner.assignment(role)
        published = self.published.get(role, {})
        return {
            "role": role,
            "model": view.model,
            "q_values": {m: float(q) for m, q in view.q_values.items()},
            "epsilon": view.epsilon,
            "candidates": list(view.candidates),
            "reason": view.reason,
            "evidence": self.learner.evidence(role),
            "published_version": published.get("version"),
            "published_model": published.get("model"),
            "contexts": [self._context_view(role, ctx) for ctx in self.contexts(role)],
        }

    def _context_view(self, role: str, context: str) -> dict[str, Any]:
        view = self.learner.context_assignment(role, context)
        published = self.published.get(policy_key(role, context), {})
        return {
            "context": context,
            "model": view.model,
            "q_values": {m: float(q) for m, q in view.q_values.items()},
            "reason": view.reason,
            "published_version": published.get("version"),
            "published_model": published.get("model"),
        }

    def snapshot(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "published": self.published,
            "version_map": {str(k): v for k, v in self.version_map.items()},
            "offsets": {str(k): v for k, v in self.offsets.items()},
            "learner": self.learner.snapshot(),
        }


def plan_key(record: Mapping[str, Any]) -> tuple[Any, ...]:
    """The fields of an Assignment record a call acts on, except drifting numbers (Q-values, the
    cascade threshold, the failover order): a change of these is published."""
    explore = sorted(record.get("explore") or {}) if float(record.get("epsilon") or 0.0) > 0 else []
    return (
        record.get("model"),
        tuple(record.get("candidates") or ()),
        record.get("mode"),
        tuple(record.get("warmup") or ()),
        tuple(explore),
        record.get("incumbent"),
        record.get("cascade_to"),
        bool(record.get("pinned")),
    )


# --- construction and the snapshot file ---------------------------------------------------------


def build_learner(
    settings: Settings, catalog: Catalog, rng: random.Random, saved: Mapping[str, Any] | None = None
) -> RoleRL:
    """The learner: restored from a snapshot's `learner` part, else fresh over the catalog's pool
    per role, holding the feeds' hard spend limits as configured now (feed "*" would be global)."""
    budgets = {
        name: Budget(feed.budget_usd_per_hour, 3600.0)
        for name, feed in settings.feeds.items()
        if feed.budget_usd_per_hour is not None
    }
    if saved is None:
        # Cheapest first: with nothing learned, the start assigns a pool's first model and runs
        # the others beside it as they fit the budgets, so a cold stack answers at the cheap
        # model's speed (an encoder's milliseconds, not an LLM's seconds) while it learns.
        pools = {role: cheapest_first(catalog, catalog.pool(role)) for role in ROLES}
        return make_learner(settings.learner.policy, pools, settings.learner.knob_overrides(), budgets, rng)
    learner = RoleRL.restore(saved, rng)
    learner.budgets.configure(budgets)  # the settings, not the snapshot, say what is limited
    return learner


TYPICAL_CALL_TOKENS = (1000, 100)
"""Prompt and answer tokens of a typical role call: what "cheapest" compares."""


def cheapest_first(catalog: Catalog, models: Sequence[str]) -> list[str]:
    """`models` by the catalog price of a typical call, cheapest first (stable: ties keep the
    catalog's order)."""
    return sorted(models, key=lambda m: catalog.model(m).cost_usd(*TYPICAL_CALL_TOKENS))


def load_state(settings: Settings, catalog: Catalog, seed: int | None = None) -> PolicyState:
    """The state in the snapshot file when there is one, else a fresh learner."""
    rng = random.Random(seed)
    path = settings.learner.snapshot_path
    if not path or not Path(path).is_file():
        return PolicyState(learner=build_learner(settings, catalog, rng))
    try:
        data = json.loads(Path(path).read_text())
        state = PolicyState(
            learner=build_learner(settings, catalog, rng, data["learner"]),
            version=int(data["version"]),
            published=dict(data["published"]),
            version_map={int(k): int(v) for k, v in data["version_map"].items()},
            offsets={int(k): int(v) for k, v in data["offsets"].items()},
        )
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"policy snapshot {path} cannot be restored: {exc!r}") from exc
    log.info("restored policy state from %s (version %s)", path, state.version)
    return state


def save_snapshot(state: PolicyState, path: Path | None) -> None:
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(state.snapshot()))
    tmp.replace(path)  # atomic: a crash leaves the old or the new snapshot, never half of one
