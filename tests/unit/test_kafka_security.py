"""One Kafka security configuration, mapped to librdkafka, aiokafka and Faust: the exact client
configuration of every mode, the settings it refuses, the secrets it hides, the OAuth token
provider, the failure messages of the connection check, and the production/embedded defaults."""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

import faust
import pytest
from aiohttp import web
from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth
from pydantic import ValidationError

from launcher.secure_broker import Certificates, make_certificates
from olp.errors import OlpError, UnavailableError
from olp.kafka_check import librdkafka_cause
from olp.kafka_oauth import ClientCredentialsTokenProvider
from olp.settings import EMBEDDED_BROKER_ENV, EMBEDDED_BROKER_KAFKA, KafkaSettings, load_settings

BOOT = "k1:9093,k2:9093"


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return make_certificates(tmp_path_factory.mktemp("certs"), key_password="key-secret")


def without_context(conf: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in conf.items() if k not in ("ssl_context", "sasl_oauth_token_provider")}


def faust_as_aiokafka(kafka: KafkaSettings) -> dict[str, Any]:
    """What Faust's aiokafka driver hands its consumers and producers for these app keywords."""
    kwargs = kafka.faust_app_kwargs()
    assert set(kwargs) == {"broker_credentials"}
    return dict(credentials_to_aiokafka_auth(kwargs["broker_credentials"], None))


# --- each mode, each client ------------------------------------------------------------------


def test_plaintext() -> None:
    kafka = KafkaSettings(bootstrap_servers=BOOT)
    assert kafka.confluent_config() == {"bootstrap.servers": BOOT, "security.protocol": "PLAINTEXT"}
    assert kafka.aiokafka_config() == {"bootstrap_servers": BOOT, "security_protocol": "PLAINTEXT"}
    assert kafka.faust_app_kwargs() == {"broker_credentials": None}
    assert faust_as_aiokafka(kafka) == {"security_protocol": "PLAINTEXT"}


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"])
def test_sasl_password_over_plaintext(mechanism: str) -> None:
    kafka = KafkaSettings(
        bootstrap_servers=BOOT,
        security_protocol="SASL_PLAINTEXT",
        sasl_mechanism=mechanism,
        sasl_username="olp",
        sasl_password="pw-1",
    )
    assert kafka.confluent_config() == {
        "bootstrap.servers": BOOT,
        "security.protocol": "SASL_PLAINTEXT",
        "sasl.mechanism": mechanism,
        "sasl.username": "olp",
        "sasl.password": "pw-1",
    }
    expected_aiokafka = {
        "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": mechanism,
        "sasl_plain_username": "olp",
        "sasl_plain_password": "pw-1",
    }
    assert kafka.aiokafka_config() == {"bootstrap_servers": BOOT, **expected_aiokafka}
    assert faust_as_aiokafka(kafka) == {**expected_aiokafka, "ssl_context": None}


def test_scram_over_tls_with_ca(certs: Certificates) -> None:
    kafka = KafkaSettings(
        bootstrap_servers=BOOT,
        security_protocol="SASL_SSL",
        sasl_mechanism="SCRAM-SHA-512",
        sasl_username="olp",
        sasl_password="pw-2",
        ssl_cafile=certs.ca_cert,
    )
    assert kafka.confluent_config() == {
        "bootstrap.servers": BOOT,
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "olp",
        "sasl.password": "pw-2",
        "ssl.endpoint.identification.algorithm": "https",
        "ssl.ca.location": str(certs.ca_cert),
    }
    expected = {
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "olp",
        "sasl_plain_password": "pw-2",
    }
    aio = kafka.aiokafka_config()
    assert without_context(aio) == {"bootstrap_servers": BOOT, **expected}
    assert_verifies(aio["ssl_context"], hostname=True, ca_subject="olp test CA")
    via_faust = faust_as_aiokafka(kafka)
    assert without_context(via_faust) == expected
    assert_verifies(via_faust["ssl_context"], hostname=True, ca_subject="olp test CA")


