"""Topic names of the pipeline (spec section 3) and their idempotent creation.

Every topic is pre-created with its partition count before workers start: Tansu auto-creates
topics with 4 partitions and cannot add partitions later (spec section 6).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from olp.errors import OlpError


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


def ensure_topics(
    conf: Mapping[str, Any],
    names: list[str],
    partitions: int,
    replication_factor: int = 1,
    timeout_s: float = 15.0,
) -> dict[str, str]:
    """Create the topics that are missing; report what was done per topic.

    Returns {topic: "created" | "exists" | "drift: <why>"} so callers can show drift (a topic
    that exists with another partition count) instead of failing late.
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
        if name in existing:
            have = len(existing[name].partitions)
            report[name] = "exists" if have == partitions else f"drift: {have} partitions, want {partitions}"
        else:
            missing.append(NewTopic(name, num_partitions=partitions, replication_factor=replication_factor))
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
    return report
