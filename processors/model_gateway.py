"""Model gateway: calls OpenAI-compatible chat-completions endpoints with aiohttp (spec section 5).

One gateway per process, created in a lifecycle hook with one `aiohttp.ClientSession`. It posts
the request `processors.chat_request.build_request` makes (the catalog names each model's
dialect), applies the catalog's per-model timeout and concurrency limit, retries transient faults
(timeouts, 429 with Retry-After, 5xx, refused connections) with exponential backoff, and measures
what Role-RL learns from: wall latency, the server's token counts and their dollar cost, and, for models whose
catalog entry sets `logprobs`, the answer's confidence (mean token probability; spec section 4,
the confidence cascade).

A 4xx answer is permanent and named by model, parameter and the provider's own message; one that
is the input's fault (context length exceeded, content filter) is an `InputRejected`, so the role
call can dead-letter the chunk instead of charging each model in turn.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import aiohttp
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential_jitter,
)

from olp.catalog import Catalog, ModelSpec
from olp.errors import ModelCallError
from processors.chat_request import ChatRequest, Messages, build_request
from processors.encoder import EncoderPool, EncoderTask


@dataclass(frozen=True, slots=True)
class Completion:
    """A model's answer with what it cost."""

    model: str
    text: str
    tokens_in: int
    tokens_out: int
    latency_ms: float
    cost_usd: float
    finish_reason: str
    confidence: float | None = None
    """Mean probability of the answer's tokens (from the server's logprobs); None without them."""
    reasoning_tokens: int = 0
    """Tokens a reasoning model spent thinking, included in `tokens_out` and the cost."""
    tokens_estimated: bool = False
    """The server sent no `usage`: the token counts (and so the cost) are estimates."""
    response_id: str = ""


