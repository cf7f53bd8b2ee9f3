"""The newest version of every topic document, materialised from `olp.documents`
(TopicDocument). Pure: records in, answers out.

Which version wins is `olp.topic_documents.arrival`: a stale or re-delivered document changes
nothing; anything else becomes current and is one *update*, numbered by `seq` (1, 2, ...), which
is what SSE clients see as the event id and what webhooks receive.

Per topic the last `history_per_topic` versions are kept (one entry per version, the latest
content of that version); the last `event_log` updates are kept so a reconnecting SSE client can
resume after the last update it saw.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from olp.topic_documents import Document, arrival, topic_key


@dataclass(frozen=True, slots=True)
class Update:
    """A document that became current, with its update number."""

    seq: int
    document: Document

    @property
    def stream_id(self) -> str:
        return str(self.document["stream_id"])


@dataclass
class DocumentStore:
    history_per_topic: int = 20
    event_log: int = 2000
    seq: int = 0
    stale: int = 0
    redelivered: int = 0
    _current: dict[str, dict[str, Update]] = field(default_factory=dict)
    _history: dict[tuple[str, str], deque[Document]] = field(default_factory=dict)
    _log: deque[Update] = field(default_factory=deque)

    def apply(self, document: Mapping[str, Any]) -> Update | None:
        """Take one TopicDocument; the update it makes, or None when it changes nothing."""
        stream_id, topic_id = topic_key(document)
        held = self._current.get(stream_id, {}).get(topic_id)
        outcome = arrival(held.document if held else None, document)
        if outcome == "stale":
            self.stale += 1
            return None
        if outcome == "redelivered":
            self.redelivered += 1
            return None
        version = int(document["version"])
        self.seq += 1
        update = Update(self.seq, dict(document))
        self._current.setdefault(stream_id, {})[topic_id] = update
        history = self._history.setdefault((stream_id, topic_id), deque(maxlen=self.history_per_topic))
        if history and int(history[-1]["version"]) == version:
            history.pop()
        history.append(update.document)
        if self.event_log:
            self._log.append(update)
            while len(self._log) > self.event_log:
                self._log.popleft()
        return update

    # --- reads ----------------------------------------------------------------------------

    def streams(self) -> list[dict[str, Any]]:
        """One summary per stream, by stream id."""
        return [self.summary(stream_id) for stream_id in sorted(self._current)]

    def summary(self, stream_id: str) -> dict[str, Any]:
        docs = self.documents(stream_id) or []
        last = max(self._current[stream_id].values(), key=lambda u: u.seq)
        return {
            "stream_id": stream_id,
            "domain": last.document["domain"],
            "lang": last.document["lang"],
            "topics": len(docs),
            "final_topics": sum(1 for d in docs if d["final"]),
            "first_id": min(int(d["first_id"]) for d in docs),
            "last_id": max(int(d["last_id"]) for d in docs),
            "updated_ms": max(int(d["updated_ms"]) for d in docs),
            "seq": last.seq,
        }

    def documents(self, stream_id: str) -> list[Document] | None:
        """The stream's current documents in transcript order; None for an unknown stream."""
        topics = self._current.get(stream_id)
        if topics is None:
            return None
        return [u.document for u in sorted(topics.values(), key=lambda u: int(u.document["first_id"]))]

    def document(self, stream_id: str, topic_id: str) -> Document | None:
        update = self._current.get(stream_id, {}).get(topic_id)
        return update.document if update else None

    def history(self, stream_id: str, topic_id: str) -> list[Document] | None:
        """Versions of a topic, oldest first; None for an unknown topic."""
        versions = self._history.get((stream_id, topic_id))
        return list(versions) if versions is not None else None

    def snapshot(self, stream_id: str | None = None) -> list[Update]:
        """The current documents (of one stream, or all) as updates, oldest update first."""
        streams = [stream_id] if stream_id is not None else list(self._current)
        updates = [u for s in streams for u in self._current.get(s, {}).values()]
        return sorted(updates, key=lambda u: u.seq)

    def updates_after(self, seq: int, stream_id: str | None = None) -> list[Update] | None:
        """Updates after `seq` (of one stream, or all), or None when the log no longer reaches
        back that far or `seq` is from the future (another process's numbering)."""
        if seq > self.seq:
            return None
        if seq < self.seq and (not self._log or self._log[0].seq > seq + 1):
            return None
        return [u for u in self._log if u.seq > seq and (stream_id is None or u.stream_id == stream_id)]
