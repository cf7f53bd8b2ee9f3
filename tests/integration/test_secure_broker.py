"""Both Kafka clients against a broker that demands TLS with client certificates (Tansu behind
stunnel, launcher/secure_broker.py): they produce and consume with CA verification and mTLS; a
wrong CA, a foreign client certificate, a missing one and a refused SASL login fail within
seconds with a message naming the setting to fix; topics are created with their configurations,
and drift is reported and fixed.

SASL logins cannot succeed on the embedded broker (its storage engines keep no SCRAM users; see
launcher/secure_broker.py), so SASL is tested here by its failure path only.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from launcher.scripted_llm import scripted_catalog
from launcher.secure_broker import (
    Certificates,
    SecureBroker,
    make_certificates,
    start_secure_broker,
    stunnel_binary,
)
from olp.errors import OlpError
from olp.kafka_check import check_connection, check_connection_async
from olp.settings import EMBEDDED_BROKER_ENV, KafkaSettings, Settings, load_settings
from olp.topics import TopicNames, ensure_topics
from tests.support.stack import ServiceStack

pytestmark = pytest.mark.integration

SAMPLE = Path(__file__).parents[2] / "olp" / "data" / "sample_livestream.jsonl"
FAIL_FAST_S = 3.0
"""A refusal must be reported within this; the check's own deadline (10 s) is for silence."""


def _stunnel_or_skip() -> None:
    try:
        stunnel_binary()
    except OlpError as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="module")
