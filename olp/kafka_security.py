"""How to reach and authenticate to a Kafka cluster: one configuration, mapped to each client the
project uses (spec section 6): confluent-kafka (a librdkafka dict), aiokafka (keyword arguments)
and Faust (the `faust.App` keywords its aiokafka driver turns into the same arguments).

Modes: PLAINTEXT; TLS with a CA bundle, optionally a client certificate and key (mTLS, the key's
password a secret); SASL PLAIN, SCRAM-SHA-256/512 and OAUTHBEARER (OAuth 2.0 client-credentials
grant against a token endpoint: librdkafka's built-in `oidc` method, and for aiokafka the
`olp.kafka_oauth.ClientCredentialsTokenProvider`), over plaintext or TLS. Not supported: GSSAPI (Kerberos),
OAUTHBEARER with tokens from anything but a client-credentials endpoint (e.g. AWS MSK IAM's
signed tokens) and JKS/PKCS#12 key stores (librdkafka could take them through the pass-through,
aiokafka cannot: convert them to PEM).

Secrets are `SecretStr` and are resolved only in the dicts handed to the clients; the model's
repr and the token provider's repr show none. Other client properties pass through per client
(`confluent_extra`, `aiokafka_extra`) but may not hold secrets nor override what the fields
above own, so that one field decides each thing.

A wrong password or CA does not make the clients fail: librdkafka retries an unknown user about
every 50 ms until its own timeout, aiokafka until its request timeout. `check_connection` and
`check_connection_async` fail within seconds with an `OlpError` naming the cause.
"""

from __future__ import annotations

import logging
import re
import ssl
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

from olp.errors import OlpError

if TYPE_CHECKING:
    from olp.kafka_oauth import ClientCredentialsTokenProvider

log = logging.getLogger("olp.kafka")

SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER"]
PassThrough = dict[str, str | int | float | bool]

CONFLUENT_OWNED_KEYS = frozenset(
    {
        "bootstrap.servers",
        "security.protocol",
        "sasl.mechanism",
        "sasl.mechanisms",
        "sasl.username",
        "sasl.password",
        "sasl.oauthbearer.method",
        "sasl.oauthbearer.client.id",
        "sasl.oauthbearer.client.secret",
        "sasl.oauthbearer.token.endpoint.url",
        "sasl.oauthbearer.scope",
        "ssl.ca.location",
        "ssl.certificate.location",
        "ssl.key.location",
        "ssl.key.password",
        "ssl.endpoint.identification.algorithm",
    }
)
"""librdkafka properties the fields of `KafkaConnection` set; the pass-through may not."""

AIOKAFKA_OWNED_KEYS = frozenset(
    {
        "bootstrap_servers",
        "security_protocol",
        "sasl_mechanism",
        "sasl_plain_username",
        "sasl_plain_password",
        "sasl_oauth_token_provider",
        "ssl_context",
    }
)
"""aiokafka arguments the fields of `KafkaConnection` set; the pass-through may not."""

_SECRET_KEY = re.compile(r"password|secret|jaas|key\.pem|credential", re.IGNORECASE)


