"""A scripted OpenAI-compatible chat-completions server (aiohttp) for tests and benchmarks (the
instant model; spec section 5).

It stands in for remote model providers: a `responder(model, body) -> Reply` decides each answer,
with optional latency and faults (HTTP status, Retry-After, dropped connection, truncated body,
a body dripped out slowly, a provider's error body, a refusal, no `usage`).
With `strict`, it checks every body against the official OpenAI request contract
(`tests/support/openai_contract.py`) and answers an unknown parameter with OpenAI's HTTP 400, as
the live API does; `unsupported` names parameters it rejects as a reasoning model does. It also
serves Azure OpenAI's deployment path (`/openai/deployments/{name}/chat/completions`).
Runs on its own event loop in a thread, so subprocess workers can call it over real HTTP and the
test can read every request it received.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from launcher.background_app import BackgroundApp
from olp.catalog import Catalog, ModelSpec


@dataclass
class Reply:
    text: str = ""
    status: int = 200
    delay_s: float = 0.0
    retry_after: str | None = None
    drop_connection: bool = False
    truncate: bool = False
    drip_s: float = 0.0
    """Send the headers at once, then the body in ten pieces spread over this many seconds."""
    error: dict[str, Any] | None = None
    """The error body sent with a status other than 200 (default: a bare scripted fault)."""
    usage: bool = True
    refusal: str | None = None
    finish_reason: str = "stop"
    reasoning_tokens: int = 0


def requested_schema(body: dict[str, Any]) -> dict[str, Any]:
    """The JSON schema a request asks the answer to follow, in any dialect ({} without one)."""
    fmt = body.get("response_format") or {}
    return dict(fmt.get("schema") or (fmt.get("json_schema") or {}).get("schema") or {})


@dataclass(frozen=True)
class HttpCall:
    """Where a request went and how it was authorised (what the body does not show)."""

    path: str
    query: dict[str, str]
    headers: dict[str, str]


Responder = Callable[[str, dict[str, Any]], Reply]


@dataclass
class ScriptedLLM:
    responder: Responder
    host: str = "127.0.0.1"
    strict: bool = False
    unsupported: dict[str, str] = field(default_factory=dict)
    """Parameter -> the message of OpenAI's `unsupported_parameter` (or `unsupported_value`) 400."""
    requests: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    calls: list[HttpCall] = field(default_factory=list)
    rejected: list[dict[str, Any]] = field(default_factory=list)
    """The error bodies strict mode answered."""
    port: int = 0
    _server: BackgroundApp | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    def models_called(self) -> list[str]:
        with self._lock:
            return [model for model, _ in self.requests]

    def _rejection(self, request: web.Request, body: dict[str, Any]) -> dict[str, Any] | None:
        """OpenAI's 400 body for what the live API would reject in this request; None: accepted."""
        for param, message in self.unsupported.items():
            if param in body:
                return {
                    "error": {
                        "message": message,
                        "type": "invalid_request_error",
                        "param": param,
                        "code": "unsupported_parameter",
                    }
                }
        if not self.strict:
            return None
        if request.path.startswith("/openai/") and "api-version" not in request.query:
            return {"error": {"code": "404", "message": "Resource not found"}}
        from launcher.openai_contract import contract_errors, openai_error

        errors = contract_errors(body)
        return openai_error(errors) if errors else None

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        model = str(body.get("model"))
        with self._lock:
            self.requests.append((model, body))
            self.calls.append(HttpCall(request.path, dict(request.query), dict(request.headers)))
        rejection = self._rejection(request, body)
        if rejection is not None:
            with self._lock:
                self.rejected.append(rejection)
            return web.json_response(rejection, status=400)
        reply = self.responder(model, body)
        if reply.delay_s:
            await asyncio.sleep(reply.delay_s)
        if reply.drop_connection:
            assert request.transport is not None
            request.transport.close()
            return web.Response()
        if reply.status != 200:
            headers = {"Retry-After": reply.retry_after} if reply.retry_after else {}
            return web.json_response(
                reply.error or {"error": {"message": "scripted fault"}}, status=reply.status, headers=headers
            )
        raw = json.dumps(_completion(model, body, reply, len(self.requests))).encode()
        if reply.truncate:
            raw = raw[: len(raw) // 2]
        if not reply.drip_s:
            return web.Response(body=raw, content_type="application/json")
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        response.content_length = len(raw)
        await response.prepare(request)
        step = max(1, len(raw) // 10)
        try:
            for i in range(0, len(raw), step):
                await asyncio.sleep(reply.drip_s / 10)
                await response.write(raw[i : i + step])
            await response.write_eof()
        except (ConnectionError, RuntimeError):
            pass  # the client gave up (its timeout): that is the point
        return response

    def start(self) -> ScriptedLLM:
        if self.strict:
            from launcher.openai_contract import OPENAI_API, available

            if not available():
                raise RuntimeError(f"strict mode needs the OpenAI API description at {OPENAI_API}")
        self._server = BackgroundApp("scripted-llm", self._app, self.host, self.port)
        self.port = self._server.start()
        return self

    def _app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_post("/openai/deployments/{deployment}/chat/completions", self._chat)
        return app

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()


def _completion(model: str, body: dict[str, Any], reply: Reply, number: int) -> dict[str, Any]:
    """The chat-completions answer for `reply`, with OpenAI's usage (reasoning tokens included
    in `completion_tokens`, as OpenAI counts them)."""
    prompt_chars = sum(len(m.get("content", "")) for m in body.get("messages", []))
    content = None if reply.refusal else reply.text
    message: dict[str, Any] = {"role": "assistant", "content": content, "refusal": reply.refusal}
    payload: dict[str, Any] = {
        "id": f"chatcmpl-{number}",
        "object": "chat.completion",
        "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": reply.finish_reason}],
    }
    if reply.usage:
        tokens_in = max(1, prompt_chars // 4)
        tokens_out = max(1, len(reply.text) // 4) + reply.reasoning_tokens
        payload["usage"] = {
            "prompt_tokens": tokens_in,
            "completion_tokens": tokens_out,
            "total_tokens": tokens_in + tokens_out,
            "completion_tokens_details": {"reasoning_tokens": reply.reasoning_tokens},
        }
    return payload


def scripted_catalog(base_url: str, names: tuple[str, ...] = ("scripted",)) -> Catalog:
    """Catalog models all served by the scripted server at `base_url`; prices rise with the
    position in `names`, so the learner can tell them apart."""
    return Catalog(
        models=tuple(
            ModelSpec(
                name=n, base_url=base_url, price_in_per_mtok=1.0 + i, price_out_per_mtok=2.0 + i, timeout_s=10
            )
            for i, n in enumerate(names)
        )
    )
