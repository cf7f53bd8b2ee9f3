"""Topic configurations: what each topic should have, and how a difference reads."""

from __future__ import annotations

from olp.topics import DAY_MS, TopicNames, config_drift, drift_text, wanted_configs


def test_state_topics_are_compacted_event_topics_expire() -> None:
    configs = TopicNames.with_prefix("p.").configs()
    assert configs["p.documents"] == {"cleanup.policy": "compact"}
    assert configs["p.policy"] == {"cleanup.policy": "compact"}
    week = {"cleanup.policy": "delete", "retention.ms": str(7 * DAY_MS)}
    for hop in ("transcripts", "chunks", "found", "located", "checked", "organized", "progress"):
        assert configs[f"p.{hop}"] == week, hop
    month = {"cleanup.policy": "delete", "retention.ms": "2592000000"}
    assert configs["p.feedback"] == configs["p.verdicts"] == month
    assert configs["p.dlq"] == {"cleanup.policy": "delete", "retention.ms": "1209600000"}
    assert sorted(configs) == sorted(TopicNames.with_prefix("p.").all())


def test_changelogs_are_compacted_unless_configured() -> None:
    configs = TopicNames.with_prefix("p.").configs()
    assert wanted_configs("olp-processors-splitter-changelog", configs) == {"cleanup.policy": "compact"}
    assert wanted_configs("p.chunks", configs)["retention.ms"] == "604800000"
    assert wanted_configs("someone-elses-topic", configs) == {}
    assert wanted_configs("p.chunks", None) == {}


def test_drift_counts_missing_and_different_values() -> None:
    want = {"cleanup.policy": "delete", "retention.ms": "604800000"}
    assert config_drift({"cleanup.policy": "delete", "retention.ms": "604800000", "x": "1"}, want) == {}
    have = {"cleanup.policy": "compact"}
    drift = config_drift(have, want)
    assert drift == {"cleanup.policy": "delete", "retention.ms": "604800000"}
    assert drift_text(have, drift) == "cleanup.policy compact -> delete, retention.ms unset -> 604800000"
