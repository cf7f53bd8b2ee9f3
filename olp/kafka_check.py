"""Fail fast, and say why, when the cluster cannot be reached or refuses our credentials.

The clients do neither: librdkafka retries a refused login or an untrusted certificate about every
50 ms until its own timeout and reports only "transport failure"; aiokafka gives up at once with
"Unable to bootstrap" (the cause only in its log) or, when a SCRAM login is refused, a bare
KeyError. A service checks the connection once before it starts its clients, so a wrong password,
CA or client certificate stops it within seconds with an `OlpError` naming the setting to fix;
a cluster that does not answer in time is an `UnavailableError` (retry later).
"""

from __future__ import annotations

import asyncio
import inspect
import ssl
import time
from typing import Any

from olp.errors import ConfigError, OlpError, UnavailableError
from olp.kafka_security import KafkaConnection

_CLIENT_CERT_REFUSED = ("alert unknown ca", "alert bad certificate", "alert certificate required")


def librdkafka_cause(conn: KafkaConnection, code: int, text: str) -> str | None:
    """What a librdkafka error callback's error means for the operator, when it is a refusal
    that retrying cannot fix (None otherwise)."""
    from confluent_kafka import KafkaError

    lowered = text.lower()
    if code == KafkaError._SSL and "certificate verify failed" in lowered:
        return _untrusted(conn, text)
    if code == KafkaError._SSL:
        return f"TLS handshake with Kafka at {conn.bootstrap_servers} failed: {text}"
    if any(alert in lowered for alert in _CLIENT_CERT_REFUSED):
        return _client_cert_refused(conn, text)
    if code == KafkaError._AUTHENTICATION:
        return _login_refused(conn, text)
    return None


def check_connection(conn: KafkaConnection, timeout_s: float = 10.0) -> None:
    """Ask the cluster for its metadata with librdkafka; raise as soon as it refuses us."""
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient

    errors: list[Any] = []
    conf: dict[str, Any] = {**conn.confluent_config(), "error_cb": errors.append}
    try:
        admin = AdminClient(conf)
    except KafkaException as exc:  # a CA, certificate or key file librdkafka cannot load
        raise ConfigError(f"the Kafka client settings cannot be used: {exc.args[0].str()}") from exc
    deadline = time.monotonic() + timeout_s
    last: Exception | None = None
    while True:
        remaining = deadline - time.monotonic()
        try:
            admin.list_topics(timeout=max(0.1, min(0.5, remaining)))
            return
        except KafkaException as exc:
            last = exc
        admin.poll(0)
        for error in errors:
            cause = librdkafka_cause(conn, error.code(), error.str())
            if cause:
                raise OlpError(cause)
        if remaining <= 0:
            seen = "; ".join(dict.fromkeys(e.str() for e in errors[-3:])) or str(last)
            raise UnavailableError(
                f"Kafka at {conn.bootstrap_servers} did not answer within {timeout_s:.0f}s: {seen}"
            )


async def check_connection_async(conn: KafkaConnection, timeout_s: float = 10.0) -> None:
    """The same check with aiokafka (the client of the services and of Faust)."""
    from aiokafka.admin import AIOKafkaAdminClient
    from aiokafka.errors import KafkaConnectionError, KafkaError

    accepted = inspect.signature(AIOKafkaAdminClient).parameters
    conf = {k: v for k, v in conn.aiokafka_config().items() if k in accepted}
    admin = AIOKafkaAdminClient(**conf, request_timeout_ms=int(timeout_s * 1000))
    try:
        await asyncio.wait_for(admin.start(), timeout_s)
    except KafkaConnectionError as exc:
        cause = await tls_refusal(conn, timeout_s) if conn.uses_tls else None
        if cause:
            raise OlpError(cause) from exc
        raise UnavailableError(f"cannot connect to Kafka at {conn.bootstrap_servers}: {exc}") from exc
    except TimeoutError as exc:
        raise UnavailableError(
            f"Kafka at {conn.bootstrap_servers} did not answer within {timeout_s:.0f}s"
        ) from exc
    except (KeyError, KafkaError) as exc:
        if conn.sasl_mechanism:  # aiokafka's SCRAM client fails on the server's "e=..." with KeyError
            raise OlpError(_login_refused(conn, f"{type(exc).__name__}: {exc}")) from exc
        raise
    finally:
        await admin.close()


async def tls_refusal(conn: KafkaConnection, timeout_s: float = 5.0) -> str | None:
    """Handshake with the first bootstrap server the way aiokafka would; what went wrong, if the
    TLS layer refused us (None when it did not, or the server is not reachable at all)."""
    host, _, port = conn.bootstrap_servers.split(",")[0].strip().rpartition(":")
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(host, int(port), ssl=conn.ssl_context()), timeout_s
        )
    except ssl.SSLCertVerificationError as exc:
        return _untrusted(conn, exc.verify_message or str(exc))
    except ssl.SSLError as exc:
        return _tls_error(conn, exc)
    except (OSError, TimeoutError):
        return None
    try:
        # With TLS 1.3 a server refuses the client's certificate only after the handshake.
        await asyncio.wait_for(reader.read(1), 0.5)
    except ssl.SSLError as exc:
        return _tls_error(conn, exc)
    except (OSError, TimeoutError):
        pass
    finally:
        writer.close()
    return None


def _tls_error(conn: KafkaConnection, exc: ssl.SSLError) -> str:
    text = str(exc)
    if any(alert.replace(" ", "_") in text.lower() for alert in _CLIENT_CERT_REFUSED):
        return _client_cert_refused(conn, text)
    return f"TLS handshake with Kafka at {conn.bootstrap_servers} failed: {text}"


def _untrusted(conn: KafkaConnection, detail: str) -> str:
    ca = f"ssl_cafile={conn.ssl_cafile}" if conn.ssl_cafile else "the system's CA bundle (no ssl_cafile)"
    return (
        f"Kafka at {conn.bootstrap_servers}: the broker's TLS certificate is not trusted by {ca}, "
        f"or does not name the host (ssl_check_hostname={conn.ssl_check_hostname}): {detail}"
    )


def _client_cert_refused(conn: KafkaConnection, detail: str) -> str:
    mine = f"ssl_certfile={conn.ssl_certfile}" if conn.ssl_certfile else "none was configured (ssl_certfile)"
    return f"Kafka at {conn.bootstrap_servers} refused our TLS client certificate ({mine}): {detail}"


def _login_refused(conn: KafkaConnection, detail: str) -> str:
    who = (
        f"client {conn.sasl_oauthbearer_client_id}"
        if conn.sasl_mechanism == "OAUTHBEARER"
        else f"user {conn.sasl_username!r}"
    )
    return (
        f"Kafka at {conn.bootstrap_servers} refused the SASL {conn.sasl_mechanism} login of {who} "
        f"(wrong user name or password?): {detail}"
    )
