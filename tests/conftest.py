"""Shared fixtures: the real embedded broker (one per session, fresh topic names per test), a
scripted OpenAI-compatible model server, and settings pointing at both."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from olp.topics import TopicNames, ensure_topics


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "integration: needs the embedded Tansu broker")


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
