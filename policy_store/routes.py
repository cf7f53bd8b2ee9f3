"""HTTP API of the policy store (spec section 4, "Explainability and control over HTTP").

    GET    /healthz, /readyz                  liveness / readiness (Kafka loop running), with
                                              "replica": leader or follower (policy_store/service.py)
    GET    /v1/policy                         every role: assigned model, Q-values, epsilon, why
    GET    /v1/policy/{role}                  one role
    PUT    /v1/policy/{role}/pin              {"model": m}  always use m for role        (token)
    DELETE /v1/policy/{role}/pin              back to learning                           (token)
    PUT    /v1/policy/{role}/ban/{model}      never use model for role                   (token)
    DELETE /v1/policy/{role}/ban/{model}      allow it again                             (token)
    POST   /v1/feedback                       human verdict on a role's answer           (token)

State-changing calls need `Authorization: Bearer <OLP_API_TOKEN>`; without a configured token they
are refused, never open. Only the leader replica changes state; a follower answers 409. Errors are
JSON: {"error": message}.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from aiohttp import web

from olp.http import check_bearer, json_error
from olp.settings import ROLES
from policy_store.service import SETTINGS, STATE, NotLeader, publish, save_snapshot

routes = web.RouteTableDef()


def _require_token(request: web.Request) -> None:
    check_bearer(
        request,
        request.app[SETTINGS].api_token,
        "state-changing calls are disabled: no OLP_API_TOKEN is configured",
    )


def _require_leader(request: web.Request) -> None:
    if not request.app[STATE].leader:
        raise NotLeader("this policy-store replica is a follower; send state-changing calls to the leader")


def _role(request: web.Request) -> str:
    role = request.match_info["role"]
    if role not in ROLES:
        raise json_error(web.HTTPNotFound, f"unknown role {role}; roles are {', '.join(ROLES)}")
    return role


async def _json_body(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except ValueError as exc:
        raise json_error(web.HTTPBadRequest, "body must be JSON") from exc
    if not isinstance(body, dict):
        raise json_error(web.HTTPBadRequest, "body must be a JSON object")
    return body


def _role_view(request: web.Request, role: str) -> dict[str, Any]:
    state = request.app[STATE]
    view = state.learner.assignment(role)
    published = state.published.get(role, {})
    return {
        "role": role,
        "model": view.model,
        "q_values": dict(view.q_values),
        "epsilon": view.epsilon,
        "candidates": list(view.candidates),
        "reason": view.reason,
        "published_version": published.get("version"),
        "published_model": published.get("model"),
    }


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
    state = request.app[STATE]
    return web.json_response(
        {
            "version": state.version,
            "replica": state.replica_role,
            "observed": state.observed,
            "roles": [_role_view(request, r) for r in ROLES],
        }
    )


@routes.get("/v1/policy/{role}")
async def get_role(request: web.Request) -> web.Response:
    return web.json_response(_role_view(request, _role(request)))


async def _change(request: web.Request, role: str, action: Callable[[], None], reason: str) -> web.Response:
    state = request.app[STATE]
    _require_leader(request)
    async with state.lock:
        _require_leader(request)
        action()
        record = await publish(request.app, role, reason)
        save_snapshot(state, request.app[SETTINGS].learner.snapshot_path)
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


@routes.post("/v1/feedback")
async def human_feedback(request: web.Request) -> web.Response:
    """A person's verdict on one role's answer: quality in [-1, 1] (the paper's k)."""
    _require_token(request)
    _require_leader(request)
    body = await _json_body(request)
    role = str(body["role"])
    if role not in ROLES:
        raise json_error(web.HTTPBadRequest, f"unknown role {role}")
    quality = float(body["quality"])
    if not -1.0 <= quality <= 1.0:
        raise json_error(web.HTTPBadRequest, "quality must lie in [-1, 1]")
    outcome = {
        "event_id": f"human:{body.get('stream_id', '')}:{body.get('topic_id', '')}:{role}:{body['model']}",
        "role": role,
        "model": str(body["model"]),
        "policy_version": request.app[STATE].version,
        "propensity": 1.0,
        "prev_model": None,
        "prev_success": True,
        "domain": str(body.get("domain", "ecommerce")),
        "lang": str(body.get("lang", "en")),
        "feed": str(body.get("feed", "default")),
        "chunk_size": 0,
        "latency_ms": 0.0,
        "tokens_in": 0,
        "tokens_out": 0,
        "cost_usd": 0.0,
        "success": quality > 0,
        "error": None,
        "quality": quality,
        "source": "human",
        "stream_id": str(body.get("stream_id", "")),
        "chunk_id": "",
        "ts_ms": int(time.time() * 1000),
    }
    state = request.app[STATE]
    async with state.lock:
        _require_leader(request)
        changed = state.learner.observe(state.for_learner(outcome))
        record = await publish(request.app, role, "human feedback") if changed else None
        save_snapshot(state, request.app[SETTINGS].learner.snapshot_path)
    return web.json_response({"accepted": True, "published": record}, status=202)
