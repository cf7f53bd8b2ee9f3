"""Which version of a topic's document wins (TopicDocument, `schemas/topic_document.avsc`), written
once for every reader of `olp.documents`: the document service's view, the dashboard's recent
documents and the command line's and tests' followers.

A topic's `version` is the seq of the chunk that produced it. A lower version than the one held
is stale (the partition keeps a topic's order, but a re-processed chunk can write an old version
late); the same version with the same content (`updated_ms` aside) is a re-delivery; anything
else replaces what is held.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

Document = dict[str, Any]
Arrival = Literal["stale", "redelivered", "newer"]


def topic_key(document: Mapping[str, Any]) -> tuple[str, str]:
    return str(document["stream_id"]), str(document["topic_id"])


def arrival(held: Mapping[str, Any] | None, document: Mapping[str, Any]) -> Arrival:
    """What `document` is to the version of its topic held so far (None: nothing held)."""
    if held is None:
        return "newer"
    version, held_version = int(document["version"]), int(held["version"])
    if version < held_version:
        return "stale"
    if version == held_version and _same_content(held, document):
        return "redelivered"
    return "newer"


def _same_content(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    return {k: v for k, v in a.items() if k != "updated_ms"} == {
        k: v for k, v in b.items() if k != "updated_ms"
    }


@dataclass
class NewestDocuments:
    """The winning version of each (stream, topic), the most recently replaced last; at most
    `keep` topics when set (the least recently replaced are dropped)."""

    keep: int | None = None
    documents: OrderedDict[tuple[str, str], Document] = field(default_factory=OrderedDict)

    def apply(self, document: Mapping[str, Any]) -> bool:
        """Take one document; True when it replaced what was held (see the module docstring)."""
        key = topic_key(document)
        if arrival(self.documents.get(key), document) != "newer":
            return False
        self.documents[key] = dict(document)
        self.documents.move_to_end(key)
        while self.keep is not None and len(self.documents) > self.keep:
            self.documents.popitem(last=False)
        return True

    def stream(self, stream_id: str) -> list[Document]:
        """The stream's documents in transcript order."""
        docs = [d for (s, _), d in self.documents.items() if s == stream_id]
        return sorted(docs, key=lambda d: int(d["first_id"]))

    def recent(self, n: int) -> list[Document]:
        """The `n` most recently replaced documents, newest first."""
        return list(reversed(self.documents.values()))[:n]