class KafkaConnection(BaseModel):
    """Where the cluster is and how to authenticate to it (the security part of KafkaSettings)."""

    model_config = ConfigDict(frozen=True)

    bootstrap_servers: str = Field("127.0.0.1:9092", description="Comma-separated host:port list.")
    security_protocol: SecurityProtocol = "PLAINTEXT"
    sasl_mechanism: SaslMechanism | None = Field(None, description="Required with SASL_* protocols.")
    sasl_username: str | None = Field(None, description="PLAIN and SCRAM.")
    sasl_password: SecretStr | None = Field(None, description="PLAIN and SCRAM.")
    sasl_oauthbearer_token_endpoint_url: str | None = Field(
        None, description="OAUTHBEARER: the OAuth 2.0 token endpoint (client-credentials grant)."
    )
    sasl_oauthbearer_client_id: str | None = None
    sasl_oauthbearer_client_secret: SecretStr | None = None
    sasl_oauthbearer_scope: str | None = Field(
        None, description="Space-separated scopes, if the endpoint wants them."
    )
    ssl_cafile: Path | None = Field(
        None, description="PEM CA bundle to verify the brokers' certificates (default: the system's)."
    )
    ssl_certfile: Path | None = Field(None, description="PEM client certificate (mTLS).")
    ssl_keyfile: Path | None = Field(None, description="PEM private key of the client certificate.")
    ssl_key_password: SecretStr | None = Field(None, description="Password of an encrypted ssl_keyfile.")
    ssl_check_hostname: bool = Field(
        True, description="Check that a broker's certificate names the host connected to."
    )
    confluent_extra: PassThrough = Field(
        default_factory=dict,
        description="Other librdkafka properties for confluent-kafka clients (no secrets).",
    )
    aiokafka_extra: PassThrough = Field(
        default_factory=dict,
        description="Other keyword arguments for aiokafka clients (no secrets; not used by Faust).",
    )

    @model_validator(mode="after")
    def _consistent(self) -> KafkaConnection:
        problems = _security_problems(self)
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @property
    def uses_tls(self) -> bool:
        return self.security_protocol in ("SSL", "SASL_SSL")

    def secret_values(self) -> list[str]:
        """The secrets of this configuration, for log redaction."""
        secrets = (self.sasl_password, self.sasl_oauthbearer_client_secret, self.ssl_key_password)
        return [s.get_secret_value() for s in secrets if s and s.get_secret_value()]

    def confluent_config(self) -> dict[str, Any]:
        """librdkafka configuration for confluent-kafka clients (secrets resolved here only)."""
        conf: dict[str, Any] = {
            "bootstrap.servers": self.bootstrap_servers,
            "security.protocol": self.security_protocol,
        }
        if self.sasl_mechanism == "OAUTHBEARER":
            conf["sasl.mechanism"] = "OAUTHBEARER"
            conf["sasl.oauthbearer.method"] = "oidc"
            conf["sasl.oauthbearer.token.endpoint.url"] = self.sasl_oauthbearer_token_endpoint_url
            conf["sasl.oauthbearer.client.id"] = self.sasl_oauthbearer_client_id
            conf["sasl.oauthbearer.client.secret"] = _reveal(self.sasl_oauthbearer_client_secret)
            if self.sasl_oauthbearer_scope:
                conf["sasl.oauthbearer.scope"] = self.sasl_oauthbearer_scope
        elif self.sasl_mechanism:
            conf["sasl.mechanism"] = self.sasl_mechanism
            conf["sasl.username"] = self.sasl_username
            conf["sasl.password"] = _reveal(self.sasl_password)
        if self.uses_tls:
            conf["ssl.endpoint.identification.algorithm"] = "https" if self.ssl_check_hostname else "none"
            for key, path in (
                ("ssl.ca.location", self.ssl_cafile),
                ("ssl.certificate.location", self.ssl_certfile),
                ("ssl.key.location", self.ssl_keyfile),
            ):
                if path:
                    conf[key] = str(path)
            if self.ssl_key_password:
                conf["ssl.key.password"] = self.ssl_key_password.get_secret_value()
        return {**conf, **self.confluent_extra}

    def aiokafka_config(self) -> dict[str, Any]:
        """Connection keyword arguments shared by aiokafka producers, consumers and admin clients."""
        conf: dict[str, Any] = {
            "bootstrap_servers": self.bootstrap_servers,
            "security_protocol": self.security_protocol,
        }
        if self.sasl_mechanism == "OAUTHBEARER":
            conf["sasl_mechanism"] = "OAUTHBEARER"
            conf["sasl_oauth_token_provider"] = self.token_provider()
        elif self.sasl_mechanism:
            conf["sasl_mechanism"] = self.sasl_mechanism
            conf["sasl_plain_username"] = self.sasl_username
            conf["sasl_plain_password"] = _reveal(self.sasl_password)
        if self.uses_tls:
            conf["ssl_context"] = self.ssl_context()
        return {**conf, **self.aiokafka_extra}

    def faust_app_kwargs(self) -> dict[str, Any]:
        """`faust.App` keywords for this security (Faust's aiokafka driver maps them to the same
        aiokafka arguments as `aiokafka_config`); `aiokafka_extra` is not among them."""
        import faust

        context = self.ssl_context() if self.uses_tls else None
        credentials: Any = None
        if self.sasl_mechanism == "OAUTHBEARER":
            credentials = faust.OAuthCredentials(oauth_cb=self.token_provider(), ssl_context=context)
        elif self.sasl_mechanism:
            credentials = faust.SASLCredentials(
                username=self.sasl_username,
                password=_reveal(self.sasl_password),
                ssl_context=context,
                mechanism=self.sasl_mechanism,
            )
        elif context is not None:
            credentials = faust.SSLCredentials(context)
        return {"broker_credentials": credentials}

    def ssl_context(self) -> ssl.SSLContext:
        """The TLS client context aiokafka and Faust use: CA, client certificate, hostname check."""
        from aiokafka.helpers import create_ssl_context

        try:
            context: ssl.SSLContext = create_ssl_context(
                cafile=self.ssl_cafile,
                certfile=self.ssl_certfile,
                keyfile=self.ssl_keyfile,
                password=_reveal(self.ssl_key_password),
            )
        except (OSError, ssl.SSLError) as exc:
            files = ", ".join(str(p) for p in (self.ssl_cafile, self.ssl_certfile, self.ssl_keyfile) if p)
            raise OlpError(f"cannot load the Kafka TLS files ({files}): {exc}") from exc
        context.check_hostname = self.ssl_check_hostname
        return context

    def token_provider(self) -> ClientCredentialsTokenProvider:
        from olp.kafka_oauth import ClientCredentialsTokenProvider

        assert self.sasl_oauthbearer_token_endpoint_url and self.sasl_oauthbearer_client_id  # validated
        return ClientCredentialsTokenProvider(
            self.sasl_oauthbearer_token_endpoint_url,
            self.sasl_oauthbearer_client_id,
            self.sasl_oauthbearer_client_secret or SecretStr(""),
            self.sasl_oauthbearer_scope,
        )