class _Transient(ModelCallError):
    """A fault worth retrying; carries the server's Retry-After when it sent one."""

    def __init__(self, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class RequestRejected(ModelCallError):
    """The provider answered 4xx: permanent; `error` holds what it said."""

    def __init__(self, message: str, error: ProviderError) -> None:
        super().__init__(message)
        self.error = error


class InputRejected(ModelCallError):
    """The provider refused the input itself (context length exceeded, content filter): asking
    another model about the same chunk is unlikely to help, so the chunk is the one to dead-letter."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class ProviderError:
    """What a provider said about a rejected request (OpenAI's `{"error": {...}}` and kin)."""

    status: int
    message: str
    code: str = ""
    param: str = ""
    type: str = ""

    def describe(self) -> str:
        parts = [f"HTTP {self.status}"]
        parts += [p for p in (self.type, self.code) if p]
        where = f" (parameter {self.param})" if self.param else ""
        return f"{' '.join(parts)}{where}: {self.message}"


def _wait(state: RetryCallState) -> float:
    """Back off exponentially, but never shorter than the server's Retry-After."""
    backoff = wait_exponential_jitter(initial=0.2, max=8.0)(state)
    exc = state.outcome.exception() if state.outcome else None
    if isinstance(exc, _Transient) and exc.retry_after_s is not None:
        return max(backoff, min(exc.retry_after_s, 30.0))
    return backoff


class ModelGateway:
    """Calls the catalog's models. Thread-unsafe; one per event loop."""

    def __init__(
        self,
        catalog: Catalog,
        session: aiohttp.ClientSession,
        api_keys: Mapping[str, str],
        attempts: int = 3,
        encoders: EncoderPool | None = None,
    ) -> None:
        self.catalog = catalog
        self.encoders = encoders or EncoderPool()
        self._session = session
        self._api_keys = dict(api_keys)
        self._attempts = attempts
        self._limits = {m.name: asyncio.Semaphore(m.max_concurrency) for m in catalog.models}
        # The keys this gateway sends, longest first: masked in every error it raises, because a
        # provider may echo the key in its error body, and errors reach feedback, spans and the DLQ.
        keys = {self._api_keys.get(m.api_key_env or "") or "" for m in catalog.models}
        self._secrets = sorted((k for k in keys if len(k) >= 4), key=len, reverse=True)

    async def complete(
        self,
        model: str,
        messages: Messages,
        json_schema: Mapping[str, Any] | None = None,
        max_tokens: int | None = None,
    ) -> Completion:
        """Ask `model`; raise ModelCallError once retries are exhausted or the fault is permanent
        (InputRejected when the fault is the input's)."""
        spec = self.catalog.model(model)
        request = build_request(spec, messages, json_schema, max_tokens, self._api_key(spec))
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self._attempts),
            wait=_wait,
            retry=retry_if_exception_type(_Transient),
            reraise=True,
        )
        async with self._limits[model]:
            async for attempt in retrying:
                with attempt:
                    return await self._post(spec, request)
        raise AssertionError("unreachable: tenacity re-raises the last error")  # pragma: no cover

    async def encode(self, model: str, task: EncoderTask[Any]) -> tuple[Any, Completion]:
        """Run a role's encoder task on the encoder `model` in a thread: (the parsed answer, its
        Completion with the tokens embedded and their compute price, the task's confidence, text
        the answer's repr for a judge)."""
        spec = self.catalog.model(model)
        if spec.kind != "encoder":
            raise ModelCallError(f"model {model} is a {spec.kind} model, not an encoder")
        async with self._limits[model]:
            try:
                done = await asyncio.to_thread(self.encoders.run, spec, task)
            except ModelCallError:
                raise
            except Exception as exc:  # a fault of the local model, not of the input
                raise ModelCallError(f"encoder {model}: {type(exc).__name__}: {exc}") from exc
        completion = Completion(
            model=model,
            text=repr(done.value)[:2000],
            tokens_in=done.tokens,
            tokens_out=0,
            latency_ms=done.latency_ms,
            cost_usd=spec.cost_usd(done.tokens, 0),
            finish_reason="stop",
            confidence=done.confidence,
        )
        return done.value, completion

    def _api_key(self, spec: ModelSpec) -> str | None:
        if not spec.api_key_env:
            return None
        key = self._api_keys.get(spec.api_key_env)
        if not key:
            raise ModelCallError(
                f"model {spec.name}: environment variable {spec.api_key_env} holds no API key"
            )
        return key

    async def _post(self, spec: ModelSpec, request: ChatRequest) -> Completion:
        started = time.perf_counter()
        try:
            async with self._session.post(
                request.url,
                json=request.body,
                headers=dict(request.headers),
                timeout=aiohttp.ClientTimeout(total=spec.timeout_s),
                ssl=spec.verify_tls,  # True: verify with the default CA bundle
            ) as resp:
                raw = await resp.read()
                if resp.status == 429 or resp.status >= 500:
                    raise _Transient(
                        f"model {spec.name}: HTTP {resp.status}",
                        _retry_after(resp.headers.get("Retry-After")),
                    )
                if resp.status >= 400:
                    raise self._rejected(spec, provider_error(resp.status, raw))
        except (TimeoutError, aiohttp.ClientConnectionError, aiohttp.ClientPayloadError) as exc:
            raise _Transient(f"model {spec.name}: {type(exc).__name__}: {exc}") from exc
        latency_ms = (time.perf_counter() - started) * 1000.0
        try:
            return _parse_completion(spec, raw, latency_ms, _prompt_chars(request.body))
        except InputRejected:
            raise
        except ModelCallError as exc:
            if not self._secrets:
                raise
            detail = self._redact(raw.decode(errors="replace"))[:200]
            raise ModelCallError(
                f"model {spec.name}: malformed chat-completions response: {detail!r}"
            ) from exc.__cause__

    def _rejected(self, spec: ModelSpec, error: ProviderError) -> ModelCallError:
        """The permanent error for a 4xx answer, named by model, parameter and the provider's words;
        redacted before it is cut, so no part of a key remains."""
        error = replace(error, message=self._redact(error.message))
        fix = catalog_fix(spec, error)
        said = f"model {spec.name} ({spec.request_model}): {error.describe()}"[:400]
        text = self._redact(said + (f" -> {fix}" if fix else ""))
        reason = input_fault(error)
        return InputRejected(text, reason) if reason else RequestRejected(text, error)

    def _redact(self, text: str) -> str:
        """`text` with every API key of the catalog masked."""
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text


def provider_error(status: int, raw: bytes) -> ProviderError:
    """The provider's error body read the ways providers write it: OpenAI, Azure and LiteLLM
    `{"error": {"message", "type", "param", "code"}}`, vLLM's flat `{"message", "type", ...}`,
    `{"error": "text"}`, `{"detail": ...}` or plain text."""
    text = raw.decode(errors="replace").strip()
    try:
        payload = json.loads(text)
    except ValueError:
        return ProviderError(status, text[:300] or "(empty body)")
    inner = payload.get("error", payload) if isinstance(payload, dict) else payload
    if not isinstance(inner, dict):
        message = (
            inner if isinstance(inner, str) else payload.get("detail") if isinstance(payload, dict) else None
        )
        return ProviderError(status, str(message or text)[:300])

    def field(key: str) -> str:
        value = inner.get(key)
        return "" if value is None or isinstance(value, int) else str(value)

    return ProviderError(
        status,
        str(inner.get("message") or inner.get("detail") or text)[:300],
        field("code"),
        field("param"),
        field("type"),
    )


def input_fault(error: ProviderError) -> str | None:
    """The reason ("context_length_exceeded", "content_filter") when the request failed for its input."""
    said = f"{error.code} {error.type} {error.message}".lower()
    if error.code == "context_length_exceeded" or any(
        s in said for s in ("maximum context length", "exceed_context_size", "exceeds the available context")
    ):
        return "context_length_exceeded"
    if error.code in ("content_filter", "content_policy_violation") or "content management policy" in said:
        return "content_filter"
    return None