def secure(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureBroker]:
    _stunnel_or_skip()
    broker = start_secure_broker(tmp_path_factory.mktemp("secure-broker"))
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture(scope="module")
def foreign(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    """Certificates of another CA: neither side trusts them."""
    return make_certificates(tmp_path_factory.mktemp("foreign"))


def settings_of(secure: SecureBroker, **changes: Any) -> KafkaSettings:
    return KafkaSettings.embedded_broker(**{**secure.kafka_settings(), **changes})


def test_confluent_kafka_over_mtls(secure: SecureBroker) -> None:
    from confluent_kafka import Consumer, Producer

    kafka = settings_of(secure)
    check_connection(kafka)
    topic = f"tls-{uuid.uuid4().hex[:8]}"
    ensure_topics(kafka.confluent_config(), [topic], partitions=1)
    producer = Producer(kafka.confluent_config())
    for i in range(3):
        producer.produce(topic, key=b"k", value=f"v{i}".encode())
    assert producer.flush(10) == 0
    consumer = Consumer(
        {
            **kafka.confluent_config(),
            "group.id": f"g-{topic}",
            "auto.offset.reset": "earliest",
            "session.timeout.ms": kafka.session_timeout_ms,
            "heartbeat.interval.ms": kafka.heartbeat_interval_ms,
            "fetch.wait.max.ms": kafka.fetch_max_wait_ms,
        }
    )
    consumer.subscribe([topic])
    values: list[bytes] = []
    deadline = time.monotonic() + 30
    try:
        while len(values) < 3 and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is not None and not msg.error():
                values.append(msg.value())
    finally:
        consumer.close()
    assert values == [b"v0", b"v1", b"v2"]


async def test_aiokafka_over_mtls(secure: SecureBroker) -> None:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    kafka = settings_of(secure)
    await check_connection_async(kafka)
    topic = f"tls-{uuid.uuid4().hex[:8]}"
    await asyncio.to_thread(ensure_topics, kafka.confluent_config(), [topic], 1)
    producer = AIOKafkaProducer(**kafka.aiokafka_config())
    await producer.start()
    try:
        for i in range(3):
            await producer.send_and_wait(topic, f"v{i}".encode(), key=b"k")
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(
        topic,
        **kafka.aiokafka_config(),
        group_id=None,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=kafka.fetch_max_wait_ms,
    )
    await consumer.start()
    try:
        batches = await consumer.getmany(timeout_ms=10_000, max_records=3)
        values = [record.value for records in batches.values() for record in records]
    finally:
        await consumer.stop()
    assert values == [b"v0", b"v1", b"v2"]


REFUSALS = {
    "wrong CA": (
        lambda f: {"ssl_cafile": f.ca_cert},
        r"the broker's TLS certificate is not trusted by ssl_cafile=.*foreign.*ca\.crt",
    ),
    "foreign client certificate": (
        lambda f: {
            "ssl_certfile": f.client_cert,
            "ssl_keyfile": f.client_key,
            "ssl_key_password": f.client_key_password,
        },
        r"refused our TLS client certificate \(ssl_certfile=.*foreign.*client\.crt\)",
    ),
    "no client certificate": (
        lambda f: {"ssl_certfile": None, "ssl_keyfile": None, "ssl_key_password": None},
        r"refused our TLS client certificate \(none was configured",
    ),
}


@pytest.mark.parametrize("case", sorted(REFUSALS))
def test_tls_refusals_fail_fast_with_librdkafka(
    secure: SecureBroker, foreign: Certificates, case: str
) -> None:
    changes, message = REFUSALS[case]
    kafka = settings_of(secure, **changes(foreign))
    started = time.monotonic()
    with pytest.raises(OlpError, match=message):
        check_connection(kafka)
    assert time.monotonic() - started < FAIL_FAST_S


@pytest.mark.parametrize("case", sorted(REFUSALS))
async def test_tls_refusals_fail_fast_with_aiokafka(
    secure: SecureBroker, foreign: Certificates, case: str
) -> None:
    changes, message = REFUSALS[case]
    kafka = settings_of(secure, **changes(foreign))
    started = time.monotonic()
    with pytest.raises(OlpError, match=message):
        await check_connection_async(kafka)
    assert time.monotonic() - started < FAIL_FAST_S


@pytest.fixture(scope="module")
def authenticating(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureBroker]:
    """The same broker demanding a SASL login as well (SASL_SSL): every login is refused."""
    _stunnel_or_skip()
    broker = start_secure_broker(tmp_path_factory.mktemp("sasl-broker"), sasl=True)
    try:
        yield broker
    finally:
        broker.stop()


SCRAM = {"security_protocol": "SASL_SSL", "sasl_username": "olp", "sasl_password": "wrong-password"}


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-256", "SCRAM-SHA-512"])
async def test_a_refused_login_fails_fast_with_both_clients(
    authenticating: SecureBroker, mechanism: str
) -> None:
    kafka = settings_of(authenticating, **SCRAM, sasl_mechanism=mechanism)
    expected = rf"refused the SASL {mechanism} login of user 'olp' \(wrong user name or password\?\)"
    started = time.monotonic()
    with pytest.raises(OlpError, match=expected):
        check_connection(kafka)
    assert time.monotonic() - started < FAIL_FAST_S
    started = time.monotonic()
    with pytest.raises(OlpError, match=expected):
        await check_connection_async(kafka)
    assert time.monotonic() - started < FAIL_FAST_S


def test_topics_are_created_with_configs_and_drift_is_fixed(secure: SecureBroker) -> None:
    from confluent_kafka.admin import AdminClient  # type: ignore[attr-defined]

    conf = settings_of(secure).confluent_config()
    topics = TopicNames.with_prefix(f"c{uuid.uuid4().hex[:6]}.")
    changelog = f"{topics.documents}-app-table-changelog"
    names = [topics.documents, topics.chunks, changelog]
    created = ensure_topics(conf, names, 2, configs=topics.configs())
    assert created == dict.fromkeys(names, "created")
    assert described(AdminClient(conf), topics.documents) == {"cleanup.policy": "compact"}
    assert described(AdminClient(conf), changelog) == {"cleanup.policy": "compact"}
    assert ensure_topics(conf, names, 2, configs=topics.configs()) == dict.fromkeys(names, "exists")

    # A topic made by someone else, without configuration: drift, then fixed on request.
    stray = TopicNames.with_prefix(f"s{uuid.uuid4().hex[:6]}.")
    ensure_topics(conf, [stray.policy, stray.dlq], 2)
    report = ensure_topics(conf, [stray.policy, stray.dlq], 3, configs=stray.configs())
    assert report == {
        stray.policy: "drift: 2 partitions, want 3; drift: cleanup.policy unset -> compact",
        stray.dlq: "drift: 2 partitions, want 3; "
        "drift: cleanup.policy unset -> delete, retention.ms unset -> 1209600000",
    }
    fixed = ensure_topics(conf, [stray.policy, stray.dlq], 2, configs=stray.configs(), fix=True)
    assert fixed == {
        stray.policy: "fixed: cleanup.policy unset -> compact",
        stray.dlq: "fixed: cleanup.policy unset -> delete, retention.ms unset -> 1209600000",
    }
    assert described(AdminClient(conf), stray.dlq) == stray.configs()[stray.dlq]
    assert ensure_topics(conf, [stray.policy, stray.dlq], 2, configs=stray.configs()) == {
        stray.policy: "exists",
        stray.dlq: "exists",
    }


def described(admin: Any, topic: str) -> dict[str, str]:
    from confluent_kafka.admin import ConfigResource  # type: ignore[attr-defined]

    resource = ConfigResource(ConfigResource.Type.TOPIC, topic)
    return {k: v.value for k, v in admin.describe_configs([resource])[resource].result(10).items()}


async def test_faust_producer_over_mtls(secure: SecureBroker) -> None:
    """The Faust app keywords reach Faust's aiokafka producer (what the workers send with)."""
    import faust
    from aiokafka import AIOKafkaConsumer

    kafka = settings_of(secure)
    topic = f"faust-{uuid.uuid4().hex[:8]}"
    await asyncio.to_thread(ensure_topics, kafka.confluent_config(), [topic], 1)
    app = faust.App(
        f"tls-{topic}",
        broker=f"kafka://{kafka.bootstrap_servers}",
        producer_max_batch_size=kafka.producer_max_batch_size,
        **kafka.faust_app_kwargs(),
    )
    producer = app.producer
    await producer.start()
    try:
        sent = await producer.send_and_wait(topic, b"k", b"from-faust", None, None, None)
    finally:
        await producer.stop()
    assert sent.topic == topic
    consumer = AIOKafkaConsumer(topic, **kafka.aiokafka_config(), group_id=None, auto_offset_reset="earliest")
    await consumer.start()
    try:
        batches = await consumer.getmany(timeout_ms=10_000)
    finally:
        await consumer.stop()
    assert [r.value for records in batches.values() for r in records] == [b"from-faust"]


@pytest.fixture(scope="module")
def misnamed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureBroker]:
    """A broker whose certificate names only `localhost`, reached at 127.0.0.1."""
    _stunnel_or_skip()
    broker = start_secure_broker(tmp_path_factory.mktemp("misnamed"), hosts=("localhost",))
    try:
        yield broker
    finally:
        broker.stop()


