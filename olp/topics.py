"""Topic names of the pipeline (spec section 3), their configurations, and their creation.

Every topic is pre-created with its partition count before workers start: Tansu auto-creates
topics with 4 partitions and cannot add partitions later (spec section 6).

Configurations: the documents and the policy are compacted, as are Faust's table changelogs:
each holds the newest record per key (a topic document per stream and topic, an assignment per
role) and is read from its start to rebuild state, so time must not delete it. Every other topic
is a stream of events with a retention (`RETENTION_MS`). An existing topic whose configuration
differs is reported as drift and, when asked, altered (IncrementalAlterConfigs; Tansu accepts it,
it refuses the older AlterConfigs, stores what it is given and never compacts nor deletes).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from olp.errors import OlpError

DAY_MS = 24 * 3600 * 1000

CHANGELOG_SUFFIX = "-changelog"
"""Faust names a table's changelog topic `<app id>-<table>-changelog`."""

COMPACTED = frozenset({"documents", "policy"})
"""Topics (TopicNames fields) holding the newest record per key, read from their start."""

RETENTION_MS: dict[str, int] = {
    "transcripts": 7 * DAY_MS,
    "chunks": 7 * DAY_MS,
    "found": 7 * DAY_MS,
    "located": 7 * DAY_MS,
    "checked": 7 * DAY_MS,
    "organized": 7 * DAY_MS,
    "progress": 7 * DAY_MS,
    "feedback": 30 * DAY_MS,
    "verdicts": 30 * DAY_MS,
    "dlq": 14 * DAY_MS,
}
"""How long each event topic keeps its records. Pipeline hops: 7 days (Kafka's default), room for
a worker to be down over a long weekend and resume. Feedback and judge verdicts: 30 days, the
learning evidence the policy store replays past its last snapshot. Dead letters: 14 days to fix
a cause and replay, no longer, because they hold raw transcript text."""

COMPACT: dict[str, str] = {"cleanup.policy": "compact"}


def changelog_configs() -> dict[str, str]:
    """The configuration of a Faust table's changelog topic."""
    return dict(COMPACT)


@dataclass(frozen=True)
class TopicNames:
    """Names of every topic, derived from one prefix."""

    transcripts: str
    chunks: str
    found: str
    located: str
    checked: str
    organized: str
    documents: str
    progress: str
    feedback: str
    policy: str
    dlq: str
    verdicts: str
    """The judge board's verdicts (schemas/judge_verdict.avsc; processors/judge.py)."""

    @classmethod
    def with_prefix(cls, prefix: str = "olp.") -> TopicNames:
        return cls(**{f.name: f"{prefix}{f.name}" for f in fields(cls)})

    def all(self) -> list[str]:
        return [getattr(self, f.name) for f in fields(self)]

    def configs(self) -> dict[str, dict[str, str]]:
        """The wanted configuration of every topic, by topic name."""
        wanted = {}
        for f in fields(self):
            if f.name in COMPACTED:
                wanted[getattr(self, f.name)] = dict(COMPACT)
            else:
                wanted[getattr(self, f.name)] = {
                    "cleanup.policy": "delete",
                    "retention.ms": str(RETENTION_MS[f.name]),
                }
        return wanted


def wanted_configs(name: str, configs: Mapping[str, Mapping[str, str]] | None) -> dict[str, str]:
    """The configuration `name` should have: as given, or compacted for a changelog."""
    if configs is not None and name in configs:
        return dict(configs[name])
    return changelog_configs() if name.endswith(CHANGELOG_SUFFIX) else {}


def config_drift(have: Mapping[str, str | None], want: Mapping[str, str]) -> dict[str, str]:
    """The wanted settings a topic does not have ({key: wanted value}); keys it lacks count."""
    return {key: value for key, value in want.items() if have.get(key) != value}


def drift_text(have: Mapping[str, str | None], drift: Mapping[str, str]) -> str:
    return ", ".join(f"{key} {have.get(key) or 'unset'} -> {value}" for key, value in sorted(drift.items()))