def test_mtls_with_encrypted_key_and_no_hostname_check(certs: Certificates) -> None:
    kafka = KafkaSettings(
        bootstrap_servers=BOOT,
        security_protocol="SSL",
        ssl_cafile=certs.ca_cert,
        ssl_certfile=certs.client_cert,
        ssl_keyfile=certs.client_key,
        ssl_key_password="key-secret",
        ssl_check_hostname=False,
    )
    assert kafka.confluent_config() == {
        "bootstrap.servers": BOOT,
        "security.protocol": "SSL",
        "ssl.endpoint.identification.algorithm": "none",
        "ssl.ca.location": str(certs.ca_cert),
        "ssl.certificate.location": str(certs.client_cert),
        "ssl.key.location": str(certs.client_key),
        "ssl.key.password": "key-secret",
    }
    aio = kafka.aiokafka_config()
    assert without_context(aio) == {"bootstrap_servers": BOOT, "security_protocol": "SSL"}
    assert_verifies(aio["ssl_context"], hostname=False, ca_subject="olp test CA")
    via_faust = faust_as_aiokafka(kafka)
    assert without_context(via_faust) == {"security_protocol": "SSL"}
    assert_verifies(via_faust["ssl_context"], hostname=False, ca_subject="olp test CA")
    assert isinstance(kafka.faust_app_kwargs()["broker_credentials"], faust.SSLCredentials)


def test_a_wrong_key_password_is_a_clear_error(certs: Certificates) -> None:
    kafka = KafkaSettings(
        security_protocol="SSL",
        ssl_certfile=certs.client_cert,
        ssl_keyfile=certs.client_key,
        ssl_key_password="not-it",
    )
    with pytest.raises(OlpError, match="cannot load the Kafka TLS files"):
        kafka.ssl_context()


def test_oauthbearer_over_tls() -> None:
    kafka = KafkaSettings(
        bootstrap_servers=BOOT,
        security_protocol="SASL_SSL",
        sasl_mechanism="OAUTHBEARER",
        sasl_oauthbearer_token_endpoint_url="https://idp.example/token",
        sasl_oauthbearer_client_id="olp-worker",
        sasl_oauthbearer_client_secret="client-secret-3",
        sasl_oauthbearer_scope="kafka",
    )
    assert kafka.confluent_config() == {
        "bootstrap.servers": BOOT,
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "OAUTHBEARER",
        "sasl.oauthbearer.method": "oidc",
        "sasl.oauthbearer.token.endpoint.url": "https://idp.example/token",
        "sasl.oauthbearer.client.id": "olp-worker",
        "sasl.oauthbearer.client.secret": "client-secret-3",
        "sasl.oauthbearer.scope": "kafka",
        "ssl.endpoint.identification.algorithm": "https",
    }
    aio = kafka.aiokafka_config()
    assert without_context(aio) == {
        "bootstrap_servers": BOOT,
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "OAUTHBEARER",
    }
    provider = aio["sasl_oauth_token_provider"]
    assert isinstance(provider, ClientCredentialsTokenProvider)
    assert (provider.endpoint_url, provider.client_id, provider.scope) == (
        "https://idp.example/token",
        "olp-worker",
        "kafka",
    )
    via_faust = faust_as_aiokafka(kafka)
    assert (via_faust["security_protocol"], via_faust["sasl_mechanism"]) == ("SASL_SSL", "OAUTHBEARER")
    assert isinstance(via_faust["sasl_oauth_token_provider"], ClientCredentialsTokenProvider)
    assert isinstance(via_faust["ssl_context"], ssl.SSLContext)


def test_pass_through_per_client() -> None:
    kafka = KafkaSettings(
        bootstrap_servers=BOOT,
        confluent_extra={"client.rack": "eu-1a", "socket.keepalive.enable": True},
        aiokafka_extra={"client_id": "olp", "connections_max_idle_ms": 60000},
    )
    assert kafka.confluent_config() == {
        "bootstrap.servers": BOOT,
        "security.protocol": "PLAINTEXT",
        "client.rack": "eu-1a",
        "socket.keepalive.enable": True,
    }
    assert kafka.aiokafka_config() == {
        "bootstrap_servers": BOOT,
        "security_protocol": "PLAINTEXT",
        "client_id": "olp",
        "connections_max_idle_ms": 60000,
    }


def assert_verifies(context: ssl.SSLContext, hostname: bool, ca_subject: str) -> None:
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname is hostname
    subjects = [dict(x[0] for x in ca["subject"]).get("commonName") for ca in context.get_ca_certs()]
    assert subjects == [ca_subject]