def _reveal(secret: SecretStr | None) -> str | None:
    return secret.get_secret_value() if secret is not None else None


def _security_problems(c: KafkaConnection) -> list[str]:
    """What makes this configuration unusable, in words an operator can act on."""
    problems = []
    sasl = c.security_protocol.startswith("SASL_")
    if sasl and not c.sasl_mechanism:
        problems.append(f"security_protocol {c.security_protocol} needs sasl_mechanism")
    if not sasl and c.sasl_mechanism:
        problems.append(
            f"sasl_mechanism is set but security_protocol {c.security_protocol} does not use SASL"
        )
    password_login = sasl and c.sasl_mechanism in ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
    if password_login and (not c.sasl_username or c.sasl_password is None):
        problems.append(f"SASL {c.sasl_mechanism} needs sasl_username and sasl_password")
    oauth = (
        c.sasl_oauthbearer_token_endpoint_url,
        c.sasl_oauthbearer_client_id,
        c.sasl_oauthbearer_client_secret,
    )
    if sasl and c.sasl_mechanism == "OAUTHBEARER" and not all(oauth):
        problems.append(
            "SASL OAUTHBEARER needs sasl_oauthbearer_token_endpoint_url, sasl_oauthbearer_client_id "
            "and sasl_oauthbearer_client_secret"
        )
    tls_files = {"ssl_cafile": c.ssl_cafile, "ssl_certfile": c.ssl_certfile, "ssl_keyfile": c.ssl_keyfile}
    set_files = [name for name, path in tls_files.items() if path]
    if set_files and not c.uses_tls:
        problems.append(
            f"{', '.join(set_files)} set but security_protocol {c.security_protocol} does not use TLS"
        )
    if c.ssl_keyfile and not c.ssl_certfile:
        problems.append("ssl_keyfile needs ssl_certfile (the client certificate)")
    for name, extra, owned in (
        ("confluent_extra", c.confluent_extra, CONFLUENT_OWNED_KEYS),
        ("aiokafka_extra", c.aiokafka_extra, AIOKAFKA_OWNED_KEYS),
    ):
        taken = sorted(key for key in extra if key in owned)
        if taken:
            problems.append(f"{name} may not set {', '.join(taken)}: use the dedicated kafka settings")
        secret = sorted(key for key in extra if key not in owned and _SECRET_KEY.search(key))
        if secret:
            problems.append(
                f"{name} may not hold secrets ({', '.join(secret)}): they would be shown and logged"
            )
    return problems
