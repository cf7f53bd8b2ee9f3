"""Shared fixtures: the real embedded broker (one per session, fresh topic names per test), a
scripted OpenAI-compatible model server, and settings pointing at both.

Settings built in the tests' own process get the embedded broker's Kafka values from the
environment (`EMBEDDED_BROKER_ENV`, set once here), so `load_settings(kafka={"bootstrap_servers":
broker})` is tuned for Tansu as `olp up` is; a test that sets one of them itself wins."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from olp.settings import EMBEDDED_BROKER_ENV
from olp.topics import TopicNames, ensure_topics


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "integration: needs the embedded Tansu broker")
    for name, value in EMBEDDED_BROKER_ENV.items():
        os.environ.setdefault(name, value)


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Bootstrap address of a Tansu broker started for this test session."""
    from launcher.embedded import start_broker

    child, bootstrap = start_broker(tmp_path_factory.mktemp("broker"))
    try:
        yield bootstrap
    finally:
        child.stop()


@pytest.fixture
def topic_prefix(broker: str) -> str:
    """A fresh prefix, with every pipeline topic created, so tests never see each other's records."""
    prefix = f"t{uuid.uuid4().hex[:8]}."
    ensure_topics({"bootstrap.servers": broker}, TopicNames.with_prefix(prefix).all(), partitions=4)
    return prefix


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    return tmp_path
