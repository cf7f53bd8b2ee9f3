"""Who publishes (spec section 4): one replica at a time, the leader, publishes a new versioned
Assignment to `olp.policy` whenever what a call acts on changes (model, candidates, warm-up,
exploration, cascade, pin), so processors hot-swap: one per role (key role) and one per context
the learner decides on its own (key role|context, `olp.contexts.policy_key`). Versions are global,
so they rise per (role, context) too.

Losing the lease stops publishing before it moves (`Leadership.revoked` waits for a publish in
flight). A new leader reads the policy topic to its end first and continues above the highest
version there, so versions never go backwards across a failover, and republishes every role whose
published plan differs from its own learner's. Every replica follows `olp.policy`: the highest
version anyone published, and on a follower the leader's records (shown by the API, mapped to this
learner's versions for stale-policy correction, pins mirrored).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from opentelemetry.trace import SpanContext

from olp import telemetry
from olp.contexts import ROLE_LEVEL, policy_key, record_policy_key
from olp.settings import ROLES
from policy_store.bus import PolicyBus
from policy_store.learner import PolicyError
from policy_store.state import NotLeader, PolicyState, save_snapshot

log = logging.getLogger("olp.policy_store")


async def publish(
    state: PolicyState,
    bus: PolicyBus,
    role: str,
    reason: str | None = None,
    causes: Sequence[SpanContext] = (),
) -> dict[str, Any]:
    """Publish the learner's current assignment for `role` as a new version, then each of the
    role's contexts whose published plan differs from the learner's (an operator's pin or ban
    reaches them too). Returns the role's record. Call under `state.lock`."""
    record = await publish_one(state, bus, role, ROLE_LEVEL, reason, causes)
    await publish_contexts(state, bus, role, reason, causes)
    return record


async def publish_contexts(
    state: PolicyState,
    bus: PolicyBus,
    role: str,
    reason: str | None = None,
    causes: Sequence[SpanContext] = (),
    every: bool = False,
) -> list[dict[str, Any]]:
    """Publish `role`'s context assignments whose published plan is stale (`every`: all of them).
    Call under `state.lock`."""
    return [
        await publish_one(state, bus, role, ctx, reason, causes)
        for ctx in state.contexts(role)
        if every or state.stale(role, ctx)
    ]


async def publish_one(
    state: PolicyState,
    bus: PolicyBus,
    role: str,
    context: str,
    reason: str | None = None,
    causes: Sequence[SpanContext] = (),
) -> dict[str, Any]:
    """Publish the learner's assignment for `role` in `context` as a new version (one span each,
    continuing the trace of the feedback in `causes` that changed it)."""
    if not state.leader:
        raise NotLeader("this policy-store replica is a follower; the leader publishes (retry there)")
    with telemetry.policy_update_span(role, causes) as span:
        record = state.assignment_record(role, reason, context)
        state.published[policy_key(role, context)] = record
        await bus.publish_assignment(record)
        telemetry.record_policy_update(span, record)
    log.info(
        "published %s -> %s (version %s): %s",
        policy_key(role, context),
        record["model"],
        record["version"],
        record["reason"],
    )
    return record


async def take_over(state: PolicyState, bus: PolicyBus, snapshot_path: Path | None) -> None:
    """Become the leader: continue above every version on the policy topic, and publish each role
    whose published plan is not this learner's (or is out of step with the snapshot)."""
    highest = await bus.highest_version()
    async with state.lock:
        ours = state.version
        state.version = max(state.version, state.seen_version, highest)
        state.leader = True
        # The topic and this replica disagree (another replica published last, a crash between
        # publishing and saving, a restarted broker lost the topic): publish every role again, so
        # processors hold what this learner decides.
        out_of_step = bool(state.published) and highest != ours
        log.info(
            "leader: this policy-store replica publishes now (highest version published: %s; next: %s)",
            highest,
            state.version + 1,
        )
        for role in ROLES:
            if role not in state.published:
                await publish(state, bus, role, "initial assignment")
            elif out_of_step or state.stale(role):
                await publish(state, bus, role, "republished by a new leader")
            await publish_contexts(state, bus, role, "republished by a new leader", every=out_of_step)
        save_snapshot(state, snapshot_path)


class Leadership:
    """This replica's side of the lease (a `bus.LeaseHolder`). `decided` is set once it knows
    whether it leads (after taking over, when it does)."""

    def __init__(self, state: PolicyState, bus: PolicyBus, snapshot_path: Path | None) -> None:
        self.state, self.bus, self.snapshot_path = state, bus, snapshot_path
        self.decided = asyncio.Event()
        self._taking_over: asyncio.Task[None] | None = None

    async def hold(self) -> None:
        """Compete for the lease until cancelled; a replica that stops holding it follows."""
        try:
            await self.bus.hold_lease(self)
        finally:
            self._cancel_take_over()
            self.state.leader = False

    async def revoked(self) -> None:
        self._cancel_take_over()
        async with self.state.lock:  # waits for a publish in flight
            if self.state.leader:
                log.warning("follower: the lease moves; this replica stops publishing")
            self.state.leader = False

    def assigned(self, leads: bool) -> None:
        if not leads:
            log.info("follower: another replica holds the publishing lease")
            self.decided.set()
            return
        self._cancel_take_over()
        task = asyncio.create_task(
            take_over(self.state, self.bus, self.snapshot_path), name="policy-take-over"
        )
        task.add_done_callback(self._took_over)
        self._taking_over = task

    def _took_over(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("taking over as leader failed: %r", task.exception())
        self.decided.set()

    def _cancel_take_over(self) -> None:
        if self._taking_over is not None:
            self._taking_over.cancel()
            self._taking_over = None


async def follow_policy(state: PolicyState, bus: PolicyBus) -> None:
    """Read `olp.policy` from its start for as long as the app runs: remember the highest version
    any replica published, and take the records above this replica's own as what processors act on."""
    async for records in bus.policy():
        for record in records:
            version, role = int(record["version"]), str(record["role"])
            state.seen_version = max(state.seen_version, version)
            if version <= state.version or role not in ROLES:
                continue  # ours, older than what this replica published, or not a role
            async with state.lock:
                if state.leader:
                    log.error(
                        "another replica published %s version %s while this one leads;"
                        " versions continue above it",
                        record_policy_key(record),
                        version,
                    )
                mirror(state, role, record)


def mirror(state: PolicyState, role: str, record: Mapping[str, Any]) -> None:
    """Take another replica's published record of `role` (in its context) as what processors act
    on; a pin is the role's, so the role-level record carries it."""
    state.published[record_policy_key(record)] = dict(record)
    state.remember(int(record["version"]), role)
    if str(record.get("context") or ROLE_LEVEL) != ROLE_LEVEL:
        return
    view = state.learner.assignment(role)
    try:
        if record.get("pinned") and not (view.pinned and view.model == record["model"]):
            state.learner.pin(role, str(record["model"]))
        elif not record.get("pinned") and view.pinned:
            state.learner.unpin(role)
    except PolicyError as exc:
        log.warning("cannot mirror the leader's pin of %s: %s", role, exc)
