"""The learner's whole state as one JSON document, and back.

Format 1 keeps one role-keyed mapping per kind of state (`q`, `est`, `calib`, ...); restore
rebuilds each role's `RoleState` from them, so snapshots written by any learner of format 1 load.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from policy_store.learner.budget import Budget, BudgetLedger
from policy_store.learner.cascade import Calibration, CascadePlan, CoRuns
from policy_store.learner.estimates import Estimate
from policy_store.learner.params import PolicyError, RoleRLParams
from policy_store.learner.safety import Breaker, DedupeWindow
from policy_store.learner.state import InputGroups, Member, RoleState

if TYPE_CHECKING:
    from policy_store.learner.learner import RoleRL

FORMAT = 1


def _flat(obj: Member | Estimate | Breaker) -> dict[str, Any]:
    """`asdict` of a dataclass whose fields are all scalars, without its deep copies (which made
    snapshots of thousands of group members most of the policy store's CPU)."""
    return dict(vars(obj))


def dump(learner: RoleRL) -> dict[str, Any]:
    """The learner's complete state as JSON-serialisable data."""
    roles = learner.role_states
    return {
        "format": FORMAT,
        "params": learner.params.knobs(),
        "pools": {r: rs.pool for r, rs in roles.items()},
        "models": learner.models,
        "banned": {r: sorted(rs.banned) for r, rs in roles.items()},
        "pinned": {r: rs.pinned for r, rs in roles.items() if rs.pinned is not None},
        "versions": {r: rs.version for r, rs in roles.items()},
        "q": {r: rs.q for r, rs in roles.items()},
        "calls": {r: rs.calls for r, rs in roles.items()},
        "last_state": {r: rs.last_state for r, rs in roles.items() if rs.last_state is not None},
        "board": learner.board,
        "board_role": learner.board_role,
        "board_count": learner.board_count,
        "groups": [[k, [_flat(m) for m in g]] for k, g in learner.groups.groups.items()],
        "est": {
            r: {c: {m: _flat(e) for m, e in ms.items()} for c, ms in rs.estimates.items()}
            for r, rs in roles.items()
        },
        "pooled": {m: _flat(e) for m, e in learner.pooled.items()},
        "calib": {r: {m: list(c.order) for m, c in rs.calibration.items()} for r, rs in roles.items()},
        "corun": {r: rs.coruns.counts for r, rs in roles.items()},
        "gains": {r: {k: list(c.order) for k, c in rs.coruns.gains.items()} for r, rs in roles.items()},
        "plan_age": {r: rs.plan_age for r, rs in roles.items()},
        "plans": {r: (asdict(rs.plan) if rs.plan else None) for r, rs in roles.items() if rs.plan_cached},
        "breakers": {r: {m: _flat(b) for m, b in rs.breakers.items()} for r, rs in roles.items()},
        "budgets": {f: asdict(b) for f, b in learner.budgets.limits.items()},
        "ledgers": {f: asdict(ledger) for f, ledger in learner.budgets.ledgers.items()},
        "seen": [[e, t] for e, t in learner.dedupe.seen.items()],
        "signatures": {r: list(rs.signature) for r, rs in roles.items() if rs.signature is not None},
        "evidence": {r: rs.evidence for r, rs in roles.items()},
        "label_counts": {r: [rs.measured_calls, rs.labelled_calls] for r, rs in roles.items()},
        "now_ms": learner.now_ms,
        "counters": learner.counters,
    }


def params_of(data: Mapping[str, Any]) -> RoleRLParams:
    """The parameters a snapshot was taken with; PolicyError for an unknown format."""
    if data.get("format") != FORMAT:
        raise PolicyError(f"unsupported snapshot format {data.get('format')!r}")
    return RoleRLParams(**data["params"])


def load(learner: RoleRL, data: Mapping[str, Any]) -> None:
    """Fill an empty learner (built with `params_of(data)`) with a snapshot's state."""
    window = learner.params.calibration_window
    learner.role_states = {role: _role_state(data, role, window) for role in data["pools"]}
    learner.models = list(data["models"])
    learner.board = dict(data["board"])
    learner.board_role = data["board_role"]
    learner.board_count = int(data["board_count"])
    learner.groups = InputGroups({k: [Member(**m) for m in g] for k, g in data["groups"]})
    learner.pooled = {m: _estimate(e) for m, e in data["pooled"].items()}
    learner.budgets.limits = {f: Budget(**b) for f, b in data["budgets"].items()}
    learner.budgets.ledgers = {f: _ledger(raw) for f, raw in data["ledgers"].items()}
    learner.now_ms = int(data["now_ms"])
    # [id, ms] pairs; a bare id (no time recorded) counts as seen now.
    learner.dedupe = DedupeWindow(
        (str(e), learner.now_ms) if isinstance(e, str) else (str(e[0]), int(e[1])) for e in data["seen"]
    )
    learner.counters = dict(data["counters"])


def _role_state(data: Mapping[str, Any], role: str, window: int) -> RoleState:
    plan = data["plans"].get(role)
    signature = data["signatures"].get(role)
    measured, labelled = data.get("label_counts", {}).get(role, (0.0, 0.0))
    return RoleState(
        pool=list(data["pools"][role]),
        banned=set(data["banned"][role]),
        pinned=data["pinned"].get(role),
        version=int(data["versions"][role]),
        signature=(signature[0], signature[1]) if signature is not None else None,
        q={s: dict(row) for s, row in data["q"][role].items()},
        calls=data["calls"][role],
        last_state=data["last_state"].get(role),
        estimates={c: {m: _estimate(e) for m, e in ms.items()} for c, ms in data["est"][role].items()},
        calibration={m: _calibration(points, window) for m, points in data["calib"][role].items()},
        coruns=CoRuns(
            {k: list(v) for k, v in data["corun"][role].items()},
            {k: _calibration(points, window) for k, points in data["gains"][role].items()},
        ),
        breakers={m: Breaker(**b) for m, b in data["breakers"][role].items()},
        plan=CascadePlan(**plan) if plan else None,
        plan_cached=role in data["plans"],
        plan_age=int(data["plan_age"][role]),
        evidence={m: dict(c) for m, c in data.get("evidence", {}).get(role, {}).items()},
        measured_calls=float(measured),
        labelled_calls=float(labelled),
    )


def _estimate(raw: Mapping[str, Any]) -> Estimate:
    """An estimate; one written before quality had its own count counted every call as labelled."""
    return Estimate(**{"n_quality": raw["n"], **raw})


def _calibration(points: Any, window: int) -> Calibration:
    calibration = Calibration()
    for x, y in points:
        calibration.add(float(x), float(y), window)
    return calibration


def _ledger(raw: Mapping[str, Any]) -> BudgetLedger:
    ledger = BudgetLedger(**raw)
    ledger.history = [(int(s), float(x)) for s, x in ledger.history]
    return ledger
