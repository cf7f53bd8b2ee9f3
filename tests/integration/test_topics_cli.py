"""`olp topics ensure` against the embedded broker: topics come with their configs, drift on
topics someone else made is reported (exit 3) and fixed on request (`--fix`, then exit 0)."""

from __future__ import annotations

import uuid

import pytest
from click.testing import CliRunner

from launcher.cli import main
from olp.topics import TopicNames, ensure_topics


@pytest.fixture
def env(broker: str) -> dict[str, str]:
    return {"OLP_KAFKA__BOOTSTRAP_SERVERS": broker, "OLP_TOPIC_PREFIX": f"c{uuid.uuid4().hex[:8]}."}


def test_ensure_creates_with_configs_and_fixes_drift_on_request(env: dict[str, str]) -> None:
    topics = TopicNames.with_prefix(env["OLP_TOPIC_PREFIX"])
    # The documents topic made by hand without configs: not compacted, so documents would expire.
    ensure_topics({"bootstrap.servers": env["OLP_KAFKA__BOOTSTRAP_SERVERS"]}, [topics.documents], 4)
    runner = CliRunner()

    reported = runner.invoke(main, ["topics", "ensure"], env=env)
    assert reported.exit_code == 3, reported.output
    assert "drift: cleanup.policy unset -> compact" in reported.output
    assert f"{topics.policy}" in reported.output and "created" in reported.output

    fixed = runner.invoke(main, ["topics", "ensure", "--fix"], env=env)
    assert fixed.exit_code == 0, fixed.output
    assert "fixed" in fixed.output

    again = runner.invoke(main, ["topics", "ensure"], env=env)
    assert again.exit_code == 0, again.output
    assert "drift" not in again.output
