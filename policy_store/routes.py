"""HTTP API of the policy store (spec section 4, "Explainability and control over HTTP").

    GET    /healthz, /readyz                  liveness / readiness (feedback loop running), with
                                              "replica": leader or follower (policy_store/leadership.py)
    GET    /v1/policy                         every role: assigned model, Q-values, epsilon, why
    GET    /v1/policy/{role}                  one role
    PUT    /v1/policy/{role}/pin              {"model": m}  always use m for role        (token, leader)
    DELETE /v1/policy/{role}/pin              back to learning                           (token, leader)
    PUT    /v1/policy/{role}/ban/{model}      never use model for role                   (token, leader)
    DELETE /v1/policy/{role}/ban/{model}      allow it again                             (token, leader)
    POST   /v1/roles/{role}/retire-worst      remove the role's worst model from its pool (token, leader)
    POST   /v1/feedback                       human verdict on a role's answer           (token)

State-changing calls need `Authorization: Bearer <OLP_API_TOKEN>`; without a configured token they
are refused, never open. Reads of the policy (and the dashboard's data) need the read token
(`OLP_READ_TOKEN`) or the admin token when a read token is set; without one they are open, which
the store allows only on loopback or with `allow_unauthenticated_reads` (`service.create_app`).
The health endpoints are open and show no secret. Operator changes are made by the leader replica
only; a follower answers 409. A human verdict, {"role", "model", "quality" in [-1, 1], optional
"event_id", "stream_id", "chunk_id", "feed", "domain", "lang", "chunk_size", "policy_version"}
(the answer's context and the policy version it was made under: by default the version published
for that context, else the role's), is produced to `olp.feedback` like every other
outcome (any replica takes it; 202 with its event id), so every replica learns it; an event id
sent again is dropped as a duplicate.
Errors are JSON: {"error": message}.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from aiohttp import web

from olp.http import check_bearer, check_reader, json_error, read_json
from olp.settings import ROLES
from policy_store.feedback import human_outcome
from policy_store.keys import BUS, SETTINGS, STATE, TOPICS
from policy_store.leadership import publish
from policy_store.state import NotLeader, PolicyState, save_snapshot

routes = web.RouteTableDef()
MAX_BODY_BYTES = 64 * 1024
"""Largest request body: a verdict or a pin is a few hundred bytes."""


def _require_token(request: web.Request) -> None:
    check_bearer(
        request,
        request.app[SETTINGS].api_token,
        "state-changing calls are disabled: no OLP_API_TOKEN is configured",
    )


def require_reader(request: web.Request) -> None:
    """Reads that show the policy or transcript text (routes here and the dashboard's data)."""
    settings = request.app[SETTINGS]
    check_reader(request, settings.read_token, settings.api_token)


def _require_leader(request: web.Request) -> None:
    if not request.app[STATE].leader:
        raise NotLeader("this policy-store replica is a follower; send state-changing calls to the leader")


def _role(request: web.Request) -> str:
    role = request.match_info["role"]
    if role not in ROLES:
        raise json_error(web.HTTPNotFound, f"unknown role {role}; roles are {', '.join(ROLES)}")
    return role


async def _json_body(request: web.Request) -> dict[str, Any]:
    body = await read_json(request, MAX_BODY_BYTES)
    if not isinstance(body, dict):
        raise json_error(web.HTTPBadRequest, "body must be a JSON object")
    return body


@routes.get("/healthz")
async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok", "replica": request.app[STATE].replica_role})


@routes.get("/readyz")
async def readyz(request: web.Request) -> web.Response:
    state = request.app[STATE]
    ready = state.kafka_ready
    return web.json_response(
        {"ready": ready, "replica": state.replica_role, "version": max(state.version, state.seen_version)},
        status=200 if ready else 503,
    )


@routes.get("/v1/policy")
async def get_policy(request: web.Request) -> web.Response:
    require_reader(request)
    state = request.app[STATE]
    return web.json_response(
        {
            "version": state.version,
            "replica": state.replica_role,
            "observed": state.observed,
            "roles": [state.role_view(r) for r in ROLES],
        }
    )


@routes.get("/v1/policy/{role}")
async def get_role(request: web.Request) -> web.Response:
    require_reader(request)
    return web.json_response(request.app[STATE].role_view(_role(request)))


@contextlib.asynccontextmanager
async def _as_leader(request: web.Request) -> AsyncIterator[PolicyState]:
    """The state, locked, for an operator change on the leader; saved after the change."""
    state = request.app[STATE]
    _require_leader(request)
    async with state.lock:
        _require_leader(request)  # the lease may have moved while this call waited for the lock
        yield state
        save_snapshot(state, request.app[SETTINGS].learner.snapshot_path)


async def _change(request: web.Request, role: str, action: Callable[[], None], reason: str) -> web.Response:
    async with _as_leader(request) as state:
        action()
        record = await publish(state, request.app[BUS], role, reason)
    return web.json_response({"published": record})


@routes.put("/v1/policy/{role}/pin")
async def pin(request: web.Request) -> web.Response:
    _require_token(request)
    role, body = _role(request), await _json_body(request)
    model = str(body["model"])
    learner = request.app[STATE].learner
    return await _change(request, role, lambda: learner.pin(role, model), f"pinned to {model} by operator")


@routes.delete("/v1/policy/{role}/pin")
async def unpin(request: web.Request) -> web.Response:
    _require_token(request)
    role = _role(request)
    learner = request.app[STATE].learner
    return await _change(request, role, lambda: learner.unpin(role), "unpinned by operator")


@routes.put("/v1/policy/{role}/ban/{model}")
async def ban(request: web.Request) -> web.Response:
    _require_token(request)
    role, model = _role(request), request.match_info["model"]
    learner = request.app[STATE].learner
    return await _change(request, role, lambda: learner.ban(role, model), f"{model} banned by operator")


@routes.delete("/v1/policy/{role}/ban/{model}")
async def unban(request: web.Request) -> web.Response:
    _require_token(request)
    role, model = _role(request), request.match_info["model"]
    learner = request.app[STATE].learner
    return await _change(request, role, lambda: learner.unban(role, model), f"{model} unbanned by operator")


@routes.post("/v1/roles/{role}/retire-worst")
async def retire_worst(request: web.Request) -> web.Response:
    """Remove the role's worst model (lowest value; never the pinned one) from its pool."""
    _require_token(request)
    role = _role(request)
    async with _as_leader(request) as state:
        retired = state.learner.retire_worst(role)
        if retired is None:
            raise json_error(
                web.HTTPConflict, f"role {role} has no model to retire (one left, or the pinned one)"
            )
        record = await publish(
            state, request.app[BUS], role, f"{retired} retired by operator (worst of the role)"
        )
    return web.json_response({"retired": retired, "published": record})


@routes.post("/v1/feedback")
async def human_feedback(request: web.Request) -> web.Response:
    """A person's verdict on one role's answer, produced to the feedback topic (202: the feedback
    loop of every replica learns it from there)."""
    _require_token(request)
    body = await _json_body(request)
    state = request.app[STATE]
    outcome = human_outcome(body, state.published, state.learner.params, int(time.time() * 1000))
    await request.app[BUS].publish_feedback(outcome)
    return web.json_response(
        {"accepted": True, "event_id": outcome["event_id"], "topic": request.app[TOPICS].feedback}, status=202
    )
