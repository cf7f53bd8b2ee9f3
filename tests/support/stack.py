"""The services of a test: `launcher.stack.ServiceStack` with the tests' fixed API token and a
learner that never explores, plus waiting for a stream's documents and reading a topic."""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from launcher.clients import DocumentView, follow_documents, follow_topic
from launcher.stack import ServiceStack as LaunchedServices
from olp.settings import Settings

TEST_TOKEN = "test-token"


@dataclass
class ServiceStack(LaunchedServices):
    """Policy store + N workers for one test (token `test-token`, epsilon 0: choices are
    deterministic)."""

    api_token: str = field(default=TEST_TOKEN)

    def __post_init__(self) -> None:
        self.extra_env = {"OLP_LEARNER__EPSILON": "0", **self.extra_env}
        super().__post_init__()

    def wait_for_documents(
        self, stream_id: str, segment_ids: Iterable[int] | int, timeout_s: float = 120
    ) -> DocumentView:
        """Documents of the stream once every segment id lies in a final one (an int means the
        stream's ids run from its first document's start up to that id)."""
        last = segment_ids if isinstance(segment_ids, int) else None
        ids = [] if isinstance(segment_ids, int) else list(segment_ids)
        view = DocumentView()
        deadline = time.monotonic() + timeout_s
        for doc in follow_documents(self.settings()):
            if doc is not None and doc["stream_id"] == stream_id:
                view.apply(doc)
            docs = view.stream(stream_id)
            if last is not None and docs:
                ids = [i for i in range(int(docs[0]["first_id"]), last + 1)]
                gaps = [(d["last_id"], n["first_id"]) for d, n in itertools.pairwise(docs)]
                ids = [i for i in ids if not any(a < i < b for a, b in gaps)]
            if ids and view.covers(stream_id, ids):
                return view
            if time.monotonic() > deadline:
                held = [(d["topic_id"], d["last_id"], d["final"]) for d in view.stream(stream_id)]
                raise AssertionError(f"documents incomplete after {timeout_s}s: {held}\n{self.logs()}")
            for child in self.children:
                if not child.alive():
                    raise AssertionError(f"{child.name} died\n{self.logs()}")
        raise AssertionError("document stream ended")


def read_topic(
    settings: Settings, topic: str, expected: str, until: Any, timeout_s: float = 60
) -> list[dict[str, Any]]:
    """Decode records of `topic` from the start until `until(records)` is true."""
    from schemas.codec import make_codec

    codec = make_codec(None)
    records: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout_s
    for msg in follow_topic(settings, topic):
        if msg is not None:
            records.append(codec.decode(msg.value(), expected))
        if until(records):
            return records
        if time.monotonic() > deadline:
            raise AssertionError(f"{topic}: condition not met after {timeout_s}s; got {records[-5:]}")
    raise AssertionError("unreachable")