async def test_hostname_verification_switch(misnamed: SecureBroker) -> None:
    checked = settings_of(misnamed)
    expected = r"not trusted by ssl_cafile=.*, or does not name the host \(ssl_check_hostname=True\)"
    with pytest.raises(OlpError, match=expected):
        check_connection(checked)
    with pytest.raises(OlpError, match=expected):
        await check_connection_async(checked)
    unchecked = settings_of(misnamed, ssl_check_hostname=False)
    check_connection(unchecked)
    await check_connection_async(unchecked)


def test_client_instructions_name_every_setting_but_show_no_password(secure: SecureBroker) -> None:
    text = secure.client_instructions()
    assert secure.certificates.client_key_password not in text
    assert f"export OLP_KAFKA__BOOTSTRAP_SERVERS={secure.bootstrap}" in text
    assert "export OLP_KAFKA__SECURITY_PROTOCOL=SSL" in text
    assert f"export OLP_KAFKA__SSL_CAFILE={secure.certificates.ca_cert}" in text
    assert f"export OLP_KAFKA__SSL_CERTFILE={secure.certificates.client_cert}" in text
    assert f"export OLP_KAFKA__SSL_KEYFILE={secure.certificates.client_key}" in text
    assert 'OLP_KAFKA__SSL_KEY_PASSWORD="$(cat ' in text


# --- the whole pipeline over mTLS --------------------------------------------------------------


@dataclass
class SecureStack(ServiceStack):
    """The test services, and the test's own clients, connecting over mTLS."""

    kafka: Mapping[str, Any] = field(default_factory=dict)

    def settings(self) -> Settings:
        return load_settings(
            kafka=KafkaSettings.embedded_broker(**self.kafka).model_dump(),
            topic_prefix=self.prefix,
            catalog_path=self.run_dir / "catalog.yaml",
        )


