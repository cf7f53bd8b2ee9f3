"""What every HTTP service of the project (policy store, ingest, document read API) does the
same way: errors as JSON `{"error": message}`, bearer-token checks, and one middleware that
maps domain errors (`olp.errors.OlpError`) to a status (STYLE 8)."""

from __future__ import annotations

import hmac
import json
import math
from collections.abc import Awaitable, Callable

from aiohttp import web
from aiohttp.typedefs import Middleware
from pydantic import SecretStr

from olp.errors import OlpError

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Classifier = Callable[[OlpError], tuple[int, float | None]]
"""Domain error -> (HTTP status, seconds for Retry-After or None)."""


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
    given = request.headers.get("Authorization", "")
    if not hmac.compare_digest(given.encode(), f"Bearer {token.get_secret_value()}".encode()):
        raise json_error(
            web.HTTPUnauthorized, "missing or wrong bearer token", **{"WWW-Authenticate": "Bearer"}
        )


def bad_request(exc: OlpError) -> tuple[int, float | None]:
    return 400, None


def error_middleware(classify: Classifier = bad_request) -> Middleware:
    """Domain errors -> JSON with `classify`'s status (and Retry-After); HTTP errors keep their
    status with a JSON body; malformed values in a request -> 400."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except web.HTTPException as exc:
            if exc.content_type == "application/json":
                raise
            retry = exc.headers.get("Retry-After")
            headers = {"Retry-After": retry} if retry else {}
            return web.json_response({"error": exc.reason}, status=exc.status, headers=headers)
        except OlpError as exc:
            status, retry_s = classify(exc)
            headers = {"Retry-After": str(max(1, math.ceil(retry_s)))} if retry_s is not None else {}
            return web.json_response({"error": str(exc)}, status=status, headers=headers)
        except (KeyError, ValueError, TypeError) as exc:
            return web.json_response({"error": f"bad request: {exc}"}, status=400)

    return middleware