def ensure_topics(
    conf: Mapping[str, Any],
    names: list[str],
    partitions: int,
    replication_factor: int = 1,
    timeout_s: float = 15.0,
    configs: Mapping[str, Mapping[str, str]] | None = None,
    fix: bool = False,
) -> dict[str, str]:
    """Create the topics that are missing with their configurations; report what was done.

    `configs` maps topic names to their wanted configuration (`TopicNames.configs()`); topics not
    in it get none, changelogs (`...-changelog`) are compacted. Returns {topic: "created" |
    "exists" | "drift: <why>" | "fixed: <what>"}: a topic with another partition count is drift
    (partitions are never changed here), one with other configuration values is drift, or is
    altered to the wanted values when `fix` is set.
    """
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

    admin = AdminClient(dict(conf))
    try:
        existing = admin.list_topics(timeout=timeout_s).topics
    except KafkaException as exc:
        raise OlpError(f"cannot reach Kafka at {conf.get('bootstrap.servers')}: {exc}") from exc
    report: dict[str, str] = {}
    missing = []
    for name in names:
        if name not in existing:
            missing.append(
                NewTopic(
                    name,
                    num_partitions=partitions,
                    replication_factor=replication_factor,
                    config=wanted_configs(name, configs),
                )
            )
            continue
        have = len(existing[name].partitions)
        report[name] = "exists" if have == partitions else f"drift: {have} partitions, want {partitions}"
    present = [n for n in names if n in existing and wanted_configs(n, configs)]
    for name, status in _check_configs(admin, present, configs, fix, timeout_s).items():
        report[name] = status if report[name] == "exists" else f"{report[name]}; {status}"
    if missing:
        for name, future in admin.create_topics(missing, operation_timeout=timeout_s).items():
            try:
                future.result(timeout=timeout_s)
                report[name] = "created"
            except KafkaException as exc:
                if "TOPIC_ALREADY_EXISTS" in str(exc):
                    report[name] = "exists"
                else:
                    raise OlpError(f"cannot create topic {name}: {exc}") from exc
    return {name: report[name] for name in names}


def _check_configs(
    admin: Any,
    names: list[str],
    configs: Mapping[str, Mapping[str, str]] | None,
    fix: bool,
    timeout_s: float,
) -> dict[str, str]:
    """{topic: "drift: ..." | "fixed: ..."} for the topics whose configuration differs."""
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import (  # type: ignore[attr-defined]
        AlterConfigOpType,
        ConfigEntry,
        ConfigResource,
    )

    if not names:
        return {}
    resources = [ConfigResource(ConfigResource.Type.TOPIC, name) for name in names]
    drifts: dict[str, tuple[dict[str, str | None], dict[str, str]]] = {}
    for resource, future in admin.describe_configs(resources, request_timeout=timeout_s).items():
        try:
            entries = future.result(timeout=timeout_s)
        except KafkaException as exc:
            raise OlpError(f"cannot read the configuration of topic {resource.name}: {exc}") from exc
        have = {key: entry.value for key, entry in entries.items()}
        drift = config_drift(have, wanted_configs(resource.name, configs))
        if drift:
            drifts[resource.name] = (have, drift)
    if not fix:
        return {name: f"drift: {drift_text(have, drift)}" for name, (have, drift) in drifts.items()}
    changes = [
        ConfigResource(
            ConfigResource.Type.TOPIC,
            name,
            incremental_configs=[
                ConfigEntry(key, value, incremental_operation=AlterConfigOpType.SET)
                for key, value in sorted(drift.items())
            ],
        )
        for name, (_, drift) in drifts.items()
    ]
    report = {}
    for resource, future in admin.incremental_alter_configs(changes).items() if changes else ():
        have, drift = drifts[resource.name]
        try:
            future.result(timeout=timeout_s)
        except KafkaException as exc:
            raise OlpError(f"cannot alter the configuration of topic {resource.name}: {exc}") from exc
        report[resource.name] = f"fixed: {drift_text(have, drift)}"
    return report