def test_pipeline_end_to_end_over_mtls(secure: SecureBroker, tmp_path: Path) -> None:
    from launcher.clients import replay
    from launcher.scripted_llm import ScriptedLLM
    from launcher.scripted_roles import PRODUCTS, perfect
    from olp.feeds import read_transcript, with_end_marker

    prefix = f"m{uuid.uuid4().hex[:8]}."
    kafka = settings_of(secure)
    ensure_topics(kafka.confluent_config(), TopicNames.with_prefix(prefix).all(), 4)
    scripted = ScriptedLLM(perfect).start()
    stack = SecureStack(
        secure.bootstrap,
        prefix,
        tmp_path,
        scripted_catalog(scripted.base_url),
        {**EMBEDDED_BROKER_ENV, **secure.env(), "OLP_FEEDS": json.dumps({"default": {"chunk_size": 30}})},
        kafka=secure.kafka_settings(),
    )
    try:
        stack.start_policy_store()
        stack.start_worker()
        segments = list(with_end_marker(read_transcript(SAMPLE, "mtls-1")))
        assert replay(stack.settings(), segments) == len(segments)  # the CLI's replay client
        view = stack.wait_for_documents("mtls-1", [s["segment_id"] for s in segments])  # tail's
        assert [d["name"] for d in view.stream("mtls-1")] == [name for name, _, _ in PRODUCTS]
        assert all(d["final"] for d in view.stream("mtls-1"))
        # The feed services over the same mutual TLS: ingest in, the read API out.
        names = asyncio.run(_through_ingest_and_documents(stack.settings(), "mtls-2"))
        assert names == [name for name, _, _ in PRODUCTS]
    finally:
        stack.stop()
        scripted.stop()


@pytest.mark.parametrize("command", [["worker"], ["policy-store"], ["ingest-server"], ["documents-server"]])
def test_a_service_with_a_wrong_ca_stops_at_once_naming_the_setting(
    secure: SecureBroker, foreign: Certificates, command: list[str], tmp_path: Path
) -> None:
    from click.testing import CliRunner

    from launcher.cli import main

    env = {**secure.env(), "OLP_KAFKA__SSL_CAFILE": str(foreign.ca_cert), "OLP_DATA_DIR": str(tmp_path)}
    started = time.monotonic()
    result = CliRunner().invoke(main, command, env=env)
    assert result.exit_code == 1, result.output
    assert "not trusted by ssl_cafile=" in result.output
    assert "Traceback" not in result.output
    assert time.monotonic() - started < FAIL_FAST_S


async def _through_ingest_and_documents(settings: Settings, stream_id: str) -> list[str]:
    """Send the sample through the ingest service; the names of its final documents as the
    document read API serves them."""
    from aiohttp.test_utils import TestClient, TestServer

    from documents.service import create_app as documents_app
    from ingest.client import IngestClient, send_all
    from ingest.service import create_app as ingest_app
    from olp.feeds import read_transcript, with_end_marker
    from olp.service_settings import DocumentsSettings, IngestSettings, SenderSettings

    token = "mtls-sender-token-0123"
    senders = {"studio": SenderSettings(token=token, feeds=("default",))}
    async with (
        TestClient(TestServer(ingest_app(settings, IngestSettings(senders=senders)))) as ingest,
        TestClient(TestServer(documents_app(settings, DocumentsSettings()))) as documents,
    ):
        segments = list(with_end_marker(read_transcript(SAMPLE, stream_id)))
        client = IngestClient(str(ingest.make_url("")), "default", token)
        sent = await send_all(client, segments, batch_size=50)
        assert sent.accepted == len(segments)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            resp = await documents.get(f"/v1/streams/{stream_id}")
            if resp.status == 200:
                docs = (await resp.json())["documents"]
                if docs and all(d["final"] for d in docs) and max(d["last_id"] for d in docs) >= 171:
                    return [d["name"] for d in docs]
            await asyncio.sleep(0.3)
    raise AssertionError(f"{stream_id}: no final documents through ingest and the read API")
