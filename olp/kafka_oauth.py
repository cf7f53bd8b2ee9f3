"""OAUTHBEARER tokens for aiokafka clients (and Faust's) from an OAuth 2.0 token endpoint.

librdkafka gets its tokens itself (`sasl.oauthbearer.method=oidc`); aiokafka asks a token provider
on every new connection. Imported only when OAUTHBEARER is configured.
"""

from __future__ import annotations

import time

from aiokafka.abc import AbstractTokenProvider
from pydantic import SecretStr

from olp.errors import OlpError, UnavailableError


class ClientCredentialsTokenProvider(AbstractTokenProvider):  # type: ignore[misc]  # aiokafka is untyped here
    """OAUTHBEARER tokens for aiokafka from an OAuth 2.0 client-credentials grant (RFC 6749 4.4),
    as librdkafka's `sasl.oauthbearer.method=oidc` gets them: client id and secret by HTTP Basic
    auth, the token reused until 80% of its lifetime has passed.

    One provider serves every connection of a client (Faust's consumer runs in another thread's
    event loop than its producer), so it holds no asyncio lock; two connections starting at once
    may each fetch a token, which is harmless.
    """

    REFRESH_AT = 0.8

    def __init__(
        self,
        endpoint_url: str,
        client_id: str,
        client_secret: SecretStr,
        scope: str | None = None,
        timeout_s: float = 10.0,
    ) -> None:
        self.endpoint_url = endpoint_url
        self.client_id = client_id
        self._client_secret = client_secret
        self.scope = scope
        self.timeout_s = timeout_s
        self._token: str | None = None
        self._renew_at = 0.0

    def __repr__(self) -> str:
        return f"<ClientCredentialsTokenProvider {self.endpoint_url} client_id={self.client_id}>"

    async def token(self) -> str:
        if self._token is None or time.monotonic() >= self._renew_at:
            token, lifetime_s = await self._fetch()
            self._token, self._renew_at = token, time.monotonic() + self.REFRESH_AT * lifetime_s
        return self._token

    async def _fetch(self) -> tuple[str, float]:
        import aiohttp

        form = {"grant_type": "client_credentials"}
        if self.scope:
            form["scope"] = self.scope
        auth = aiohttp.BasicAuth(self.client_id, self._client_secret.get_secret_value())
        where = f"OAuth token endpoint {self.endpoint_url} (client {self.client_id})"
        try:
            async with (
                aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout_s)) as session,
                session.post(self.endpoint_url, data=form, auth=auth, allow_redirects=False) as response,
            ):
                if response.status != 200:
                    body = (await response.text())[:200]
                    raise OlpError(f"{where} answered {response.status}: {body}")
                answer = await response.json(content_type=None)
        except (TimeoutError, aiohttp.ClientError, ValueError) as exc:
            raise UnavailableError(f"{where} failed: {type(exc).__name__}: {exc}") from exc
        if not isinstance(answer, dict) or not isinstance(answer.get("access_token"), str):
            raise OlpError(f"{where} answered without an access_token")
        return answer["access_token"], float(answer.get("expires_in") or 3600)