def catalog_fix(spec: ModelSpec, error: ProviderError) -> str | None:
    """What to change in `spec`'s catalog entry for a request the provider rejected, in plain
    words; None when the answer names nothing the catalog controls."""
    param, said = error.param, f"{error.code} {error.message}".lower()
    if param.startswith("response_format") or "response_format" in said or "json_schema" in said:
        if "response_format.schema" in (param, *said.split("'")):
            return "this endpoint rejects response_format.schema: set structured_output: json_schema"
        if "invalid schema" in said:
            return "the endpoint rejects the role's schema: set structured_output: json_object"
        if spec.structured_output == "json_schema":
            return "this endpoint does not take json_schema: set structured_output: json_object or none"
        return "this endpoint rejects its response_format: set structured_output: json_schema"
    if param == "max_tokens" or "max_completion_tokens" in said:
        return "this model takes max_completion_tokens: set token_limit_field: max_completion_tokens"
    if param == "max_completion_tokens":
        return "this endpoint takes max_tokens: set token_limit_field: max_tokens"
    if param == "temperature" or "temperature" in said:
        return "this model takes only its default temperature: set temperature: null"
    if param == "logprobs" or "logprobs" in said:
        return "this endpoint does not return logprobs: set logprobs: false"
    if error.status in (401, 403):
        return f"the endpoint refused the API key: check {spec.api_key_env or 'api_key_env'}"
    if error.status == 404 or error.code == "model_not_found":
        where = "azure.deployment and azure.api_version" if spec.azure else "base_url and served_name"
        return f"the endpoint does not know this model: check {where}"
    return None
    return None


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None  # an HTTP-date; the exponential backoff is good enough


def _prompt_chars(body: Mapping[str, Any]) -> int:
    return sum(len(str(m.get("content") or "")) for m in body.get("messages", []))


def _parse_completion(spec: ModelSpec, raw: bytes, latency_ms: float, prompt_chars: int = 0) -> Completion:
    """The answer and its cost. Without `usage` the token counts are estimated (4 characters a
    token) and marked; reasoning tokens are part of `completion_tokens` (OpenAI) and never
    billed below what `completion_tokens_details.reasoning_tokens` reports."""
    try:
        payload = json.loads(raw)
        choice = payload["choices"][0]
        message = choice["message"]
        text = message.get("content") or ""
        refusal = message.get("refusal")
        finish_reason = str(choice.get("finish_reason") or "")
        usage = payload.get("usage")
        estimated = not isinstance(usage, dict) or "completion_tokens" not in usage
        usage = usage if isinstance(usage, dict) else {}
        details = usage.get("completion_tokens_details")
        reasoning = max(0, int((details if isinstance(details, dict) else {}).get("reasoning_tokens") or 0))
        # Negative counts would make a negative cost (a reward for calling the model).
        tokens_in = max(0, int(usage.get("prompt_tokens", math.ceil(prompt_chars / 4))))
        tokens_out = max(0, int(usage.get("completion_tokens", math.ceil(len(text) / 4)) or 0), reasoning)
        if not isinstance(text, str):
            raise TypeError(f"message content is {type(text).__name__}, not text")
    # AttributeError: a list or scalar where an object belongs; OverflowError: an infinite count;
    # RecursionError: absurd nesting. Any of them is a malformed response, not a bug of ours.
    except (ValueError, LookupError, TypeError, AttributeError, OverflowError, RecursionError) as exc:
        raise ModelCallError(
            f"model {spec.name}: malformed chat-completions response: {raw[:200]!r}"
        ) from exc
    if finish_reason == "content_filter":
        raise InputRejected(
            f"model {spec.name}: the provider's content filter stopped the answer", "content_filter"
        )
    if refusal and not text:
        raise ModelCallError(f"model {spec.name} refused: {str(refusal)[:200]}")
    return Completion(
        model=spec.name,
        text=text,
        tokens_in=tokens_in,
        tokens_out=tokens_out,
        latency_ms=latency_ms,
        cost_usd=spec.cost_usd(tokens_in, tokens_out),
        finish_reason=finish_reason,
        confidence=confidence_from_logprobs(choice.get("logprobs")),
        reasoning_tokens=reasoning,
        tokens_estimated=estimated,
        response_id=str(payload.get("id") or ""),
    )


def confidence_from_logprobs(logprobs: Any) -> float | None:
    """Mean token probability of an answer from an OpenAI-style `choices[0].logprobs`
    (`{"content": [{"token": .., "logprob": ..}, ..]}`, as OpenAI and llama.cpp send it); None when
    there are none or they are malformed (confidence is optional, never a reason to fail a call)."""
    try:
        tokens = logprobs["content"] if isinstance(logprobs, dict) else None
        if not isinstance(tokens, list):
            return None
        probs = [math.exp(min(0.0, float(t["logprob"]))) for t in tokens if isinstance(t, dict)]
    except (LookupError, TypeError, ValueError, OverflowError):
        return None
    probs = [p for p in probs if math.isfinite(p)]
    return sum(probs) / len(probs) if probs else None
