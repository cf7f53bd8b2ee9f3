"""Model gateway: calls OpenAI-compatible chat-completions endpoints with aiohttp (spec section 5).

One gateway per process, created in a lifecycle hook with one `aiohttp.ClientSession`. It applies
the catalog's per-model timeout and concurrency limit, retries transient faults (timeouts, 429
with Retry-After, 5xx, refused connections) with exponential backoff, and measures what Role-RL
learns from: wall latency, the server's token counts and their dollar cost, and, for models whose
catalog entry sets `logprobs`, the answer's confidence (mean token probability; spec section 4,
the confidence cascade).
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
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

Messages = Sequence[Mapping[str, str]]


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


class _Transient(ModelCallError):
    """A fault worth retrying; carries the server's Retry-After when it sent one."""

    def __init__(self, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


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
    ) -> None:
        self.catalog = catalog
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
        """Ask `model`; raise ModelCallError once retries are exhausted or the fault is permanent."""
        spec = self.catalog.model(model)
        body: dict[str, Any] = {
            "model": spec.request_model,
            "messages": [dict(m) for m in messages],
            "temperature": 0.0,
            "max_tokens": min(max_tokens or spec.max_output_tokens, spec.max_output_tokens),
        }
        if json_schema is not None and spec.json_schema:
            # OpenAI's structured-output form; llama.cpp servers turn the schema into a grammar.
            body["response_format"] = {
                "type": "json_object",
                "schema": dict(json_schema),
            }
        if spec.logprobs:
            body["logprobs"] = True
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self._attempts),
            wait=_wait,
            retry=retry_if_exception_type(_Transient),
            reraise=True,
        )
        async with self._limits[model]:
            async for attempt in retrying:
                with attempt:
                    return await self._post(spec, body)
        raise AssertionError("unreachable: tenacity re-raises the last error")  # pragma: no cover

    async def _post(self, spec: ModelSpec, body: Mapping[str, Any]) -> Completion:
        headers = {"Content-Type": "application/json"}
        if spec.api_key_env:
            key = self._api_keys.get(spec.api_key_env)
            if not key:
                raise ModelCallError(
                    f"model {spec.name}: environment variable {spec.api_key_env} holds no API key"
                )
            headers["Authorization"] = f"Bearer {key}"
        url = spec.base_url.rstrip("/") + "/chat/completions"
        started = time.perf_counter()
        try:
            async with self._session.post(
                url,
                json=body,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=spec.timeout_s),
                ssl=spec.verify_tls,  # True: verify with the default CA bundle
            ) as resp:
                raw = await resp.read()
                if resp.status == 429 or resp.status >= 500:
                    raise _Transient(
                        f"model {spec.name}: HTTP {resp.status}",
                        _retry_after(resp.headers.get("Retry-After")),
                    )
                if resp.status >= 400:  # redacted before it is cut, so no part of a key remains
                    detail = self._redact(raw.decode(errors="replace"))[:300]
                    raise ModelCallError(f"model {spec.name}: HTTP {resp.status}: {detail}")
        except (TimeoutError, aiohttp.ClientConnectionError, aiohttp.ClientPayloadError) as exc:
            raise _Transient(f"model {spec.name}: {type(exc).__name__}: {exc}") from exc
        latency_ms = (time.perf_counter() - started) * 1000.0
        try:
            return _parse_completion(spec, raw, latency_ms)
        except ModelCallError as exc:
            if not self._secrets:
                raise
            detail = self._redact(raw.decode(errors="replace"))[:200]
            raise ModelCallError(
                f"model {spec.name}: malformed chat-completions response: {detail!r}"
            ) from exc.__cause__

    def _redact(self, text: str) -> str:
        """`text` with every API key of the catalog masked."""
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None  # an HTTP-date; the exponential backoff is good enough


def _parse_completion(spec: ModelSpec, raw: bytes, latency_ms: float) -> Completion:
    try:
        payload = json.loads(raw)
        choice = payload["choices"][0]
        text = choice["message"]["content"] or ""
        usage = payload.get("usage") or {}
        # Negative counts would make a negative cost (a reward for calling the model).
        tokens_in = max(0, int(usage.get("prompt_tokens", 0)))
        tokens_out = max(0, int(usage.get("completion_tokens", 0)))
        finish_reason = str(choice.get("finish_reason") or "")
        if not isinstance(text, str):
            raise TypeError(f"message content is {type(text).__name__}, not text")
    # AttributeError: a list or scalar where an object belongs; OverflowError: an infinite count;
    # RecursionError: absurd nesting. Any of them is a malformed response, not a bug of ours.
    except (ValueError, LookupError, TypeError, AttributeError, OverflowError, RecursionError) as exc:
        raise ModelCallError(
            f"model {spec.name}: malformed chat-completions response: {raw[:200]!r}"
        ) from exc
    return Completion(
        model=spec.name,
        text=text,
        tokens_in=tokens_in,
        tokens_out=tokens_out,
        latency_ms=latency_ms,
        cost_usd=spec.cost_usd(tokens_in, tokens_out),
        finish_reason=finish_reason,
        confidence=confidence_from_logprobs(choice.get("logprobs")),
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
