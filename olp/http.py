"""What every HTTP service of the project (policy store, ingest, document read API) does the
same way: errors as JSON `{"error": message}`, bearer-token checks, JSON bodies read with a cap on
their size and nesting, and one middleware that maps domain errors (`olp.errors.OlpError`) to a
status (STYLE 8)."""

from __future__ import annotations

import hmac
import ipaddress
import json
import logging
import math
import re
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Middleware
from pydantic import SecretStr

from olp.errors import ConfigError, OlpError
from olp.telemetry import redact

log = logging.getLogger("olp.http")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Classifier = Callable[[OlpError], tuple[int, float | None]]
"""Domain error -> (HTTP status, seconds for Retry-After or None)."""

MAX_JSON_DEPTH = 64
"""Deepest nesting of arrays and objects a request may hold: far above any body of the API, far
below the depth at which parsing or walking a value exhausts the interpreter's stack."""
_JSON_STRING = re.compile(r'"(?:[^"\\]|\\.?)*"?', re.DOTALL)
"""A JSON string, or an unterminated one up to the end: every quote starts a match that runs to its
closing quote, so removing strings takes one pass whatever the text."""
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")


def json_error(cls: type[web.HTTPException], message: str, **headers: str) -> web.HTTPException:
    """An HTTP error whose body is `{"error": message}`."""
    return cls(text=json.dumps({"error": message}), content_type="application/json", headers=headers)


def check_bearer(request: web.Request, token: SecretStr | None, disabled: str | None) -> None:
    """Require `Authorization: Bearer <token>` (compared in constant time).

    Without a configured token: refuse with 403 and the `disabled` message, or let the call
    through when `disabled` is None (an endpoint that is open unless a token is set)."""
    if token is None:
        if disabled is None:
            return
        raise json_error(web.HTTPForbidden, disabled)
    _check_any_bearer(request, (token,))


def check_reader(request: web.Request, read_token: SecretStr | None, admin_token: SecretStr | None) -> None:
    """A read of data (transcript text, the policy): open when no read token is set (the service
    then runs on loopback or was allowed to, `require_read_token`), else the read or the admin
    token."""
    if read_token is not None:
        _check_any_bearer(request, (read_token, admin_token))


def _check_any_bearer(request: web.Request, tokens: tuple[SecretStr | None, ...]) -> None:
    given = request.headers.get("Authorization", "").encode()
    matches = [
        hmac.compare_digest(given, f"Bearer {token.get_secret_value()}".encode())
        for token in tokens
        if token is not None
    ]
    if not any(matches):
        raise json_error(
            web.HTTPUnauthorized, "missing or wrong bearer token", **{"WWW-Authenticate": "Bearer"}
        )


def is_loopback(host: str) -> bool:
    """Whether a listen address reaches this machine only: `localhost` or a loopback IP (not
    `0.0.0.0`, `::` or empty, which mean every interface)."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip().strip("[]")).is_loopback
    except ValueError:
        return False


def require_read_token(
    service: str, host: str, read_token: SecretStr | None, allowed_open: bool, settings: tuple[str, str]
) -> None:
    """Refuse to serve reads to other machines without a token, unless the operator allowed it
    explicitly (behind a proxy or a network policy that authenticates readers). `settings` names
    the token's setting and the allowing one for the ConfigError."""
    if read_token is None and not allowed_open and not is_loopback(host):
        token_setting, allow_setting = settings
        raise ConfigError(
            f"{service} listens on {host or 'every interface'} without a read token: set "
            f"{token_setting} (readers send it as a bearer token) or, when something else "
            f"authenticates its readers, {allow_setting}"
        )


class NestingError(ValueError):
    """A JSON text nests deeper than allowed (a ValueError, like json's own decoding errors)."""


def nesting_exceeds(text: str, max_depth: int) -> bool:
    """Whether `text` opens more than `max_depth` arrays or objects inside each other (brackets in
    strings do not count). Linear in the text; does not check that it is JSON."""
    depth = 0
    for char in _NOT_BRACKET.sub("", _JSON_STRING.sub("", text)):
        depth += 1 if char in "[{" else -1
        if depth > max_depth:
            return True
    return False


def loads_json(text: str | bytes, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """`json.loads` for untrusted text: NestingError before parsing when it nests deeper than
    `max_depth` (the decoder recurses per level), json's ValueError when it is not JSON."""
    if isinstance(text, bytes):
        text = text.decode("utf-8")  # UnicodeDecodeError is a ValueError too
    if nesting_exceeds(text, max_depth):
        raise NestingError(f"JSON nested deeper than {max_depth} levels")
    return json.loads(text)


async def read_json(request: web.Request, max_bytes: int, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """The request's JSON body: 413 above `max_bytes`, 400 when it is not UTF-8 JSON or nests
    deeper than `max_depth`."""
    if request.content_length is not None and request.content_length > max_bytes:
        raise _too_large(max_bytes, request.content_length)
    body = bytearray()
    async for block in request.content.iter_chunked(65536):
        body += block
        if len(body) > max_bytes:
            raise _too_large(max_bytes, len(body))
    try:
        return loads_json(bytes(body), max_depth)
    except NestingError as exc:
        raise json_error(web.HTTPBadRequest, str(exc)) from exc
    except ValueError as exc:
        raise json_error(web.HTTPBadRequest, "body must be UTF-8 JSON") from exc


def _too_large(max_bytes: int, size: int) -> web.HTTPException:
    message = json.dumps({"error": f"body of {size} bytes exceeds the limit of {max_bytes}"})
    return web.HTTPRequestEntityTooLarge(max_bytes, size, text=message, content_type="application/json")


def bad_request(exc: OlpError) -> tuple[int, float | None]:
    return 400, None


def error_middleware(classify: Classifier = bad_request, secrets: Iterable[str] = ()) -> Middleware:
    """Domain errors -> JSON with `classify`'s status (and Retry-After); HTTP errors keep their
    status with a JSON body; malformed values in a request -> 400; anything else -> a 500 that
    names no detail (the log has it). Every text is redacted: `secrets` (the service's tokens and
    passwords) and secret-looking tokens are masked, whatever error carried them."""
    known = tuple(s for s in secrets if s)

    def answer(message: str, status: int, headers: Mapping[str, str] | None = None) -> web.Response:
        return web.json_response({"error": redact(message, known)}, status=status, headers=headers)

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except web.HTTPException as exc:
            if exc.content_type == "application/json":
                if exc.text is None or redact(exc.text, known) == exc.text:
                    raise
                return web.Response(
                    text=redact(exc.text, known), status=exc.status, content_type=exc.content_type
                )
            retry = exc.headers.get("Retry-After")
            return answer(exc.reason, exc.status, {"Retry-After": retry} if retry else {})
        except OlpError as exc:
            status, retry_s = classify(exc)
            headers = {"Retry-After": str(max(1, math.ceil(retry_s)))} if retry_s is not None else {}
            return answer(str(exc), status, headers)
        except (KeyError, ValueError, TypeError) as exc:
            return answer(f"bad request: {exc}", 400)
        except Exception:
            log.exception("%s %s failed", request.method, request.path)
            return answer("internal error (the service's log has the details)", 500)

    return middleware