# --- what is refused -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"security_protocol": "SASL_SSL"}, "needs sasl_mechanism"),
        ({"sasl_mechanism": "PLAIN", "sasl_username": "u", "sasl_password": "p"}, "does not use SASL"),
        (
            {"security_protocol": "SASL_SSL", "sasl_mechanism": "SCRAM-SHA-256", "sasl_username": "u"},
            "needs sasl_username and sasl_password",
        ),
        (
            {
                "security_protocol": "SASL_SSL",
                "sasl_mechanism": "OAUTHBEARER",
                "sasl_oauthbearer_client_id": "c",
            },
            "OAUTHBEARER needs",
        ),
        ({"security_protocol": "SASL_SSL", "sasl_mechanism": "GSSAPI"}, "sasl_mechanism"),
        ({"ssl_cafile": "/ca.pem"}, "ssl_cafile set but security_protocol PLAINTEXT does not use TLS"),
        ({"security_protocol": "SSL", "ssl_keyfile": "/k.pem"}, "ssl_keyfile needs ssl_certfile"),
        ({"confluent_extra": {"sasl.password": "x"}}, "confluent_extra may not set sasl.password"),
        ({"confluent_extra": {"ssl.keystore.password": "x"}}, "confluent_extra may not hold secrets"),
        ({"aiokafka_extra": {"ssl_context": "x"}}, "aiokafka_extra may not set ssl_context"),
        ({"aiokafka_extra": {"sasl_kerberos_password": "x"}}, "aiokafka_extra may not hold secrets"),
    ],
)
def test_inconsistent_security_is_refused(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        KafkaSettings(**fields)


# --- secrets ---------------------------------------------------------------------------------


def test_secrets_never_show(certs: Certificates) -> None:
    kafka = KafkaSettings(
        security_protocol="SASL_SSL",
        sasl_mechanism="OAUTHBEARER",
        sasl_oauthbearer_token_endpoint_url="https://idp.example/token",
        sasl_oauthbearer_client_id="olp-worker",
        sasl_oauthbearer_client_secret="client-secret-4",
        ssl_certfile=certs.client_cert,
        ssl_keyfile=certs.client_key,
        ssl_key_password="key-secret",
    )
    shown = " ".join(
        [
            repr(kafka),
            str(kafka),
            repr(kafka.token_provider()),
            repr(kafka.faust_app_kwargs()),
            kafka.model_dump_json(),
        ]
    )
    assert "client-secret-4" not in shown and "key-secret" not in shown
    assert sorted(kafka.secret_values()) == ["client-secret-4", "key-secret"]
    password = KafkaSettings(
        security_protocol="SASL_PLAINTEXT", sasl_mechanism="PLAIN", sasl_username="u", sasl_password="pw-5"
    )
    assert "pw-5" not in repr(password.faust_app_kwargs()) and "pw-5" not in repr(password)
    assert password.secret_values() == ["pw-5"]


# --- the OAuth token provider ----------------------------------------------------------------


async def test_token_provider_uses_client_credentials_and_reuses_the_token(
    aiohttp_server: Any,
) -> None:
    seen: list[tuple[str | None, dict[str, str]]] = []

    async def token(request: web.Request) -> web.Response:
        seen.append((request.headers.get("Authorization"), dict(await request.post())))
        return web.json_response({"access_token": f"tok-{len(seen)}", "expires_in": 3600})

    app = web.Application()
    app.router.add_post("/token", token)
    server = await aiohttp_server(app)
    provider = ClientCredentialsTokenProvider(
        str(server.make_url("/token")), "olp-worker", _secret("s3cret"), scope="kafka"
    )
    assert await provider.token() == "tok-1"
    assert await provider.token() == "tok-1"
    # "olp-worker:s3cret" in base64
    assert seen == [
        ("Basic b2xwLXdvcmtlcjpzM2NyZXQ=", {"grant_type": "client_credentials", "scope": "kafka"})
    ]
    provider._renew_at = 0.0  # past 80% of its lifetime
    assert await provider.token() == "tok-2"


async def test_token_provider_failures_name_the_endpoint(aiohttp_server: Any) -> None:
    async def refuse(request: web.Request) -> web.Response:
        return web.json_response({"error": "invalid_client"}, status=401)

    async def no_token(request: web.Request) -> web.Response:
        return web.json_response({"token_type": "bearer"})

    app = web.Application()
    app.router.add_post("/refuse", refuse)
    app.router.add_post("/empty", no_token)
    server = await aiohttp_server(app)
    refused = ClientCredentialsTokenProvider(str(server.make_url("/refuse")), "c", _secret("s3cret"))
    with pytest.raises(OlpError, match=r"OAuth token endpoint .*/refuse \(client c\) answered 401"):
        await refused.token()
    empty = ClientCredentialsTokenProvider(str(server.make_url("/empty")), "c", _secret("s3cret"))
    with pytest.raises(OlpError, match="answered without an access_token"):
        await empty.token()
    gone = ClientCredentialsTokenProvider("http://127.0.0.1:9/token", "c", _secret("s3cret"))
    with pytest.raises(UnavailableError, match="failed: ClientConnectorError"):
        await gone.token()


def _secret(value: str) -> Any:
    from pydantic import SecretStr

    return SecretStr(value)


# --- what librdkafka's refusals mean ---------------------------------------------------------


def test_librdkafka_refusals_name_the_setting_to_fix(tmp_path: Path) -> None:
    from confluent_kafka import KafkaError

    tls = KafkaSettings(bootstrap_servers="b:1", security_protocol="SSL", ssl_cafile=tmp_path / "ca.crt")
    untrusted = librdkafka_cause(
        tls, KafkaError._SSL, "SSL handshake failed: error:0A000086:SSL routines::certificate verify failed"
    )
    assert untrusted is not None and f"not trusted by ssl_cafile={tmp_path / 'ca.crt'}" in untrusted
    refused = librdkafka_cause(
        tls, KafkaError._TRANSPORT, "Receive failed: error:0A000418:SSL routines::tlsv1 alert unknown ca"
    )
    assert refused is not None and "refused our TLS client certificate" in refused
    sasl = KafkaSettings(
        bootstrap_servers="b:1",
        security_protocol="SASL_PLAINTEXT",
        sasl_mechanism="SCRAM-SHA-256",
        sasl_username="olp",
        sasl_password="pw",
    )
    login = librdkafka_cause(sasl, KafkaError._AUTHENTICATION, "SASL SCRAM authentication failed")
    assert login == (
        "Kafka at b:1 refused the SASL SCRAM-SHA-256 login of user 'olp' (wrong user name or "
        "password?): SASL SCRAM authentication failed"
    )
    assert librdkafka_cause(sasl, KafkaError._TRANSPORT, "Connection refused") is None
    assert librdkafka_cause(sasl, KafkaError._ALL_BROKERS_DOWN, "1/1 brokers are down") is None


# --- defaults --------------------------------------------------------------------------------


def test_defaults_suit_a_real_cluster() -> None:
    kafka = KafkaSettings()
    assert (
        kafka.fetch_max_wait_ms,
        kafka.session_timeout_ms,
        kafka.heartbeat_interval_ms,
        kafka.rebalance_timeout_ms,
        kafka.producer_max_batch_size,
    ) == (500, 45_000, 3000, 60_000, 16_384)


def test_the_embedded_broker_values_are_one_constant(monkeypatch: pytest.MonkeyPatch) -> None:
    assert EMBEDDED_BROKER_ENV == {
        "OLP_KAFKA__FETCH_MAX_WAIT_MS": "10",
        "OLP_KAFKA__SESSION_TIMEOUT_MS": "6000",
        "OLP_KAFKA__HEARTBEAT_INTERVAL_MS": "1000",
        "OLP_KAFKA__REBALANCE_TIMEOUT_MS": "12000",
        "OLP_KAFKA__PRODUCER_MAX_BATCH_SIZE": "1",
    }
    embedded = KafkaSettings.embedded_broker(bootstrap_servers="127.0.0.1:1")
    assert embedded.model_dump(include=set(EMBEDDED_BROKER_KAFKA)) == EMBEDDED_BROKER_KAFKA
    assert embedded.bootstrap_servers == "127.0.0.1:1"
    for name in [n for n in __import__("os").environ if n.startswith("OLP_")]:
        monkeypatch.delenv(name)
    for name, value in EMBEDDED_BROKER_ENV.items():
        monkeypatch.setenv(name, value)
    # The environment and a caller's own kafka fields merge (the test fixtures rely on it).
    loaded = load_settings(kafka={"bootstrap_servers": "127.0.0.1:2"}).kafka
    assert loaded == KafkaSettings.embedded_broker(bootstrap_servers="127.0.0.1:2")


def test_a_ca_file_librdkafka_cannot_load_is_a_config_error(tmp_path: Path) -> None:
    from olp.errors import ConfigError
    from olp.kafka_check import check_connection

    empty = tmp_path / "ca.crt"
    empty.write_text("not a certificate\n")
    kafka = KafkaSettings(bootstrap_servers="127.0.0.1:9", security_protocol="SSL", ssl_cafile=empty)
    with pytest.raises(ConfigError, match=r"ssl\.ca\.location"):
        check_connection(kafka, timeout_s=2)
